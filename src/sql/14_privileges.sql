-----------------------------------------------------------------------------
-- Privileges
-----------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA event_bus FROM PUBLIC;
GRANT EXECUTE ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer),
                          event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer)
      TO event_bus_producer;
GRANT EXECUTE ON FUNCTION event_bus.claim(text, integer, interval, interval),
                          event_bus.ack(text, bigint[]),
                          event_bus.fail(text, bigint, text, interval),
                          event_bus.dead_letter(text, bigint, text),
                          event_bus.subscribe(text, text[], text[], text, integer, interval, interval, interval, boolean)
      TO event_bus_consumer;
GRANT EXECUTE ON FUNCTION event_bus.create_topic(text, integer, text),
                          event_bus.drop_topic(text),
                          event_bus.unsubscribe(text),
                          event_bus.run_maintenance(),
                          event_bus.pause(text),
                          event_bus.resume(text),
                          event_bus.replay(text, text),
                          event_bus.redrive(text, bigint[]),
                          event_bus.purge_dead_letters(text, interval)
      TO event_bus_admin;
GRANT SELECT ON event_bus.topics, event_bus.subscriptions TO event_bus_producer, event_bus_consumer;
GRANT SELECT ON ALL TABLES IN SCHEMA event_bus TO event_bus_admin;
GRANT EXECUTE ON FUNCTION event_bus._worker_status() TO event_bus_admin;
GRANT EXECUTE ON FUNCTION event_bus.capture(regclass, text, text[], jsonb, text[], text[], text[], text, text),
                          event_bus.uncapture(regclass)
      TO event_bus_producer;
GRANT EXECUTE ON FUNCTION event_bus.to_cloudevent(bigint, uuid, text, text, integer, text, jsonb, jsonb, timestamptz),
                          event_bus.to_cloudevent(event_bus.events)
      TO event_bus_producer, event_bus_consumer;

-- A worker for this database, as soon as this CREATE EXTENSION commits.
SELECT event_bus._launcher_rescan();
