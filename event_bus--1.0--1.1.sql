/*
 * event_bus upgrade from 1.0 to 1.1.
 *
 * Every schema change made since 1.0 is here and in src/sql/ (from which the
 * 1.1 install script is built); test/t/050_upgrade.pl checks that an upgraded
 * database ends up with exactly the catalog of a fresh 1.1 install.
 *
 * 1.1 is the trust model: subscriptions belong to the role that created
 * them, topics carry produce/consume grants, the public functions run as
 * their caller and call SECURITY DEFINER implementations (see src/api.c),
 * capture conditions are compiled as the table's owner and never run with
 * raised rights, and every interval a caller gives is bounded.
 */

\echo Use "ALTER EXTENSION event_bus UPDATE TO '1.1'" to load this file. \quit

-----------------------------------------------------------------------------
-- Internal helpers implemented in C
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus._caller() RETURNS oid
    AS 'MODULE_PATHNAME', 'eb_caller_sql' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._capture_compile(p_table regclass, p_condition text) RETURNS text
    AS 'MODULE_PATHNAME', 'eb_capture_compile' LANGUAGE C STRICT STABLE;
CREATE FUNCTION event_bus._capture_condition_sql(p_table regclass, p_expr text) RETURNS text
    AS 'MODULE_PATHNAME', 'eb_capture_condition_sql' LANGUAGE C STRICT STABLE;
CREATE FUNCTION event_bus._capture_depend(fn regprocedure) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_capture_depend' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._check_writable() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_check_writable_sql' LANGUAGE C STABLE;
CREATE FUNCTION event_bus._life_started() RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'eb_life_started' LANGUAGE C STABLE;
CREATE FUNCTION event_bus._wait_topics(gen bigint, timeout_ms integer, topics text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_wait_topics' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._emitters(topics text[], OUT max_seq bigint, OUT topics text[],
                                    OUT xids xid8[], OUT floors bigint[])
    AS 'MODULE_PATHNAME', 'eb_emitters_sql' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._open_emitters(OUT pid integer, OUT xid xid8, OUT lowest_seq bigint,
                                         OUT emitting_since timestamptz, OUT topic_bits bigint)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_open_emitters' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._topic_bit(topic text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_topic_bit_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
-- The topic's key in the log's index (events.topic_hash); fixed for ever,
-- since every log row stores it.
CREATE FUNCTION event_bus._topic_hash(topic text) RETURNS integer
    AS 'MODULE_PATHNAME', 'eb_topic_hash_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
-- The log's trigger: rows written other than by emit (a restore's COPY, an
-- INSERT) make every lane's head be read from the log again at commit.
CREATE FUNCTION event_bus._log_written() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eb_log_written' LANGUAGE C;
-- A lease's seqs, packed (leases.seqs): a bitmap from the lowest seq, or the
-- seqs themselves when they are too sparse for one (claim.c).
CREATE FUNCTION event_bus._pack_seqs(seqs bigint[]) RETURNS bytea
    AS 'MODULE_PATHNAME', 'eb_pack_seqs' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION event_bus._unpack_seqs(packed bytea) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'eb_unpack_seqs' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION event_bus._lane_next(p_position bigint, p_high bigint, p_xids xid8[], p_afters bigint[],
                                     max_seq bigint, emitters xid8[], floors bigint[],
                                     full_ boolean, last bigint, snap pg_snapshot, pending_read boolean,
                                     OUT next_position bigint, OUT next_high bigint, OUT next_xids xid8[], OUT next_afters bigint[])
    AS 'MODULE_PATHNAME', 'eb_lane_next' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._retention_counts(OUT database oid, OUT retention_runs bigint,
                                            OUT retention_failures bigint, OUT partitions_dropped bigint,
                                            OUT last_retention timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_retention_counts' LANGUAGE C VOLATILE;
-- Statistics in shared memory (see event_bus.stats).
CREATE FUNCTION event_bus._stat_add(kind "char", name text, counter text, n bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_stat_add' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._stat_new(kind "char", name text) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_stat_new' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._stat(kind "char", name text, OUT since timestamptz, OUT emitted bigint,
                                OUT claimed bigint, OUT acked bigint, OUT failed bigint, OUT retried bigint,
                                OUT dead_lettered bigint, OUT expired bigint)
    AS 'MODULE_PATHNAME', 'eb_stat_sql' LANGUAGE C STRICT VOLATILE;
-- Statement trigger on event_bus.subscriptions: the worker, which sends
-- NOTIFYs from its own copy of them (dispatch.c), reads them again.
CREATE FUNCTION event_bus._subscriptions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eb_subscriptions_changed' LANGUAGE C;
-- A row as a JSON object, as to_jsonb(row) makes it, with each column's
-- conversion looked up once per row type (capture.c): capture triggers turn
-- every captured row into a payload with it.
CREATE FUNCTION event_bus._row_jsonb(r record) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'eb_row_jsonb' LANGUAGE C STRICT STABLE PARALLEL SAFE;
-- Emit one event per row aggregated, each written as its row comes, and
-- return how many (emit.c): capture triggers run it over a statement's
-- transition table.  It checks what emit_many checks (EXECUTE on emit_many,
-- the produce grant of the topic); topic and type are the same for every row.
CREATE FUNCTION event_bus._emit_rows_step(internal, topic text, type text, payload jsonb, key text, headers jsonb)
    RETURNS internal AS 'MODULE_PATHNAME', 'eb_emit_rows_step' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._emit_rows_final(internal) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_emit_rows_final' LANGUAGE C VOLATILE;
CREATE AGGREGATE event_bus._emit_rows(topic text, type text, payload jsonb, key text, headers jsonb) (
    SFUNC = event_bus._emit_rows_step, STYPE = internal,
    FINALFUNC = event_bus._emit_rows_final, FINALFUNC_MODIFY = READ_WRITE);
-- The reads of an ordered claim (_claim_once, _claimable_lanes) and of
-- retries (_lease_retries), partition by partition of the log under the
-- calling statement's snapshot: a statement on the log's parent locks
-- every partition each time it runs (claim.c).
CREATE FUNCTION event_bus._lane_read(p_topic text, p_lane smallint, lo bigint, max_seq bigint, high bigint,
                                     pending_xids xid8[], pending_after bigint[], rescan boolean,
                                     token uuid, types text[], n integer,
                                     OUT seq bigint, OUT id uuid, OUT topic text, OUT type text,
                                     OUT version integer, OUT key text, OUT payload jsonb, OUT headers jsonb,
                                     OUT emitted_at timestamptz, OUT attempt integer, OUT lane integer,
                                     OUT lease_token uuid)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_lane_read' LANGUAGE C STABLE;
CREATE FUNCTION event_bus._lane_has(topic text, lane smallint, after bigint, upto bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'eb_lane_has' LANGUAGE C STRICT STABLE;
CREATE FUNCTION event_bus._lane_events(p_topic text, p_lane smallint, p_seqs bigint[],
                                       OUT seq bigint, OUT id uuid, OUT topic text, OUT type text,
                                       OUT version integer, OUT key text, OUT payload jsonb, OUT headers jsonb,
                                       OUT emitted_at timestamptz, OUT lane integer)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_lane_events' LANGUAGE C STRICT STABLE;
-- _wake() for something that falls due at a time (fail's retry): the worker
-- and claimers are woken at commit only if the worker does not already plan
-- to look by then.
CREATE FUNCTION event_bus._wake_at(due timestamptz) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_wake_at' LANGUAGE C VOLATILE;

-----------------------------------------------------------------------------
-- Storage: topic grants (existing topics keep today's open set-up),
-- subscription owners (existing subscriptions go to event_bus_consumer, as
-- any consumer could work them in 1.0), compiled capture conditions.
-----------------------------------------------------------------------------
-- Who may produce to and consume from a topic.  A role has a privilege if
-- it has the privileges of a grantee (pg_has_role(..., 'USAGE')).
CREATE TABLE event_bus.topic_grants (
    topic       text COLLATE "C" NOT NULL REFERENCES event_bus.topics ON DELETE CASCADE,
    privilege   text NOT NULL CHECK (privilege IN ('produce', 'consume')),
    grantee     regrole NOT NULL,
    PRIMARY KEY (topic, privilege, grantee)
);
INSERT INTO event_bus.topic_grants (topic, privilege, grantee)
SELECT t.topic, p.privilege, p.grantee::regrole
  FROM event_bus.topics t,
       (VALUES ('produce', 'event_bus_producer'), ('consume', 'event_bus_consumer')) AS p(privilege, grantee);
SELECT pg_catalog.pg_extension_config_dump('event_bus.topic_grants', '');
COMMENT ON TABLE event_bus.subscriptions IS 'Consumer groups: each receives every event of its topics (optionally only some types); members of its owner and admins may work it.';
COMMENT ON TABLE event_bus.topic_grants IS 'Roles that may produce to (emit, capture into) or consume from (subscribe to) each topic.';

ALTER TABLE event_bus.subscriptions ADD COLUMN owner regrole NOT NULL DEFAULT pg_catalog.to_regrole('event_bus_consumer');
ALTER TABLE event_bus.subscriptions ALTER COLUMN owner DROP DEFAULT;
-- The worker keeps a copy of the subscriptions (dispatch.c).
CREATE TRIGGER subscriptions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_bus.subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION event_bus._subscriptions_changed();

ALTER TABLE event_bus.captures ADD COLUMN condition_expr text;

-- Retention marks the partitions it is detaching (src/retention.c).
ALTER TABLE event_bus.log_partitions ADD COLUMN detaching_at timestamptz;

-- Each lease carries the token its claim handed out (leases of 1.0 get one
-- each, which nobody holds: calls without a token still reach them).
ALTER TABLE event_bus.leases ADD COLUMN token uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid();
ALTER TABLE event_bus.leases ALTER COLUMN token DROP DEFAULT;
-- A lease of a few hundred events stays in its row, uncompressed: compressing
-- its seqs with pglz on every claim was an eighth of a claim of 500.
ALTER TABLE event_bus.leases SET (toast_tuple_target = 8160);
-- Leases keep their seqs packed (_pack_seqs: a bitmap from the lowest seq):
-- a partial ack rewrites a few bytes, not the whole array.  The two views
-- that read the column are made again below.
DROP VIEW event_bus.subscription_status;
DROP VIEW event_bus.in_flight;
ALTER TABLE event_bus.leases ALTER COLUMN seqs TYPE bytea USING event_bus._pack_seqs(seqs);
-- Rows that enter the log other than by emit (a restore's COPY, an INSERT)
-- make claims read every lane's highest seq again (see event_bus.events).
CREATE TRIGGER log_written BEFORE INSERT ON event_bus.events
    FOR EACH ROW EXECUTE FUNCTION event_bus._log_written();

-- Claims step over transactions still open and come back for their events:
-- each event records its transaction, each cursor the transactions it
-- stepped over (see event_bus.cursors).  Every existing event has ended
-- (this ALTER waits for emitters), so existing cursors step over nothing.
ALTER TABLE event_bus.events ADD COLUMN txid xid8;
ALTER TABLE event_bus.cursors ADD COLUMN high bigint;
UPDATE event_bus.cursors SET high = position;
ALTER TABLE event_bus.cursors ALTER COLUMN high SET NOT NULL;
ALTER TABLE event_bus.cursors ADD COLUMN pending_xids xid8[] NOT NULL DEFAULT '{}';
ALTER TABLE event_bus.cursors ADD COLUMN pending_after bigint[] NOT NULL DEFAULT '{}';
COMMENT ON TABLE event_bus.cursors IS 'Per subscription, topic and lane: how far events were handed out (position: all of them; high: all but those of transactions still open then, listed in pending_xids).';

-- The log's index keys a topic by a hash of its name (events.topic_hash):
-- integer keys instead of text halve the cost of an insert into it.  The
-- column is computed for every event logged so far (a generated column
-- rewrites each partition once, leaving no dead rows), then becomes a plain
-- one that emit fills; every partition's index is rebuilt on it.
ALTER TABLE event_bus.events ADD COLUMN topic_hash integer NOT NULL
    GENERATED ALWAYS AS (event_bus._topic_hash(topic)) STORED;
ALTER TABLE event_bus.events ALTER COLUMN topic_hash DROP EXPRESSION;
DO $$
DECLARE
    part text;
BEGIN
    FOR part IN SELECT c.relname FROM pg_catalog.pg_inherits i
                  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
                 WHERE i.inhparent OPERATOR(pg_catalog.=) 'event_bus.events'::pg_catalog.regclass
    LOOP
        EXECUTE pg_catalog.format('DROP INDEX IF EXISTS event_bus.%I', part || '_topic_lane_seq');
        EXECUTE pg_catalog.format('CREATE INDEX %I ON event_bus.%I (topic_hash, lane, seq)',
                                  part || '_topic_lane_seq', part);
    END LOOP;
END
$$;

-- Per lane and event type: how many committed events have a seq up to
-- upto.  Monitoring counts a subscription's pending events from these marks
-- and two short ranges of the log instead of its whole backlog (see
-- event_bus._mark_lanes).  Derived from the log, so not dumped: the worker
-- counts it again after a restore.
CREATE TABLE event_bus.lane_marks (
    topic  text COLLATE "C" NOT NULL,
    lane   smallint NOT NULL,
    upto   bigint NOT NULL,
    type   text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (topic, lane, upto, type)
);
COMMENT ON TABLE event_bus.lane_marks IS 'Per lane and type, the number of committed events with seq <= upto; pending counts read these instead of the backlog.';

-- Dedupe keys of emits, and a dedupe window per topic.
ALTER TABLE event_bus.topics ADD COLUMN dedupe_window interval;
CREATE TABLE event_bus.dedupe_keys (
    topic      text COLLATE "C" NOT NULL,
    dedupe_key text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (topic, dedupe_key)
);
CREATE INDEX dedupe_keys_expires_at ON event_bus.dedupe_keys (expires_at);
COMMENT ON TABLE event_bus.dedupe_keys IS 'Per topic and dedupe key, the seq of the event that holds the key until expires_at.';
SELECT pg_catalog.pg_extension_config_dump('event_bus.dedupe_keys', '');

-- Scheduled events (emit(..., deliver_at)).
CREATE TABLE event_bus.scheduled_events (
    id           uuid PRIMARY KEY,
    topic        text COLLATE "C" NOT NULL,
    type         text NOT NULL,
    version      integer NOT NULL,
    key          text,
    payload      jsonb NOT NULL,
    headers      jsonb NOT NULL,
    deliver_at   timestamptz NOT NULL,
    scheduled_at timestamptz NOT NULL,
    scheduled_by regrole NOT NULL
);
CREATE INDEX scheduled_events_deliver_at ON event_bus.scheduled_events (deliver_at, id);
COMMENT ON TABLE event_bus.scheduled_events IS 'Events emitted with deliver_at that have not entered the log yet.';
SELECT pg_catalog.pg_extension_config_dump('event_bus.scheduled_events', '');

-- Claims take due retries in (due_at, seq) order straight from this index,
-- without sorting every due retry of the subscription.
DROP INDEX event_bus.retries_due;
CREATE INDEX retries_due ON event_bus.retries (subscription, due_at, seq) WHERE lease_id IS NULL;

-----------------------------------------------------------------------------
-- Internal SQL helpers
-----------------------------------------------------------------------------
DROP FUNCTION event_bus._release(event_bus.subscriptions, bigint, timestamptz);
CREATE FUNCTION event_bus._handed_out(seq bigint, txid xid8, high bigint, xids xid8[], afters bigint[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT seq OPERATOR(pg_catalog.<=) high
       AND coalesce(seq OPERATOR(pg_catalog.<=) afters[pg_catalog.array_position(xids, txid)], true)
$$;

CREATE FUNCTION event_bus._claimable_lanes(s event_bus.subscriptions, max_seq bigint, xids xid8[],
                                           t timestamptz)
RETURNS TABLE (topic text, lane smallint)
LANGUAGE sql STABLE
AS $$
    SELECT cu.topic, cu.lane FROM event_bus.cursors cu
     WHERE cu.subscription OPERATOR(pg_catalog.=) s.subscription
       AND (NOT s.ordered
            OR NOT EXISTS (SELECT FROM event_bus.leases l
                            WHERE l.subscription OPERATOR(pg_catalog.=) cu.subscription
                              AND l.topic OPERATOR(pg_catalog.=) cu.topic
                              AND l.lane OPERATOR(pg_catalog.=) cu.lane))
       AND CASE WHEN s.ordered AND EXISTS (SELECT FROM event_bus.retries r
                                             WHERE r.subscription OPERATOR(pg_catalog.=) cu.subscription
                                               AND r.topic OPERATOR(pg_catalog.=) cu.topic
                                               AND r.lane OPERATOR(pg_catalog.=) cu.lane)
           THEN (SELECT r.due_at OPERATOR(pg_catalog.<=) t FROM event_bus.retries r
                  WHERE r.subscription OPERATOR(pg_catalog.=) cu.subscription
                    AND r.topic OPERATOR(pg_catalog.=) cu.topic
                    AND r.lane OPERATOR(pg_catalog.=) cu.lane
                  ORDER BY r.seq LIMIT 1)
           ELSE event_bus._lane_has(cu.topic, cu.lane, cu.high, max_seq)
                OR (cu.pending_xids OPERATOR(pg_catalog.<>) '{}'
                    AND NOT cu.pending_xids OPERATOR(pg_catalog.<@) xids)
           END
$$;

CREATE FUNCTION event_bus._check_seqs(seqs bigint[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF seqs IS NULL OR pg_catalog.array_position(seqs, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'seqs must be an array of event seqs without NULLs'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION event_bus._ensure_partitions(want bigint, need bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    top  bigint;
    size bigint := pg_catalog.current_setting('event_bus.partition_size')::bigint;
    name text;
BEGIN
    SELECT max(p.hi) INTO top FROM event_bus.log_partitions p;
    IF top IS NOT NULL AND top > want THEN
        PERFORM event_bus._note_coverage(top);
        RETURN top;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('event_bus._ensure_partitions')) THEN
        IF top IS NOT NULL AND top > coalesce(need, want) THEN
            RETURN top;
        END IF;
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus._ensure_partitions'));
    END IF;
    SELECT max(p.hi) INTO top FROM event_bus.log_partitions p;
    IF top IS NULL THEN
        -- The first partition starts at the lowest seq an open transaction
        -- may still insert: emitters take their seqs before they get here.
        top := event_bus._horizon() + 1;
    END IF;
    WHILE top <= want LOOP
        name := pg_catalog.format('events_%s', pg_catalog.lpad(top::text, 19, '0'));
        EXECUTE pg_catalog.format('CREATE TABLE event_bus.%I (LIKE event_bus.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE pg_catalog.format('CREATE INDEX %I ON event_bus.%I (topic_hash, lane, seq)', name || '_topic_lane_seq', name);
        EXECUTE pg_catalog.format(
            'ALTER TABLE event_bus.events ATTACH PARTITION event_bus.%I FOR VALUES FROM (%s) TO (%s)',
            name, top, top + size);
        INSERT INTO event_bus.log_partitions (lo, hi, relname) VALUES (top, top + size, name);
        top := top + size;
    END LOOP;
    PERFORM event_bus._note_coverage(top);
    RETURN top;
END
$$;

CREATE FUNCTION event_bus._droppable_partitions() RETURNS SETOF event_bus.log_partitions
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h        bigint := event_bus._horizon();
    keep     bigint;
    keep_for interval;
BEGIN
    UPDATE event_bus.log_partitions lp SET closed_at = pg_catalog.now()
     WHERE lp.closed_at IS NULL AND lp.hi OPERATOR(pg_catalog.<=) h + 1;
    keep := event_bus._oldest_needed(NULL, h);
    SELECT pg_catalog.make_interval(secs => x.setting::float8) INTO keep_for
      FROM pg_catalog.pg_settings x WHERE x.name OPERATOR(pg_catalog.=) 'event_bus.retention';
    RETURN QUERY
    SELECT lp.* FROM event_bus.log_partitions lp
     WHERE lp.hi OPERATOR(pg_catalog.<=) keep
       AND lp.closed_at OPERATOR(pg_catalog.<=) pg_catalog.now() - coalesce(keep_for, interval '7 days')
     ORDER BY lp.lo;
    -- Every lane gets a mark where these partitions end, before they go.
    IF FOUND THEN
        PERFORM event_bus._mark_lanes(
            (SELECT max(lp.hi) FROM event_bus.log_partitions lp
              WHERE lp.hi OPERATOR(pg_catalog.<=) keep
                AND lp.closed_at OPERATOR(pg_catalog.<=) pg_catalog.now() - coalesce(keep_for, interval '7 days')) - 1,
            true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION event_bus._retention() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms'
AS $$
DECLARE
    p       record;
    dropped integer := 0;
BEGIN
    -- Partitions the worker's retention process is detaching are its own.
    FOR p IN SELECT d.lo, d.relname FROM event_bus._droppable_partitions() d WHERE d.detaching_at IS NULL
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP TABLE event_bus.%I', p.relname);
            DELETE FROM event_bus.log_partitions lp WHERE lp.lo OPERATOR(pg_catalog.=) p.lo;
            dropped := dropped + 1;
        EXCEPTION
            WHEN lock_not_available THEN
                EXIT;   -- busy right now: next time
            WHEN undefined_table THEN
                NULL;   -- dropped meanwhile by the worker's retention process
        END;
    END LOOP;
    RETURN dropped;
END
$$;

CREATE FUNCTION event_bus._retention_candidates(take boolean, OUT relname text, OUT state text)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    los bigint[] := ARRAY(SELECT d.lo FROM event_bus._droppable_partitions() d);
BEGIN
    IF NOT take THEN
        RETURN QUERY
        SELECT lp.relname, 'attached'::text FROM event_bus.log_partitions lp
         WHERE lp.detaching_at IS NOT NULL OR lp.lo OPERATOR(pg_catalog.=) ANY (los);
        RETURN;
    END IF;
    UPDATE event_bus.log_partitions lp SET detaching_at = pg_catalog.now()
     WHERE lp.detaching_at IS NULL AND lp.lo OPERATOR(pg_catalog.=) ANY (los);
    RETURN QUERY
    SELECT lp.relname,
           CASE WHEN c.oid IS NULL THEN 'gone'
                WHEN i.inhrelid IS NULL THEN 'detached'
                WHEN i.inhdetachpending THEN 'pending' ELSE 'attached' END
      FROM event_bus.log_partitions lp
      LEFT JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) 'event_bus'::regnamespace
                                     AND c.relname OPERATOR(pg_catalog.=) lp.relname
      LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid OPERATOR(pg_catalog.=) c.oid
                                        AND i.inhparent OPERATOR(pg_catalog.=) 'event_bus.events'::regclass
     WHERE lp.detaching_at IS NOT NULL
     ORDER BY lp.lo;
END
$$;

CREATE FUNCTION event_bus._retention_drop(p_relname text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s'
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM event_bus.log_partitions lp
                    WHERE lp.relname OPERATOR(pg_catalog.=) p_relname AND lp.detaching_at IS NOT NULL)
       OR EXISTS (SELECT FROM pg_catalog.pg_inherits i
                   WHERE i.inhrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('event_bus.' || pg_catalog.quote_ident(p_relname))) THEN
        RAISE EXCEPTION 'event_bus: % is not a detached log partition', p_relname;
    END IF;
    EXECUTE pg_catalog.format('DROP TABLE IF EXISTS event_bus.%I', p_relname);
    DELETE FROM event_bus.log_partitions lp WHERE lp.relname OPERATOR(pg_catalog.=) p_relname;
    RETURN true;
END
$$;

CREATE FUNCTION event_bus._release(s event_bus.subscriptions, p_topic text, p_lane smallint, p_seqs bigint[],
                                   p_due timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO event_bus.retries AS r (subscription, seq, topic, lane, attempt, due_at, last_error, lease_id)
    SELECT s.subscription, v, p_topic, p_lane, 1, p_due, NULL, NULL
      FROM pg_catalog.unnest(p_seqs) v
    ON CONFLICT (subscription, seq) DO UPDATE SET due_at = excluded.due_at, lease_id = NULL;
END
$$;

CREATE FUNCTION event_bus._keep_seqs(p_lease_id bigint, p_seqs bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.cardinality(p_seqs) OPERATOR(pg_catalog.=) 0 THEN
        DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) p_lease_id;
    ELSIF pg_catalog.cardinality(p_seqs) OPERATOR(pg_catalog.>) 0 THEN
        UPDATE event_bus.leases x SET seqs = event_bus._pack_seqs(p_seqs)
         WHERE x.lease_id OPERATOR(pg_catalog.=) p_lease_id;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION event_bus._check_delivered(s event_bus.subscriptions, seqs bigint[]) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v      bigint;
    lanes  smallint[];
    hashes integer[] := ARRAY(SELECT event_bus._topic_hash(x) FROM pg_catalog.unnest(s.topics) x);
    e      record;
BEGIN
    SELECT pg_catalog.array_agg(g::smallint) INTO lanes
      FROM pg_catalog.generate_series(0, (SELECT max(t.lanes) - 1 FROM event_bus.topics t
                                          WHERE t.topic OPERATOR(pg_catalog.=) ANY (s.topics))) g;
    FOREACH v IN ARRAY seqs LOOP
        SELECT ev.topic, ev.lane, c.subscription IS NOT NULL AS known,
               event_bus._handed_out(ev.seq, ev.txid, c.high, c.pending_xids, c.pending_after) AS handed_out INTO e
          FROM event_bus.events ev
          LEFT JOIN event_bus.cursors c
            ON c.subscription OPERATOR(pg_catalog.=) s.subscription
           AND c.topic OPERATOR(pg_catalog.=) ev.topic AND c.lane OPERATOR(pg_catalog.=) ev.lane
         WHERE ev.topic_hash OPERATOR(pg_catalog.=) ANY (hashes) AND ev.topic OPERATOR(pg_catalog.=) ANY (s.topics)
           AND ev.lane OPERATOR(pg_catalog.=) ANY (lanes)
           AND ev.seq OPERATOR(pg_catalog.=) v;
        IF NOT FOUND AND NOT EXISTS (SELECT FROM event_bus.dead_letters d
                                      WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
                                        AND d.seq OPERATOR(pg_catalog.=) v)
           -- Below the oldest partition, retention dropped it: every
           -- subscription had finished it, so it was delivered.
           AND v OPERATOR(pg_catalog.>=) coalesce((SELECT min(p.lo) FROM event_bus.log_partitions p
                                                    WHERE p.detaching_at IS NULL), 0) THEN
            RAISE EXCEPTION 'event % does not belong to subscription "%"', v, s.subscription
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('No event with seq %s exists in topics %s.', v, s.topics),
                      HINT = 'Pass the seqs returned by event_bus.claim() for this subscription.';
        ELSIF FOUND AND (NOT e.known OR NOT e.handed_out) THEN
            RAISE EXCEPTION 'event % has not been delivered to subscription "%"', v, s.subscription
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the seqs returned by event_bus.claim() for this subscription.';
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION event_bus._bury(s event_bus.subscriptions, p_seq bigint, p_topic text, p_lane smallint,
                                p_attempts integer, p_error text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO event_bus.dead_letters
           (subscription, seq, id, topic, type, version, key, lane, payload, headers, emitted_at,
            attempts, last_error)
    SELECT s.subscription, e.seq, e.id, e.topic, e.type, e.version, e.key, e.lane, e.payload,
           e.headers, e.emitted_at, p_attempts, p_error
      FROM event_bus.events e
     WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(p_topic) AND e.topic OPERATOR(pg_catalog.=) p_topic AND e.lane OPERATOR(pg_catalog.=) p_lane
       AND e.seq OPERATOR(pg_catalog.=) p_seq
    ON CONFLICT (subscription, seq) DO UPDATE
       SET attempts = excluded.attempts, last_error = excluded.last_error, dead_at = excluded.dead_at;
    DELETE FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) p_seq;
    PERFORM event_bus._stat_add('s', s.subscription, 'dead_lettered', 1);
END
$$;

CREATE OR REPLACE FUNCTION event_bus._failed(s event_bus.subscriptions, p_seq bigint, p_topic text, p_lane smallint,
                                  p_attempt integer, p_error text, p_due timestamptz) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_attempt >= s.max_attempts THEN
        PERFORM event_bus._bury(s, p_seq, p_topic, p_lane, p_attempt, p_error);
        RETURN 'dead';
    END IF;
    INSERT INTO event_bus.retries AS r (subscription, seq, topic, lane, attempt, due_at, last_error, lease_id)
    VALUES (s.subscription, p_seq, p_topic, p_lane, p_attempt + 1, p_due, p_error, NULL)
    ON CONFLICT (subscription, seq) DO UPDATE
       SET attempt = excluded.attempt, due_at = excluded.due_at,
           last_error = excluded.last_error, lease_id = NULL;
    PERFORM event_bus._stat_add('s', s.subscription, 'retried', 1);
    RETURN 'retry';
END
$$;

CREATE OR REPLACE FUNCTION event_bus._backoff(base interval, cap interval, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.make_interval(secs => d / 2 + d / 2 * pg_catalog.random())
      FROM (SELECT LEAST(pg_catalog.date_part('epoch', cap),
                         pg_catalog.date_part('epoch', base) * pg_catalog.power(2, LEAST(attempt - 1, 30))) AS d) x
$$;

CREATE FUNCTION event_bus._topic_allowed(p_topic text, p_privilege text, role oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_has_role(role, 'event_bus_admin', 'USAGE')
        OR EXISTS (SELECT FROM event_bus.topic_grants g
                    WHERE g.topic OPERATOR(pg_catalog.=) p_topic
                      AND g.privilege OPERATOR(pg_catalog.=) p_privilege
                      AND pg_catalog.pg_has_role(role, g.grantee::oid, 'USAGE'))
$$;

CREATE FUNCTION event_bus._check_topic_privilege(p_topics text[], p_privilege text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who oid := event_bus._caller();
    t   text;
BEGIN
    FOREACH t IN ARRAY p_topics LOOP
        IF NOT event_bus._topic_allowed(t, p_privilege, who) THEN
            RAISE EXCEPTION 'permission denied to % topic "%"',
                            CASE p_privilege WHEN 'produce' THEN 'produce to' ELSE 'consume from' END, t
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = pg_catalog.format('Role "%s" has no %s grant on topic "%s".',
                                                 who::regrole, p_privilege, t),
                      HINT = pg_catalog.format('An event_bus_admin can grant it with event_bus.grant_topic(%L, %L, %L).',
                                               t, who::regrole::text, p_privilege);
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION event_bus._check_interval(what text, v interval, lo interval, hi interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v < lo OR v > hi THEN
        RAISE EXCEPTION '% must be between % and %, not %', what, lo, hi, v
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION event_bus._visible(owner regrole) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_has_role(owner::oid, 'USAGE')
        OR pg_catalog.pg_has_role('event_bus_admin', 'USAGE')
$$;

CREATE OR REPLACE FUNCTION event_bus._subscription(name text) RETURNS event_bus.subscriptions
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s   event_bus.subscriptions;
    who oid := event_bus._caller();
BEGIN
    PERFORM event_bus._check_name('subscription', name);
    SELECT * INTO s FROM event_bus.subscriptions x WHERE x.subscription OPERATOR(pg_catalog.=) name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with event_bus.subscribe().';
    END IF;
    IF NOT (pg_catalog.pg_has_role(who, s.owner::oid, 'USAGE')
            OR pg_catalog.pg_has_role(who, 'event_bus_admin', 'USAGE')) THEN
        RAISE EXCEPTION 'permission denied for subscription "%"', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('It belongs to role "%s"; role "%s" is not a member.', s.owner, who::regrole),
                  HINT = 'Members of the owning role and of event_bus_admin may work a subscription.';
    END IF;
    RETURN s;
END
$$;

-----------------------------------------------------------------------------
-- Topics and their grants
-----------------------------------------------------------------------------
DROP FUNCTION event_bus.create_topic(text, integer, text);
CREATE FUNCTION event_bus.create_topic(topic text, lanes integer DEFAULT 4, description text DEFAULT NULL,
                                       private boolean DEFAULT false, dedupe_window interval DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    existing integer;
BEGIN
    PERFORM event_bus._check_writable();
    PERFORM event_bus._check_name('topic', create_topic.topic);
    IF create_topic.lanes IS NULL OR create_topic.lanes NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'lanes must be between 1 and 256, not %', coalesce(create_topic.lanes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF create_topic.private IS NULL THEN
        RAISE EXCEPTION 'private must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF create_topic.dedupe_window OPERATOR(pg_catalog.<=) '0'::interval
       OR create_topic.dedupe_window OPERATOR(pg_catalog.>) '1 year'::interval THEN
        RAISE EXCEPTION 'dedupe_window must be positive and at most 1 year, not %', create_topic.dedupe_window
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to use the event_bus.dedupe_window setting.';
    END IF;
    INSERT INTO event_bus.topics AS t (topic, lanes, description, dedupe_window)
    VALUES (create_topic.topic, create_topic.lanes, create_topic.description, create_topic.dedupe_window)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        IF NOT create_topic.private THEN
            INSERT INTO event_bus.topic_grants (topic, privilege, grantee)
            VALUES (create_topic.topic, 'produce', 'event_bus_producer'),
                   (create_topic.topic, 'consume', 'event_bus_consumer');
        END IF;
        PERFORM event_bus._topics_changed();
        PERFORM event_bus._stat_new('t', create_topic.topic);
        RETURN true;
    END IF;
    SELECT t.lanes INTO existing FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) create_topic.topic;
    IF existing OPERATOR(pg_catalog.<>) create_topic.lanes THEN
        RAISE EXCEPTION 'topic "%" already exists with % lanes', create_topic.topic, existing
            USING ERRCODE = 'duplicate_object',
                  DETAIL = 'The number of lanes of a topic cannot change: it fixes which lane each key maps to.';
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION event_bus.create_topic(text, integer, text, boolean, interval) IS
'Create a topic split into lanes (1-256); returns false if it already exists with the same lanes. Unless private, event_bus_producer may produce to it and event_bus_consumer consume from it. dedupe_window (NULL: the event_bus.dedupe_window setting) is how long a dedupe key of an emit holds.';

CREATE OR REPLACE FUNCTION event_bus.drop_topic(topic text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subs text;
BEGIN
    PERFORM event_bus._check_writable();
    PERFORM event_bus._check_name('topic', drop_topic.topic);
    PERFORM FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) drop_topic.topic FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', drop_topic.topic USING ERRCODE = 'undefined_object';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s.subscription), ', ' ORDER BY s.subscription) INTO subs
      FROM event_bus.subscriptions s WHERE drop_topic.topic OPERATOR(pg_catalog.=) ANY (s.topics);
    IF subs IS NOT NULL THEN
        RAISE EXCEPTION 'cannot drop topic "%" because subscriptions read it', drop_topic.topic
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'Subscriptions reading it: ' || subs || '.',
                  HINT = 'Unsubscribe them first with event_bus.unsubscribe().';
    END IF;
    DELETE FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) drop_topic.topic;
    DELETE FROM event_bus.dedupe_keys d WHERE d.topic OPERATOR(pg_catalog.=) drop_topic.topic;
    DELETE FROM event_bus.scheduled_events x WHERE x.topic OPERATOR(pg_catalog.=) drop_topic.topic;
    PERFORM event_bus._topics_changed();
END
$$;
COMMENT ON FUNCTION event_bus.drop_topic(text) IS
'Drop a topic no subscription reads; its events stay in the log until retention drops their partitions.';

CREATE FUNCTION event_bus._check_grant(p_topic text, p_role regrole, p_privilege text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._check_name('topic', p_topic);
    IF NOT EXISTS (SELECT FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) p_topic) THEN
        RAISE EXCEPTION 'topic "%" does not exist', p_topic USING ERRCODE = 'undefined_object';
    END IF;
    IF p_role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_privilege IS NULL OR p_privilege NOT IN ('produce', 'consume') THEN
        RAISE EXCEPTION 'unknown topic privilege %', coalesce(pg_catalog.quote_literal(p_privilege), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Topic privileges are produce and consume.';
    END IF;
END
$$;

CREATE FUNCTION event_bus.grant_topic(topic text, role regrole, privilege text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._check_writable();
    PERFORM event_bus._check_grant(grant_topic.topic, grant_topic.role, grant_topic.privilege);
    INSERT INTO event_bus.topic_grants AS g (topic, privilege, grantee)
    VALUES (grant_topic.topic, grant_topic.privilege, grant_topic.role)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM event_bus._topics_changed();
    RETURN true;
END
$$;
COMMENT ON FUNCTION event_bus.grant_topic(text, regrole, text) IS
'Let a role (and its members) produce to (emit, capture into) or consume from (subscribe to) a topic; returns false if it already could.';

CREATE FUNCTION event_bus.revoke_topic(topic text, role regrole, privilege text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._check_writable();
    PERFORM event_bus._check_grant(revoke_topic.topic, revoke_topic.role, revoke_topic.privilege);
    DELETE FROM event_bus.topic_grants g
     WHERE g.topic OPERATOR(pg_catalog.=) revoke_topic.topic
       AND g.privilege OPERATOR(pg_catalog.=) revoke_topic.privilege
       AND g.grantee OPERATOR(pg_catalog.=) revoke_topic.role;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM event_bus._topics_changed();
    RETURN true;
END
$$;
COMMENT ON FUNCTION event_bus.revoke_topic(text, regrole, text) IS
'Take back a grant made with grant_topic(); returns false if there was none. Subscriptions already made stay.';

CREATE FUNCTION event_bus._mark_lanes(p_upto bigint, p_every boolean) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    l       record;
    marked  integer := 0;
    dropped text[];
BEGIN
    FOR l IN
        SELECT t.topic, g::smallint AS lane, m.upto AS last_upto
          FROM event_bus.topics t
         CROSS JOIN pg_catalog.generate_series(0, t.lanes - 1) g
          LEFT JOIN LATERAL (
                SELECT x.upto FROM event_bus.lane_marks x
                 WHERE x.topic OPERATOR(pg_catalog.=) t.topic AND x.lane OPERATOR(pg_catalog.=) g
                   AND x.upto OPERATOR(pg_catalog.<=) p_upto
                 ORDER BY x.upto DESC LIMIT 1) m ON true
         WHERE m.upto IS DISTINCT FROM p_upto
           AND (p_every
                OR (NOT EXISTS (SELECT FROM event_bus.lane_marks x
                                 WHERE x.topic OPERATOR(pg_catalog.=) t.topic AND x.lane OPERATOR(pg_catalog.=) g
                                   AND x.upto OPERATOR(pg_catalog.>) p_upto)
                    AND (SELECT pg_catalog.count(*) FROM (
                             SELECT FROM event_bus.events e
                              WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(t.topic) AND e.topic OPERATOR(pg_catalog.=) t.topic AND e.lane OPERATOR(pg_catalog.=) g
                                AND e.seq OPERATOR(pg_catalog.>) coalesce(m.upto, 0)
                                AND e.seq OPERATOR(pg_catalog.<=) p_upto
                              LIMIT 1000) y) OPERATOR(pg_catalog.>=) 1000))
    LOOP
        INSERT INTO event_bus.lane_marks (topic, lane, upto, type, n)
        SELECT l.topic, l.lane, p_upto, k.type, sum(k.n)
          FROM (SELECT x.type, x.n FROM event_bus.lane_marks x
                 WHERE x.topic OPERATOR(pg_catalog.=) l.topic AND x.lane OPERATOR(pg_catalog.=) l.lane
                   AND x.upto OPERATOR(pg_catalog.=) l.last_upto
                UNION ALL
                SELECT e.type, pg_catalog.count(*) FROM event_bus.events e
                 WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(l.topic) AND e.topic OPERATOR(pg_catalog.=) l.topic AND e.lane OPERATOR(pg_catalog.=) l.lane
                   AND e.seq OPERATOR(pg_catalog.>) coalesce(l.last_upto, 0)
                   AND e.seq OPERATOR(pg_catalog.<=) p_upto
                 GROUP BY e.type) k
         GROUP BY k.type
        -- A concurrent run_maintenance() may write the same mark: every
        -- event up to p_upto is final, so its counts are the same.
        ON CONFLICT DO NOTHING;
        marked := marked + 1;
    END LOOP;

    -- Lane by lane through the primary key: a round costs a look at the
    -- oldest mark and the one to keep of each lane, and what it deletes -
    -- not a look at every mark kept (a subscription that stopped consuming
    -- keeps every mark above its cursor) with every cursor of its lane.
    FOR l IN
        WITH pos AS (
            SELECT c.topic, c.lane, min(c.position) AS p FROM event_bus.cursors c GROUP BY c.topic, c.lane
        ), k AS (
            SELECT t.topic, g::smallint AS lane,
                   (SELECT x.upto FROM event_bus.lane_marks x
                     WHERE x.topic OPERATOR(pg_catalog.=) t.topic AND x.lane OPERATOR(pg_catalog.=) g
                       AND x.upto OPERATOR(pg_catalog.<=) LEAST(
                             (SELECT min(lp.lo) FROM event_bus.log_partitions lp), pos.p)
                     ORDER BY x.upto DESC LIMIT 1) AS keep,
                   (SELECT x.upto FROM event_bus.lane_marks x
                     WHERE x.topic OPERATOR(pg_catalog.=) t.topic AND x.lane OPERATOR(pg_catalog.=) g
                     ORDER BY x.upto LIMIT 1) AS oldest
              FROM event_bus.topics t
             CROSS JOIN pg_catalog.generate_series(0, t.lanes - 1) g
              LEFT JOIN pos ON pos.topic OPERATOR(pg_catalog.=) t.topic AND pos.lane OPERATOR(pg_catalog.=) g)
        SELECT k.topic, k.lane, k.keep FROM k WHERE k.oldest OPERATOR(pg_catalog.<) k.keep
    LOOP
        DELETE FROM event_bus.lane_marks m
         WHERE m.topic OPERATOR(pg_catalog.=) l.topic AND m.lane OPERATOR(pg_catalog.=) l.lane
           AND m.upto OPERATOR(pg_catalog.<) l.keep;
    END LOOP;
    -- Marks of dropped topics, found by skipping from topic to topic.
    dropped := ARRAY(
        WITH RECURSIVE d(topic) AS (
            SELECT min(x.topic) FROM event_bus.lane_marks x
            UNION ALL
            SELECT (SELECT min(x.topic) FROM event_bus.lane_marks x WHERE x.topic OPERATOR(pg_catalog.>) d.topic)
              FROM d WHERE d.topic IS NOT NULL)
        SELECT d.topic FROM d
         WHERE d.topic IS NOT NULL
           AND NOT EXISTS (SELECT FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) d.topic));
    IF pg_catalog.cardinality(dropped) OPERATOR(pg_catalog.>) 0 THEN
        DELETE FROM event_bus.lane_marks m WHERE m.topic OPERATOR(pg_catalog.=) ANY (dropped);
    END IF;
    RETURN marked;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.run_maintenance(
    OUT expired_leases integer, OUT retried integer, OUT dead_lettered integer, OUT log_covered_upto bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    t   timestamptz := pg_catalog.clock_timestamp();
    life timestamptz := event_bus._life_started();
    l   record;
    s   event_bus.subscriptions;
    v   bigint;
    att integer;
    due timestamptz;
BEGIN
    PERFORM event_bus._check_writable();
    expired_leases := 0;
    retried := 0;
    dead_lettered := 0;
    -- Expired leases: every event still in them failed one attempt.  So did
    -- leases claimed before the server (re)started: the sessions holding
    -- them are gone, and an ordered lane should not wait out their lease.
    -- Leases a consumer is acking right now are skipped and seen next time.
    FOR l IN
        SELECT x.*, event_bus._unpack_seqs(x.seqs) AS seq_list FROM event_bus.leases x
         WHERE x.expires_at OPERATOR(pg_catalog.<=) t OR x.claimed_at OPERATOR(pg_catalog.<) life
         ORDER BY x.lease_id
         LIMIT pg_catalog.current_setting('event_bus.expire_batch_size')::integer
         FOR UPDATE SKIP LOCKED
    LOOP
        SELECT * INTO s FROM event_bus.subscriptions x WHERE x.subscription OPERATOR(pg_catalog.=) l.subscription;
        expired_leases := expired_leases + 1;
        PERFORM event_bus._stat_add('s', s.subscription, 'expired', pg_catalog.cardinality(l.seq_list));
        -- One due time per lease keeps an ordered lane's events together.
        due := t + event_bus._backoff(s.backoff_base, s.backoff_max, 1);
        FOREACH v IN ARRAY l.seq_list LOOP
            SELECT r.attempt INTO att FROM event_bus.retries r
             WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) v
             FOR UPDATE;
            att := coalesce(att, 1);
            IF event_bus._failed(s, v, l.topic, l.lane, att,
                                 CASE WHEN l.expires_at OPERATOR(pg_catalog.<=) t THEN 'lease expired'
                                      ELSE 'server restarted while it was claimed' END,
                                 CASE WHEN s.ordered THEN due
                                      ELSE t + event_bus._backoff(s.backoff_base, s.backoff_max, att) END) = 'dead' THEN
                dead_lettered := dead_lettered + 1;
            ELSE
                retried := retried + 1;
            END IF;
        END LOOP;
        DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id;
    END LOOP;
    IF expired_leases > 0 THEN
        PERFORM event_bus._wake();
    END IF;

    -- Scheduled events that are due enter the log.
    PERFORM event_bus._release_scheduled();

    -- Dedupe keys past their window, a batch at a time (an emit that meets
    -- one first takes it over).  By ctid, so that a key an emit took over
    -- meanwhile (a new row version) stays.
    DELETE FROM event_bus.dedupe_keys d
     WHERE d.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
           SELECT x.ctid FROM event_bus.dedupe_keys x
            WHERE x.expires_at OPERATOR(pg_catalog.<=) t
            LIMIT 10000));

    -- Lane marks for monitoring, up to the horizon.
    PERFORM event_bus._mark_lanes(event_bus._horizon(), false);

    -- Keep two partitions of room ahead of the newest seq.
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END INTO v FROM event_bus.event_seq q;
    log_covered_upto := event_bus._ensure_partitions(
        v + 2 * pg_catalog.current_setting('event_bus.partition_size')::bigint);
END
$$;
COMMENT ON FUNCTION event_bus.run_maintenance() IS
'Expire leases into retries or dead letters and create log partitions ahead; the worker calls it, tests and cron jobs may too.';

CREATE OR REPLACE FUNCTION event_bus._dispatch(p_from bigint, p_state jsonb,
                                    OUT horizon bigint, OUT state jsonb, OUT notified integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    r         record;
    d         record;
    top       bigint;
    prev_top  bigint := (p_state OPERATOR(pg_catalog.->>) 'max_seq')::bigint;
    prev_open xid8[] := (p_state OPERATOR(pg_catalog.->>) 'open')::xid8[];
    em        record;
    ended     xid8[];
BEGIN
    -- Before the statements below take their snapshots.  The horizon is
    -- what _horizon() computes, from the same read.
    em := event_bus._emitters('{}');
    top := em.max_seq;
    horizon := LEAST(top, (SELECT min(f) - 1 FROM pg_catalog.unnest(em.floors) f));
    ended := ARRAY(SELECT x FROM pg_catalog.unnest(prev_open) x
                    WHERE x OPERATOR(pg_catalog.<>) ALL (em.xids));
    notified := 0;
    IF p_from OPERATOR(pg_catalog.>) horizon THEN
        p_from := NULL;     -- the log was created anew
    END IF;
    IF prev_top IS NULL OR prev_open IS NULL THEN
        p_from := NULL;
    END IF;

    IF p_from IS NULL THEN
        -- No previous round to count from: "events" counts every event the
        -- subscription has not been handed yet.
        FOR r IN
            SELECT s.subscription, x.n FROM event_bus.subscriptions s
             CROSS JOIN LATERAL (
                   SELECT pg_catalog.count(*) AS n FROM event_bus.cursors c JOIN event_bus.events e
                       ON e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(c.topic) AND e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
                      AND e.seq OPERATOR(pg_catalog.>) c.position AND e.seq OPERATOR(pg_catalog.<=) top
                    WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription
                      AND NOT event_bus._handed_out(e.seq, e.txid, c.high, c.pending_xids, c.pending_after)
                      AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types))) x
             WHERE NOT s.paused AND x.n OPERATOR(pg_catalog.>) 0
        LOOP
            PERFORM pg_catalog.pg_notify('event_bus.' || r.subscription,
                pg_catalog.json_build_object('subscription', r.subscription, 'seq', top, 'events', r.n,
                                             'retries', 0)::text);
            notified := notified + 1;
        END LOOP;
    ELSE
        FOR r IN
            -- One index range scan per topic and lane that a subscription
            -- reads (OFFSET 0 keeps the planner from turning it into a scan
            -- of the whole index).
            WITH fresh AS (
                SELECT l.topic, e.type, pg_catalog.count(*) AS n, max(e.seq) AS newest
                  FROM (SELECT DISTINCT c.topic, c.lane FROM event_bus.cursors c) l
                 CROSS JOIN LATERAL (
                       SELECT x.type, x.seq FROM event_bus.events x
                        WHERE x.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(l.topic) AND x.topic OPERATOR(pg_catalog.=) l.topic
                          AND x.lane OPERATOR(pg_catalog.=) l.lane
                          AND x.seq OPERATOR(pg_catalog.>) prev_top AND x.seq OPERATOR(pg_catalog.<=) top
                       UNION ALL
                       SELECT x.type, x.seq FROM event_bus.events x
                        WHERE pg_catalog.cardinality(ended) OPERATOR(pg_catalog.>) 0
                          AND x.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(l.topic) AND x.topic OPERATOR(pg_catalog.=) l.topic
                          AND x.lane OPERATOR(pg_catalog.=) l.lane
                          AND x.seq OPERATOR(pg_catalog.>) p_from AND x.seq OPERATOR(pg_catalog.<=) prev_top
                          AND x.txid OPERATOR(pg_catalog.=) ANY (ended)
                       OFFSET 0) e
                 GROUP BY l.topic, e.type)
            SELECT s.subscription, sum(f.n)::bigint AS n, max(f.newest) AS newest
              FROM event_bus.subscriptions s
              JOIN fresh f ON f.topic OPERATOR(pg_catalog.=) ANY (s.topics)
                          AND (s.types IS NULL OR f.type OPERATOR(pg_catalog.=) ANY (s.types))
             WHERE NOT s.paused
             GROUP BY s.subscription
        LOOP
            PERFORM pg_catalog.pg_notify('event_bus.' || r.subscription,
                pg_catalog.json_build_object('subscription', r.subscription, 'seq', r.newest, 'events', r.n,
                                             'retries', 0)::text);
            notified := notified + 1;
        END LOOP;
    END IF;

    -- Retries that became due, new dead letters.
    d := event_bus._dispatch_due(p_state, horizon);
    notified := notified OPERATOR(pg_catalog.+) d.notified;
    state := d.state OPERATOR(pg_catalog.||)
             pg_catalog.jsonb_build_object('max_seq', top, 'open', em.xids::text);
END
$$;

CREATE FUNCTION event_bus._dispatch_due(p_state jsonb, p_horizon bigint,
                                        OUT state jsonb, OUT notified integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    r         record;
    t         timestamptz := pg_catalog.clock_timestamp();
    due       jsonb;
    last_dead bigint := (p_state OPERATOR(pg_catalog.->>) 'dead_id')::bigint;
    dead      bigint;
BEGIN
    notified := 0;
    -- Per subscription, its due retries counted up to 100 from the front of
    -- retries_due: a round costs the same with a million of them.  A
    -- subscription with more keeps its consumers busy without NOTIFYs.
    SELECT pg_catalog.jsonb_object_agg(s.subscription, x.n) INTO due
      FROM event_bus.subscriptions s
     CROSS JOIN LATERAL (
            SELECT pg_catalog.count(*) AS n FROM (
                SELECT FROM event_bus.retries q
                 WHERE q.subscription OPERATOR(pg_catalog.=) s.subscription
                   AND q.lease_id IS NULL AND q.due_at OPERATOR(pg_catalog.<=) t
                 ORDER BY q.due_at LIMIT 100) y) x
     WHERE x.n OPERATOR(pg_catalog.>) 0;
    due := coalesce(due, '{}');
    FOR r IN
        SELECT d.key AS subscription, d.value::text::bigint AS n
          FROM pg_catalog.jsonb_each(due) d
         WHERE d.value::text::bigint OPERATOR(pg_catalog.>)
               coalesce((p_state OPERATOR(pg_catalog.->) 'due' OPERATOR(pg_catalog.->>) d.key)::bigint, 0)
           AND NOT EXISTS (SELECT FROM event_bus.subscriptions s
                            WHERE s.subscription OPERATOR(pg_catalog.=) d.key AND s.paused)
    LOOP
        PERFORM pg_catalog.pg_notify('event_bus.' || r.subscription,
            pg_catalog.json_build_object('subscription', r.subscription, 'seq', p_horizon, 'events', 0,
                                         'retries', r.n)::text);
        notified := notified + 1;
        PERFORM event_bus._wake();
    END LOOP;

    -- New dead letters (the first round only takes note of where they are).
    IF last_dead IS NULL THEN
        SELECT coalesce(max(d.dead_id), 0) INTO dead FROM event_bus.dead_letters d;
    ELSE
        dead := last_dead;
        FOR r IN
            SELECT d.subscription, pg_catalog.count(*) AS n, max(d.dead_id) AS top
              FROM event_bus.dead_letters d WHERE d.dead_id OPERATOR(pg_catalog.>) last_dead
             GROUP BY d.subscription
        LOOP
            PERFORM pg_catalog.pg_notify('event_bus.dead_letters',
                pg_catalog.json_build_object('subscription', r.subscription, 'events', r.n)::text);
            notified := notified + 1;
            dead := GREATEST(dead, r.top);
        END LOOP;
    END IF;
    state := coalesce(p_state, '{}') OPERATOR(pg_catalog.||)
             pg_catalog.jsonb_build_object('due', due, 'dead_id', dead);
END
$$;

CREATE OR REPLACE FUNCTION event_bus._next_due() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := pg_catalog.clock_timestamp();
BEGIN
    -- The first retry of each subscription in retries_due, not every retry
    -- (t is a variable: a volatile call cannot bound an index scan).
    RETURN LEAST((SELECT min(d.due_at) FROM event_bus.subscriptions s
                    CROSS JOIN LATERAL (
                          SELECT r.due_at FROM event_bus.retries r
                           WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.lease_id IS NULL
                             AND r.due_at OPERATOR(pg_catalog.>) t
                           ORDER BY r.due_at LIMIT 1) d),
                 (SELECT min(l.expires_at) FROM event_bus.leases l),
                 (SELECT min(x.deliver_at) FROM event_bus.scheduled_events x));
END
$$;

CREATE OR REPLACE FUNCTION event_bus._oldest_needed(p_subscription text, h bigint) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT LEAST(
        -- The first event in seq order rather than EXISTS: with statistics
        -- from when a partition was small, EXISTS was planned as a bitmap
        -- scan, which reads every entry of the lane's range in the
        -- partition to find one (1.3 s a call with 400 cursors behind).
        (SELECT min(CASE WHEN (SELECT e.seq FROM event_bus.events e
                                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(c.topic) AND e.topic OPERATOR(pg_catalog.=) c.topic
                                  AND e.lane OPERATOR(pg_catalog.=) c.lane
                                  AND e.seq OPERATOR(pg_catalog.>) c.position
                                  AND e.seq OPERATOR(pg_catalog.<=) h
                                  AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types))
                                ORDER BY e.seq LIMIT 1) IS NOT NULL
                         THEN c.position + 1 ELSE h + 1 END)
           FROM event_bus.cursors c JOIN event_bus.subscriptions s
             ON s.subscription OPERATOR(pg_catalog.=) c.subscription
          WHERE p_subscription IS NULL OR c.subscription OPERATOR(pg_catalog.=) p_subscription),
        (SELECT min(r.seq) FROM event_bus.retries r
          WHERE p_subscription IS NULL OR r.subscription OPERATOR(pg_catalog.=) p_subscription),
        (SELECT min((event_bus._unpack_seqs(l.seqs))[1]) FROM event_bus.leases l
          WHERE p_subscription IS NULL OR l.subscription OPERATOR(pg_catalog.=) p_subscription),
        h + 1)
$$;

-----------------------------------------------------------------------------
-- Publishing: emit and emit_many run as their caller and check its grant
-----------------------------------------------------------------------------
-- emit and emit_many take dedupe keys: their signatures change.
DROP FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer);
DROP FUNCTION event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer);
CREATE FUNCTION event_bus.emit(topic text, type text, payload jsonb, key text DEFAULT NULL,
                               headers jsonb DEFAULT NULL, version integer DEFAULT 1,
                               dedupe_key text DEFAULT NULL, deliver_at timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'eb_emit_1_1'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer, text, timestamptz) IS
'Publish one event in the current transaction; returns its seq.  The topic must exist and the caller needs its produce grant.  With a dedupe_key that an event of the topic already holds (within its dedupe window), publishes nothing and returns that event''s seq.  With deliver_at, the event enters the log (and gets its seq) when it is due; returns NULL, and event_bus.scheduled shows it until then.';

CREATE FUNCTION event_bus.emit_many(topic text, type text, payloads jsonb[], keys text[] DEFAULT NULL,
                                    headers jsonb DEFAULT NULL, version integer DEFAULT 1,
                                    dedupe_keys text[] DEFAULT NULL, deliver_at timestamptz DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'eb_emit_many_1_1'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer, text[], timestamptz) IS
'Publish one event per payload (with the matching key); returns their seqs in order.  A payload whose dedupe key an event of the topic already holds publishes nothing; its place in the result holds that event''s seq.  With deliver_at, every event enters the log when it is due (the seqs are NULL).';

CREATE FUNCTION event_bus._emit_scheduled(topic text, type text, payload jsonb, key text, headers jsonb,
                                          version integer, id uuid)
RETURNS bigint
AS 'MODULE_PATHNAME', 'eb_emit_scheduled'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION event_bus._release_scheduled() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        WITH due AS (
            DELETE FROM event_bus.scheduled_events x
             WHERE x.id OPERATOR(pg_catalog.=) ANY (ARRAY(
                   SELECT y.id FROM event_bus.scheduled_events y
                    WHERE y.deliver_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                    ORDER BY y.deliver_at, y.id
                    LIMIT 1000
                      FOR UPDATE SKIP LOCKED))
            RETURNING x.*)
        SELECT * FROM due ORDER BY due.deliver_at, due.id
    LOOP
        PERFORM event_bus._emit_scheduled(r.topic, r.type, r.payload, r.key, r.headers, r.version, r.id);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

CREATE FUNCTION event_bus._cancel_scheduled_impl(id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who oid := event_bus._caller();
    s   event_bus.scheduled_events;
BEGIN
    PERFORM event_bus._check_writable();
    IF _cancel_scheduled_impl.id IS NULL THEN
        RAISE EXCEPTION 'id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Waits for a release that is moving it right now, and then finds it gone.
    SELECT * INTO s FROM event_bus.scheduled_events x
     WHERE x.id OPERATOR(pg_catalog.=) _cancel_scheduled_impl.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;       -- unknown, cancelled, or already in the log
    END IF;
    IF NOT (pg_catalog.pg_has_role(who, s.scheduled_by::oid, 'USAGE')
            OR pg_catalog.pg_has_role(who, 'event_bus_admin', 'USAGE')) THEN
        RAISE EXCEPTION 'permission denied to cancel scheduled event %', _cancel_scheduled_impl.id
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Role "%s" scheduled it; only its members and event_bus_admin may cancel it.',
                                             s.scheduled_by);
    END IF;
    DELETE FROM event_bus.scheduled_events x WHERE x.id OPERATOR(pg_catalog.=) _cancel_scheduled_impl.id;
    RETURN true;
END
$$;

CREATE FUNCTION event_bus.cancel_scheduled(id uuid) RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.cancel_scheduled(uuid) IS
'Cancel an event emitted with deliver_at that has not entered the log yet; returns whether it did (false: unknown, already cancelled, or already in the log).  Members of the role that scheduled it, and admins.';

-----------------------------------------------------------------------------
-- The API functions become C entry points (eb_api) that record the caller
-- and call their SECURITY DEFINER implementations.
-----------------------------------------------------------------------------
-- claim() returns a lease_token, which ack(), fail() and dead_letter()
-- accept: their signatures change, so the 1.0 functions go.
DROP FUNCTION event_bus.claim(text, integer, interval, interval);
DROP FUNCTION event_bus._claim_once(event_bus.subscriptions, integer, interval);
DROP FUNCTION event_bus.ack(text, bigint[]);
DROP FUNCTION event_bus.fail(text, bigint, text, interval);
DROP FUNCTION event_bus.dead_letter(text, bigint, text);
DROP FUNCTION event_bus._leased(event_bus.subscriptions, bigint);
-- What claim() hands out, one row per event: a named type, so that a row
-- of a claim can be passed on whole (to_cloudevent(delivery)).
CREATE TYPE event_bus.delivery AS (
    seq bigint, id uuid, topic text, type text, version integer, key text, payload jsonb,
    headers jsonb, emitted_at timestamptz, attempt integer, lane integer, lease_token uuid);
COMMENT ON TYPE event_bus.delivery IS 'An event as claim() hands it out: the event, its attempt number, its lane and the lease_token of the claim.';

CREATE FUNCTION event_bus._lease_retries(s event_bus.subscriptions, p_topic text, p_lane smallint, p_seqs bigint[],
                                         t timestamptz, len interval, tok uuid)
RETURNS TABLE (seq bigint, id uuid, topic text, type text, version integer, key text, payload jsonb,
               headers jsonb, emitted_at timestamptz, attempt integer, lane integer, lease_token uuid)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    lid bigint;
BEGIN
    INSERT INTO event_bus.leases AS l (subscription, topic, lane, seqs, claimed_at, expires_at, claimed_by, token)
    VALUES (s.subscription, p_topic, p_lane, event_bus._pack_seqs(p_seqs), t, t + len,
            pg_catalog.pg_backend_pid(), tok)
    RETURNING l.lease_id INTO lid;
    RETURN QUERY
    WITH u AS (
        UPDATE event_bus.retries r SET lease_id = lid
         WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
           AND r.seq OPERATOR(pg_catalog.=) ANY (p_seqs)
        RETURNING r.seq, r.attempt)
    SELECT e.seq, e.id, e.topic, e.type, e.version, e.key, e.payload, e.headers,
           e.emitted_at, u.attempt, e.lane, tok
      FROM event_bus._lane_events(p_topic, p_lane, p_seqs) e JOIN u ON u.seq OPERATOR(pg_catalog.=) e.seq
     ORDER BY e.seq;
END
$$;

CREATE FUNCTION event_bus._claim_once(s event_bus.subscriptions, max_events integer, len interval, tok uuid)
RETURNS TABLE (seq bigint, id uuid, topic text, type text, version integer, key text, payload jsonb,
               headers jsonb, emitted_at timestamptz, attempt integer, lane integer, lease_token uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    t        timestamptz := pg_catalog.clock_timestamp();
    left_    integer := max_events;
    c        record;
    cur      record;
    em       record;
    exs      xid8[];
    efl      bigint[];
    rescan   boolean;
    lo       bigint;
    got      bigint[];
    n        integer;
BEGIN
    -- 1. Due retries first (unordered subscriptions; ordered ones retry
    --    inside their lane below, to keep per-lane order).
    IF NOT s.ordered THEN
        FOR c IN
            WITH picked AS (
                SELECT r.seq, r.topic, r.lane FROM event_bus.retries r
                 WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
                   AND r.lease_id IS NULL AND r.due_at OPERATOR(pg_catalog.<=) t
                 ORDER BY r.due_at, r.seq
                 LIMIT left_
                 FOR UPDATE SKIP LOCKED)
            SELECT p.topic, p.lane, pg_catalog.array_agg(p.seq ORDER BY p.seq) AS seqs
              FROM picked p GROUP BY p.topic, p.lane
        LOOP
            RETURN QUERY SELECT * FROM event_bus._lease_retries(s, c.topic, c.lane, c.seqs, t, len, tok);
            left_ := left_ - pg_catalog.cardinality(c.seqs);
        END LOOP;
        IF left_ <= 0 THEN
            RETURN;
        END IF;
    END IF;

    -- 2. New events, lane by lane.  The open emitting transactions of the
    --    subscription's topics are read before the statements below take
    --    their snapshots: events up to em.max_seq that those snapshots do
    --    not show belong to them (or were rolled back).  The cursors record
    --    the ones still open, and later claims come back for their events.
    em := event_bus._emitters(s.topics);
    FOR c IN
        SELECT x.topic, x.lane FROM event_bus._claimable_lanes(s, em.max_seq, em.xids, t) x
         ORDER BY pg_catalog.random()
    LOOP
        SELECT cu.position, cu.high, cu.pending_xids, cu.pending_after INTO cur FROM event_bus.cursors cu
         WHERE cu.subscription OPERATOR(pg_catalog.=) s.subscription
           AND cu.topic OPERATOR(pg_catalog.=) c.topic AND cu.lane OPERATOR(pg_catalog.=) c.lane
         FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        IF s.ordered THEN
            -- One lease per lane; recheck now that we hold the lane.
            CONTINUE WHEN EXISTS (SELECT FROM event_bus.leases l
                                   WHERE l.subscription OPERATOR(pg_catalog.=) s.subscription
                                     AND l.topic OPERATOR(pg_catalog.=) c.topic
                                     AND l.lane OPERATOR(pg_catalog.=) c.lane);
            IF EXISTS (SELECT FROM event_bus.retries r
                        WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
                          AND r.topic OPERATOR(pg_catalog.=) c.topic
                          AND r.lane OPERATOR(pg_catalog.=) c.lane) THEN
                -- The lane's retries come first, in seq order, once due.
                SELECT pg_catalog.array_agg(x.seq ORDER BY x.seq) INTO got
                  FROM (SELECT r.seq, pg_catalog.bool_and(r.due_at OPERATOR(pg_catalog.<=) t)
                                        OVER (ORDER BY r.seq) AS due
                          FROM event_bus.retries r
                         WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
                           AND r.topic OPERATOR(pg_catalog.=) c.topic
                           AND r.lane OPERATOR(pg_catalog.=) c.lane
                         ORDER BY r.seq LIMIT left_) x
                 WHERE x.due;
                CONTINUE WHEN got IS NULL;
                RETURN QUERY SELECT * FROM event_bus._lease_retries(s, c.topic, c.lane, got, t, len, tok);
                left_ := left_ - pg_catalog.cardinality(got);
                EXIT WHEN left_ <= 0;
                CONTINUE;
            END IF;
        END IF;

        IF pg_catalog.cardinality(em.xids) OPERATOR(pg_catalog.>) 0 THEN
            SELECT coalesce(pg_catalog.array_agg(u.x), '{}'), coalesce(pg_catalog.array_agg(u.f), '{}')
              INTO exs, efl
              FROM ROWS FROM (pg_catalog.unnest(em.topics), pg_catalog.unnest(em.xids), pg_catalog.unnest(em.floors)) u(t, x, f)
             WHERE u.t OPERATOR(pg_catalog.=) c.topic;
        ELSE
            exs := '{}';
            efl := '{}';
        END IF;
        -- Below high, only events of stepped-over transactions remain, and
        -- only those of transactions that have ended since can be visible:
        -- look there only then.
        rescan := cur.pending_xids OPERATOR(pg_catalog.<>) '{}'
                  AND NOT cur.pending_xids OPERATOR(pg_catalog.<@) em.xids;
        lo := CASE WHEN rescan THEN cur.position ELSE cur.high END;
        -- Events of the lane not handed out yet and visible now, up to
        -- em.max_seq, in seq order; the cursor moves on in the same
        -- statement, with the same snapshot (see _lane_next).  A read that
        -- does not look below high leaves the stepped-over transactions'
        -- events above it alone too: one of them may have ended after em was
        -- read, and the cursor could not record which of its events this
        -- read took.  A type-filtered subscription's cursor moves past the
        -- events of other types too, so no claim scans them again.
        RETURN QUERY
        WITH ev AS (
            SELECT e.* FROM event_bus._lane_read(c.topic, c.lane, lo, em.max_seq, cur.high, cur.pending_xids,
                                                 cur.pending_after, rescan, tok, s.types, left_) e),
        l AS (
            INSERT INTO event_bus.leases (subscription, topic, lane, seqs, claimed_at, expires_at, claimed_by, token)
            SELECT s.subscription, c.topic, c.lane, event_bus._pack_seqs(pg_catalog.array_agg(ev.seq)),
                   t, t + len, pg_catalog.pg_backend_pid(), tok
              FROM ev HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0),
        nx AS (
            SELECT x.* FROM (SELECT pg_catalog.count(*) AS n, max(ev.seq) AS last FROM ev) b,
                   event_bus._lane_next(cur.position, cur.high, cur.pending_xids, cur.pending_after,
                                        em.max_seq, exs, efl, b.n OPERATOR(pg_catalog.>=) left_, b.last,
                                        pg_catalog.pg_current_snapshot(), rescan) x
             -- Nothing taken, nothing pending, no events of other types passed:
             -- leave the row alone (a competing claim emptied the lane).
             WHERE b.n OPERATOR(pg_catalog.>) 0 OR s.types IS NOT NULL
                OR cur.pending_xids OPERATOR(pg_catalog.<>) '{}' OR exs OPERATOR(pg_catalog.<>) '{}'),
        u AS (
            UPDATE event_bus.cursors cu
               SET position = nx.next_position, high = nx.next_high, pending_xids = nx.next_xids, pending_after = nx.next_afters
              FROM nx
             WHERE cu.subscription OPERATOR(pg_catalog.=) s.subscription
               AND cu.topic OPERATOR(pg_catalog.=) c.topic AND cu.lane OPERATOR(pg_catalog.=) c.lane)
        SELECT ev.seq, ev.id, ev.topic::text, ev.type, ev.version, ev.key, ev.payload, ev.headers,
               ev.emitted_at, 1, ev.lane::integer, tok
          FROM ev ORDER BY ev.seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        left_ := left_ - n;
        EXIT WHEN left_ <= 0;
    END LOOP;
END
$$;

CREATE FUNCTION event_bus._leased(s event_bus.subscriptions, p_seq bigint, p_token uuid) RETURNS event_bus.leases
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_bitmapscan = off SET enable_seqscan = off
AS $$
DECLARE
    l event_bus.leases;
BEGIN
    IF p_seq IS NULL THEN
        RAISE EXCEPTION 'seq must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO l FROM event_bus.leases x
     WHERE x.subscription OPERATOR(pg_catalog.=) s.subscription
       AND p_seq OPERATOR(pg_catalog.=) ANY (event_bus._unpack_seqs(x.seqs))
       AND (p_token IS NULL OR x.token OPERATOR(pg_catalog.=) p_token)
     FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM event_bus._check_delivered(s, ARRAY[p_seq]);
        RAISE EXCEPTION 'event % is not in flight for subscription "%"%', p_seq, s.subscription,
                        CASE WHEN p_token IS NOT NULL THEN ' under this lease token' ELSE '' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It has already been acked, failed or dead-lettered, or its lease expired (and it may have been delivered again).';
    END IF;
    RETURN l;
END
$$;

CREATE OR REPLACE FUNCTION event_bus._start_position(p_topic text, p_lane smallint, start text, h bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ts  timestamptz;
    pos bigint;
BEGIN
    IF start = 'latest' THEN
        RETURN h;
    ELSIF start = 'earliest' THEN
        RETURN 0;
    END IF;
    BEGIN
        ts := start::timestamptz;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'invalid start position "%"', start
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''latest'', ''earliest'' or a timestamp.';
    END;
    SELECT min(e.seq) - 1 INTO pos FROM event_bus.events e
     WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(p_topic) AND e.topic OPERATOR(pg_catalog.=) p_topic AND e.lane OPERATOR(pg_catalog.=) p_lane
       AND e.seq OPERATOR(pg_catalog.<=) h AND e.emitted_at OPERATOR(pg_catalog.>=) ts;
    RETURN coalesce(pos, h);
END
$$;

CREATE FUNCTION event_bus._subscribe_impl(subscription text, topics text[], types text[],
                                    start text, max_attempts integer,
                                    lease interval,
                                    backoff_base interval,
                                    backoff_max interval,
                                    ordered boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    t       text;
    tl      text[];
    h       bigint;
    missing text;
    old     event_bus.subscriptions;
BEGIN
    PERFORM event_bus._check_name('subscription', _subscribe_impl.subscription);
    IF _subscribe_impl.topics IS NULL OR pg_catalog.cardinality(_subscribe_impl.topics) = 0 THEN
        RAISE EXCEPTION 'subscription "%" needs at least one topic', _subscribe_impl.subscription
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH t IN ARRAY _subscribe_impl.topics LOOP
        PERFORM event_bus._check_name('topic', t);
    END LOOP;
    SELECT pg_catalog.array_agg(DISTINCT x ORDER BY x) INTO tl FROM pg_catalog.unnest(_subscribe_impl.topics) x;
    SELECT pg_catalog.string_agg(pg_catalog.format('"%s"', x), ', ' ORDER BY x) INTO missing
      FROM pg_catalog.unnest(tl) x
     WHERE NOT EXISTS (SELECT FROM event_bus.topics tp WHERE tp.topic OPERATOR(pg_catalog.=) x);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION '% not exist',
                        CASE WHEN missing LIKE '%,%' THEN 'topics ' || missing || ' do'
                             ELSE 'topic ' || missing || ' does' END
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create topics with event_bus.create_topic() before subscribing to them.';
    END IF;
    IF _subscribe_impl.types IS NOT NULL AND (pg_catalog.cardinality(_subscribe_impl.types) = 0
                                        OR pg_catalog.array_position(_subscribe_impl.types, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'types must be NULL (every type) or a non-empty array without NULLs'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF _subscribe_impl.max_attempts IS NULL OR _subscribe_impl.max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1000, not %', coalesce(_subscribe_impl.max_attempts::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF _subscribe_impl.lease IS NULL OR _subscribe_impl.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', coalesce(_subscribe_impl.lease::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM event_bus._check_interval('lease', _subscribe_impl.lease, interval '1 millisecond', interval '1 day');
    IF _subscribe_impl.backoff_base IS NULL OR _subscribe_impl.backoff_base < interval '0'
       OR _subscribe_impl.backoff_max IS NULL OR _subscribe_impl.backoff_max < _subscribe_impl.backoff_base THEN
        RAISE EXCEPTION 'backoff_base must not be negative and backoff_max must not be below it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM event_bus._check_interval('backoff_base', _subscribe_impl.backoff_base, interval '0', interval '1 day');
    PERFORM event_bus._check_interval('backoff_max', _subscribe_impl.backoff_max, interval '0', interval '7 days');
    IF _subscribe_impl.start IS NULL THEN
        RAISE EXCEPTION 'start must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use ''latest'', ''earliest'' or a timestamp.';
    END IF;
    IF _subscribe_impl.ordered IS NULL THEN
        RAISE EXCEPTION 'ordered must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    PERFORM event_bus._check_topic_privilege(tl, 'consume');

    -- Serialise with concurrent subscribe/unsubscribe of the same name.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus.subscribe:' || _subscribe_impl.subscription));
    SELECT * INTO old FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) _subscribe_impl.subscription;
    IF FOUND THEN
        PERFORM event_bus._subscription(_subscribe_impl.subscription);     -- only its owner's roles may change it
        IF old.topics OPERATOR(pg_catalog.<>) tl THEN
            RAISE EXCEPTION 'subscription "%" already exists with other topics', _subscribe_impl.subscription
                USING ERRCODE = 'duplicate_object',
                      DETAIL = pg_catalog.format('It reads %s.', old.topics),
                      HINT = 'Unsubscribe it first, or pick another name.';
        END IF;
        UPDATE event_bus.subscriptions s
           SET types = _subscribe_impl.types, max_attempts = _subscribe_impl.max_attempts, lease = _subscribe_impl.lease,
               backoff_base = _subscribe_impl.backoff_base, backoff_max = _subscribe_impl.backoff_max,
               ordered = _subscribe_impl.ordered
         WHERE s.subscription OPERATOR(pg_catalog.=) _subscribe_impl.subscription;
        RETURN false;
    END IF;

    INSERT INTO event_bus.subscriptions
           (subscription, topics, types, max_attempts, lease, backoff_base, backoff_max, ordered, owner)
    VALUES (_subscribe_impl.subscription, tl, _subscribe_impl.types, _subscribe_impl.max_attempts, _subscribe_impl.lease,
            _subscribe_impl.backoff_base, _subscribe_impl.backoff_max, _subscribe_impl.ordered, event_bus._caller()::regrole);
    h := event_bus._horizon();
    INSERT INTO event_bus.cursors (subscription, topic, lane, position, high)
    SELECT _subscribe_impl.subscription, x.topic, x.lane, x.pos, x.pos
      FROM (SELECT tp.topic, g::smallint AS lane,
                   event_bus._start_position(tp.topic, g::smallint, _subscribe_impl.start, h) AS pos
              FROM event_bus.topics tp, pg_catalog.generate_series(0, tp.lanes - 1) g
             WHERE tp.topic OPERATOR(pg_catalog.=) ANY (tl)) x;
    PERFORM event_bus._stat_new('s', _subscribe_impl.subscription);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.subscribe(subscription text, topics text[], types text[] DEFAULT NULL,
                                    start text DEFAULT 'latest', max_attempts integer DEFAULT 5,
                                    lease interval DEFAULT '30 seconds',
                                    backoff_base interval DEFAULT '1 second',
                                    backoff_max interval DEFAULT '10 minutes',
                                    ordered boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.subscribe(text, text[], text[], text, integer, interval, interval, interval, boolean) IS
'Create a subscription (consumer group) on topics the caller may consume from, starting at ''latest'', ''earliest'' or a timestamp; the caller''s role owns it. Returns false and updates the options if it already exists with the same topics (only its owner''s roles may).';

CREATE FUNCTION event_bus._unsubscribe_impl(subscription text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._subscription(_unsubscribe_impl.subscription);
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus.subscribe:' || _unsubscribe_impl.subscription));
    DELETE FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) _unsubscribe_impl.subscription;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.unsubscribe(subscription text) RETURNS void
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.unsubscribe(text) IS
'Remove a subscription with its cursors, leases, retries and dead letters (its owner''s roles and admins).';

CREATE FUNCTION event_bus._replay_impl(subscription text, start text) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        event_bus.subscriptions;
    h        bigint;
    n        integer;
    inflight bigint;
BEGIN
    s := event_bus._subscription(_replay_impl.subscription);
    IF _replay_impl.start IS NULL THEN
        RAISE EXCEPTION 'start must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Use ''latest'', ''earliest'' or a timestamp.';
    END IF;
    PERFORM FROM event_bus.cursors c WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription
      ORDER BY c.topic, c.lane FOR UPDATE;
    PERFORM FROM event_bus.retries r WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
      ORDER BY r.seq FOR UPDATE;
    h := event_bus._horizon();
    UPDATE event_bus.cursors c SET (position, high, pending_xids, pending_after) =
           (SELECT x.pos, x.pos, '{}'::xid8[], '{}'::bigint[]
              FROM (SELECT event_bus._start_position(c.topic, c.lane, _replay_impl.start, h) AS pos) x)
     WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription;
    GET DIAGNOSTICS n = ROW_COUNT;

    SELECT pg_catalog.count(*) INTO inflight
      FROM event_bus.leases l
      JOIN event_bus.cursors c ON c.subscription OPERATOR(pg_catalog.=) l.subscription
                              AND c.topic OPERATOR(pg_catalog.=) l.topic AND c.lane OPERATOR(pg_catalog.=) l.lane,
           pg_catalog.unnest(event_bus._unpack_seqs(l.seqs)) v
     WHERE l.subscription OPERATOR(pg_catalog.=) s.subscription AND v OPERATOR(pg_catalog.>) c.position;
    IF inflight OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'cannot replay subscription "%" over % events in flight', s.subscription, inflight
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'They would be handed out again while their consumers still hold them.',
                  HINT = 'Pause the subscription with event_bus.pause(), wait until event_bus.in_flight shows none of its leases (acked, failed or expired), then replay and resume.';
    END IF;
    DELETE FROM event_bus.retries r USING event_bus.cursors c
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
       AND c.subscription OPERATOR(pg_catalog.=) r.subscription
       AND c.topic OPERATOR(pg_catalog.=) r.topic AND c.lane OPERATOR(pg_catalog.=) r.lane
       AND r.seq OPERATOR(pg_catalog.>) c.position;
    PERFORM event_bus._wake();
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.replay(subscription text, start text DEFAULT 'earliest') RETURNS integer
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.replay(text, text) IS
'Move every cursor of a subscription to ''earliest'', ''latest'' or a timestamp; returns the number of lane cursors moved. Events after the new positions are delivered again, each once; refused while such an event is in flight.';

CREATE FUNCTION event_bus._redrive_impl(subscription text, seqs bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s event_bus.subscriptions;
    n integer;
    gone bigint;
BEGIN
    s := event_bus._subscription(_redrive_impl.subscription);
    -- Retention may have dropped the partition of an old dead letter: its
    -- copy stays here, but it can no longer be delivered from the log.
    SELECT d.seq INTO gone FROM event_bus.dead_letters d
     WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
       AND (_redrive_impl.seqs IS NULL OR d.seq OPERATOR(pg_catalog.=) ANY (_redrive_impl.seqs))
       AND NOT EXISTS (SELECT FROM event_bus.events e
                        WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(d.topic) AND e.topic OPERATOR(pg_catalog.=) d.topic AND e.lane OPERATOR(pg_catalog.=) d.lane
                          AND e.seq OPERATOR(pg_catalog.=) d.seq)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'dead letter % of subscription "%" can no longer be redriven', gone, s.subscription
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Retention has dropped the part of the log that held it; its copy is still in event_bus.dead_letters.',
                  HINT = 'Emit its payload again with event_bus.emit(), or purge it with event_bus.purge_dead_letters().';
    END IF;
    WITH d AS (
        DELETE FROM event_bus.dead_letters d
         WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
           AND (_redrive_impl.seqs IS NULL OR d.seq OPERATOR(pg_catalog.=) ANY (_redrive_impl.seqs))
        RETURNING d.seq, d.topic, d.lane, d.last_error)
    INSERT INTO event_bus.retries (subscription, seq, topic, lane, attempt, due_at, last_error, lease_id)
    SELECT s.subscription, d.seq, d.topic, d.lane, 1, pg_catalog.clock_timestamp(), d.last_error, NULL
      FROM d
    ON CONFLICT ON CONSTRAINT retries_pkey DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM event_bus._wake();
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.redrive(subscription text, seqs bigint[] DEFAULT NULL) RETURNS integer
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.redrive(text, bigint[]) IS
'Give dead letters of a subscription (all, or the given seqs) a fresh set of attempts; returns how many.';

CREATE FUNCTION event_bus._purge_dead_letters_impl(subscription text, older_than interval) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s event_bus.subscriptions;
    n integer;
BEGIN
    s := event_bus._subscription(_purge_dead_letters_impl.subscription);
    PERFORM event_bus._check_interval('older_than', _purge_dead_letters_impl.older_than, interval '0', interval '100 years');
    DELETE FROM event_bus.dead_letters d
     WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
       AND (_purge_dead_letters_impl.older_than IS NULL
            OR d.dead_at OPERATOR(pg_catalog.<) pg_catalog.now() - _purge_dead_letters_impl.older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.purge_dead_letters(subscription text, older_than interval DEFAULT NULL) RETURNS integer
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.purge_dead_letters(text, interval) IS
'Delete dead letters of a subscription (all, or those dead for longer than older_than); returns how many.';

-- pause() and resume() return whether they changed anything.
DROP FUNCTION event_bus.pause(text);
DROP FUNCTION event_bus.resume(text);
CREATE FUNCTION event_bus._pause_impl(subscription text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH u AS (
        UPDATE event_bus.subscriptions s SET paused = true
         WHERE s.subscription OPERATOR(pg_catalog.=) (event_bus._subscription(_pause_impl.subscription)).subscription
           AND NOT s.paused
        RETURNING 1)
    SELECT EXISTS (SELECT FROM u);
$$;

CREATE FUNCTION event_bus.pause(subscription text) RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.pause(text) IS 'Stop handing out events of a subscription; claims return nothing until resume(). Returns false if it was paused already.';

CREATE FUNCTION event_bus._resume_impl(subscription text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus._wake();
    WITH u AS (
        UPDATE event_bus.subscriptions s SET paused = false
         WHERE s.subscription OPERATOR(pg_catalog.=) (event_bus._subscription(_resume_impl.subscription)).subscription
           AND s.paused
        RETURNING 1)
    SELECT EXISTS (SELECT FROM u);
$$;

CREATE FUNCTION event_bus.resume(subscription text) RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.resume(text) IS 'Resume a paused subscription. Returns false if it was not paused.';

CREATE FUNCTION event_bus.stats_reset() RETURNS timestamptz
AS 'MODULE_PATHNAME', 'eb_stats_reset'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.stats_reset() IS
'Set every counter of event_bus.stats in this database to zero, at once; returns the time they count from now. Admins only.';

CREATE FUNCTION event_bus.claim(subscription text, max_events integer DEFAULT 100, lease interval DEFAULT NULL,
                                wait interval DEFAULT NULL)
RETURNS SETOF event_bus.delivery
AS 'MODULE_PATHNAME', 'eb_claim'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.claim(text, integer, interval, interval) IS
'Lease up to max_events events of a subscription: due retries first, then new events lane by lane. With wait, sleep in the server until events arrive or the wait ends. Every row carries the lease_token of this claim: pass it to ack, fail, dead_letter and extend so that a call made after the lease expired cannot touch a newer delivery. Requires READ COMMITTED.';

CREATE FUNCTION event_bus.ack(subscription text, seqs bigint[], token uuid DEFAULT NULL) RETURNS integer
AS 'MODULE_PATHNAME', 'eb_ack'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.ack(text, bigint[], uuid) IS
'Acknowledge claimed events; idempotent, returns how many were still in flight (under token, when given) and are now done.';

CREATE FUNCTION event_bus._fail_impl(subscription text, seq bigint, error text,
                               retry_in interval, token uuid)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s       event_bus.subscriptions;
    l       event_bus.leases;
    att     integer;
    due     timestamptz;
    outcome text;
    left_   bigint[];
BEGIN
    s := event_bus._subscription(_fail_impl.subscription);
    IF _fail_impl.retry_in IS NOT NULL AND _fail_impl.retry_in < interval '0' THEN
        RAISE EXCEPTION 'retry_in must not be negative, not %', _fail_impl.retry_in
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM event_bus._check_interval('retry_in', _fail_impl.retry_in, interval '0', interval '30 days');
    l := event_bus._leased(s, _fail_impl.seq, _fail_impl.token);
    SELECT r.attempt INTO att FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) _fail_impl.seq
     FOR UPDATE;
    att := coalesce(att, 1);
    due := pg_catalog.clock_timestamp()
           + coalesce(_fail_impl.retry_in, event_bus._backoff(s.backoff_base, s.backoff_max, att));
    outcome := event_bus._failed(s, _fail_impl.seq, l.topic, l.lane, att, _fail_impl.error, due);
    PERFORM event_bus._stat_add('s', s.subscription, 'failed', 1);
    IF outcome = 'dead' THEN
        PERFORM event_bus._wake();      -- the worker announces the dead letter
    ELSE
        PERFORM event_bus._wake_at(due);    -- the worker plans the retry (if it must)
    END IF;

    left_ := pg_catalog.array_remove(event_bus._unpack_seqs(l.seqs), _fail_impl.seq);
    IF s.ordered THEN
        -- The events after the failed one wait behind it: they go back as
        -- retries.  Those before it stay leased: the consumer has handled
        -- them (in order) and may still ack them.
        PERFORM event_bus._release(s, l.topic, l.lane,
                                   ARRAY(SELECT v FROM pg_catalog.unnest(left_) v
                                          WHERE v OPERATOR(pg_catalog.>) _fail_impl.seq ORDER BY v),
                                   CASE WHEN outcome = 'dead' THEN pg_catalog.clock_timestamp() ELSE due END);
        left_ := ARRAY(SELECT v FROM pg_catalog.unnest(left_) v
                        WHERE v OPERATOR(pg_catalog.<) _fail_impl.seq ORDER BY v);
    END IF;
    PERFORM event_bus._keep_seqs(l.lease_id, left_);
    RETURN outcome;
END
$$;

CREATE FUNCTION event_bus.fail(subscription text, seq bigint, error text DEFAULT NULL,
                               retry_in interval DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.fail(text, bigint, text, interval, uuid) IS
'Report that processing a claimed event failed: returns ''retry'' (redelivered after backoff, or retry_in) or ''dead'' (max_attempts reached, moved to dead letters). On an ordered subscription the events after it in its batch wait behind it; those before it stay claimed.';

CREATE FUNCTION event_bus._dead_letter_impl(subscription text, seq bigint, reason text, token uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s   event_bus.subscriptions;
    l   event_bus.leases;
    att integer;
BEGIN
    s := event_bus._subscription(_dead_letter_impl.subscription);
    l := event_bus._leased(s, _dead_letter_impl.seq, _dead_letter_impl.token);
    SELECT r.attempt INTO att FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) _dead_letter_impl.seq;
    PERFORM event_bus._bury(s, _dead_letter_impl.seq, l.topic, l.lane, coalesce(att, 1), _dead_letter_impl.reason);
    PERFORM event_bus._wake();          -- the worker announces the dead letter
    PERFORM event_bus._keep_seqs(l.lease_id,
                                 pg_catalog.array_remove(event_bus._unpack_seqs(l.seqs), _dead_letter_impl.seq));
END
$$;

CREATE FUNCTION event_bus.dead_letter(subscription text, seq bigint, reason text DEFAULT NULL,
                                      token uuid DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.dead_letter(text, bigint, text, uuid) IS
'Move a claimed event straight to the dead letters of the subscription, with a reason (under token, when given).';

CREATE FUNCTION event_bus._extend_impl(subscription text, seqs bigint[], lease interval, token uuid)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s event_bus.subscriptions;
    n integer;
BEGIN
    s := event_bus._subscription(_extend_impl.subscription);
    PERFORM event_bus._check_seqs(_extend_impl.seqs);
    IF _extend_impl.lease IS NOT NULL AND _extend_impl.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', _extend_impl.lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM event_bus._check_interval('lease', _extend_impl.lease, interval '1 millisecond', interval '1 day');
    WITH l AS (
        UPDATE event_bus.leases x
           SET expires_at = pg_catalog.clock_timestamp() + coalesce(_extend_impl.lease, s.lease)
         WHERE x.subscription OPERATOR(pg_catalog.=) s.subscription
           AND event_bus._unpack_seqs(x.seqs) OPERATOR(pg_catalog.&&) _extend_impl.seqs
           AND (_extend_impl.token IS NULL OR x.token OPERATOR(pg_catalog.=) _extend_impl.token)
        RETURNING x.seqs)
    SELECT pg_catalog.count(*) INTO n FROM l, pg_catalog.unnest(event_bus._unpack_seqs(l.seqs)) v
     WHERE v OPERATOR(pg_catalog.=) ANY (_extend_impl.seqs);
    RETURN n;
END
$$;

CREATE FUNCTION event_bus.extend(subscription text, seqs bigint[], lease interval DEFAULT NULL,
                                 token uuid DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.extend(text, bigint[], interval, uuid) IS
'Give claimed events more time: their leases (under token, when given) now expire lease (default: the subscription''s) from now. Returns how many of the events were still in flight.';

CREATE FUNCTION event_bus.to_cloudevent(d event_bus.delivery) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus.to_cloudevent(d.seq, d.id, d.topic, d.type, d.version, d.key, d.payload, d.headers, d.emitted_at)
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(event_bus.delivery) IS
'Render a row returned by claim() as a CloudEvents 1.0 JSON document: SELECT event_bus.to_cloudevent(c) FROM event_bus.claim(...) c.';
CREATE FUNCTION event_bus.alter_subscription_owner(subscription text, owner regrole) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._check_writable();
    PERFORM event_bus._check_name('subscription', alter_subscription_owner.subscription);
    IF alter_subscription_owner.owner IS NULL THEN
        RAISE EXCEPTION 'owner must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE event_bus.subscriptions s SET owner = alter_subscription_owner.owner
     WHERE s.subscription OPERATOR(pg_catalog.=) alter_subscription_owner.subscription;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', alter_subscription_owner.subscription
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
COMMENT ON FUNCTION event_bus.alter_subscription_owner(text, regrole) IS
'Give a subscription to another role: its members (and admins) may then work it.';

CREATE FUNCTION event_bus._wait_check(subscription text, OUT topics text[], OUT ready boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s  event_bus.subscriptions;
    em record;
    t  timestamptz := pg_catalog.clock_timestamp();
BEGIN
    s := event_bus._subscription(_wait_check.subscription);
    topics := s.topics;
    IF s.paused THEN
        ready := false;
        RETURN;
    END IF;
    em := event_bus._emitters(s.topics);
    ready := (NOT s.ordered
              AND EXISTS (SELECT FROM event_bus.retries r
                           WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
                             AND r.lease_id IS NULL AND r.due_at OPERATOR(pg_catalog.<=) t))
          OR EXISTS (SELECT FROM event_bus._claimable_lanes(s, em.max_seq, em.xids, t));
END
$$;

CREATE PROCEDURE event_bus.wait(subscription text, timeout interval, OUT ready boolean)
AS 'MODULE_PATHNAME', 'eb_wait_proc'
LANGUAGE C;
COMMENT ON PROCEDURE event_bus.wait(text, interval) IS
'CALL event_bus.wait(subscription, timeout, NULL): return ready = true as soon as a claim of the subscription would get something, false when the timeout (0 to 1 hour) passes. Outside a transaction block it commits before sleeping, so a waiting consumer holds no snapshot and does not hold back VACUUM (claim(wait => ...) keeps its query''s snapshot while it sleeps).';

-----------------------------------------------------------------------------
-- Capture: conditions compiled as the table's owner, generated code that no
-- column name can shadow, trigger functions that DROP EXTENSION sees.
-----------------------------------------------------------------------------
DROP FUNCTION event_bus._capture_check_condition(regclass, text);
CREATE FUNCTION event_bus._capture_tree(p_table regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE t(relid) AS (
        SELECT p_table::oid
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent OPERATOR(pg_catalog.=) t.relid)
    SELECT t.relid::regclass FROM t
$$;

CREATE OR REPLACE FUNCTION event_bus._capture_drop_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t  record;
    fn oid;
BEGIN
    SELECT pg_catalog.to_regprocedure(pg_catalog.format('event_bus.%I()', c.function_name)) INTO fn
      FROM event_bus.captures c WHERE c.relid OPERATOR(pg_catalog.=) p_table;
    FOR t IN SELECT g.tgname, g.tgrelid::regclass AS rel FROM pg_catalog.pg_trigger g
              WHERE g.tgname::text LIKE 'event\_bus\_capture\_%'
                AND (g.tgrelid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT x::oid FROM event_bus._capture_tree(p_table) x))
                     OR g.tgfoid OPERATOR(pg_catalog.=) fn)
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    END LOOP;
END
$$;

CREATE FUNCTION event_bus._capture_row_sql(c event_bus.captures, whole text, prefix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN c.columns IS NOT NULL THEN
            'pg_catalog.jsonb_build_object('
            || (SELECT pg_catalog.string_agg(pg_catalog.format('%L, %s%I', u.x, prefix, u.x), ', ' ORDER BY u.o)
                  FROM pg_catalog.unnest(c.columns) WITH ORDINALITY AS u(x, o))
            || ')'
        WHEN c.exclude_columns IS NOT NULL THEN
            pg_catalog.format('(event_bus._row_jsonb(%s) OPERATOR(pg_catalog.-) %L::text[])', whole, c.exclude_columns)
        ELSE pg_catalog.format('event_bus._row_jsonb(%s)', whole)
    END
$$;

CREATE FUNCTION event_bus._capture_key_sql(c event_bus.captures, prefix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN c.key_columns IS NULL THEN 'NULL::text'
        WHEN pg_catalog.cardinality(c.key_columns) = 1 THEN
            pg_catalog.format('(%s%I)::text', prefix, c.key_columns[1])
        ELSE
            'pg_catalog.jsonb_build_array('
            || (SELECT pg_catalog.string_agg(pg_catalog.format('%s%I', prefix, u.x), ', ' ORDER BY u.o)
                  FROM pg_catalog.unnest(c.key_columns) WITH ORDINALITY AS u(x, o))
            || ')::text'
    END
$$;

CREATE FUNCTION event_bus._capture_keyjson_sql(c event_bus.captures, prefix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'pg_catalog.jsonb_build_array('
           || (SELECT pg_catalog.string_agg(pg_catalog.format('%s%I', prefix, u.x), ', ' ORDER BY u.o)
                 FROM pg_catalog.unnest(c.key_columns) WITH ORDINALITY AS u(x, o))
           || ')'
$$;

CREATE OR REPLACE FUNCTION event_bus._capture_generate(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $gen$
DECLARE
    c        event_bus.captures;
    fn       text;
    qname    text;
    cond     text := 'true';
    payload  text;
    body     text := '';
    op       text;
    hdr      text;
    rel      regclass;
BEGIN
    SELECT * INTO c FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    fn := pg_catalog.format('event_bus.%I', c.function_name);
    SELECT pg_catalog.format('%I.%I', n.nspname, r.relname) INTO qname
      FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace
     WHERE r.oid OPERATOR(pg_catalog.=) p_table;
    IF c.condition_expr IS NOT NULL THEN
        cond := event_bus._capture_condition_sql(p_table, c.condition_expr);
        UPDATE event_bus.captures x SET condition = cond WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    END IF;

    FOREACH op IN ARRAY c.operations LOOP
        hdr := pg_catalog.quote_literal(pg_catalog.jsonb_build_object(
                   'source', 'table:' || qname, 'operation', op)::text) || '::jsonb';
        IF op = 'truncate' THEN
            body := body || pg_catalog.format($f$
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM event_bus.emit(%L, %L, pg_catalog.jsonb_build_object('table', %L), NULL, %s);
    END IF;$f$, c.topic, c.types OPERATOR(pg_catalog.->>) op, qname, hdr);
        ELSIF op = 'update' AND c.update_mode <> 'new' THEN
            -- Pair old and new rows by key, as jsonb (the same code serves
            -- partitions and inheritance children, whatever their row
            -- types; jsonb equality hashes and treats NULLs as equal).
            -- q.nj is the new row, q.oj the old one.
            IF c.update_mode = 'old_and_new' THEN
                payload := 'pg_catalog.jsonb_build_object(''old'', q.oj, ''new'', q.nj)';
            ELSE
                payload := pg_catalog.format(
                    '(SELECT pg_catalog.jsonb_object_agg(e.key, e.value) FROM pg_catalog.jsonb_each(q.nj) e'
                    ' WHERE e.key OPERATOR(pg_catalog.=) ANY (%L::text[])'
                    ' OR (q.oj OPERATOR(pg_catalog.->) e.key) IS DISTINCT FROM e.value)',
                    c.key_columns);
            END IF;
            body := body || pg_catalog.format($f$
    IF TG_OP = 'UPDATE' THEN
        PERFORM event_bus._emit_rows(%L, %L, x.p, x.k, %s ORDER BY x.ord)
           FROM (SELECT %s AS p, q.k, q.ord
                   FROM (SELECT nn.nj, nn.k, nn.ord, oo.oj
                           FROM (SELECT %s AS nj, %s AS k, %s AS kj, pg_catalog.row_number() OVER () AS ord
                                   FROM new_rows n WHERE %s) nn
                           LEFT JOIN (SELECT %s AS oj, %s AS kj FROM old_rows o) oo
                                  ON oo.kj OPERATOR(pg_catalog.=) nn.kj) q) x;
    END IF;$f$, c.topic, c.types OPERATOR(pg_catalog.->>) op, hdr, payload,
                event_bus._capture_row_sql(c, 'n.*', 'n.'), event_bus._capture_key_sql(c, 'n.'),
                event_bus._capture_keyjson_sql(c, 'n.'), cond,
                event_bus._capture_row_sql(c, 'o.*', 'o.'), event_bus._capture_keyjson_sql(c, 'o.'));
        ELSE
            -- A scan of the transition table returns rows in the order the
            -- statement wrote them; nothing here reorders them.  _emit_rows
            -- writes each event as its row comes.
            body := body || pg_catalog.format($f$
    IF TG_OP = %L THEN
        PERFORM event_bus._emit_rows(%L, %L, %s, %s, %s)
           FROM %s n WHERE %s;
    END IF;$f$, pg_catalog.upper(op), c.topic, c.types OPERATOR(pg_catalog.->>) op,
                event_bus._capture_row_sql(c, 'n.*', 'n.'),
                event_bus._capture_key_sql(c, 'n.'), hdr, CASE op WHEN 'delete' THEN 'old_rows' ELSE 'new_rows' END,
                cond);
        END IF;
    END LOOP;

    EXECUTE pg_catalog.format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS %L$f$, fn,
        E'\nBEGIN' || body ||
        E'\n    RETURN NULL;\nEND\n');
    EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s() IS %L', fn,
                              'event_bus capture of ' || qname || ' (generated by event_bus.capture(); do not edit)');
    PERFORM event_bus._capture_depend(pg_catalog.format('%s()', fn)::regprocedure);

    -- Statement triggers fire only for the table a statement names, and
    -- its transition tables hold the rows of every table below it: so the
    -- triggers go on the captured table and on every partition or child
    -- (for statements naming those directly), each row is captured once.
    -- TRUNCATE fires on every table it empties: only on the captured one.
    PERFORM event_bus._capture_drop_triggers(p_table);
    FOR rel IN SELECT * FROM event_bus._capture_tree(p_table) LOOP
        FOREACH op IN ARRAY c.operations LOOP
            CONTINUE WHEN op = 'truncate' AND rel OPERATOR(pg_catalog.<>) p_table;
            EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                'event_bus_capture_' || op, pg_catalog.upper(op), rel,
                CASE op WHEN 'insert' THEN 'REFERENCING NEW TABLE AS new_rows'
                        WHEN 'update' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                        WHEN 'delete' THEN 'REFERENCING OLD TABLE AS old_rows'
                        ELSE '' END,
                fn);
        END LOOP;
    END LOOP;
END
$gen$;

CREATE OR REPLACE FUNCTION event_bus._capture_impl(p_table regclass, p_topic text, p_operations text[], p_types jsonb,
                                        p_key_columns text[], p_columns text[], p_exclude_columns text[],
                                        p_update_mode text, p_condition text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel     text;
    t       text;
    ops     text[];
    types   jsonb;
    k       text;
    keycols text[] := p_key_columns;
    existed boolean;
    fname   text;
    other   regclass;
BEGIN
    SELECT r.relname INTO rel FROM pg_catalog.pg_class r WHERE r.oid OPERATOR(pg_catalog.=) p_table;
    IF p_topic IS NULL THEN
        t := pg_catalog.lower(rel);
        IF t !~ '^[a-z0-9][a-z0-9._-]*$' OR pg_catalog.length(t) > 48 THEN
            RAISE EXCEPTION 'table name "%" is not a valid topic name', rel
                USING ERRCODE = 'invalid_name',
                      HINT = 'Pass a topic: event_bus.capture(table, topic => ''...'').';
        END IF;
    ELSE
        t := p_topic;
    END IF;
    PERFORM event_bus._check_name('topic', t);

    IF p_operations IS NULL OR pg_catalog.cardinality(p_operations) = 0 THEN
        RAISE EXCEPTION 'operations must name at least one of insert, update, delete, truncate'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT pg_catalog.lower(o) ORDER BY pg_catalog.lower(o)) INTO ops
      FROM pg_catalog.unnest(p_operations) o;
    SELECT pg_catalog.string_agg(o, ', ') INTO k FROM pg_catalog.unnest(ops) o
     WHERE o IS NULL OR o <> ALL (ARRAY['insert', 'update', 'delete', 'truncate']);
    IF k IS NOT NULL OR pg_catalog.array_position(ops, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'unknown operation %', coalesce(k, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Operations are insert, update, delete and truncate.';
    END IF;

    types := pg_catalog.jsonb_build_object('insert', rel || '.inserted', 'update', rel || '.updated',
                                           'delete', rel || '.deleted', 'truncate', rel || '.truncated');
    IF p_types IS NOT NULL THEN
        IF pg_catalog.jsonb_typeof(p_types) <> 'object' THEN
            RAISE EXCEPTION 'types must be a JSON object mapping operations to event types'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example ''{"insert": "OrderPlaced", "delete": "OrderCancelled"}''.';
        END IF;
        SELECT pg_catalog.string_agg(x.key, ', ') INTO k FROM pg_catalog.jsonb_each(p_types) x
         WHERE x.key <> ALL (ARRAY['insert', 'update', 'delete', 'truncate'])
            OR pg_catalog.jsonb_typeof(x.value) <> 'string'
            OR pg_catalog.length(x.value OPERATOR(pg_catalog.#>>) '{}') NOT BETWEEN 1 AND 255;
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'invalid event type for %', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Map insert, update, delete or truncate to a non-empty event type name.';
        END IF;
        types := types || p_types;
    END IF;

    IF p_columns IS NOT NULL AND p_exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'columns and exclude_columns cannot both be given'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keycols IS NULL THEN
        SELECT pg_catalog.array_agg(a.attname::text ORDER BY x.o) INTO keycols
          FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS x(attnum, o)
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                        AND a.attnum OPERATOR(pg_catalog.=) x.attnum
         WHERE i.indrelid OPERATOR(pg_catalog.=) p_table AND i.indisprimary;
    END IF;
    IF p_update_mode IS NULL OR p_update_mode NOT IN ('new', 'old_and_new', 'changed') THEN
        RAISE EXCEPTION 'update_mode must be new, old_and_new or changed, not %', coalesce(p_update_mode, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_update_mode <> 'new' AND keycols IS NULL AND 'update' = ANY (ops) THEN
        RAISE EXCEPTION 'update_mode % needs key columns to pair old and new rows', p_update_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the table a primary key or pass key_columns.';
    END IF;

    -- Only admins create topics; everyone else needs the produce grant.
    IF NOT EXISTS (SELECT FROM event_bus.topics tp WHERE tp.topic OPERATOR(pg_catalog.=) t) THEN
        IF NOT pg_catalog.pg_has_role(event_bus._caller(), 'event_bus_admin', 'USAGE') THEN
            RAISE EXCEPTION 'topic "%" does not exist', t
                USING ERRCODE = 'undefined_object',
                      HINT = 'An event_bus_admin can create it with event_bus.create_topic(), or capture it once.';
        END IF;
        PERFORM event_bus.create_topic(t);
    END IF;
    PERFORM event_bus._check_topic_privilege(ARRAY[t], 'produce');

    -- One capture per tree of partitions or inheritance children: a table
    -- above or below a captured one would have its rows captured twice.
    SELECT x.relid INTO other FROM event_bus.captures x
     WHERE x.relid OPERATOR(pg_catalog.<>) p_table
       AND (p_table OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT event_bus._capture_tree(x.relid)))
            OR x.relid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT event_bus._capture_tree(p_table))))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot capture table % because table % is captured', p_table, other
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'One is a partition or inheritance child of the other; capturing the upper one captures both.',
                  HINT = 'Capture only the upper table, or uncapture the other one first.';
    END IF;

    SELECT x.function_name INTO fname FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    existed := FOUND;
    DELETE FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    INSERT INTO event_bus.captures (relid, topic, operations, types, key_columns, key_attnums, columns,
                                    column_attnums, exclude_columns, exclude_attnums, update_mode,
                                    function_name, condition_expr)
    VALUES (p_table, t, ops, types,
            keycols, event_bus._capture_attnums(p_table, keycols, 'key_columns'),
            p_columns, event_bus._capture_attnums(p_table, p_columns, 'columns'),
            p_exclude_columns, event_bus._capture_attnums(p_table, p_exclude_columns, 'exclude_columns'),
            p_update_mode, coalesce(fname, '_capture_' || p_table::oid), p_condition);
    PERFORM event_bus._capture_generate(p_table);
    RETURN NOT existed;
END
$$;

CREATE OR REPLACE FUNCTION event_bus.capture("table" regclass, topic text DEFAULT NULL,
                                  operations text[] DEFAULT ARRAY['insert', 'update', 'delete'],
                                  types jsonb DEFAULT NULL, key_columns text[] DEFAULT NULL,
                                  columns text[] DEFAULT NULL, exclude_columns text[] DEFAULT NULL,
                                  update_mode text DEFAULT 'new', condition text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_capture_1_1'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.capture(regclass, text, text[], jsonb, text[], text[], text[], text, text) IS
'Turn row changes of a table into events in the same transaction (statement-level triggers). Only the table''s owner may call it, with the produce grant of an existing topic. The condition is one boolean expression over the row. Returns false when it replaced an existing capture.';

CREATE OR REPLACE FUNCTION event_bus.uncapture("table" regclass) RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_capture_1_1'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.uncapture(regclass) IS
'Stop capturing a table (idempotent: returns false if it was not captured).';

CREATE OR REPLACE FUNCTION event_bus._capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r  record;
    c  event_bus.captures;
    kc record;
    ic record;
    ec record;
BEGIN
    FOR r IN
        SELECT DISTINCT x.function_name FROM pg_catalog.pg_event_trigger_ddl_commands() d
          JOIN pg_catalog.pg_trigger g ON g.oid OPERATOR(pg_catalog.=) d.objid
          JOIN event_bus.captures x ON x.relid::oid OPERATOR(pg_catalog.=) g.tgrelid
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::regclass
           AND g.tgname::text LIKE 'event\_bus\_capture\_%'
    LOOP
        PERFORM event_bus._capture_depend(pg_catalog.format('event_bus.%I()', r.function_name)::regprocedure);
    END LOOP;
    -- The captures a command touched: of the table itself, of a table above
    -- it (a new partition or child), or whose triggers it still carries (a
    -- partition detached, a child that left).
    FOR r IN
        SELECT DISTINCT x.relid::oid AS objid
          FROM pg_catalog.pg_event_trigger_ddl_commands() d, event_bus.captures x
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
           AND d.command_tag OPERATOR(pg_catalog.=) ANY (ARRAY['ALTER TABLE', 'CREATE TABLE'])
           AND (d.objid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t::oid FROM event_bus._capture_tree(x.relid) t))
                OR EXISTS (SELECT FROM pg_catalog.pg_trigger g
                            WHERE g.tgrelid OPERATOR(pg_catalog.=) d.objid
                              AND g.tgfoid OPERATOR(pg_catalog.=)
                                  pg_catalog.to_regprocedure(pg_catalog.format('event_bus.%I()', x.function_name))))
    LOOP
        SELECT * INTO c FROM event_bus.captures x WHERE x.relid::oid OPERATOR(pg_catalog.=) r.objid;
        -- A table being restored by pg_restore gets its constraints before
        -- its (dumped) capture triggers: leave it to the dump.
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                                   WHERE g.tgrelid OPERATOR(pg_catalog.=) r.objid
                                     AND g.tgname::text LIKE 'event\_bus\_capture\_%');
        kc := event_bus._capture_columns(c.relid, c.key_columns, c.key_attnums, 'key', false);
        ic := event_bus._capture_columns(c.relid, c.columns, c.column_attnums, 'payload column', false);
        ec := event_bus._capture_columns(c.relid, c.exclude_columns, c.exclude_attnums, 'excluded column', true);
        UPDATE event_bus.captures x
           SET key_columns = kc.new_names, key_attnums = kc.new_nums,
               columns = ic.new_names, column_attnums = ic.new_nums,
               exclude_columns = ec.new_names, exclude_attnums = ec.new_nums
         WHERE x.relid OPERATOR(pg_catalog.=) c.relid;
        PERFORM event_bus._capture_generate(c.relid);
    END LOOP;
END
$$;

DROP EVENT TRIGGER event_bus_capture_ddl;
CREATE EVENT TRIGGER event_bus_capture_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE TRIGGER') EXECUTE FUNCTION event_bus._capture_ddl();

-- Compile the conditions of existing captures (1.0 evaluated them with this
-- search_path) and regenerate every capture's trigger function.  A function
-- (re)created by an extension script would become a member of the
-- extension: each is made a member only while it is regenerated.
DO $upgrade$
DECLARE
    c record;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    UPDATE event_bus.captures x SET condition_expr = event_bus._capture_compile(x.relid, x.condition)
     WHERE x.condition IS NOT NULL;
    FOR c IN SELECT x.relid, x.function_name FROM event_bus.captures x ORDER BY x.relid LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION event_bus ADD FUNCTION event_bus.%I()', c.function_name);
        PERFORM event_bus._capture_generate(c.relid);
        EXECUTE pg_catalog.format('ALTER EXTENSION event_bus DROP FUNCTION event_bus.%I()', c.function_name);
        PERFORM event_bus._capture_depend(pg_catalog.format('event_bus.%I()', c.function_name)::regprocedure);
    END LOOP;
END
$upgrade$;

-----------------------------------------------------------------------------
-- Views: consumers see the subscriptions of their roles, producers the
-- captures of the tables their roles own
-----------------------------------------------------------------------------
CREATE OR REPLACE VIEW event_bus.captured_tables AS
SELECT c.relid AS "table", c.topic, c.operations, c.types, c.key_columns, c.columns, c.exclude_columns,
       c.update_mode, c.condition, c.created_at
  FROM event_bus.captures c JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) c.relid
 WHERE event_bus._visible(r.relowner::regrole);
COMMENT ON VIEW event_bus.captured_tables IS 'Which tables are captured, to which topic, and how (the tables one''s roles own, or all for admins).';

CREATE FUNCTION event_bus._lag_impl(OUT subscription text, OUT pending bigint, OUT oldest_pending_age interval)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
BEGIN
    RETURN QUERY
    WITH subs AS (
        SELECT s.subscription, s.types FROM event_bus.subscriptions s
         WHERE pg_catalog.pg_has_role(event_bus._caller(), s.owner::oid, 'USAGE')
            OR pg_catalog.pg_has_role(event_bus._caller(), 'event_bus_admin', 'USAGE')),
    cur AS (
        SELECT c.subscription, c.topic, c.lane, c.position, c.high, c.pending_xids, c.pending_after, s.types,
               GREATEST(c.high, (SELECT min(lp.lo) FROM event_bus.log_partitions lp
                                  WHERE lp.detaching_at IS NULL) - 1) AS h
          FROM event_bus.cursors c JOIN subs s ON s.subscription OPERATOR(pg_catalog.=) c.subscription),
    lane_top AS MATERIALIZED (  -- per lane and type: every event
        SELECT l.topic, l.lane, t.type, sum(t.n) AS n
          FROM (SELECT DISTINCT x.topic, x.lane FROM cur x) l
         CROSS JOIN LATERAL (SELECT max(x.upto) AS top FROM event_bus.lane_marks x
                              WHERE x.topic OPERATOR(pg_catalog.=) l.topic AND x.lane OPERATOR(pg_catalog.=) l.lane) tm
         CROSS JOIN LATERAL (
               SELECT m.type, m.n FROM event_bus.lane_marks m
                WHERE m.topic OPERATOR(pg_catalog.=) l.topic AND m.lane OPERATOR(pg_catalog.=) l.lane
                  AND m.upto OPERATOR(pg_catalog.=) tm.top
               UNION ALL
               SELECT e.type, pg_catalog.count(*) FROM event_bus.events e
                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(l.topic) AND e.topic OPERATOR(pg_catalog.=) l.topic AND e.lane OPERATOR(pg_catalog.=) l.lane
                  AND e.seq OPERATOR(pg_catalog.>) coalesce(tm.top, 0)
                  AND e.seq OPERATOR(pg_catalog.<=) (SELECT q.last_value FROM event_bus.event_seq q)  -- an index range
                GROUP BY e.type) t
         GROUP BY l.topic, l.lane, t.type),
    lane_upto AS MATERIALIZED ( -- per lane, position and type: the events up to it
        SELECT b.topic, b.lane, b.h, t.type, sum(t.n) AS n
          FROM (SELECT DISTINCT x.topic, x.lane, x.h FROM cur x) b
         CROSS JOIN LATERAL (SELECT max(x.upto) AS below FROM event_bus.lane_marks x
                              WHERE x.topic OPERATOR(pg_catalog.=) b.topic AND x.lane OPERATOR(pg_catalog.=) b.lane
                                AND x.upto OPERATOR(pg_catalog.<=) b.h) bm
         CROSS JOIN LATERAL (
               SELECT m.type, m.n FROM event_bus.lane_marks m
                WHERE m.topic OPERATOR(pg_catalog.=) b.topic AND m.lane OPERATOR(pg_catalog.=) b.lane
                  AND m.upto OPERATOR(pg_catalog.=) bm.below
               UNION ALL
               SELECT e.type, pg_catalog.count(*) FROM event_bus.events e
                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(b.topic) AND e.topic OPERATOR(pg_catalog.=) b.topic AND e.lane OPERATOR(pg_catalog.=) b.lane
                  AND e.seq OPERATOR(pg_catalog.>) coalesce(bm.below, 0) AND e.seq OPERATOR(pg_catalog.<=) b.h
                GROUP BY e.type) t
         GROUP BY b.topic, b.lane, b.h, t.type),
    oldest AS MATERIALIZED (    -- per distinct cursor: its oldest event not handed out
        SELECT o.topic, o.lane, o.position, o.high, o.pending_xids, o.pending_after, o.types, x.emitted_at
          FROM (SELECT DISTINCT y.topic, y.lane, y.position, y.high, y.pending_xids, y.pending_after, y.types
                  FROM cur y) o
         CROSS JOIN LATERAL (
               SELECT e.emitted_at FROM event_bus.events e
                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(o.topic) AND e.topic OPERATOR(pg_catalog.=) o.topic AND e.lane OPERATOR(pg_catalog.=) o.lane
                  AND e.seq OPERATOR(pg_catalog.>) o.position
                  AND NOT event_bus._handed_out(e.seq, e.txid, o.high, o.pending_xids, o.pending_after)
                  AND (o.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (o.types))
                ORDER BY e.seq LIMIT 1) x),
    per_cursor AS (
        SELECT c.subscription,
               coalesce((SELECT sum(t.n) FROM lane_top t
                          WHERE t.topic OPERATOR(pg_catalog.=) c.topic AND t.lane OPERATOR(pg_catalog.=) c.lane
                            AND (c.types IS NULL OR t.type OPERATOR(pg_catalog.=) ANY (c.types))), 0)
             - coalesce((SELECT sum(u.n) FROM lane_upto u
                          WHERE u.topic OPERATOR(pg_catalog.=) c.topic AND u.lane OPERATOR(pg_catalog.=) c.lane
                            AND u.h OPERATOR(pg_catalog.=) c.h
                            AND (c.types IS NULL OR u.type OPERATOR(pg_catalog.=) ANY (c.types))), 0)
             + CASE WHEN c.pending_xids OPERATOR(pg_catalog.=) '{}' THEN 0 ELSE
               (SELECT pg_catalog.count(*) FROM event_bus.events e
                 WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(c.topic) AND e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
                   AND e.seq OPERATOR(pg_catalog.>) c.position AND e.seq OPERATOR(pg_catalog.<=) c.high
                   AND NOT event_bus._handed_out(e.seq, e.txid, c.high, c.pending_xids, c.pending_after)
                   AND (c.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (c.types))) END AS pending,
               (SELECT o.emitted_at FROM oldest o
                 WHERE o.topic OPERATOR(pg_catalog.=) c.topic AND o.lane OPERATOR(pg_catalog.=) c.lane
                   AND o.position OPERATOR(pg_catalog.=) c.position AND o.high OPERATOR(pg_catalog.=) c.high
                   AND o.pending_xids OPERATOR(pg_catalog.=) c.pending_xids
                   AND o.pending_after OPERATOR(pg_catalog.=) c.pending_after
                   AND o.types IS NOT DISTINCT FROM c.types) AS oldest_at
          FROM cur c)
    SELECT s.subscription, coalesce(sum(p.pending), 0)::bigint,
           pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) min(p.oldest_at)
      FROM subs s LEFT JOIN per_cursor p ON p.subscription OPERATOR(pg_catalog.=) s.subscription
     GROUP BY s.subscription;
END
$$;

CREATE FUNCTION event_bus._lag(OUT subscription text, OUT pending bigint, OUT oldest_pending_age interval)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'eb_lag'
LANGUAGE C STABLE;

CREATE OR REPLACE VIEW event_bus.subscription_status AS
SELECT s.subscription, s.topics, s.types, s.ordered, s.paused,
       lag.pending,
       (SELECT coalesce(sum(pg_catalog.cardinality(event_bus._unpack_seqs(l.seqs))), 0)::bigint FROM event_bus.leases l
         WHERE l.subscription OPERATOR(pg_catalog.=) s.subscription) AS in_flight,
       (SELECT pg_catalog.count(*) FROM event_bus.retries r
         WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.lease_id IS NULL) AS retrying,
       (SELECT pg_catalog.count(*) FROM event_bus.dead_letters d
         WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription) AS dead,
       (SELECT min(c.position) FROM event_bus.cursors c
         WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription) AS min_position,
       s.max_attempts, s.lease, s.created_at, s.owner,
       lag.oldest_pending_age
  FROM event_bus.subscriptions s
  LEFT JOIN event_bus._lag() lag ON lag.subscription OPERATOR(pg_catalog.=) s.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.subscription_status IS
'Per subscription: events not yet handed out (pending, counted from per-lane marks without reading the backlog; oldest_pending_age, the age of the oldest of them), in flight, waiting for retry, dead. Consumers see the subscriptions of their roles, admins all.';

CREATE OR REPLACE VIEW event_bus.in_flight AS
SELECT l.subscription, l.topic, l.lane, l.lease_id, pg_catalog.cardinality(x.seqs) AS events, x.seqs,
       l.claimed_at, l.expires_at, l.claimed_by
  FROM event_bus.leases l CROSS JOIN LATERAL (SELECT event_bus._unpack_seqs(l.seqs) AS seqs) x JOIN event_bus.subscriptions s ON s.subscription OPERATOR(pg_catalog.=) l.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.in_flight IS 'Claimed batches that are not yet acknowledged (of the subscriptions one may see).';

CREATE OR REPLACE VIEW event_bus.retry_queue AS
SELECT r.subscription, r.seq, r.topic, r.lane, r.attempt, r.due_at, r.last_error,
       r.lease_id IS NOT NULL AS in_flight
  FROM event_bus.retries r JOIN event_bus.subscriptions s ON s.subscription OPERATOR(pg_catalog.=) r.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.retry_queue IS 'Events waiting for redelivery (in_flight: redelivered and not yet acked), of the subscriptions one may see.';

CREATE OR REPLACE VIEW event_bus.dead_letter_queue AS
SELECT d.subscription, d.seq, d.id, d.topic, d.type, d.version, d.key, d.payload, d.headers, d.emitted_at,
       d.attempts, d.last_error, d.dead_at
  FROM event_bus.dead_letters d JOIN event_bus.subscriptions s ON s.subscription OPERATOR(pg_catalog.=) d.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.dead_letter_queue IS 'Dead letters, with the whole event and the last error, of the subscriptions one may see (redrive or purge them).';

CREATE OR REPLACE VIEW event_bus.worker_status AS
SELECT w.datname, w.database, w.pid, w.state, w.started_at, w.last_round, w.rounds,
       w.notifications, w.last_error,
       r.retention_runs, r.retention_failures, r.partitions_dropped, r.last_retention
  FROM event_bus._worker_status() w
  LEFT JOIN event_bus._retention_counts() r ON r.database OPERATOR(pg_catalog.=) w.database;
COMMENT ON VIEW event_bus.worker_status IS
'The event_bus worker of each database: pid, state, last round, rounds, notifications sent, last error (of any part, retention included); and its retention processes since the server started: runs, failures (last_error says why), partitions dropped, end of the last run.';

CREATE VIEW event_bus.open_emitters AS
SELECT o.pid, a.usename, a.application_name, o.xid, a.xact_start, o.emitting_since,
       pg_catalog.now() OPERATOR(pg_catalog.-) o.emitting_since AS emitting_for,
       ARRAY(SELECT t.topic FROM event_bus.topics t
              WHERE (o.topic_bits OPERATOR(pg_catalog.&) event_bus._topic_bit(t.topic)) OPERATOR(pg_catalog.<>) 0
              ORDER BY t.topic) AS topics,
       o.lowest_seq, a.state
  FROM event_bus._open_emitters() o
  LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) o.pid;
COMMENT ON VIEW event_bus.open_emitters IS
'Open transactions of this database that have emitted: since when, to which topics (by a 64-way hash: rarely a topic it did not emit to as well), and the lowest seq they may hold. Their events are delivered when they commit; until then log partitions from lowest_seq on are kept. event_bus.long_emit_warning logs the long ones.';

CREATE VIEW event_bus.stats AS
SELECT 'topic'::text AS kind, t.topic AS name, st.emitted,
       NULL::bigint AS claimed, NULL::bigint AS acked, NULL::bigint AS failed, NULL::bigint AS retried,
       NULL::bigint AS dead_lettered, NULL::bigint AS expired,
       NULL::bigint AS pending, NULL::interval AS oldest_pending_age, st.since AS stats_since
  FROM event_bus.topics t, LATERAL event_bus._stat('t', t.topic) st
UNION ALL
SELECT 'subscription', ss.subscription, NULL, st.claimed, st.acked, st.failed, st.retried,
       st.dead_lettered, st.expired, ss.pending, ss.oldest_pending_age, st.since
  FROM event_bus.subscription_status ss, LATERAL event_bus._stat('s', ss.subscription) st;
COMMENT ON VIEW event_bus.stats IS
'Cumulative counts since stats_since (the server start, the topic''s or subscription''s creation, or the last stats_reset()): per topic, events emitted; per subscription, events claimed, acked, failed (fail() calls), retried (scheduled for another attempt), dead_lettered, expired (leases that ran out), and its lag: pending events and the age of the oldest. Counted in shared memory at commit.';

-- (CloudEvents of dead letters: the view must exist first.)
CREATE FUNCTION event_bus.to_cloudevent(d event_bus.dead_letter_queue) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus.to_cloudevent(d.seq, d.id, d.topic, d.type, d.version, d.key, d.payload, d.headers, d.emitted_at)
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(event_bus.dead_letter_queue) IS
'Render a dead letter (a row of event_bus.dead_letter_queue) as a CloudEvents 1.0 JSON document.';

CREATE VIEW event_bus.scheduled AS
SELECT s.id, s.topic, s.type, s.version, s.key, s.payload, s.headers, s.deliver_at, s.scheduled_at,
       s.scheduled_by
  FROM event_bus.scheduled_events s
 WHERE event_bus._visible(s.scheduled_by);
COMMENT ON VIEW event_bus.scheduled IS
'Events emitted with deliver_at that have not entered the log yet; each enters it (with a seq, keeping its id) when it is due.  Members of the role that scheduled one, and admins, see it and may cancel it with cancel_scheduled(id).';

-----------------------------------------------------------------------------
-- Privileges
-----------------------------------------------------------------------------
DO $upgrade$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT d.objid::regprocedure FROM pg_catalog.pg_depend d
              WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::regclass
                AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::regclass
                AND d.refobjid OPERATOR(pg_catalog.=) (SELECT e.oid FROM pg_catalog.pg_extension e
                                                        WHERE e.extname OPERATOR(pg_catalog.=) 'event_bus')
                AND d.deptype OPERATOR(pg_catalog.=) 'e'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
    END LOOP;
END
$upgrade$;
REVOKE SELECT ON event_bus.subscriptions FROM event_bus_producer, event_bus_consumer;
-- Consumers may now work their own subscriptions with these; admins keep
-- them as members of event_bus_consumer.
REVOKE EXECUTE ON FUNCTION event_bus.unsubscribe(text), event_bus.pause(text), event_bus.resume(text),
                           event_bus.replay(text, text), event_bus.redrive(text, bigint[]),
                           event_bus.purge_dead_letters(text, interval)
    FROM event_bus_admin;
GRANT SELECT ON event_bus.topic_grants, event_bus.dead_letter_queue TO event_bus_admin;
GRANT SELECT ON SEQUENCE event_bus.event_seq TO event_bus_admin;
GRANT SELECT ON event_bus.open_emitters, event_bus.stats, event_bus.lane_marks, event_bus.dedupe_keys,
    event_bus.scheduled_events, event_bus.scheduled TO event_bus_admin;
-- Dropped and made again for the packed leases (storage, above):
GRANT SELECT ON event_bus.subscription_status, event_bus.in_flight TO event_bus_admin;
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
