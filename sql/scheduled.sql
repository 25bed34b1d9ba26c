\set SHOW_CONTEXT never
-- Scheduled delivery: emit(..., deliver_at) keeps the event out of the log
-- until it is due; it enters the log then (with a seq, keeping its id), so
-- no subscription can claim it before deliver_at.
SELECT event_bus.create_topic('sched', 2);
SELECT event_bus.subscribe('sched_sub', ARRAY['sched']);
SELECT event_bus.emit('sched', 'Remind', '{"order": 1}', key => 'o-1',
                      deliver_at => clock_timestamp() + interval '2 seconds') AS seq;
SELECT event_bus.emit_many('sched', 'Remind', ARRAY['{"order": 2}', '{"order": 3}']::jsonb[],
                           deliver_at => clock_timestamp() + interval '1 hour') AS seqs;
SELECT topic, type, key, payload, headers, version, deliver_at > now() AS later,
       scheduled_by = current_user::regrole AS mine
  FROM event_bus.scheduled ORDER BY deliver_at, payload->>'order';
-- Not in the log, not claimable, not counted as emitted
SELECT count(*) AS in_log FROM event_bus.events WHERE topic = 'sched';
SELECT count(*) AS claimed FROM event_bus.claim('sched_sub', 10);
SELECT emitted FROM event_bus.stats WHERE kind = 'topic' AND name = 'sched';
-- Moving due events is run_maintenance()'s job (the worker's): nothing is due yet
SELECT event_bus._release_scheduled() AS moved;
SELECT id AS first_id FROM event_bus.scheduled WHERE key = 'o-1' \gset
-- Once due, it enters the log with its id and is claimed like any event
SELECT pg_sleep(2.1);
SELECT event_bus._release_scheduled() AS moved;
SELECT id = :'first_id' AS same_id, type, key, payload FROM event_bus.claim('sched_sub', 10);
SELECT count(*) AS still_scheduled FROM event_bus.scheduled;
SELECT emitted FROM event_bus.stats WHERE kind = 'topic' AND name = 'sched';

-- cancel_scheduled: true once, false for a cancelled, delivered or unknown id
SELECT id AS later_id FROM event_bus.scheduled ORDER BY payload->>'order' LIMIT 1 \gset
SELECT event_bus.cancel_scheduled(:'later_id') AS cancelled;
SELECT event_bus.cancel_scheduled(:'later_id') AS cancelled_again;
SELECT event_bus.cancel_scheduled(:'first_id') AS cancel_delivered;
SELECT event_bus.cancel_scheduled('00000000-0000-0000-0000-000000000000') AS cancel_unknown;
SELECT payload FROM event_bus.scheduled;
-- A cancel that rolls back leaves it scheduled
BEGIN;
SELECT event_bus.cancel_scheduled(id) FROM event_bus.scheduled;
ROLLBACK;
SELECT count(*) AS still_scheduled FROM event_bus.scheduled;

-- Roles: a producer sees and cancels what its role scheduled; another
-- producer sees nothing and may not cancel it
CREATE ROLE sched_a LOGIN IN ROLE event_bus_producer;
CREATE ROLE sched_b LOGIN IN ROLE event_bus_producer;
SET ROLE sched_a;
SELECT event_bus.emit('sched', 'Remind', '{"by": "a"}', deliver_at => now() + interval '1 day') IS NULL AS scheduled;
SELECT payload, scheduled_by FROM event_bus.scheduled;
SELECT id AS a_id FROM event_bus.scheduled \gset
SELECT set_config('sched.a_id', :'a_id', false) IS NOT NULL AS noted;
SET ROLE sched_b;
SELECT count(*) AS b_sees FROM event_bus.scheduled;
DO $$
BEGIN
    PERFORM event_bus.cancel_scheduled(current_setting('sched.a_id')::uuid);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cancel by another producer: % (%)', SQLSTATE,
        replace(SQLERRM, current_setting('sched.a_id'), '<id>');
END
$$;
SELECT count(*) FROM event_bus.scheduled_events;
SET ROLE sched_a;
SELECT event_bus.cancel_scheduled(:'a_id') AS a_cancels;
RESET ROLE;

-- Errors
SELECT event_bus.emit('sched', 'Remind', '{}', deliver_at => '2020-01-01 00:00:00+00');
SELECT event_bus.emit('sched', 'Remind', '{}', deliver_at => 'infinity');
SELECT event_bus.emit('sched', 'Remind', '{}', dedupe_key => 'k', deliver_at => now() + interval '1 minute');
SELECT event_bus.emit_many('sched', 'Remind', ARRAY['{}']::jsonb[], dedupe_keys => ARRAY['k'],
                           deliver_at => now() + interval '1 minute');
SELECT event_bus.emit('nope', 'Remind', '{}', deliver_at => now() + interval '1 minute');
SELECT event_bus.cancel_scheduled(NULL);
-- Dropping a topic drops what is scheduled for it
SELECT event_bus.emit('sched', 'Remind', '{}', deliver_at => now() + interval '1 minute') IS NULL AS scheduled;
SELECT event_bus.unsubscribe('sched_sub');
SELECT event_bus.drop_topic('sched');
SELECT count(*) AS left_scheduled FROM event_bus.scheduled_events;
DROP ROLE sched_a, sched_b;
