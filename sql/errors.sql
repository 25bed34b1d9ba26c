-- Every error a user can cause: SQLSTATE and message, and nothing written.
\set SHOW_CONTEXT never
SELECT event_bus.create_topic('e', 1);
SELECT event_bus.subscribe('s', ARRAY['e'], start => 'earliest');
SELECT event_bus.create_topic('other', 1);
SELECT event_bus.subscribe('s-other', ARRAY['other'], start => 'earliest');
SELECT count(*) AS events_before FROM event_bus.events \gset

-- emit
SELECT try($$SELECT event_bus.emit(NULL, 'T', '{}')$$);
SELECT try($$SELECT event_bus.emit('Bad Name', 'T', '{}')$$);
SELECT try($$SELECT event_bus.emit('missing', 'T', '{}')$$);
SELECT try($$SELECT event_bus.emit('e', NULL, '{}')$$);
SELECT try($$SELECT event_bus.emit('e', '', '{}')$$);
SELECT try($$SELECT event_bus.emit('e', repeat('t', 256), '{}')$$);
SELECT try($$SELECT event_bus.emit('e', 'T', NULL)$$);
SELECT try($$SELECT event_bus.emit('e', 'T', '{}', headers => '[1]')$$);
SELECT try($$SELECT event_bus.emit('e', 'T', '{}', headers => '"x"')$$);
SELECT try($$SELECT event_bus.emit('e', 'T', '{}', version => 0)$$);
SELECT try($$SELECT event_bus.emit('e', 'T', '{}', key => repeat('k', 1025))$$);
SET event_bus.max_payload_size = '2kB';
SELECT try($$SELECT event_bus.emit('e', 'T', jsonb_build_object('blob', repeat('x', 3000)))$$);
SELECT try($$SELECT event_bus.emit('e', 'T', '{}', headers => jsonb_build_object('h', repeat('x', 3000)))$$);
SELECT try($$SELECT event_bus.emit_many('e', 'T', ARRAY['{}', jsonb_build_object('blob', repeat('x', 3000))])$$);
RESET event_bus.max_payload_size;
SELECT try($$SELECT event_bus.emit_many('e', 'T', NULL)$$);
SELECT try($$SELECT event_bus.emit_many('e', 'T', ARRAY['{}', NULL]::jsonb[])$$);
SELECT try($$SELECT event_bus.emit_many('e', 'T', ARRAY['{}', '{}']::jsonb[], ARRAY['k'])$$);
SELECT try($$SELECT event_bus.emit_many('e', 'T', ARRAY[['{}'], ['{}']]::jsonb[])$$);
SELECT try($$SELECT event_bus.emit_many('missing', 'T', ARRAY['{}']::jsonb[])$$);
SELECT count(*) - :events_before AS events_written FROM event_bus.events;

-- subscribe
SELECT try($$SELECT event_bus.subscribe(NULL, ARRAY['e'])$$);
SELECT try($$SELECT event_bus.subscribe('Bad', ARRAY['e'])$$);
SELECT try($$SELECT event_bus.subscribe('x', NULL)$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY[]::text[])$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e', NULL])$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['missing', 'e', 'gone'])$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], types => ARRAY[]::text[])$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], start => 'never')$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], start => NULL)$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], max_attempts => 0)$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], lease => '-1 second')$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], lease => '0')$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], backoff_base => '-1 second')$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], backoff_base => '1 hour', backoff_max => '1 minute')$$);
SELECT try($$SELECT event_bus.subscribe('x', ARRAY['e'], ordered => NULL)$$);
SELECT try($$SELECT event_bus.subscribe('s', ARRAY['other'])$$);
SELECT try($$SELECT event_bus.unsubscribe('x')$$);
SELECT count(*) AS subscriptions FROM event_bus.subscriptions;

-- claim
SELECT try($$SELECT * FROM event_bus.claim(NULL)$$);
SELECT try($$SELECT * FROM event_bus.claim('nobody')$$);
SELECT try($$SELECT * FROM event_bus.claim('s', 0)$$);
SELECT try($$SELECT * FROM event_bus.claim('s', 10001)$$);
SELECT try($$SELECT * FROM event_bus.claim('s', NULL)$$);
SELECT try($$SELECT * FROM event_bus.claim('s', 10, lease => '-5 seconds')$$);

-- ack, fail, dead_letter
SELECT event_bus.emit('e', 'T', '{"n": 1}') AS mine \gset
SELECT event_bus.emit('other', 'T', '{"n": 2}') AS theirs \gset
SELECT event_bus.emit('e', 'T', '{"n": 3}') AS undelivered \gset
SELECT count(*) FROM event_bus.claim('s', 1);
SELECT count(*) FROM event_bus.claim('s-other', 1);
SELECT try($$SELECT event_bus.ack('nobody', ARRAY[1])$$);
SELECT try($$SELECT event_bus.ack('s', NULL)$$);
SELECT try($$SELECT event_bus.ack('s', ARRAY[NULL]::bigint[])$$);
SELECT try(format($$SELECT event_bus.ack('s', ARRAY[%s, %s])$$, :mine, :theirs));
SELECT try(format($$SELECT event_bus.ack('s', ARRAY[%s])$$, :undelivered));
SELECT try($$SELECT event_bus.ack('s', ARRAY[999999999])$$);
SELECT try(format($$SELECT event_bus.fail('s', %s)$$, :theirs));
SELECT try($$SELECT event_bus.fail('s', NULL)$$);
SELECT try(format($$SELECT event_bus.fail('s', %s, 'x', retry_in => '-1 minute')$$, :mine));
SELECT try(format($$SELECT event_bus.dead_letter('s', %s)$$, :theirs));
SELECT try(format($$SELECT event_bus.dead_letter('s-other', %s)$$, :mine));
-- nothing of the above changed the lease
SELECT event_bus._unpack_seqs(seqs) = ARRAY[:mine]::bigint[] AS still_leased FROM event_bus.leases WHERE subscription = 's';
SELECT event_bus.ack('s', ARRAY[:mine]);
SELECT try(format($$SELECT event_bus.fail('s', %s)$$, :mine));
SELECT try(format($$SELECT event_bus.dead_letter('s', %s, 'x')$$, :mine));

-- waiting without a snapshot
SELECT try($$CALL event_bus.wait('nobody', '1 s', NULL)$$);
SELECT try($$CALL event_bus.wait(NULL, '1 s', NULL)$$);
SELECT try($$CALL event_bus.wait('s', NULL, NULL)$$);
SELECT try($$CALL event_bus.wait('s', '-1 s', NULL)$$);
SELECT try($$CALL event_bus.wait('s', '2 hours', NULL)$$);

-- admin functions
SELECT try($$SELECT event_bus.pause('nobody')$$);
SELECT try($$SELECT event_bus.resume(NULL)$$);
SELECT try($$SELECT event_bus.redrive('nobody')$$);
SELECT try($$SELECT event_bus.purge_dead_letters('nobody')$$);
SELECT try($$SELECT event_bus.drop_topic('missing')$$);
SELECT try($$SELECT event_bus.drop_topic('e')$$);

-- The plain psql form of a few, with detail and hint
SELECT event_bus.emit('missing', 'T', '{}');
SELECT * FROM event_bus.claim('nobody');
SELECT event_bus.drop_topic('e');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM event_bus.claim('s');
ROLLBACK;
SELECT event_bus.unsubscribe('s');
SELECT event_bus.unsubscribe('s-other');
