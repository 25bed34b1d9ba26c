# Scheduled events with the worker: each enters the log at its deliver_at
# (a waiting claim gets it then, never before), and a crash or restart
# while events are due neither loses one nor moves one into the log twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('scheduled');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '10s'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('later', 4);
	SELECT event_bus.subscribe('s', ARRAY['later']);
});
ok($node->poll_query_until('postgres', q{SELECT rounds > 0 FROM event_bus.worker_status}), 'the worker runs');

# One event due in 2 s, a claim waiting for it.  The worker wakes for the
# deliver_at itself (naptime is 10 s here), and the waiting claim for the
# event entering the log.
$node->safe_psql('postgres', q{
	SELECT event_bus.emit('later', 'Remind', jsonb_build_object('due', clock_timestamp() + interval '2 s'),
	                      deliver_at => clock_timestamp() + interval '2 s')});
my $got = $node->safe_psql('postgres', q{
	SELECT clock_timestamp() >= (payload->>'due')::timestamptz AS not_early,
	       emitted_at >= (payload->>'due')::timestamptz AS entered_when_due,
	       clock_timestamp() < (payload->>'due')::timestamptz + interval '5 s' AS before_naptime
	  FROM event_bus.claim('s', 10, wait => '20 s')});
is($got, 't|t|t', 'a waiting claim gets the scheduled event when it is due, not before, without waiting for naptime');

# 300 events due over 3 s from a second on; the server crashes (immediate
# stop) two seconds in, and starts again.
$node->safe_psql('postgres', q{
	SELECT count(event_bus.emit('later', 'Tick',
	                            jsonb_build_object('i', i, 'due', clock_timestamp() + interval '1 s' + i * interval '10 ms'),
	                            deliver_at => clock_timestamp() + interval '1 s' + i * interval '10 ms'))
	  FROM generate_series(1, 300) i});
my $ids = $node->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_bus.scheduled});
is(scalar(split /,/, $ids), 300, 'all 300 scheduled');
sleep 2;
my $moved = $node->safe_psql('postgres', q{SELECT count(*) FROM event_bus.events WHERE type = 'Tick'});
ok($moved > 0 && $moved < 300, "some of them entered the log before the crash ($moved)");
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM event_bus.scheduled_events}),
	'after the crash, every scheduled event left the schedule');
is($node->safe_psql('postgres', q{
	SELECT string_agg(id::text, ',' ORDER BY id) FROM event_bus.events WHERE type = 'Tick'}), $ids,
	'each of the 300 entered the log exactly once, with the id it was given');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM event_bus.events WHERE type = 'Tick' AND emitted_at < (payload->>'due')::timestamptz}),
	'0', 'none entered the log before its deliver_at');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT payload->>'i' AS i, row_number() OVER (ORDER BY seq) AS n
	                        FROM event_bus.events WHERE type = 'Tick') x WHERE x.i::int <> x.n}),
	'0', 'they entered the log in deliver_at order');

# A clean restart with events still scheduled for later keeps them.
$node->safe_psql('postgres', q{
	SELECT event_bus.emit('later', 'Tock', '{}', deliver_at => clock_timestamp() + interval '1 hour')});
$node->restart;
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_bus.scheduled WHERE type = 'Tock'}), '1',
	'a restart keeps an event scheduled for later');
is($node->safe_psql('postgres', q{SELECT last_error FROM event_bus.worker_status}), '',
	'no round of the worker failed');

$node->stop;
done_testing();
