-----------------------------------------------------------------------------
-- Privileges.  Producers emit and capture into topics they were granted;
-- consumers subscribe to topics they were granted and work (claim, ack,
-- pause, replay, redrive, purge, drop) the subscriptions their roles own,
-- seeing only those in the views; admins do everything and see everything.
-----------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA event_bus FROM PUBLIC;
REVOKE ALL ON PROCEDURE event_bus.wait(text, interval) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE event_bus.wait(text, interval) TO event_bus_consumer;
GRANT EXECUTE ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer, text, timestamptz),
                          event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer, text[], timestamptz),
                          event_bus.capture(regclass, text, text[], jsonb, text[], text[], text[], text, text),
                          event_bus.uncapture(regclass),
                          event_bus.cancel_scheduled(uuid)
      TO event_bus_producer;
-- Capture triggers run as whoever writes to the captured table: such a
-- writer who may not emit must hear it from emit_many.  _row_jsonb is
-- to_jsonb (it reads nothing and runs as its caller); _emit_rows checks
-- the caller's EXECUTE on emit_many and refuses as emit_many would.
GRANT EXECUTE ON FUNCTION event_bus._row_jsonb(record),
                          event_bus._emit_rows(text, text, jsonb, text, jsonb)
      TO PUBLIC;
GRANT EXECUTE ON FUNCTION event_bus.claim(text, integer, interval, interval),
                          event_bus.ack(text, bigint[], uuid),
                          event_bus.fail(text, bigint, text, interval, uuid),
                          event_bus.dead_letter(text, bigint, text, uuid),
                          event_bus.extend(text, bigint[], interval, uuid),
                          event_bus.subscribe(text, text[], text[], text, integer, interval, interval, interval, boolean),
                          event_bus.unsubscribe(text),
                          event_bus.pause(text),
                          event_bus.resume(text),
                          event_bus.replay(text, text),
                          event_bus.redrive(text, bigint[]),
                          event_bus.purge_dead_letters(text, interval)
      TO event_bus_consumer;
GRANT EXECUTE ON FUNCTION event_bus.create_topic(text, integer, text, boolean, interval),
                          event_bus.drop_topic(text),
                          event_bus.grant_topic(text, regrole, text),
                          event_bus.revoke_topic(text, regrole, text),
                          event_bus.alter_subscription_owner(text, regrole),
                          event_bus.run_maintenance(),
                          event_bus._worker_status(),
                          event_bus._retention_counts(),
                          event_bus._horizon(),
                          event_bus._oldest_needed(text, bigint),
                          event_bus._open_emitters(),
                          event_bus._topic_bit(text)
      TO event_bus_admin;
GRANT EXECUTE ON FUNCTION event_bus.to_cloudevent(bigint, uuid, text, text, integer, text, jsonb, jsonb, timestamptz),
                          event_bus.to_cloudevent(event_bus.events),
                          event_bus.to_cloudevent(event_bus.delivery),
                          event_bus.to_cloudevent(event_bus.dead_letter_queue),
                          event_bus._visible(regrole)
      TO event_bus_producer, event_bus_consumer;
-- Called by the views they may read (function privileges are checked as the
-- reader, not as the view's owner).
GRANT EXECUTE ON FUNCTION event_bus._handed_out(bigint, xid8, bigint, xid8[], bigint[]),
                          event_bus._topic_hash(text),
                          event_bus._unpack_seqs(bytea),
                          event_bus._stat("char", text),
                          event_bus._lag()
      TO event_bus_producer, event_bus_consumer;
GRANT EXECUTE ON FUNCTION event_bus.stats_reset() TO event_bus_admin;
GRANT SELECT ON event_bus.stats TO event_bus_producer, event_bus_consumer;
GRANT SELECT ON event_bus.topics, event_bus.topic_grants TO event_bus_producer, event_bus_consumer;
GRANT SELECT ON event_bus.captured_tables, event_bus.scheduled TO event_bus_producer;
GRANT SELECT ON event_bus.subscription_status, event_bus.in_flight, event_bus.retry_queue,
                event_bus.dead_letter_queue
      TO event_bus_consumer;
GRANT SELECT ON ALL TABLES IN SCHEMA event_bus TO event_bus_admin;
GRANT SELECT ON SEQUENCE event_bus.event_seq TO event_bus_admin;    -- retention_status reads the horizon

-- A worker for this database, as soon as this CREATE EXTENSION commits.
SELECT event_bus._launcher_rescan();
