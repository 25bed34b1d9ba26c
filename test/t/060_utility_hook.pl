# The utility hook stops a database's worker only for commands that need the
# database to themselves and would pass Postgres's own checks: a role with no
# rights cannot keep anybody's worker down, and a permitted command stops it
# only while it runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hook');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '200ms'
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE DATABASE victim;
	CREATE ROLE mallory LOGIN CREATEDB;
	CREATE ROLE nobody LOGIN;
	CREATE DATABASE mine OWNER mallory;
});
$node->safe_psql('victim', 'CREATE EXTENSION event_bus');
$node->safe_psql('mine', 'CREATE EXTENSION event_bus');

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = '$db'");
}
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'event_bus worker'"),
	'both workers run');
my $pid = worker_pid('victim');

# Each command fails Postgres's checks; none may touch the worker.
my @attempts = (
	[ 'nobody',  'DROP DATABASE victim' ],
	[ 'mallory', 'DROP DATABASE victim' ],
	[ 'nobody',  'CREATE DATABASE copy1 TEMPLATE victim' ],
	[ 'mallory', 'CREATE DATABASE copy2 TEMPLATE victim' ],
	[ 'mallory', 'ALTER DATABASE victim RENAME TO gone' ],
	[ 'mallory', 'ALTER DATABASE victim SET TABLESPACE pg_default' ],
	[ undef,     'BEGIN; DROP DATABASE victim' ],   # a superuser, but in a transaction block
	[ undef,     'BEGIN; CREATE DATABASE copy4 TEMPLATE victim' ],
);
for my $a (@attempts)
{
	my ($role, $sql) = @$a;
	my ($rc, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ defined $role ? ('-U', $role) : () ]);
	like($err, qr/ERROR/, ($role // 'superuser') . ": '$sql' fails");
}
# Repeated, as an attacker would.
for my $i (1 .. 20)
{
	$node->psql('postgres', 'DROP DATABASE victim', extra_params => [ '-U', 'nobody' ]);
}
is(worker_pid('victim'), $pid, 'the worker of the victim database kept running, same pid');
is($node->safe_psql('victim', "SELECT state FROM event_bus.worker_status WHERE datname = 'victim'"),
	'running', 'worker_status says running');

# A permitted command that fails anyway pauses the worker only while it
# runs: it is back at once, not after a fixed back-off.
my ($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE copy3 TEMPLATE mine',
	extra_params => [ '-U', 'mallory' ]);
ok($rc == 0 || $err =~ /being accessed by other users/, 'the owner may copy its database');
my $t0 = time();
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'mine'"),
	'the template database has its worker again');
ok(time() - $t0 < 8, 'well before the old 10 s back-off');

# The owner can drop its own database: the worker steps aside.
$node->safe_psql('postgres', 'DROP DATABASE mine', extra_params => [ '-U', 'mallory' ]);
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname = 'mine'"), '0',
	'the owner dropped its database with a worker in it');
is(worker_pid('victim'), $pid, 'the other database was never touched');

$node->stop;
done_testing();
