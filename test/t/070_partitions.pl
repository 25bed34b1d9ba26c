# An emit never fails for lack of a log partition: with the worker off (no
# maintenance keeping partitions ahead) and tiny partitions, concurrent bulk
# emits across many partition boundaries all succeed.  Seqs are taken before
# the partitions are made sure of, so a concurrent emitter cannot take seqs
# that the check did not cover.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('partitions');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.worker = off
event_bus.partition_size = 1000
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('bulk', 4);
	SELECT event_bus.subscribe('s', ARRAY['bulk'], start => 'earliest');
});

$node->pgbench('--no-vacuum --client=8 --jobs=8 --transactions=3', 0,
	[ qr{processed: 24/24} ], [ qr{^$} ],
	'8 clients emitting 3000 events per call, with 1000 seqs per partition',
	{ '070_emit_many' => q{
SELECT event_bus.emit_many('bulk', 'E', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 3000) g));
} },
	'postgres');
$node->pgbench('--no-vacuum --client=8 --jobs=8 --transactions=300', 0,
	[ qr{processed: 2400/2400} ], [ qr{^$} ],
	'8 clients emitting one event per transaction across boundaries',
	{ '070_emit' => q{
SELECT event_bus.emit('bulk', 'E', '{"one": true}');
} },
	'postgres');

is($node->safe_psql('postgres', 'SELECT count(*) FROM event_bus.events'), '74400', 'every event is in the log');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM event_bus.events e
	 WHERE NOT EXISTS (SELECT FROM event_bus.log_partitions p WHERE e.seq >= p.lo AND e.seq < p.hi)}),
	'0', 'each in a partition the registry knows');
is($node->safe_psql('postgres', q{
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 10000)))}),
	'10000', 'and they are claimable');

$node->stop;
done_testing();
