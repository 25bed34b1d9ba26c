# A database still on the 1.0 install script keeps working with this
# library, worker included: emits, claims, acks, and retention (the worker
# runs the 1.0 retention job there, which has no retention process).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('old_script');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
event_bus.retention = 0
event_bus.naptime = '100ms'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus VERSION '1.0';
	SELECT event_bus.create_topic('t', 2);
	SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest');
});
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'event_bus'"), '1.0',
	'the database is on 1.0');
$node->safe_psql('postgres', q{
	SELECT event_bus.emit_many('t', 'E', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 3500) g));
	SELECT event_bus.emit('t', 'One', '{}');
});
is($node->safe_psql('postgres', q{SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 10000)))}),
	'3501', 'emits, claims and acks work');
my $first = $node->safe_psql('postgres', 'SELECT min(lo) FROM event_bus.log_partitions');
ok($node->poll_query_until('postgres', "SELECT min(lo) > $first FROM event_bus.log_partitions"),
	'the worker drops consumed partitions with the 1.0 retention job');
ok(!$node->log_contains('retention failed'), 'and logs no retention failure');

$node->stop;
done_testing();
