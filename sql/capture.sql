-- Outbox capture: row changes become events in the same transaction.
\set SHOW_CONTEXT never
CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric, status text, secret text);
SELECT event_bus.capture('orders', exclude_columns => ARRAY['secret']);
SELECT "table", topic, operations, types, key_columns, exclude_columns, update_mode FROM event_bus.captured_tables;
-- the topic was created from the table name
SELECT topic, lanes FROM event_bus.topics WHERE topic = 'orders';
SELECT event_bus.subscribe('audit', ARRAY['orders']);
SELECT last_value AS base FROM event_bus.event_seq \gset
INSERT INTO orders VALUES (1, 'ada', 10, 'new', 's1'), (2, 'bob', 20, 'new', 's2');
UPDATE orders SET status = 'paid' WHERE id = 1;
DELETE FROM orders WHERE id = 2;
SELECT seq - :base AS n, type, key, payload, headers FROM event_bus.claim('audit', 100) ORDER BY seq;
SELECT event_bus.ack('audit', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases));

-- A rollback, or a rolled-back savepoint, leaves no event
BEGIN;
INSERT INTO orders VALUES (3, 'cy', 30, 'new', 's3');
ROLLBACK;
BEGIN;
INSERT INTO orders VALUES (4, 'di', 40, 'new', 's4');
SAVEPOINT sp;
INSERT INTO orders VALUES (5, 'ed', 50, 'new', 's5');
ROLLBACK TO SAVEPOINT sp;
UPDATE orders SET total = 41 WHERE id = 4;
COMMIT;
-- events of one transaction arrive together, in statement order
SELECT type, key, payload->>'total' AS total FROM event_bus.claim('audit', 100) ORDER BY seq;
SELECT event_bus.ack('audit', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases));

-- Bulk statements emit set-based, in row order
INSERT INTO orders SELECT g, 'bulk', g, 'new', NULL FROM generate_series(100, 1099) g;
SELECT count(*), min(key::int), max(key::int),
       bool_and(key::int = (payload->>'id')::int) AS key_is_pk,
       array_agg(key::int ORDER BY seq) = ARRAY(SELECT generate_series(100, 1099)) AS row_order
  FROM event_bus.events WHERE topic = 'orders' AND seq > :base AND type = 'orders.inserted' AND key::int >= 100;
SELECT count(*) FROM event_bus.claim('audit', 2000);
SELECT event_bus.ack('audit', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases));
DELETE FROM orders WHERE id >= 100;
SELECT count(*) AS deleted_events FROM event_bus.claim('audit', 2000);
SELECT event_bus.ack('audit', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases));
-- Captured statements emit through _emit_rows, which writes each event as
-- its row comes (its seqs taken in blocks of 1, 1, 2, 4, ... 1000: the
-- 5,000 events below cross several partitions of 1,000, made meanwhile)
SELECT max(seq) AS before_rows FROM event_bus.events \gset
SELECT event_bus._emit_rows('orders', 'Rows', jsonb_build_object('i', g), (g % 7)::text, '{"h": 1}')
  FROM generate_series(1, 5000) g;
SELECT count(*) AS events, count(DISTINCT seq) AS seqs,
       array_agg((payload->>'i')::int ORDER BY seq) = ARRAY(SELECT generate_series(1, 5000)) AS row_order,
       bool_and(key = ((payload->>'i')::int % 7)::text AND headers = '{"h": 1}') AS keys_and_headers,
       max(seq) - min(seq) + 1 - count(*) < 1000 AS few_seqs_unused
  FROM event_bus.events WHERE topic = 'orders' AND type = 'Rows' AND seq > :before_rows;
SELECT count(*) AS rows_claimed FROM event_bus.claim('audit', 6000);
SELECT event_bus.ack('audit', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases));
SELECT event_bus._emit_rows('orders', 'Rows', '{}', NULL, NULL) FROM generate_series(1, 0);
SELECT event_bus._emit_rows(t, 'Rows', '{}', NULL, NULL) FROM unnest(ARRAY['orders', 'other']) t;
SELECT event_bus._emit_rows('orders', 'Rows', NULL, NULL, NULL);
SELECT event_bus._emit_rows('orders', 'Rows', '{}', NULL, NULL) OVER ();
SELECT event_bus._emit_rows_final(NULL);

-- Options: event types, changed columns only, a row filter
SELECT event_bus.capture('orders', types => '{"insert": "OrderPlaced", "update": "OrderChanged"}',
                         update_mode => 'changed', condition => 'total >= 10');
INSERT INTO orders VALUES (6, 'fa', 5, 'new', 'x'), (7, 'gi', 70, 'new', 'y');
UPDATE orders SET status = 'shipped', total = 12 WHERE id IN (1, 6);
SELECT type, key, payload FROM event_bus.claim('audit', 100) ORDER BY seq;
SELECT event_bus.ack('audit', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases));
-- old and new images, included columns only, truncate, another topic
SELECT event_bus.create_topic('order-history', 1);
SELECT event_bus.subscribe('history', ARRAY['order-history']);
SELECT event_bus.capture('orders', topic => 'order-history', columns => ARRAY['id', 'status'],
                         update_mode => 'old_and_new', operations => ARRAY['update', 'truncate']);
INSERT INTO orders VALUES (8, 'hu', 80, 'new', NULL);
UPDATE orders SET status = 'done' WHERE id = 8;
TRUNCATE orders;
SELECT type, key, payload FROM event_bus.claim('history', 100) ORDER BY seq;
SELECT count(*) AS nothing_on_old_topic FROM event_bus.claim('audit', 100);

-- DDL: renames are followed, dropped excluded columns forgotten, new
-- columns appear; dropping a key or included column is refused
SELECT event_bus.capture('orders', exclude_columns => ARRAY['secret', 'total']);
ALTER TABLE orders RENAME COLUMN customer TO client;
ALTER TABLE orders ADD COLUMN note text DEFAULT 'n/a';
ALTER TABLE orders DROP COLUMN secret;
INSERT INTO orders (id, client, total, status) VALUES (9, 'io', 90, 'new');
SELECT type, payload FROM event_bus.claim('audit', 100) ORDER BY seq;
SELECT exclude_columns FROM event_bus.captured_tables;
SELECT event_bus.capture('orders', columns => ARRAY['id', 'client']);
ALTER TABLE orders RENAME COLUMN client TO customer;
SELECT columns FROM event_bus.captured_tables;
ALTER TABLE orders DROP COLUMN customer;
ALTER TABLE orders DROP COLUMN id;
ALTER TABLE orders DROP CONSTRAINT orders_pkey;
INSERT INTO orders (id, customer, total, status) VALUES (10, 'jo', 100, 'new');
SELECT type, payload FROM event_bus.claim('audit', 100) ORDER BY seq;
-- the condition follows renamed columns; dropping or retyping a column it
-- uses is refused
SELECT event_bus.capture('orders', condition => 'status <> ''draft''');
ALTER TABLE orders RENAME COLUMN status TO state;
SELECT condition FROM event_bus.captured_tables;
ALTER TABLE orders DROP COLUMN state;
ALTER TABLE orders ALTER COLUMN state TYPE varchar(20);
ALTER TABLE orders RENAME COLUMN state TO status;
ALTER TABLE orders RENAME COLUMN note TO remark;
INSERT INTO orders (id, customer, total, status) VALUES (12, 'kb', 120, 'draft'), (13, 'kc', 130, 'paid');
SELECT payload->>'id' AS captured FROM event_bus.claim('audit', 100) ORDER BY seq;
-- columns named like the generated code's aliases, or with % in the name
CREATE TABLE odd (n int PRIMARY KEY, o text, "r" int, "50%" text, "%1$s" text);
SELECT event_bus.capture('odd', update_mode => 'old_and_new', condition => $$n > 0 AND "50%" <> 'x'$$);
INSERT INTO odd VALUES (1, 'a', 2, 'half', 'fmt');
UPDATE odd SET o = 'b';
SELECT type, key, payload FROM event_bus.events WHERE topic = 'odd' ORDER BY seq;
SELECT event_bus.capture('odd', columns => ARRAY['n', '50%', '%1$s'], update_mode => 'changed');
UPDATE odd SET "%1$s" = 'fmt2';
SELECT type, key, payload FROM event_bus.events WHERE topic = 'odd' ORDER BY seq DESC LIMIT 1;
-- Partitions and inheritance children: statements that name them directly
-- are captured too, each row once; new partitions are picked up, detached
-- ones let go
CREATE TABLE parted (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us (v text, region text, id int NOT NULL, PRIMARY KEY (id, region));   -- other column order
ALTER TABLE parted ATTACH PARTITION parted_us FOR VALUES IN ('us');
SELECT event_bus.capture('parted', update_mode => 'changed', operations => ARRAY['insert', 'update', 'delete', 'truncate']);
INSERT INTO parted VALUES (1, 'eu', 'via parent'), (2, 'us', 'via parent');
INSERT INTO parted_eu VALUES (3, 'eu', 'direct');
UPDATE parted_us SET v = 'direct update' WHERE id = 2;
UPDATE parted SET v = 'parent update' WHERE id IN (1, 3);
DELETE FROM parted_eu WHERE id = 3;
CREATE TABLE parted_ap PARTITION OF parted FOR VALUES IN ('ap');
INSERT INTO parted_ap VALUES (4, 'ap', 'new partition');
ALTER TABLE parted DETACH PARTITION parted_us;
INSERT INTO parted_us VALUES ('after detach', 'us', 5);
SELECT type, key, payload FROM event_bus.events WHERE topic = 'parted' ORDER BY seq;
SELECT tgrelid::regclass AS "table", count(*) AS capture_triggers FROM pg_trigger
 WHERE tgname LIKE 'event\_bus\_capture\_%' AND tgrelid::regclass::text LIKE 'parted%' GROUP BY 1 ORDER BY 1;
SELECT try($$SELECT event_bus.capture('parted_eu')$$);
SELECT event_bus.uncapture('parted');
SELECT count(*) AS capture_triggers_left FROM pg_trigger
 WHERE tgname LIKE 'event\_bus\_capture\_%' AND tgrelid::regclass::text LIKE 'parted%';
DROP TABLE parted, parted_us;
CREATE TABLE animals (id int PRIMARY KEY, name text);
CREATE TABLE cats (lives int) INHERITS (animals);
SELECT event_bus.capture('animals');
INSERT INTO animals VALUES (1, 'generic');
INSERT INTO cats VALUES (2, 'tom', 9);
UPDATE animals SET name = upper(name);
SELECT type, payload FROM event_bus.events WHERE topic = 'animals' ORDER BY seq;
SELECT try($$SELECT event_bus.capture('cats')$$);
ALTER TABLE cats NO INHERIT animals;
INSERT INTO cats VALUES (3, 'no longer an animal', 1);
SELECT count(*) AS after_no_inherit FROM event_bus.events WHERE topic = 'animals';
SELECT event_bus.uncapture('animals');
DROP TABLE animals, cats;
-- DROP EXTENSION refuses to leave captured tables with broken triggers
SELECT try($$DROP EXTENSION event_bus$$);
SELECT event_bus.uncapture('odd');
DROP TABLE odd;

-- uncapture is idempotent; dropping a captured table cleans the registry
SELECT event_bus.uncapture('orders');
SELECT event_bus.uncapture('orders');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal;
INSERT INTO orders (id, customer, total, status) VALUES (11, 'ka', 110, 'new');
SELECT count(*) AS after_uncapture FROM event_bus.claim('audit', 100);
CREATE TABLE "Items" (sku text PRIMARY KEY, qty int);
SELECT event_bus.capture('"Items"');
SELECT event_bus.capture('"Items"', topic => 'items');
DROP TABLE "Items";
SELECT count(*) AS captures_left FROM event_bus.captures;
SELECT count(*) AS generated_functions_left FROM pg_proc
 WHERE pronamespace = 'event_bus'::regnamespace AND proname ~ '^_capture_[0-9]+$';

-- Errors
SELECT try($$SELECT event_bus.capture(NULL)$$);
SELECT try($$SELECT event_bus.capture('event_bus.topics_pkey')$$);
SELECT try($$SELECT event_bus.capture('orders', operations => ARRAY['upsert'])$$);
SELECT try($$SELECT event_bus.capture('orders', operations => ARRAY[]::text[])$$);
SELECT try($$SELECT event_bus.capture('orders', types => '["x"]')$$);
SELECT try($$SELECT event_bus.capture('orders', types => '{"insert": ""}')$$);
SELECT try($$SELECT event_bus.capture('orders', types => '{"merge": "X"}')$$);
SELECT try($$SELECT event_bus.capture('orders', columns => ARRAY['nope'])$$);
SELECT try($$SELECT event_bus.capture('orders', key_columns => ARRAY['nope'])$$);
SELECT try($$SELECT event_bus.capture('orders', columns => ARRAY['id'], exclude_columns => ARRAY['total'])$$);
SELECT try($$SELECT event_bus.capture('orders', update_mode => 'diff')$$);
SELECT try($$SELECT event_bus.capture('orders', condition => 'no_such_column > 1')$$);
SELECT try($$SELECT event_bus.capture('orders', condition => 'total >')$$);
SELECT try($$SELECT event_bus.capture('orders', topic => 'Bad Topic')$$);
CREATE TABLE nokey (a int, b text);
SELECT try($$SELECT event_bus.capture('nokey', update_mode => 'changed')$$);
SELECT event_bus.capture('nokey');
INSERT INTO nokey VALUES (1, 'x');
SELECT key IS NULL AS no_key, payload FROM event_bus.events WHERE topic = 'nokey';
SELECT array_agg(relid) AS captured_now FROM event_bus.captures;

-- Security: only the owner may capture; writing to a captured table does
-- not let a role emit when it could not emit directly
CREATE ROLE eb_owner IN ROLE event_bus_producer;
CREATE ROLE eb_writer;
CREATE ROLE eb_stranger IN ROLE event_bus_producer;
GRANT USAGE, CREATE ON SCHEMA public TO eb_owner;
SET ROLE eb_owner;
CREATE TABLE owned (id int PRIMARY KEY, v text);
GRANT INSERT ON owned TO eb_writer, eb_stranger;
-- only admins create topics
SELECT try($$SELECT event_bus.capture('owned')$$);
RESET ROLE;
SELECT event_bus.create_topic('owned');
SET ROLE eb_owner;
SELECT event_bus.capture('owned');
CREATE TEMP TABLE scratch (id int);
SELECT try($$SELECT event_bus.capture('scratch')$$);
RESET ROLE;
SET ROLE eb_stranger;
SELECT try($$SELECT event_bus.uncapture('owned')$$);
SELECT try($$SELECT event_bus.capture('owned', condition => 'false')$$);
INSERT INTO owned VALUES (1, 'by a producer');
RESET ROLE;
SET ROLE eb_writer;
SELECT try($$INSERT INTO owned VALUES (2, 'by a role that may not emit')$$);
RESET ROLE;
SELECT payload FROM event_bus.events WHERE topic = 'owned' ORDER BY seq;
-- the generated trigger function pins search_path and is not SECURITY DEFINER
SELECT prosecdef, proconfig FROM pg_proc WHERE proname = (SELECT function_name FROM event_bus.captures WHERE relid = 'owned'::regclass);

-- Captured rows become payloads through _row_jsonb, which must make what
-- to_jsonb makes: every kind of column it converts itself, with NULLs,
-- special values and a dropped column; a row type with any other column
-- (here jsonb, an array, a domain) goes to to_jsonb whole.
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE kinds (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, n2 numeric(12,2),
                    d date, ts timestamp, tz timestamptz, t text, v varchar(10), c char(4), u uuid, gone int);
ALTER TABLE kinds DROP COLUMN gone;
INSERT INTO kinds VALUES
  (true, -32768, 2147483647, -9223372036854775808, 1.5, -0.0, 12345678901234567890.0123, 1.25,
   '2026-01-02', '2026-01-02 03:04:05.678', '2026-01-02 03:04:05.678+02', 'quote " back \ tab 	 é ✓', 'varchar', 'ab',
   '00000000-0000-0000-0000-000000000001'),
  (false, 0, 0, 0, 'NaN', 'Infinity', 'NaN', 0, 'infinity', '-infinity', 'infinity', '', '', '', NULL),
  (NULL, NULL, NULL, NULL, '-Infinity', 1e300, '-Infinity', -0.5, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (NULL, 1, 2, 3, 1e-40, 5e-324, 0.000000001, 99.99, '0044-03-15 BC', '2000-01-01', '1999-12-31 23:59:59.999999+00',
   repeat('x', 3000), 'x', 'x', gen_random_uuid());
SELECT count(*) AS rows, count(*) FILTER (WHERE event_bus._row_jsonb(k) = to_jsonb(k)
                                           AND event_bus._row_jsonb(k)::text = to_jsonb(k)::text
                                           AND pg_column_size(event_bus._row_jsonb(k)) = pg_column_size(to_jsonb(k))) AS same
  FROM kinds k;
SELECT event_bus._row_jsonb(k) FROM kinds k LIMIT 2;
-- rows of an anonymous record type (as those of a transition table are)
SELECT count(*) AS rows, count(*) FILTER (WHERE event_bus._row_jsonb(r) = to_jsonb(r)
                                           AND event_bus._row_jsonb(r)::text = to_jsonb(r)::text) AS same
  FROM (SELECT k.*, length(k.t) AS computed FROM kinds k) r;
-- keys in jsonb's order (shorter first), and two columns of one name
SELECT event_bus._row_jsonb(r)::text, event_bus._row_jsonb(r) = to_jsonb(r) AS same
  FROM (SELECT 1 AS bb, 2 AS a, 3 AS ab, 4 AS b, NULL::numeric AS c, 1.50 AS "ä") r;
SELECT event_bus._row_jsonb(r)::text, event_bus._row_jsonb(r) = to_jsonb(r) AS same
  FROM (SELECT 1 AS a, 2 AS a) r;
CREATE TABLE others (id int, j jsonb, a int[], p positive);
INSERT INTO others VALUES (1, '{"x": [1, 2]}', '{1,2}', 3), (2, NULL, NULL, NULL);
SELECT event_bus._row_jsonb(o), event_bus._row_jsonb(o) = to_jsonb(o) AS same FROM others o;
-- a column added later is in the rows converted after
ALTER TABLE others ADD COLUMN extra text DEFAULT 'added';
ALTER TABLE kinds ADD COLUMN extra text DEFAULT 'added';
SELECT event_bus._row_jsonb(k) = to_jsonb(k) AS same, event_bus._row_jsonb(k)->>'extra' AS extra FROM kinds k LIMIT 1;
DROP TABLE kinds, others;
DROP DOMAIN positive;

-- CloudEvents
SELECT event_bus.to_cloudevent(e) - 'id' - 'time' - 'sequence' AS cloudevent
  FROM event_bus.events e WHERE topic = 'owned';
SELECT event_bus.to_cloudevent(1, '00000000-0000-0000-0000-000000000001', 'orders', 'OrderPlaced', 2, 'k1',
                               '{"a": 1}', '{"source": "/shop", "traceparent": "00-abc-def-01"}',
                               '2026-01-02 03:04:05.678+00');
SELECT event_bus.to_cloudevent(1, '00000000-0000-0000-0000-000000000001', 'orders', 'T', 1, NULL,
                               'null', '{}', '2026-01-02 03:04:05+00');

DROP TABLE owned, nokey, orders;
DROP OWNED BY eb_owner, eb_stranger, eb_writer;
DROP ROLE eb_owner, eb_writer, eb_stranger;
SELECT event_bus.unsubscribe('audit');
SELECT event_bus.unsubscribe('history');
