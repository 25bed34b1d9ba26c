\set SHOW_CONTEXT never
-- create_topic is idempotent for the same lane count
SELECT event_bus.create_topic('orders', 4, 'Order lifecycle');
SELECT event_bus.create_topic('orders', 4);
SELECT event_bus.create_topic('orders');
SELECT event_bus.create_topic('orders', 8);
SELECT event_bus.create_topic('billing.v1');
SELECT event_bus.create_topic('a_b-c.d');
SELECT topic, lanes, description FROM event_bus.topics ORDER BY topic;
-- names
SELECT event_bus.create_topic('Orders');
SELECT event_bus.create_topic('.orders');
SELECT event_bus.create_topic('or ders');
SELECT event_bus.create_topic('');
SELECT event_bus.create_topic(NULL);
SELECT event_bus.create_topic(repeat('x', 49));
SELECT event_bus.create_topic(repeat('x', 48));
SELECT event_bus.create_topic('t0', 0);
SELECT event_bus.create_topic('t257', 257);
SELECT event_bus.create_topic('tnull', NULL);
-- drop
SELECT event_bus.drop_topic(repeat('x', 48));
SELECT event_bus.drop_topic('a_b-c.d');
SELECT event_bus.drop_topic('a_b-c.d');
SELECT event_bus.subscribe('orders-reader', '{orders}');
SELECT event_bus.drop_topic('orders');
SELECT event_bus.unsubscribe('orders-reader');
SELECT event_bus.drop_topic('orders');
SELECT topic, lanes FROM event_bus.topics ORDER BY topic;
SELECT event_bus.drop_topic('billing.v1');
