\set SHOW_CONTEXT never
SELECT event_bus.create_topic('orders', 4);
-- One event; the seq comes back
SELECT event_bus.emit('orders', 'OrderPlaced', '{"order": 1, "total": 9.5}', key => 'customer-1') AS seq \gset
SELECT seq = :seq AS same_seq, topic, type, version, key, payload, headers,
       lane BETWEEN 0 AND 3 AS lane_ok, id IS NOT NULL AS has_id,
       emitted_at <= clock_timestamp() AS emitted_ok
  FROM event_bus.events WHERE seq = :seq;
-- headers and version
SELECT event_bus.emit('orders', 'OrderPlaced', '{"order": 2}', NULL,
                      '{"correlation_id": "c-1", "source": "shop"}', 2) > :seq AS increasing;
SELECT type, version, key, headers FROM event_bus.events ORDER BY seq DESC LIMIT 1;
-- The same key always maps to the same lane; seqs grow
CREATE TEMP TABLE emitted AS
SELECT event_bus.emit('orders', 'OrderUpdated', jsonb_build_object('n', g), key => 'customer-7') AS s
  FROM generate_series(1, 20) g;
SELECT count(DISTINCT lane) AS lanes_for_one_key, count(*) AS events
  FROM emitted x JOIN event_bus.events e ON e.seq = x.s;
-- Events without a key spread over the lanes
TRUNCATE emitted;
INSERT INTO emitted SELECT event_bus.emit('orders', 'Tick', '{}') FROM generate_series(1, 20);
SELECT count(DISTINCT lane) AS lanes_without_key
  FROM emitted x JOIN event_bus.events e ON e.seq = x.s;
-- Set-based emit keeps the order of the array
SELECT cardinality(event_bus.emit_many('orders', 'OrderShipped',
        ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], ARRAY['k1', 'k2', NULL])) AS emitted;
SELECT payload, key FROM event_bus.events WHERE type = 'OrderShipped' ORDER BY seq;
SELECT event_bus.emit_many('orders', 'Nothing', ARRAY[]::jsonb[]);
CREATE TEMP TABLE bulk AS
SELECT event_bus.emit_many('orders', 'Bulk', array_agg(jsonb_build_object('i', g) ORDER BY g)) AS seqs
  FROM generate_series(1, 500) g;
SELECT seqs = ARRAY(SELECT seq FROM event_bus.events WHERE type = 'Bulk' ORDER BY seq) AS seqs_returned_in_order,
       (SELECT array_agg((payload->>'i')::int ORDER BY seq) = ARRAY(SELECT generate_series(1, 500))
          FROM event_bus.events WHERE type = 'Bulk') AS payload_order_kept
  FROM bulk;
-- emit_many takes its seqs as one block of the sequence: consecutive, the
-- sequence left at the last of them, and the next emit takes the one after
SELECT seqs[500] - seqs[1] = 499 AS consecutive,
       seqs[500] = (SELECT last_value FROM event_bus.event_seq) AS sequence_at_last,
       event_bus.emit('orders', 'AfterBulk', '{}') = seqs[500] + 1 AS next_emit_follows
  FROM bulk;
-- A sequence someone set to cache values is left to nextval, one at a time
ALTER SEQUENCE event_bus.event_seq CACHE 3;
-- (which takes them 3 at a time: the sequence ends 2 past the last one used)
SELECT s[1] > (SELECT seqs[500] + 1 FROM bulk) AND s[4] - s[1] = 3 AS consecutive,
       (SELECT last_value FROM event_bus.event_seq) = s[4] + 2 AS cached_by_nextval
  FROM event_bus.emit_many('orders', 'Cached', ARRAY['{}', '{}', '{}', '{}']::jsonb[]) s;
ALTER SEQUENCE event_bus.event_seq CACHE 1;
-- A rolled-back emit leaves nothing behind
BEGIN;
SELECT event_bus.emit('orders', 'RolledBack', '{}') IS NOT NULL AS emitted;
ROLLBACK;
SELECT count(*) FROM event_bus.events WHERE type = 'RolledBack';
-- PREPARE TRANSACTION after an emit is refused; the events go with it
BEGIN;
SELECT event_bus.emit('orders', 'Prepared', '{}') IS NOT NULL AS emitted;
PREPARE TRANSACTION 'eb_prepared';
SELECT count(*) FROM event_bus.events WHERE type = 'Prepared';
SELECT count(*) FROM pg_prepared_xacts;
-- ... but a transaction that did not emit can still be prepared
BEGIN;
SELECT 1;
PREPARE TRANSACTION 'eb_no_emit';
COMMIT PREPARED 'eb_no_emit';
-- Crossing log partitions (partition_size is 1000 in the test config)
SELECT count(*) > 1 AS several_partitions FROM event_bus.log_partitions;
SELECT cardinality(event_bus.emit_many('orders', 'Many', (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 2500))));
SELECT count(*) FROM event_bus.events WHERE type = 'Many';
SELECT bool_and(hi - lo = 1000) AS partition_size_ok,
       (SELECT max(seq) FROM event_bus.events) < max(hi) AS covered
  FROM event_bus.log_partitions;
SELECT count(*) = (SELECT count(*) FROM event_bus.log_partitions) AS all_attached
  FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass;
-- emit and emit_many put the same key on the same lane
SELECT event_bus.emit('orders', 'Both', '{}', key => 'same-key-both-forms') > 0 AS emitted;
SELECT cardinality(event_bus.emit_many('orders', 'Both', ARRAY['{}', '{}']::jsonb[],
                                       ARRAY['same-key-both-forms', 'same-key-both-forms']));
SELECT count(DISTINCT lane) AS lanes, count(*) AS events FROM event_bus.events WHERE key = 'same-key-both-forms';
-- a topic dropped and created again with other lanes: emit sees the new lanes
SELECT event_bus.create_topic('reshaped', 1);
SELECT event_bus.emit('reshaped', 'E', '{}', key => 'k' || g) > 0 AS emitted FROM generate_series(1, 2) g;
SELECT event_bus.drop_topic('reshaped');
SELECT event_bus.create_topic('reshaped', 8);
SELECT count(event_bus.emit('reshaped', 'E', '{}', key => 'k' || g)) FROM generate_series(1, 40) g;
SELECT max(lane) > 0 AS uses_new_lanes FROM event_bus.events WHERE topic = 'reshaped';
SELECT event_bus.drop_topic('reshaped');
SELECT try($$SELECT event_bus.emit('reshaped', 'E', '{}')$$);
-- ids are time-ordered UUIDs (version 7) carrying the emit's time
SELECT bool_and(substr(id::text, 15, 1) = '7') AS version_7,
       bool_and(abs(extract(epoch FROM emitted_at) * 1000
                    - ('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint) < 2) AS time_in_id,
       count(DISTINCT id) = count(*) AS distinct_ids
  FROM event_bus.events WHERE type IN ('Many', 'Both');
-- An emit keeps its locks on the log, the partition and its index until
-- the transaction ends, as an INSERT does.
BEGIN;
SELECT event_bus.emit('orders', 'Locked', '{}') > 0 AS emitted;
SELECT count(*) FILTER (WHERE c.relkind = 'p') AS log, count(*) FILTER (WHERE c.relkind = 'r') AS partition,
       count(*) FILTER (WHERE c.relkind = 'i') AS index
  FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = pg_backend_pid() AND l.mode = 'RowExclusiveLock' AND l.granted
   AND c.relnamespace = 'event_bus'::regnamespace AND c.relname LIKE 'events%';
COMMIT;
-- Rows go into the log without the executor only where nothing else must
-- happen on insert; a trigger or an expression index someone added to the
-- log still sees every event, of both forms (they take the INSERT path).
CREATE TABLE seen_by_trigger (seq bigint);
CREATE FUNCTION note_event() RETURNS trigger LANGUAGE plpgsql
AS $$BEGIN INSERT INTO public.seen_by_trigger VALUES (NEW.seq); RETURN NEW; END$$;
CREATE TRIGGER note_event AFTER INSERT ON event_bus.events FOR EACH ROW EXECUTE FUNCTION note_event();
SELECT event_bus.emit('orders', 'Triggered', '{"n": 1}') > 0 AS emitted;
SELECT cardinality(event_bus.emit_many('orders', 'Triggered', ARRAY['{"n": 2}', '{"n": 3}']::jsonb[]));
SELECT count(*) FROM seen_by_trigger s JOIN event_bus.events e USING (seq) WHERE e.type = 'Triggered';
DROP TRIGGER note_event ON event_bus.events;
DROP TABLE seen_by_trigger;
DROP FUNCTION note_event();
CREATE INDEX events_n ON event_bus.events (((payload->>'n')::int));
SELECT event_bus.emit('orders', 'Indexed', '{"n": 42}') > 0 AS emitted;
SELECT cardinality(event_bus.emit_many('orders', 'Indexed', ARRAY['{"n": 43}']::jsonb[]));
SET enable_seqscan = off;
SELECT type, payload FROM event_bus.events WHERE (payload->>'n')::int IN (42, 43) ORDER BY seq;
RESET enable_seqscan;
DROP INDEX event_bus.events_n;
-- emit_many across a partition boundary, where only the next partition has a
-- trigger: the rows before it go in directly, the rest through INSERT
CREATE TABLE seen_next (seq bigint);
CREATE FUNCTION note_next() RETURNS trigger LANGUAGE plpgsql
AS $$BEGIN INSERT INTO public.seen_next VALUES (NEW.seq); RETURN NEW; END$$;
SELECT log_covered_upto > (SELECT last_value + 1000 FROM event_bus.event_seq) AS room_ahead
  FROM event_bus.run_maintenance();
CREATE TEMP TABLE next_part AS
SELECT lo, relname FROM event_bus.log_partitions
 WHERE lo > (SELECT last_value FROM event_bus.event_seq) ORDER BY lo LIMIT 1;
DO $$BEGIN
    EXECUTE (SELECT format('CREATE TRIGGER note_next AFTER INSERT ON event_bus.%I '
                           'FOR EACH ROW EXECUTE FUNCTION public.note_next()', relname) FROM next_part);
END$$;
SELECT cardinality(event_bus.emit_many('orders', 'Split', (SELECT array_agg(jsonb_build_object('i', g)) FROM generate_series(1, 1500) g)));
SELECT count(*) AS events,
       count(*) FILTER (WHERE e.seq < n.lo) > 0 AS some_before,
       count(s.seq) = count(*) FILTER (WHERE e.seq >= n.lo) AS trigger_saw_the_rest,
       count(DISTINCT e.seq) = count(*) AS distinct_seqs,
       bool_and((e.payload->>'i')::int = e.seq - (SELECT min(seq) FROM event_bus.events WHERE type = 'Split') + 1) AS in_order
  FROM event_bus.events e CROSS JOIN next_part n LEFT JOIN seen_next s USING (seq)
 WHERE e.type = 'Split';
DO $$BEGIN
    EXECUTE (SELECT format('DROP TRIGGER note_next ON event_bus.%I', relname) FROM next_part);
END$$;
DROP TABLE seen_next;
DROP FUNCTION note_next();
