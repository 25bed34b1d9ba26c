# The graduation path: the event log is readable by logical decoding, so
# Debezium's outbox event router can carry it to Kafka.  Events (emitted and
# captured) appear in a logical replication slot in commit order, with the
# columns the router maps: id, topic (aggregatetype), key (aggregateid),
# type and payload.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('decoding');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.worker = off
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('orders', 2);
	SELECT * FROM event_bus.run_maintenance();
	CREATE TABLE customers (id int PRIMARY KEY, name text);
	SELECT event_bus.capture('customers', types => '{"insert": "CustomerRegistered"}');
	SELECT * FROM event_bus.run_maintenance();
	SELECT 'slot' FROM pg_create_logical_replication_slot('bus', 'test_decoding');
});

# T1 emits first but commits last; T2 and T3 commit in between.
my $t1 = $node->background_psql('postgres');
$t1->query_safe('BEGIN');
$t1->query_safe(q{SELECT event_bus.emit('orders', 'OrderPlaced', '{"order": 1}', key => 'order-1')});
$node->safe_psql('postgres', q{SELECT event_bus.emit('orders', 'OrderPaid', '{"order": 2}', key => 'order-2')});
$node->safe_psql('postgres', q{INSERT INTO customers VALUES (7, 'Ada')});
$t1->query_safe('COMMIT');
$t1->quit;

my $endpos = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $out = $node->pg_recvlogical_upto('postgres', 'bus', $endpos, $PostgreSQL::Test::Utils::timeout_default,
	'include-xids' => '0', 'skip-empty-xacts' => '1');

# Keep the inserts into the log, in the order decoding delivers them.
my @events = grep { /^table event_bus\.events_\d+: INSERT:/ } split /\n/, $out;
is(scalar @events, 3, 'three events decoded') or diag $out;

my @types = map { /type\[text\]:'([^']*)'/ ? $1 : '?' } @events;
is_deeply(\@types, [ 'OrderPaid', 'CustomerRegistered', 'OrderPlaced' ],
	'events come out of the slot in commit order, emitted and captured alike');

my %first = ($events[0] =~ /(\w+)\[[^\]]+\]:('(?:[^']|'')*'|\S+)/g);
like($first{id}, qr/^'[0-9a-f-]{36}'$/, 'id (the outbox event id) is there');
is($first{topic}, "'orders'", 'topic (aggregatetype) is there');
is($first{key}, "'order-2'", 'key (aggregateid) is there');
is($first{type}, "'OrderPaid'", 'type is there');
is($first{payload}, q{'{"order": 2}'}, 'payload is there');
my %captured = ($events[1] =~ /(\w+)\[[^\]]+\]:('(?:[^']|'')*'|\S+)/g);
is($captured{topic}, "'customers'", 'a captured row change is an event of its topic');
is($captured{key}, "'7'", 'keyed by the primary key');
is($captured{payload}, q{'{"id": 7, "name": "Ada"}'}, 'with the row as payload');

# Only the log is needed by the router: the capture trigger wrote nothing else.
my @tables = sort { $a cmp $b } keys %{ { map { /^table ([^:]+):/ ? ($1 => 1) : () } split /\n/, $out } };
is_deeply([ grep { !/^event_bus\.events_/ } @tables ], ['public.customers'],
	'besides the captured table itself, only the log is written');

$node->safe_psql('postgres', q{SELECT pg_drop_replication_slot('bus')});
$node->stop;
done_testing();
