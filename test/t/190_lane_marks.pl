# Pending counts from lane marks (event_bus._mark_lanes): subscription_status
# counts a subscription's pending events from per-lane marks and short ranges
# of the log.  Here they must always equal the exact count that reads the
# backlog - with type filters, ordered lanes, retries, a transaction stepped
# over while open, partitions dropped by retention, a replay, a topic dropped
# - while the worker marks lanes and drops partitions as it goes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('marks');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
event_bus.retention = 0
event_bus.naptime = 50
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE bus');
$node->safe_psql('bus', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('orders', 4);
	SELECT event_bus.create_topic('clicks', 2);
	SELECT event_bus.subscribe('all', ARRAY['orders', 'clicks'], start => 'earliest');
	SELECT event_bus.subscribe('paid', ARRAY['orders'], types => ARRAY['Paid'], start => 'earliest');
	SELECT event_bus.subscribe('seq', ARRAY['orders'], ordered => true, start => 'earliest',
	                           backoff_base => '1 ms', backoff_max => '1 ms');
	SELECT event_bus.subscribe('late', ARRAY['clicks'], start => 'latest');
});

# The exact count, as subscription_status made it before the marks.
my $exact = q{
	SELECT s.subscription || '=' || (
	         SELECT count(*) FROM event_bus.cursors c JOIN event_bus.events e
	             ON e.topic = c.topic AND e.lane = c.lane AND e.seq > c.position
	          WHERE c.subscription = s.subscription
	            AND NOT event_bus._handed_out(e.seq, e.txid, c.high, c.pending_xids, c.pending_after)
	            AND (s.types IS NULL OR e.type = ANY (s.types)))
	  FROM event_bus.subscriptions s ORDER BY 1};
my $marked = q{
	SELECT subscription || '=' || pending FROM event_bus.subscription_status ORDER BY 1};
my $checks = 0;

sub agree
{
	my ($what) = @_;
	# Both in one snapshot.
	my ($e, $m) = split /\n----\n/,
	  $node->safe_psql('bus', "BEGIN ISOLATION LEVEL REPEATABLE READ; $exact; SELECT '----'; $marked; COMMIT;");
	$checks++;
	is($m, $e, "pending from the marks equals the exact count: $what")
	  or diag($node->safe_psql('bus', q{
		SELECT 'partitions from ' || min(lo) FROM event_bus.log_partitions;
		SELECT topic, lane, upto, type, n FROM event_bus.lane_marks ORDER BY 1, 2, 3, 4;
		SELECT subscription, topic, lane, position, high FROM event_bus.cursors ORDER BY 1, 2, 3;
		SELECT topic, lane, min(seq), count(*) FROM event_bus.events GROUP BY 1, 2 ORDER BY 1, 2;}));
}

my $with_clicks = 1;

sub emit
{
	my ($n) = @_;
	$node->safe_psql('bus', qq{
		SELECT event_bus.emit_many('orders', CASE WHEN g % 3 = 0 THEN 'Paid' ELSE 'Placed' END,
		                           ARRAY[jsonb_build_object('g', g)], keys => ARRAY['k' || (g % 7)])
		  FROM generate_series(1, $n) g;});
	$node->safe_psql('bus', qq{
		SELECT event_bus.emit_many('clicks', 'Click',
		         (SELECT array_agg(jsonb_build_object('g', g)) FROM generate_series(1, $n) g));})
	  if $with_clicks;
}

sub consume
{
	# Ack the batch but (if $fail) one event, which fails after the others
	# are acked (on an ordered subscription, fail gives back what follows).
	my ($sub, $n, $fail) = @_;
	$node->safe_psql('bus', qq{
		CREATE TEMP TABLE c AS SELECT * FROM event_bus.claim('$sub', $n);
		CREATE TEMP TABLE x AS SELECT min(seq) AS seq FROM c WHERE seq % 11 = 0 AND $fail;
		SELECT event_bus.ack('$sub', ARRAY(SELECT seq FROM c WHERE seq IS DISTINCT FROM (SELECT seq FROM x)));
		SELECT event_bus.fail('$sub', seq, 'x') FROM x WHERE seq IS NOT NULL;});
}

# Consume until nothing is left: no pending events, no retries (they come
# due after their backoff), nothing in flight.
sub drain
{
	for my $try (1 .. 100)
	{
		consume($_, 10000, 'false')
		  for split /\n/, $node->safe_psql('bus', 'SELECT subscription FROM event_bus.subscriptions');
		return 1 if $node->safe_psql('bus', q{
			SELECT sum(pending + in_flight + retrying) = 0 FROM event_bus.subscription_status}) eq 't';
		$node->safe_psql('bus', 'SELECT pg_sleep(0.1)');
	}
	return 0;
}

agree('nothing emitted');
emit(300);
agree('before any mark');
$node->safe_psql('bus', 'SELECT event_bus.run_maintenance()');
agree('right after a maintenance round');

# Enough events for every lane to get marks, consumed unevenly.
for my $round (1 .. 6)
{
	emit(1500);
	consume('all', 700 * $round, 'false');
	consume('paid', 400, 'true');
	consume('seq', 300, 'true');
	$node->safe_psql('bus', 'SELECT event_bus.run_maintenance()');
	agree("round $round");
}
cmp_ok($node->safe_psql('bus', 'SELECT count(DISTINCT (topic, lane)) FROM event_bus.lane_marks'), '>=', 5,
	'the lanes have marks');

# A transaction stepped over while open, committed later.
my $open = $node->background_psql('bus');
$open->query_safe("BEGIN; SELECT event_bus.emit('orders', 'Paid', '{\"open\": true}', key => 'k1');");
emit(200);
consume('all', 10000, 'false');
consume('paid', 10000, 'false');
agree('with an open emitting transaction stepped over');
$open->query_safe('COMMIT');
$open->quit;
agree('after it committed');

# Retention drops what everybody has passed (the worker runs it every 10 s).
my $lo = $node->safe_psql('bus', 'SELECT min(lo) FROM event_bus.log_partitions');
ok(drain(), 'everything consumed, retries included');
ok($node->poll_query_until('bus', "SELECT min(lo) > $lo FROM event_bus.log_partitions"),
	'retention dropped partitions');
emit(1200);
$node->safe_psql('bus', 'SELECT event_bus.run_maintenance()');
agree('after partitions were dropped');

# Replay goes back over marks kept for it; a new subscription starts there.
$node->safe_psql('bus', q{
	SELECT event_bus.subscribe('newcomer', ARRAY['orders'], types => ARRAY['Placed'], start => 'earliest')});
agree('a new subscription reading from the first event left');
consume('all', 10000, 'false');
$node->safe_psql('bus', q{SELECT event_bus.replay('all', 'earliest')});
agree('after a replay to the earliest event');

# A topic dropped: its marks go.
$node->safe_psql('bus', q{
	SELECT event_bus.unsubscribe('late');
	SELECT event_bus.unsubscribe('all');});
$node->safe_psql('bus', q{SELECT event_bus.drop_topic('clicks'); SELECT event_bus.run_maintenance()});
$with_clicks = 0;
is($node->safe_psql('bus', q{SELECT count(*) FROM event_bus.lane_marks WHERE topic = 'clicks'}), '0',
	'the marks of a dropped topic go');
agree('after a topic was dropped');

# Marks do not pile up while consumers keep up.
for my $round (1 .. 4)
{
	emit(1500);
	consume($_, 10000, 'false') for ('paid', 'seq', 'newcomer');
	$node->safe_psql('bus', 'SELECT event_bus.run_maintenance()');
}
agree('consumers caught up');
cmp_ok($node->safe_psql('bus', 'SELECT count(DISTINCT upto) FROM event_bus.lane_marks'), '<=', 12,
	'marks below every cursor are pruned');
is($node->safe_psql('bus', q{SELECT count(*) FROM event_bus.worker_status WHERE last_error IS NOT NULL}),
	'0', 'no round of the worker failed');

$node->stop;
done_testing();
