-- The trust model: who may call what, and every escalation attempt we know
-- of, each checked to have changed nothing.
\set VERBOSITY terse
CREATE ROLE eb_none;
CREATE ROLE eb_prod IN ROLE event_bus_producer;
CREATE ROLE eb_cons IN ROLE event_bus_consumer;
CREATE ROLE eb_cons2 IN ROLE event_bus_consumer;
CREATE ROLE eb_adm IN ROLE event_bus_admin;
CREATE ROLE eb_owner;                                   -- owns a table, no bus role
CREATE ROLE eb_prod_owner IN ROLE event_bus_producer;   -- producer that owns a table
GRANT USAGE, CREATE ON SCHEMA public TO eb_owner, eb_prod_owner;

SELECT event_bus.create_topic('priv', 1);
SELECT event_bus.create_topic('priv.closed', 1, private => true);
SET ROLE eb_owner;
CREATE TABLE priv_owned (id int PRIMARY KEY, v text);
SET ROLE eb_prod_owner;
CREATE TABLE priv_prod (id int PRIMARY KEY, v text);
GRANT INSERT ON priv_prod TO PUBLIC;
RESET ROLE;
SET ROLE eb_cons;
SELECT event_bus.subscribe('priv_s', ARRAY['priv'], start => 'earliest', max_attempts => 5);
RESET ROLE;
SELECT event_bus.emit_many('priv', 'T', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[]) IS NOT NULL AS emitted;
SET ROLE eb_cons;
SELECT count(*) AS claimed FROM event_bus.claim('priv_s', 2);
SELECT event_bus.dead_letter('priv_s', (SELECT min(seq) FROM event_bus.in_flight, unnest(seqs) seq), 'for the matrix');
RESET ROLE;

-- Run a statement as a role and roll it back: 'ok', 'denied' (42501) or
-- the SQLSTATE of another error.
CREATE FUNCTION try_as(r name, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE format('SET LOCAL ROLE %I', r);
        EXECUTE stmt;
        RAISE EXCEPTION USING ERRCODE = 'EBOK0';
    EXCEPTION
        WHEN SQLSTATE 'EBOK0' THEN RETURN 'ok';
        WHEN insufficient_privilege THEN RETURN 'denied';
        WHEN OTHERS THEN RETURN SQLSTATE;
    END;
END
$$;

-- What each role may do, by behaviour (ownership and topic grants
-- included).  Seqs: the subscription holds one event in flight, one dead.
WITH calls(what, stmt) AS (VALUES
    ('emit',                  $$SELECT event_bus.emit('priv', 'T', '{}')$$),
    ('emit private topic',    $$SELECT event_bus.emit('priv.closed', 'T', '{}')$$),
    ('emit_many',             $$SELECT event_bus.emit_many('priv', 'T', ARRAY['{}']::jsonb[])$$),
    ('internal _emit_rows',   $$SELECT event_bus._emit_rows('priv', 'T', '{}', NULL, NULL)$$),
    ('internal _emit_rows private', $$SELECT event_bus._emit_rows('priv.closed', 'T', '{}', NULL, NULL)$$),
    ('capture own table',     $$SELECT event_bus.capture('priv_prod', topic => 'priv')$$),
    ('capture others'' table', $$SELECT event_bus.capture('priv_owned', topic => 'priv')$$),
    ('capture new topic',     $$SELECT event_bus.capture('priv_prod', topic => 'priv.new')$$),
    ('uncapture own table',   $$SELECT event_bus.uncapture('priv_prod')$$),
    ('subscribe',             $$SELECT event_bus.subscribe('priv_new', ARRAY['priv'])$$),
    ('subscribe private',     $$SELECT event_bus.subscribe('priv_new', ARRAY['priv.closed'])$$),
    ('subscribe over priv_s', $$SELECT event_bus.subscribe('priv_s', ARRAY['priv'], max_attempts => 1)$$),
    ('claim',                 $$SELECT event_bus.claim('priv_s')$$),
    ('wait',                  $$CALL event_bus.wait('priv_s', '0', NULL)$$),
    ('ack',                   $$SELECT event_bus.ack('priv_s', ARRAY(SELECT unnest(seqs) FROM event_bus.in_flight))$$),
    ('fail',                  $$SELECT event_bus.fail('priv_s', (SELECT min(s) FROM event_bus.in_flight, unnest(seqs) s), 'x')$$),
    ('dead_letter',           $$SELECT event_bus.dead_letter('priv_s', (SELECT min(s) FROM event_bus.in_flight, unnest(seqs) s), 'x')$$),
    ('extend',                $$SELECT event_bus.extend('priv_s', ARRAY(SELECT unnest(seqs) FROM event_bus.in_flight))$$),
    ('pause',                 $$SELECT event_bus.pause('priv_s')$$),
    ('resume',                $$SELECT event_bus.resume('priv_s')$$),
    ('replay',                $$SELECT event_bus.replay('priv_s', 'latest')$$),
    ('redrive',               $$SELECT event_bus.redrive('priv_s')$$),
    ('purge_dead_letters',    $$SELECT event_bus.purge_dead_letters('priv_s')$$),
    ('unsubscribe',           $$SELECT event_bus.unsubscribe('priv_s')$$),
    ('create_topic',          $$SELECT event_bus.create_topic('priv.other')$$),
    ('drop_topic',            $$SELECT event_bus.drop_topic('priv.closed')$$),
    ('grant_topic',           $$SELECT event_bus.grant_topic('priv.closed', 'eb_none', 'consume')$$),
    ('revoke_topic',          $$SELECT event_bus.revoke_topic('priv', 'event_bus_consumer', 'consume')$$),
    ('alter_subscription_owner', $$SELECT event_bus.alter_subscription_owner('priv_s', 'eb_cons2')$$),
    ('run_maintenance',       $$SELECT event_bus.run_maintenance()$$),
    ('to_cloudevent',         $$SELECT event_bus.to_cloudevent(1, gen_random_uuid(), 't', 'T', 1, NULL, '{}', '{}', now())$$),
    ('view subscription_status', $$SELECT * FROM event_bus.subscription_status$$),
    ('view in_flight',        $$SELECT * FROM event_bus.in_flight$$),
    ('view retry_queue',      $$SELECT * FROM event_bus.retry_queue$$),
    ('view dead_letter_queue', $$SELECT * FROM event_bus.dead_letter_queue$$),
    ('view captured_tables',  $$SELECT * FROM event_bus.captured_tables$$),
    ('view worker_status',    $$SELECT * FROM event_bus.worker_status$$),
    ('view retention_status', $$SELECT * FROM event_bus.retention_status$$),
    ('table topics',          $$SELECT * FROM event_bus.topics$$),
    ('table topic_grants',    $$SELECT * FROM event_bus.topic_grants$$),
    ('table subscriptions',   $$SELECT * FROM event_bus.subscriptions$$),
    ('table events',          $$SELECT * FROM event_bus.events$$),
    ('insert into events',    $$INSERT INTO event_bus.events SELECT * FROM event_bus.events LIMIT 1$$),
    ('update cursors',        $$UPDATE event_bus.cursors SET position = 0$$),
    ('internal _claim_once',  $$SELECT * FROM event_bus._claim_once(NULL::event_bus.subscriptions, 10, '1 min', NULL)$$),
    ('internal _subscription', $$SELECT event_bus._subscription('priv_s')$$),
    ('internal _wait_check',  $$SELECT event_bus._wait_check('priv_s')$$),
    ('internal _caller',      $$SELECT event_bus._caller()$$),
    ('internal _capture_generate', $$SELECT event_bus._capture_generate('priv_prod')$$))
SELECT what, try_as('eb_none', stmt) AS "none", try_as('eb_prod', stmt) AS producer,
       try_as('eb_cons', stmt) AS "owner (consumer)", try_as('eb_cons2', stmt) AS "other consumer",
       try_as('eb_adm', stmt) AS admin, try_as('eb_owner', stmt) AS "table owner",
       try_as('eb_prod_owner', stmt) AS "producer+owner"
  FROM calls;

-- EXECUTE on every function of the extension, by role (new functions show
-- up here); PUBLIC has none.
SELECT p.oid::regprocedure AS function,
       string_agg(r, ', ' ORDER BY r) FILTER (WHERE has_function_privilege(r, p.oid, 'EXECUTE')) AS executable_by
  FROM pg_proc p, unnest(ARRAY['event_bus_producer', 'event_bus_consumer', 'event_bus_admin', 'eb_none']) r
 WHERE p.pronamespace = 'event_bus'::regnamespace
   AND p.oid IN (SELECT objid FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_bus') AND deptype = 'e')
 GROUP BY p.oid ORDER BY 1::text;
-- What PUBLIC may execute: only _row_jsonb, the to_jsonb of capture
-- triggers (it reads nothing and runs as its caller), and _emit_rows, their
-- emit, which refuses a caller who may not execute emit_many as emit_many
-- would: so that a writer of a captured table who may not emit is told so.
SELECT p.oid::regprocedure AS public_executable FROM pg_proc p
 WHERE p.pronamespace = 'event_bus'::regnamespace
   AND p.oid IN (SELECT objid FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_bus') AND deptype = 'e')
   AND EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0)
 ORDER BY 1::text;
-- SELECT on every table and view, by role; nobody but the owner may write.
SELECT c.relname,
       string_agg(r, ', ' ORDER BY r) FILTER (WHERE has_table_privilege(r, c.oid, 'SELECT')) AS readable_by,
       string_agg(r, ', ' ORDER BY r) FILTER (WHERE has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS writable_by
  FROM pg_class c, unnest(ARRAY['event_bus_producer', 'event_bus_consumer', 'event_bus_admin', 'eb_none']) r
 WHERE c.relnamespace = 'event_bus'::regnamespace AND c.relkind IN ('r', 'p', 'v')
   AND c.relname NOT LIKE 'events\_%'
 GROUP BY c.relname ORDER BY 1;

-- A consumer sees its own subscriptions only.
SET ROLE eb_cons2;
SELECT event_bus.subscribe('priv_s2', ARRAY['priv']);
SELECT subscription, owner FROM event_bus.subscription_status ORDER BY 1;
SELECT count(*) AS dead_seen FROM event_bus.dead_letter_queue;
RESET ROLE;
SET ROLE eb_cons;
SELECT subscription, owner, in_flight, dead FROM event_bus.subscription_status ORDER BY 1;
SELECT subscription, attempts, last_error FROM event_bus.dead_letter_queue;
RESET ROLE;
SET ROLE eb_adm;
SELECT subscription, owner FROM event_bus.subscription_status ORDER BY 1;
SELECT subscription, holds_retention IS NOT NULL AS has_retention FROM event_bus.retention_status ORDER BY 1;
RESET ROLE;

-- Hijacking a subscription: refused, and nothing changed.
SET ROLE eb_cons2;
SELECT event_bus.subscribe('priv_s', ARRAY['priv'], types => ARRAY['Nothing'], max_attempts => 1, ordered => true);
SELECT event_bus.ack('priv_s', ARRAY[1, 2, 3]);
SELECT event_bus.unsubscribe('priv_s');
RESET ROLE;
SELECT subscription, types, max_attempts, ordered, owner FROM event_bus.subscriptions WHERE subscription = 'priv_s';
-- Members of the owning role may work it; admins may give it away.
GRANT eb_cons TO eb_cons2;
SET ROLE eb_cons2;
SELECT count(*) AS claimed_by_member FROM event_bus.claim('priv_s', 1);
RESET ROLE;
REVOKE eb_cons FROM eb_cons2;
SET ROLE eb_adm;
SELECT event_bus.alter_subscription_owner('priv_s2', 'eb_cons');
RESET ROLE;
SELECT owner FROM event_bus.subscriptions WHERE subscription = 'priv_s2';

-- Topic grants: a private topic needs a grant; revoking takes it back.
SET ROLE eb_prod;
SELECT event_bus.emit('priv.closed', 'T', '{}');
RESET ROLE;
SELECT event_bus.grant_topic('priv.closed', 'eb_prod', 'produce');
SELECT event_bus.grant_topic('priv.closed', 'eb_prod', 'produce') AS granted_again;
SET ROLE eb_prod;
SELECT event_bus.emit('priv.closed', 'T', '{}') > 0 AS emitted_with_grant;
RESET ROLE;
SELECT event_bus.revoke_topic('priv.closed', 'eb_prod', 'produce');
SET ROLE eb_prod;
SELECT event_bus.emit('priv.closed', 'T', '{}');
RESET ROLE;
SELECT event_bus.grant_topic('priv.closed', 'eb_prod', 'publish');
SELECT event_bus.grant_topic('priv.nope', 'eb_prod', 'produce');
SELECT topic, privilege, grantee FROM event_bus.topic_grants WHERE topic LIKE 'priv%' ORDER BY 1, 2, 3;
-- A role that loses its membership loses the grant at once (in this
-- backend too, which caches grants).
SET ROLE eb_prod;
SELECT event_bus.emit('priv', 'T', '{}') > 0 AS emitted;
RESET ROLE;
REVOKE event_bus_producer FROM eb_prod;
GRANT USAGE ON SCHEMA event_bus TO eb_prod;
GRANT EXECUTE ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer, text, timestamptz) TO eb_prod;
SET ROLE eb_prod;
SELECT event_bus.emit('priv', 'T', '{}');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer, text, timestamptz) FROM eb_prod;
REVOKE USAGE ON SCHEMA event_bus FROM eb_prod;
GRANT event_bus_producer TO eb_prod;

-- Capture: no caller text ever runs with the extension owner's rights.
SET ROLE eb_prod_owner;
-- a statement smuggled into the condition
SELECT event_bus.capture('priv_prod', topic => 'priv',
       condition => $$true) FROM pg_class; CREATE ROLE eb_pwned SUPERUSER; SELECT (true$$);
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$true; CREATE ROLE eb_pwned SUPERUSER$$);
-- an IMMUTABLE wrapper around a privileged command: planning would fold it
CREATE FUNCTION public.priv_escalate(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    ALTER ROLE eb_prod_owner SUPERUSER;
    RETURN true;
END
$$;
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$public.priv_escalate(1) AND v <> 'x'$$);
SELECT condition FROM event_bus.captured_tables WHERE "table" = 'priv_prod'::regclass;
-- the condition resolves names with the caller's search_path, and is stored
-- schema-qualified: no later search_path changes what it calls
CREATE FUNCTION public.priv_lower(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower($1) $$;
SET search_path = public, pg_catalog;
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$priv_lower(v) <> 'x'$$);
RESET search_path;
SELECT condition FROM event_bus.captured_tables WHERE "table" = 'priv_prod'::regclass;
-- subqueries, aggregates and several expressions are refused
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$(SELECT rolsuper FROM pg_roles LIMIT 1)$$);
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$count(*) > 0$$);
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$v <> 'x', true$$);
SELECT event_bus.capture('priv_prod', topic => 'priv', condition => $$v$$);
-- names that look like SQL are data
SELECT event_bus.capture('priv_prod', topic => 'priv'';drop table x;--');
SELECT event_bus.capture('priv_prod', topic => 'priv', types => '{"insert": "x''); DROP TABLE priv_prod; --"}');
RESET ROLE;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN ('eb_prod_owner', 'eb_pwned') ORDER BY 1;
SELECT to_regclass('priv_prod') IS NOT NULL AS table_still_there;
-- The condition runs as whoever writes, never as the extension's owner:
-- the wrapper's ALTER ROLE fails for the table owner.
SET ROLE eb_prod_owner;
INSERT INTO priv_prod VALUES (1, 'a');
RESET ROLE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'eb_prod_owner';
SET ROLE eb_prod_owner;
SELECT event_bus.capture('priv_prod', topic => 'priv', types => '{"insert": "x''); DROP TABLE priv_prod; --"}',
                         condition => $$v <> 'skip'$$);
INSERT INTO priv_prod VALUES (2, 'b'), (3, 'skip');
RESET ROLE;
SELECT type, payload FROM event_bus.events WHERE topic = 'priv' AND payload ? 'v' ORDER BY seq;
-- A writer without the produce grant cannot emit through a capture.
SET ROLE eb_none;
INSERT INTO priv_prod VALUES (4, 'by a role that may not produce');
RESET ROLE;

-- Bounds on every interval and number a caller gives.
SET ROLE eb_cons;
SELECT event_bus.subscribe('priv_b', ARRAY['priv'], lease => '1000000 years');
SELECT event_bus.subscribe('priv_b', ARRAY['priv'], backoff_base => '600000 years', backoff_max => '600000 years');
SELECT event_bus.subscribe('priv_b', ARRAY['priv'], backoff_max => '1 year');
SELECT event_bus.subscribe('priv_b', ARRAY['priv'], max_attempts => 1000000);
SELECT event_bus.claim('priv_s', 1, lease => '1000 years');
SELECT event_bus.claim('priv_s', 1, wait => '1000 years');
SELECT event_bus.fail('priv_s', 1, 'x', retry_in => '1000 years');
SELECT event_bus.purge_dead_letters('priv_s', older_than => '100000 years');
RESET ROLE;
-- The largest allowed backoff cannot overflow.
SELECT event_bus._backoff('1 day', '7 days', 1000) BETWEEN '3 days 12:00' AND '7 days' AS capped;

-- Internal functions refuse to be called outside the API, even by a superuser.
SELECT event_bus._caller();
SELECT * FROM event_bus._subscription('priv_s');

-- Names with quotes, separators and unicode are refused.
SELECT event_bus.subscribe('priv"s', ARRAY['priv']);
SELECT event_bus.subscribe('priv;s', ARRAY['priv']);
SELECT event_bus.subscribe('prïv', ARRAY['priv']);
SELECT event_bus.create_topic('Priv');

SELECT event_bus.uncapture('priv_prod');
SELECT event_bus.unsubscribe('priv_s');
SELECT event_bus.unsubscribe('priv_s2');
DROP TABLE priv_owned, priv_prod;
DROP FUNCTION public.priv_escalate(int), public.priv_lower(text), try_as(name, text);
REVOKE ALL ON SCHEMA public FROM eb_owner, eb_prod_owner;
DROP ROLE eb_none, eb_prod, eb_cons, eb_cons2, eb_adm, eb_owner, eb_prod_owner;
