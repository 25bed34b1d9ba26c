\set SHOW_CONTEXT never
SELECT event_bus.create_topic('jobs', 2);
SELECT event_bus.subscribe('workers', ARRAY['jobs']);
SELECT event_bus.subscribe('auditors', ARRAY['jobs']);
SELECT last_value AS base FROM event_bus.event_seq \gset
SELECT count(event_bus.emit('jobs', 'JobQueued', jsonb_build_object('job', g), key => 'k' || g))
  FROM generate_series(1, 10) g;
-- claim returns the envelope with attempt 1
-- (which lane comes first is random: check the envelope, not the order)
SELECT count(*) AS claimed, min(attempt) AS min_attempt, max(attempt) AS max_attempt,
       bool_and(topic = 'jobs' AND type = 'JobQueued' AND version = 1 AND headers = '{}'
                AND id IS NOT NULL AND payload->>'job' = substr(key, 2)
                AND seq BETWEEN :base + 1 AND :base + 10) AS envelope_ok,
       count(DISTINCT lane) AS lanes
  FROM event_bus.claim('workers', 4);
SELECT subscription, events FROM event_bus.in_flight ORDER BY subscription, lane;
-- every subscription gets every event (fan-out)
SELECT count(*) FROM event_bus.claim('auditors', 100);
-- the rest
SELECT count(*) FROM event_bus.claim('workers', 100);
SELECT count(*) FROM event_bus.claim('workers', 100);
SELECT subscription, pending, in_flight, retrying, dead FROM event_bus.subscription_status ORDER BY 1;
-- ack is idempotent and returns how many it acked
SELECT event_bus.ack('workers', ARRAY[:base + 1, :base + 2]);
SELECT event_bus.ack('workers', ARRAY[:base + 1, :base + 2]);
SELECT event_bus.ack('workers', ARRAY(SELECT g::bigint FROM generate_series(:base + 1, :base + 10) g));
SELECT event_bus.ack('workers', ARRAY[]::bigint[]);
SELECT count(*) FROM event_bus.leases WHERE subscription = 'workers';
-- acking one subscription does not ack the other
SELECT subscription, in_flight FROM event_bus.subscription_status ORDER BY 1;
SELECT event_bus.ack('auditors', ARRAY(SELECT g::bigint FROM generate_series(:base + 1, :base + 10) g));
-- events emitted later arrive in seq order per lane
SELECT count(event_bus.emit('jobs', 'JobQueued', jsonb_build_object('job', g), key => 'same'))
  FROM generate_series(11, 15) g;
SELECT payload FROM event_bus.claim('workers', 3) ORDER BY seq;
SELECT payload FROM event_bus.claim('workers', 3) ORDER BY seq;
-- claim and ack in one transaction (exactly-once effects inside the database)
SELECT event_bus.emit('jobs', 'JobQueued', '{"job": 16}', key => 'tx') > 0 AS emitted;
BEGIN;
CREATE TEMP TABLE done AS SELECT seq, payload FROM event_bus.claim('workers', 10);
SELECT event_bus.ack('workers', ARRAY(SELECT seq FROM done)) > 0 AS acked;
COMMIT;
-- a claim rolled back with its transaction hands the events out again
SELECT event_bus.emit('jobs', 'JobQueued', '{"job": 17}', key => 'tx') > 0 AS emitted;
BEGIN;
SELECT payload FROM event_bus.claim('workers', 10) ORDER BY seq;
ROLLBACK;
SELECT payload FROM event_bus.claim('workers', 10) ORDER BY seq;
-- paused subscriptions hand out nothing
SELECT event_bus.emit('jobs', 'JobQueued', '{"job": 18}') > 0 AS emitted;
SELECT event_bus.pause('workers');
SELECT count(*) FROM event_bus.claim('workers');
SELECT event_bus.resume('workers');
SELECT payload FROM event_bus.claim('workers') ORDER BY seq;
-- claims are refused outside READ COMMITTED
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM event_bus.claim('workers');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT count(*) FROM event_bus.claim('workers');
ROLLBACK;
-- a custom lease length
SELECT event_bus.emit('jobs', 'JobQueued', '{"job": 19}') > 0 AS emitted;
SELECT count(*) FROM event_bus.claim('workers', 10, lease => '5 minutes');
SELECT expires_at - claimed_at AS lease FROM event_bus.leases
 WHERE subscription = 'workers' ORDER BY lease_id DESC LIMIT 1;
SELECT event_bus.unsubscribe('workers');
SELECT event_bus.unsubscribe('auditors');

-- A type-filtered subscription's cursor moves past events it will never
-- deliver, so later claims do not scan them again
SELECT event_bus.create_topic('typed', 1);
SELECT event_bus.subscribe('only_a', ARRAY['typed'], types => ARRAY['A']);
SELECT count(event_bus.emit('typed', 'B', '{}')) FROM generate_series(1, 50);
SELECT count(*) AS claimed FROM event_bus.claim('only_a', 10);
SELECT position = (SELECT max(seq) FROM event_bus.events WHERE topic = 'typed') AS cursor_past_the_bs
  FROM event_bus.cursors WHERE subscription = 'only_a';
SELECT event_bus.emit('typed', 'A', '{"a": 1}') > 0 AS emitted;
SELECT count(event_bus.emit('typed', 'B', '{}')) FROM generate_series(1, 5);
SELECT type, payload FROM event_bus.claim('only_a', 10);
SELECT position = (SELECT max(seq) FROM event_bus.events WHERE topic = 'typed') AS cursor_past_the_last_b
  FROM event_bus.cursors WHERE subscription = 'only_a';
SELECT event_bus.unsubscribe('only_a');
SELECT event_bus.drop_topic('typed');

-- CloudEvents from what a consumer holds: a row of claim() and a dead
-- letter, with no SELECT on the log.
SELECT event_bus.create_topic('ce', 1);
CREATE ROLE eb_ce_consumer IN ROLE event_bus_consumer;
SET ROLE eb_ce_consumer;
SELECT event_bus.subscribe('ce-sub', ARRAY['ce']);
RESET ROLE;
SELECT event_bus.emit('ce', 'OrderPlaced', '{"order": 7}', key => 'customer-7') > 0 AS emitted;
SELECT event_bus.emit('ce', 'OrderPaid', '{"order": 7}', key => 'customer-7') > 0 AS emitted;
SET ROLE eb_ce_consumer;
SELECT * FROM event_bus.events LIMIT 0;
SELECT event_bus.to_cloudevent(c) - 'id' - 'time' - 'sequence' - 'source' AS cloudevent,
       event_bus.to_cloudevent(c) ->> 'id' = c.id::text AS same_id
  FROM event_bus.claim('ce-sub', 1) c;
SELECT event_bus.dead_letter('ce-sub', seq, 'unwanted') FROM event_bus.claim('ce-sub', 1);
SELECT event_bus.to_cloudevent(d) - 'id' - 'time' - 'sequence' - 'source' AS cloudevent
  FROM event_bus.dead_letter_queue d WHERE d.subscription = 'ce-sub';
SELECT event_bus.unsubscribe('ce-sub');
RESET ROLE;
DROP ROLE eb_ce_consumer;
SELECT event_bus.drop_topic('ce');

-- Leases keep their seqs packed: a bitmap from the lowest seq ('b'), or the
-- seqs themselves ('l') when a bitmap would be the larger; either way they
-- come back ascending, without repeats.
SELECT event_bus._unpack_seqs(event_bus._pack_seqs(ARRAY[17, 3, 5, 3, 4])) AS dense,
       get_byte(event_bus._pack_seqs(ARRAY[17, 3, 5, 3, 4]), 0) = ascii('b') AS dense_is_bitmap,
       length(event_bus._pack_seqs(ARRAY(SELECT g * 16 FROM generate_series(1, 100) g))) AS lane_of_16_bytes,
       event_bus._unpack_seqs(event_bus._pack_seqs(ARRAY[1, 1000000000000])) AS sparse,
       get_byte(event_bus._pack_seqs(ARRAY[1, 1000000000000]), 0) = ascii('l') AS sparse_is_list,
       event_bus._unpack_seqs(event_bus._pack_seqs('{}')) AS empty;
SELECT event_bus._unpack_seqs(event_bus._pack_seqs(ARRAY(SELECT g * 16 FROM generate_series(1, 100) g)))
     = ARRAY(SELECT g * 16 FROM generate_series(1, 100) g)::bigint[] AS lane_of_16_round_trip;
SELECT event_bus._pack_seqs(ARRAY[1, NULL]);
SELECT event_bus._unpack_seqs('\x7a');
SELECT event_bus._unpack_seqs('\x6c0102');
-- A partial ack rewrites the packed lease, which keeps the rest.
SELECT event_bus.create_topic('packed', 1);
SELECT event_bus.subscribe('packed_s', ARRAY['packed']);
SELECT count(*) FROM (SELECT event_bus.emit('packed', 'T', '{}') FROM generate_series(1, 40)) e;
SELECT count(*) AS claimed FROM event_bus.claim('packed_s', 40);
SELECT length(seqs) AS packed_bytes FROM event_bus.leases WHERE subscription = 'packed_s';
SELECT event_bus.ack('packed_s', ARRAY(SELECT s FROM event_bus.in_flight, unnest(seqs) s
                                         WHERE subscription = 'packed_s' ORDER BY s LIMIT 30));
SELECT events, cardinality(seqs) AS left_in_view FROM event_bus.in_flight WHERE subscription = 'packed_s';
-- The rest keeps the bitmap's base: acking the lowest seqs clears bits and
-- moves nothing (WAL logs the changed bytes, not the row).
SELECT length(seqs) AS packed_bytes_after FROM event_bus.leases WHERE subscription = 'packed_s';
SELECT event_bus.ack('packed_s', (SELECT seqs FROM event_bus.in_flight WHERE subscription = 'packed_s'));
SELECT count(*) AS leases_left FROM event_bus.leases WHERE subscription = 'packed_s';
SELECT event_bus.unsubscribe('packed_s');
SELECT event_bus.drop_topic('packed');
-- Claims and acks write cursors and leases without the executor while the
-- tables are as the install script made them; a table given a trigger (or
-- anything else the executor would have to run) is written by statements,
-- so the trigger fires, and the same events come and go either way.
SELECT event_bus.create_topic('direct', 2);
SELECT event_bus.subscribe('direct_s', ARRAY['direct']);
SELECT count(*) FROM (SELECT event_bus.emit('direct', 'T', '{}', key => 'k' || g) FROM generate_series(1, 12) g) e;
CREATE TABLE public.lease_audit (op text, subscription text, events int);
CREATE FUNCTION public.lease_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO public.lease_audit VALUES (TG_OP, OLD.subscription, cardinality(event_bus._unpack_seqs(OLD.seqs)));
    ELSE
        INSERT INTO public.lease_audit VALUES (TG_OP, NEW.subscription, cardinality(event_bus._unpack_seqs(NEW.seqs)));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON event_bus.leases
    FOR EACH ROW EXECUTE FUNCTION public.lease_audit();
CREATE TEMP TABLE got AS SELECT seq FROM event_bus.claim('direct_s', 5);
SELECT count(*) AS claimed FROM got;
SELECT event_bus.ack('direct_s', ARRAY(SELECT seq FROM got ORDER BY seq LIMIT 2));
SELECT event_bus.ack('direct_s', ARRAY(SELECT seq FROM got));
SELECT op, subscription, sum(events) AS events FROM public.lease_audit GROUP BY op, subscription ORDER BY op;
DROP TRIGGER audit ON event_bus.leases;
TRUNCATE public.lease_audit;
-- Without it, straight to the tables again: the trigger sees nothing.
INSERT INTO got SELECT seq FROM event_bus.claim('direct_s', 100);
SELECT count(*) AS claimed_in_all, count(DISTINCT seq) AS distinct_seqs FROM got;
SELECT event_bus.ack('direct_s', ARRAY(SELECT seq FROM got));
SELECT count(*) AS audited FROM public.lease_audit;
SELECT count(*) AS leases_left FROM event_bus.leases WHERE subscription = 'direct_s';
SELECT count(*) AS lanes, bool_and(position = high) AS cursors_caught_up
  FROM event_bus.cursors WHERE subscription = 'direct_s';
DROP TABLE got, public.lease_audit;
DROP FUNCTION public.lease_audit();
SELECT event_bus.unsubscribe('direct_s');
SELECT event_bus.drop_topic('direct');
