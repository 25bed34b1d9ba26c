# Worker slots (event_bus.max_databases) are not used up by databases that
# were dropped, nor held by databases without event_bus: with 3 slots, a
# server that saw several databases with event_bus come and go, and has
# databases without it, still starts a worker for each database that uses
# event_bus.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('slots');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.max_databases = 3
event_bus.naptime = '100ms'
});
$node->start;

sub worker_running
{
	my ($db) = @_;
	return $node->poll_query_until($db, qq{
		SELECT count(*) = 1 FROM event_bus.worker_status WHERE datname = '$db' AND state = 'running'});
}

# Databases without event_bus take slots too (the launcher looks into each).
$node->safe_psql('postgres', "CREATE DATABASE plain_$_") for 1 .. 3;

# Five databases with event_bus, one after the other, each dropped again.
for my $i (1 .. 5)
{
	$node->safe_psql('postgres', "CREATE DATABASE gone_$i");
	$node->safe_psql("gone_$i", 'CREATE EXTENSION event_bus');
	ok(worker_running("gone_$i"), "a worker for database $i of 5 that come and go");
	$node->safe_psql('postgres', "DROP DATABASE gone_$i WITH (FORCE)");
}

# Now two at once.
for my $db ('keep_a', 'keep_b')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION event_bus');
}
ok(worker_running('keep_a'), 'a worker for the first of two databases');
ok(worker_running('keep_b'), 'and for the second');
unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/no worker slot/,
	'never short of a worker slot');

$node->stop;
done_testing();
