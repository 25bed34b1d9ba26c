\set SHOW_CONTEXT never
SELECT event_bus.create_topic('clicks', 2);
SELECT event_bus.subscribe('stats', ARRAY['clicks'], start => 'earliest');
SELECT count(event_bus.emit('clicks', 'Clicked', jsonb_build_object('n', g), key => 'p' || (g % 3))) FROM generate_series(1, 6) g;
SELECT subscription, topics, pending, in_flight, retrying, dead FROM event_bus.subscription_status;
SELECT count(*) FROM event_bus.claim('stats', 4);
SELECT subscription, pending, in_flight FROM event_bus.subscription_status;
SELECT subscription, topic, sum(events) FROM event_bus.in_flight GROUP BY 1, 2;
-- replay from the start is refused over events in flight; once they are
-- acked, cursors go back and every event comes again once
SELECT event_bus.replay('stats', 'earliest');
SELECT event_bus.ack('stats', ARRAY(SELECT unnest(seqs) FROM event_bus.in_flight WHERE subscription = 'stats'));
SELECT event_bus.replay('stats', 'earliest');
SELECT subscription, pending, in_flight FROM event_bus.subscription_status;
SELECT count(*) FROM event_bus.claim('stats', 100);
-- replay to the end
SELECT event_bus.replay('stats', 'latest');
SELECT pending FROM event_bus.subscription_status;
SELECT event_bus.replay('stats', 'yesterday noon');
SELECT event_bus.replay('stats', NULL);
SELECT event_bus.replay('nobody');
-- run_maintenance keeps two partitions of room
SELECT log_covered_upto > (SELECT last_value FROM event_bus.event_seq) + 1000 AS room
  FROM event_bus.run_maintenance();

-- Privileges: a role sees and touches only what it was granted.
CREATE ROLE eb_nobody;
CREATE ROLE eb_producer IN ROLE event_bus_producer;
CREATE ROLE eb_consumer IN ROLE event_bus_consumer;
SET ROLE eb_nobody;
SELECT try($$SELECT event_bus.emit('clicks', 'Clicked', '{}')$$);
SELECT try($$SELECT * FROM event_bus.claim('stats')$$);
SELECT try($$SELECT * FROM event_bus.events$$);
RESET ROLE;
SET ROLE eb_producer;
SELECT event_bus.emit('clicks', 'Clicked', '{"by": "producer"}') IS NOT NULL AS emitted;
SELECT try($$SELECT * FROM event_bus.claim('stats')$$);
SELECT try($$SELECT event_bus.create_topic('x')$$);
SELECT try($$INSERT INTO event_bus.events (seq) VALUES (1)$$);
SELECT try($$SELECT * FROM event_bus.events$$);
RESET ROLE;
SET ROLE eb_consumer;
SELECT try($$SELECT * FROM event_bus.claim('stats')$$);
RESET ROLE;
SELECT event_bus.alter_subscription_owner('stats', 'eb_consumer');
SET ROLE eb_consumer;
SELECT payload FROM event_bus.claim('stats');
SELECT try($$SELECT event_bus.emit('clicks', 'Clicked', '{}')$$);
SELECT try($$DELETE FROM event_bus.leases$$);
SELECT try($$SELECT event_bus.create_topic('x')$$);
RESET ROLE;
DROP ROLE eb_nobody, eb_producer, eb_consumer;
SELECT event_bus.unsubscribe('stats');
