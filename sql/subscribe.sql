\set SHOW_CONTEXT never
SELECT event_bus.create_topic('users', 2);
SELECT event_bus.create_topic('payments', 1);
SELECT event_bus.emit('users', 'UserCreated', '{"u": 1}', key => 'u1') > 0 AS emitted;
SELECT event_bus.emit('users', 'UserCreated', '{"u": 2}', key => 'u2') > 0 AS emitted;
-- 'latest' (the default) starts after what is already there
SELECT event_bus.subscribe('mailer', ARRAY['users']);
SELECT * FROM event_bus.claim('mailer');
-- 'earliest' sees everything
SELECT event_bus.subscribe('warehouse', ARRAY['users', 'payments'], start => 'earliest');
SELECT payload FROM event_bus.claim('warehouse') ORDER BY seq;
-- one cursor per topic and lane
SELECT subscription, topic, lane FROM event_bus.cursors ORDER BY 1, 2, 3;
-- a timestamp start: only events emitted at or after it
SELECT clock_timestamp() AS t0 \gset
SELECT pg_sleep(0.01);
SELECT event_bus.emit('users', 'UserCreated', '{"u": 3}', key => 'u1') > 0 AS emitted;
SELECT event_bus.subscribe('since', ARRAY['users'], start => :'t0');
SELECT payload FROM event_bus.claim('since') ORDER BY seq;
-- a type filter
SELECT event_bus.subscribe('deletions', ARRAY['users'], types => ARRAY['UserDeleted'], start => 'earliest');
SELECT event_bus.emit('users', 'UserDeleted', '{"u": 2}', key => 'u2') > 0 AS emitted;
SELECT type, payload FROM event_bus.claim('deletions') ORDER BY seq;
-- subscribing again with the same topics keeps the cursors and updates the options
SELECT event_bus.subscribe('mailer', ARRAY['users'], max_attempts => 9, lease => '1 minute', ordered => true);
SELECT subscription, topics, types, max_attempts, lease, backoff_base, backoff_max, ordered, paused
  FROM event_bus.subscriptions ORDER BY 1;
-- ... but not with other topics
SELECT event_bus.subscribe('mailer', ARRAY['users', 'payments']);
-- duplicate topics are folded
SELECT event_bus.subscribe('dups', ARRAY['users', 'users']);
SELECT topics FROM event_bus.subscriptions WHERE subscription = 'dups';
-- unsubscribe removes all state
SELECT event_bus.unsubscribe('dups');
SELECT count(*) FROM event_bus.cursors WHERE subscription = 'dups';
SELECT event_bus.unsubscribe('dups');
SELECT event_bus.unsubscribe('mailer');
SELECT event_bus.unsubscribe('warehouse');
SELECT event_bus.unsubscribe('since');
SELECT event_bus.unsubscribe('deletions');
