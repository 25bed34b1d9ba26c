\set SHOW_CONTEXT never
-- Emit dedupe keys: within the topic's dedupe window, a second emit with the
-- same topic and dedupe key writes nothing and returns the first event's seq.
SELECT event_bus.create_topic('dd', 2);
SELECT event_bus.create_topic('dd.short', 1, dedupe_window => '1 second');
SELECT topic, dedupe_window FROM event_bus.topics WHERE topic LIKE 'dd%' ORDER BY 1;
SHOW event_bus.dedupe_window;
SELECT emitted AS emitted_before FROM event_bus.stats WHERE kind = 'topic' AND name = 'dd' \gset

SELECT event_bus.emit('dd', 'Paid', '{"n": 1}', dedupe_key => 'pay-1') AS first \gset
SELECT event_bus.emit('dd', 'Paid', '{"n": 2}', dedupe_key => 'pay-1') = :first AS same_seq;
SELECT event_bus.emit('dd', 'Refunded', '{"n": 3}', key => 'c-1', dedupe_key => 'pay-1') = :first AS same_seq_any_type;
SELECT payload FROM event_bus.events WHERE topic = 'dd' ORDER BY seq;
SELECT dedupe_key, seq = :first AS first_holds, expires_at > now() + interval '23 hours' AS about_a_day
  FROM event_bus.dedupe_keys WHERE topic = 'dd';
-- Keys are per topic; emits without a key are never deduplicated
SELECT event_bus.emit('dd.short', 'Paid', '{}', dedupe_key => 'pay-1') <> :first AS other_topic_own_event;
SELECT event_bus.emit('dd', 'Paid', '{"n": 4}') <> event_bus.emit('dd', 'Paid', '{"n": 4}') AS no_key_no_dedupe;
-- Only written events count as emitted
SELECT emitted - :emitted_before AS emitted FROM event_bus.stats WHERE kind = 'topic' AND name = 'dd';

-- A rolled-back emit does not hold its key, nor does one in a rolled-back savepoint
BEGIN;
SELECT event_bus.emit('dd', 'Paid', '{"n": "rolled back"}', dedupe_key => 'pay-2') > 0 AS emitted;
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT event_bus.emit('dd', 'Paid', '{"n": "savepoint"}', dedupe_key => 'pay-2') > 0 AS emitted;
ROLLBACK TO SAVEPOINT s;
SELECT event_bus.emit('dd', 'Paid', '{"n": "kept"}', dedupe_key => 'pay-2') AS second \gset
-- within the same transaction the key is held already
SELECT event_bus.emit('dd', 'Paid', '{"n": "again"}', dedupe_key => 'pay-2') = :second AS same_transaction;
COMMIT;
SELECT payload FROM event_bus.events WHERE seq = :second;
SELECT count(*) AS events_for_pay_2 FROM event_bus.events WHERE topic = 'dd' AND payload->>'n' IN ('rolled back', 'savepoint', 'kept', 'again');

-- emit_many: a key held before, a key twice in the array, no key
SELECT event_bus.emit_many('dd', 'Paid', ARRAY['{"m": 1}', '{"m": 2}', '{"m": 3}', '{"m": 4}']::jsonb[],
                           dedupe_keys => ARRAY['pay-1', 'm-1', NULL, 'm-1']) AS seqs \gset
SELECT (:'seqs'::bigint[])[1] = :first AS held_before, (:'seqs'::bigint[])[4] = (:'seqs'::bigint[])[2] AS twice_in_array,
       (:'seqs'::bigint[])[3] <> (:'seqs'::bigint[])[2] AS without_key;
SELECT payload FROM event_bus.events WHERE seq = ANY (:'seqs'::bigint[]) ORDER BY seq;

-- Past the window a key is free again: the next emit takes it over
SELECT event_bus.emit('dd.short', 'Paid', '{"w": 1}', dedupe_key => 'w') AS w1 \gset
SELECT pg_sleep(1.1);
SELECT event_bus.emit('dd.short', 'Paid', '{"w": 2}', dedupe_key => 'w') <> :w1 AS new_event_after_window;
SELECT count(*) AS held FROM event_bus.dedupe_keys WHERE topic = 'dd.short' AND dedupe_key = 'w';
-- and run_maintenance() deletes expired keys
SELECT event_bus.emit('dd.short', 'Paid', '{"w": 3}', dedupe_key => 'x') > 0 AS emitted;
SELECT pg_sleep(1.1);
SELECT expired_leases FROM event_bus.run_maintenance();
SELECT dedupe_key FROM event_bus.dedupe_keys WHERE topic = 'dd.short' ORDER BY 1;

-- Errors
SELECT event_bus.emit('dd', 'Paid', '{}', dedupe_key => '');
SELECT event_bus.emit('dd', 'Paid', '{}', dedupe_key => repeat('k', 513));
SELECT event_bus.emit('dd', 'Paid', '{}', dedupe_key => repeat('k', 512)) > 0 AS longest_key_ok;
SELECT event_bus.emit_many('dd', 'Paid', ARRAY['{}', '{}']::jsonb[], dedupe_keys => ARRAY['a']);
SELECT event_bus.emit_many('dd', 'Paid', ARRAY['{}']::jsonb[], dedupe_keys => ARRAY[['a']]);
SELECT event_bus.emit_many('dd', 'Paid', ARRAY['{}', '{}']::jsonb[], dedupe_keys => ARRAY['a', '']);
SELECT event_bus.create_topic('dd.bad', 1, dedupe_window => '0');
SELECT event_bus.create_topic('dd.bad', 1, dedupe_window => '2 years');
-- nothing of a failed emit_many stays
SELECT count(*) AS held_a FROM event_bus.dedupe_keys WHERE dedupe_key = 'a';

-- Consumers and producers do not see the keys; dropping a topic drops them
SET ROLE event_bus_producer;
SELECT count(*) FROM event_bus.dedupe_keys;
RESET ROLE;
SELECT event_bus.drop_topic('dd.short');
SELECT count(*) AS keys_of_dropped_topic FROM event_bus.dedupe_keys WHERE topic = 'dd.short';
