# A part of the worker's round that keeps failing neither floods the log nor
# stops the other parts: dispatch, maintenance and retention run in their own
# transactions, and a failed part backs off exponentially.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker_errors');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '100ms'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 1);
	SELECT event_bus.subscribe('s', ARRAY['t'], backoff_base => '0', start => 'earliest');
});
ok($node->poll_query_until('postgres', q{SELECT rounds > 0 FROM event_bus.worker_status}), 'the worker runs');

# Break dispatch for good: both the round from the log and the part about
# retries and dead letters.  New events are dispatched from commit reports
# without either, so the worker is restarted: its first round is one from
# the log, and while that keeps failing every round is.
my $dispatch = $node->safe_psql('postgres',
	q{SELECT pg_get_functiondef('event_bus._dispatch(bigint, jsonb)'::regprocedure)});
my $dispatch_due = $node->safe_psql('postgres',
	q{SELECT pg_get_functiondef('event_bus._dispatch_due(jsonb, bigint)'::regprocedure)});
$node->safe_psql('postgres', q{
	CREATE OR REPLACE FUNCTION event_bus._dispatch(p_from bigint, p_state jsonb,
	                                               OUT horizon bigint, OUT state jsonb, OUT notified integer)
	LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'dispatch is broken'; END $$;
	CREATE OR REPLACE FUNCTION event_bus._dispatch_due(p_state jsonb, p_horizon bigint,
	                                                   OUT state jsonb, OUT notified integer)
	LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'dispatch is broken'; END $$;
	SELECT event_bus.emit('t', 'E', '{"n": 0}');
});
my $log_start = -s $node->logfile;
my $old_pid = $node->safe_psql('postgres', 'SELECT pid FROM event_bus.worker_status');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
ok($node->poll_query_until('postgres', qq{
	SELECT pid <> $old_pid AND last_error = 'dispatch: dispatch is broken' FROM event_bus.worker_status}),
	'the restarted worker fails to dispatch');
my $notified_before = $node->safe_psql('postgres', 'SELECT notifications FROM event_bus.worker_status');

# A lease that expires while dispatch is broken: maintenance must still run.
$node->safe_psql('postgres', q{SELECT count(*) FROM event_bus.claim('s', 1, lease => '300 milliseconds')});
# Four seconds of commits, each waking the worker.
$node->safe_psql('postgres', q{
	DO $$
	BEGIN
	    FOR i IN 1 .. 40 LOOP
	        PERFORM event_bus.emit('t', 'E', jsonb_build_object('n', i));
	        COMMIT;
	        PERFORM pg_sleep(0.1);
	    END LOOP;
	END $$});

my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_start);
my $failures = () = $log =~ /event_bus worker: dispatch failed: dispatch is broken/g;
ok($failures >= 2, "dispatch failed and was retried ($failures log lines in 4 s)");
ok($failures <= 12, "with back-off: at most 12 log lines in 4 s, not one per round ($failures)");
is($node->safe_psql('postgres', q{SELECT last_error FROM event_bus.worker_status}),
	'dispatch: dispatch is broken', 'worker_status names the failing part');
is($node->safe_psql('postgres', q{SELECT attempt FROM event_bus.retries WHERE subscription = 's'}),
	'2', 'maintenance still expired the lease meanwhile');
is($node->safe_psql('postgres', 'SELECT notifications FROM event_bus.worker_status'), $notified_before,
	'no notification while dispatch is broken');

# Repaired, dispatch comes back by itself (within the back-off).
$node->safe_psql('postgres', $dispatch);
$node->safe_psql('postgres', $dispatch_due);
ok($node->poll_query_until('postgres',
		"SELECT notifications > $notified_before FROM event_bus.worker_status"),
	'after the repair the worker notifies again');
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM event_bus.worker_status});
is($node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_bus worker'}), $pid,
	'the same worker process throughout');

$node->stop;
done_testing();
