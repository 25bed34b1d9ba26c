# pg_dump and pg_restore keep the whole bus: the log and its partitions,
# topics, subscriptions with their cursors, leases, retries, dead letters and
# captures; the restored database goes on where the old one stopped.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 2);
	SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest', max_attempts => 1);
	SELECT event_bus.emit_many('t', 'E', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 2500) g));
	CREATE TABLE orders (id int PRIMARY KEY, v text);
	SELECT event_bus.capture('orders');
	INSERT INTO orders VALUES (1, 'before the dump');
});
# Some events acked, one dead, some in flight.
$node->safe_psql('src', q{
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 1000)));
	SELECT event_bus.fail('s', (SELECT min(seq) FROM event_bus.claim('s', 10)), 'poison');
});

my $state = q{
	SELECT (SELECT count(*) FROM event_bus.events), (SELECT min(lo) FROM event_bus.log_partitions),
	       (SELECT count(*) FROM event_bus.subscriptions), (SELECT sum(position) FROM event_bus.cursors),
	       (SELECT count(*) FROM event_bus.leases), (SELECT count(*) FROM event_bus.dead_letters),
	       (SELECT count(*) FROM event_bus.captures), (SELECT last_value FROM event_bus.event_seq)};
my $before = $node->safe_psql('src', $state);

my $dump = PostgreSQL::Test::Utils::tempdir . '/bus.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ],
	'pg_restore without an error');

is($node->safe_psql('dst', $state), $before, 'log, partitions, cursors, leases, dead letters and captures restored');
is($node->safe_psql('dst', q{
	SELECT count(*) = (SELECT count(*) FROM event_bus.log_partitions)
	  FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass}), 't', 'every partition attached');

# It goes on where it stopped.
is($node->safe_psql('dst', "SELECT count(*) FROM event_bus.claim('s', 10000)"),
	2500 - 1000 - 10, 'the subscription continues after its cursor');
is($node->safe_psql('dst', "SELECT count(*) > 0 FROM event_bus.leases"), 't', 'new leases do not collide with restored ones');
$node->safe_psql('dst', "INSERT INTO orders VALUES (2, 'after the restore')");
my $new = $node->safe_psql('dst', "SELECT event_bus.emit('t', 'After', '{}')");
ok($new > 2501, 'new seqs continue the old sequence');
is($node->safe_psql('dst', q{SELECT string_agg(payload->>'v', ',' ORDER BY seq) FROM event_bus.events WHERE topic = 'orders'}),
	'before the dump,after the restore', 'the capture works in the restored database');
is($node->safe_psql('dst', "SELECT event_bus.redrive('s')"), '1', 'dead letters can be redriven');
is($node->safe_psql('dst', "SELECT count(*) FROM event_bus.dead_letters"), '0', 'and are gone from the queue');

$node->stop;
done_testing();
