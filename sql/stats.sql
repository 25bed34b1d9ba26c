-- event_bus.stats: cumulative counts in shared memory, added at commit.
\set SHOW_CONTEXT never
SELECT event_bus.create_topic('metered', 2);
SELECT event_bus.subscribe('meter', ARRAY['metered'], start => 'earliest', max_attempts => 2,
                           backoff_base => '1 ms', backoff_max => '1 ms');
-- A new topic and subscription start from zero, counting from their creation.
SELECT kind, name, emitted, claimed, acked, failed, retried, dead_lettered, expired, pending,
       stats_since >= now() - interval '1 minute' AS recent
  FROM event_bus.stats WHERE name IN ('metered', 'meter') ORDER BY kind;

-- Emits count when they commit; a rolled-back emit, or one in a savepoint
-- rolled back, does not.
SELECT count(event_bus.emit('metered', 'Tick', jsonb_build_object('n', g))) FROM generate_series(1, 5) g;
SELECT array_length(event_bus.emit_many('metered', 'Tick', ARRAY['{}', '{}']::jsonb[]), 1);
BEGIN;
SELECT count(event_bus.emit('metered', 'Tick', '{}')) FROM generate_series(1, 3);
SELECT emitted FROM event_bus.stats WHERE name = 'metered';   -- 7: these 3 not yet
ROLLBACK;
BEGIN;
SELECT event_bus.emit('metered', 'Tick', '{"kept": true}') > 0 AS emitted;
SAVEPOINT s;
SELECT count(event_bus.emit('metered', 'Tick', '{}')) FROM generate_series(1, 4);
ROLLBACK TO SAVEPOINT s;
SAVEPOINT t;
SELECT event_bus.emit('metered', 'Tick', '{"released": true}') > 0 AS emitted;
RELEASE SAVEPOINT t;
COMMIT;
SELECT emitted FROM event_bus.stats WHERE name = 'metered';   -- 5 + 2 + 2

-- Claims, acks, fails, retries, dead letters and expired leases.
CREATE TEMP TABLE b AS SELECT * FROM event_bus.claim('meter', 4);
SELECT event_bus.ack('meter', ARRAY(SELECT seq FROM b ORDER BY seq LIMIT 3), token => (SELECT lease_token FROM b LIMIT 1));
SELECT event_bus.fail('meter', (SELECT max(seq) FROM b), 'boom', token => (SELECT lease_token FROM b LIMIT 1));
SELECT claimed, acked, failed, retried, dead_lettered, expired, pending
  FROM event_bus.stats WHERE name = 'meter';
-- A claim rolled back is not counted; an ack in the same transaction as the
-- claim is.
BEGIN;
SELECT count(*) FROM event_bus.claim('meter', 2);
ROLLBACK;
SELECT claimed FROM event_bus.stats WHERE name = 'meter';
-- Leases that run out: expired, then retried, or dead after the second
-- attempt (the failed event comes back first, with attempt 2) ...
SELECT pg_sleep(0.02);
SELECT count(*), max(attempt) FROM event_bus.claim('meter', 3, lease => '1 ms');
SELECT pg_sleep(0.05);
SELECT retried, dead_lettered FROM event_bus.run_maintenance();
SELECT claimed, acked, failed, retried, dead_lettered, expired, pending
  FROM event_bus.stats WHERE name = 'meter';
-- ... and dead once the second attempt fails too, or by dead_letter().
SELECT pg_sleep(0.02);
DROP TABLE b;
CREATE TEMP TABLE b AS SELECT * FROM event_bus.claim('meter', 100);
SELECT count(*), min(attempt), max(attempt) FROM b;
SELECT event_bus.fail('meter', seq, 'again', token => lease_token) FROM b WHERE attempt = 2 ORDER BY seq;
SELECT event_bus.dead_letter('meter', (SELECT min(seq) FROM b WHERE attempt = 1), 'unwanted',
                             token => (SELECT lease_token FROM b LIMIT 1));
SELECT claimed, acked, failed, retried, dead_lettered, expired, pending
  FROM event_bus.stats WHERE name = 'meter';

-- Lag: pending events and the age of the oldest.
SELECT count(event_bus.emit('metered', 'Tick', '{}')) FROM generate_series(1, 3);
SELECT pending, oldest_pending_age > interval '0' AND oldest_pending_age < interval '1 minute' AS age_ok
  FROM event_bus.stats WHERE name = 'meter';
SELECT pending, oldest_pending_age IS NOT NULL AS has_age FROM event_bus.subscription_status
 WHERE subscription = 'meter';

-- Roles: a consumer sees the counts of its own subscriptions only; a
-- producer sees the topics; only admins reset.
CREATE ROLE eb_stats_a IN ROLE event_bus_consumer;
CREATE ROLE eb_stats_p IN ROLE event_bus_producer;
SET ROLE eb_stats_a;
SELECT event_bus.subscribe('meter-a', ARRAY['metered']);
SELECT kind, name FROM event_bus.stats WHERE name LIKE 'meter%' ORDER BY kind, name;
SELECT since IS NULL AS hidden, claimed FROM event_bus._stat('s', 'meter');
SELECT since IS NULL AS hidden FROM event_bus._stat('s', 'meter-a');
SELECT event_bus.stats_reset();
RESET ROLE;
SET ROLE eb_stats_p;
SELECT kind, name, emitted FROM event_bus.stats WHERE name LIKE 'meter%' ORDER BY kind, name;
RESET ROLE;

-- stats_reset() zeroes every counter of the database at once.
SELECT event_bus.stats_reset() AS reset_at \gset
SELECT kind, name, emitted, claimed, acked, failed, retried, dead_lettered, expired,
       stats_since = :'reset_at' AS since_reset
  FROM event_bus.stats WHERE name IN ('metered', 'meter') ORDER BY kind;
SELECT count(event_bus.emit('metered', 'Tick', '{}')) FROM generate_series(1, 2);
SELECT emitted FROM event_bus.stats WHERE name = 'metered';

-- A subscription dropped and created again starts from zero.
SELECT count(*) FROM event_bus.claim('meter', 1);
SELECT event_bus.unsubscribe('meter');
SELECT event_bus.subscribe('meter', ARRAY['metered']);
SELECT claimed FROM event_bus.stats WHERE name = 'meter';

-- pause() and resume() say whether they changed anything.
SELECT event_bus.pause('meter');
SELECT event_bus.pause('meter');
SELECT event_bus.resume('meter');
SELECT event_bus.resume('meter');

SELECT event_bus.unsubscribe('meter');
SELECT event_bus.unsubscribe('meter-a');
DROP ROLE eb_stats_a;
DROP ROLE eb_stats_p;
