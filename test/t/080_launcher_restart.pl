# A launcher that dies (terminated, or crashed alone) comes back and adopts
# the workers it had started: never two workers for one database, they stay
# visible in worker_status, and DROP DATABASE still stops them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '200ms'
max_worker_processes = 16
});
$node->start;

for my $db (qw(a b))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION event_bus');
}
my $workers = q{SELECT string_agg(datname || '=' || n, ',' ORDER BY datname) FROM
	(SELECT datname, count(*) AS n FROM pg_stat_activity WHERE backend_type = 'event_bus worker' GROUP BY datname) x};
ok($node->poll_query_until('postgres', "SELECT ($workers) = 'a=1,b=1'"), 'one worker per database');
my $pids = $node->safe_psql('postgres',
	q{SELECT string_agg(pid::text, ',' ORDER BY datname) FROM pg_stat_activity WHERE backend_type = 'event_bus worker'});

for my $round (1 .. 2)
{
	my $launcher = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_bus launcher'});
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
	ok($node->poll_query_until('postgres',
			qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus launcher' AND pid <> $launcher}),
		"round $round: the launcher is back");
	# Give the new launcher a few passes (one a second) to do the wrong thing.
	sleep 3;
	is($node->safe_psql('postgres', $workers), 'a=1,b=1', "round $round: still one worker per database");
	is($node->safe_psql('postgres',
			q{SELECT string_agg(pid::text, ',' ORDER BY datname) FROM pg_stat_activity WHERE backend_type = 'event_bus worker'}),
		$pids, "round $round: the same workers, adopted");
}
is($node->safe_psql('a', q{SELECT string_agg(datname || ' ' || state || ' ' || (pid > 0), ',' ORDER BY datname)
	FROM event_bus.worker_status WHERE datname IN ('a', 'b')}),
	'a running true,b running true', 'worker_status shows the adopted workers');

# An adopted worker is still stopped by DROP DATABASE and by DROP EXTENSION,
# and started again when it dies.
$node->safe_psql('postgres', 'DROP DATABASE a');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname = 'a'"), '0',
	'DROP DATABASE of a database whose worker was adopted');
my ($bpid) = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'b'});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($bpid)");
ok($node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'b' AND pid <> $bpid}),
	'an adopted worker that dies is started again');
$node->safe_psql('b', 'DROP EXTENSION event_bus');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'event_bus worker'}),
	'DROP EXTENSION stops it');

$node->stop;
done_testing();
