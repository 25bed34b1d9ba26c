/* event_bus--1.0.sql: the event log, topics, subscriptions and delivery state */

\echo Use "CREATE EXTENSION event_bus" to load this file. \quit

-- Refuse to install unless the library is preloaded: the visibility horizon
-- lives in shared memory, and without it consumers could skip events.
CREATE FUNCTION event_bus._check_preloaded() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_check_preloaded' LANGUAGE C STRICT;
SELECT event_bus._check_preloaded();

-----------------------------------------------------------------------------
-- Roles.  Roles are cluster-wide, so they are created only if missing and
-- survive DROP EXTENSION.  Every function has EXECUTE revoked from PUBLIC
-- and granted to one of these.
-----------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'event_bus_producer') THEN
        CREATE ROLE event_bus_producer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'event_bus_consumer') THEN
        CREATE ROLE event_bus_consumer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'event_bus_admin') THEN
        CREATE ROLE event_bus_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT event_bus_producer, event_bus_consumer TO event_bus_admin;
GRANT USAGE ON SCHEMA event_bus TO event_bus_producer, event_bus_consumer, event_bus_admin;

-----------------------------------------------------------------------------
-- Internal helpers implemented in C
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus._check_name(kind text, name text) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_check_name_sql' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION event_bus._horizon() RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_horizon_sql' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._note_coverage(bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_note_coverage_sql' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._topics_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_topics_changed' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._launcher_rescan() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_launcher_rescan' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._wake_gen() RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_wake_gen' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._wait(gen bigint, timeout_ms integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_wait' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._wake() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_wake' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._worker_status(
    OUT database oid, OUT datname text, OUT pid integer, OUT state text, OUT started_at timestamptz,
    OUT last_round timestamptz, OUT rounds bigint, OUT notifications bigint, OUT last_error text)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_worker_status' LANGUAGE C VOLATILE;

-----------------------------------------------------------------------------
-- Storage
-----------------------------------------------------------------------------

-- Seqs of the log.  CACHE 1 (the default) keeps seqs monotonic across
-- backends, which the visibility horizon relies on.
CREATE SEQUENCE event_bus.event_seq AS bigint CACHE 1;

CREATE TABLE event_bus.topics (
    topic       text COLLATE "C" PRIMARY KEY,
    lanes       integer NOT NULL CHECK (lanes BETWEEN 1 AND 256),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    description text
);

-- The append-only log.  Partitioned by seq so retention drops whole
-- partitions; rows are never updated or deleted.
CREATE TABLE event_bus.events (
    seq         bigint NOT NULL,
    id          uuid NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    version     integer NOT NULL,
    key         text,
    lane        smallint NOT NULL,
    payload     jsonb NOT NULL,
    headers     jsonb NOT NULL,
    emitted_at  timestamptz NOT NULL
) PARTITION BY RANGE (seq);
-- Each partition gets one index, (topic, lane, seq): claims read one lane of
-- one topic in seq order (see _ensure_partitions).  It is created per
-- partition rather than on the parent so that pg_dump can restore the
-- partitions of this extension-owned table.

-- Partitions of the log, created ahead by _ensure_partitions().
CREATE TABLE event_bus.log_partitions (
    lo          bigint PRIMARY KEY,
    hi          bigint NOT NULL,
    relname     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    closed_at   timestamptz     -- when every seq in it was final
);

CREATE TABLE event_bus.subscriptions (
    subscription text COLLATE "C" PRIMARY KEY,
    topics       text[] COLLATE "C" NOT NULL,
    types        text[],
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    lease        interval NOT NULL,
    backoff_base interval NOT NULL,
    backoff_max  interval NOT NULL,
    ordered      boolean NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- One cursor per subscription, topic and lane: every event of the lane at
-- or below position has been handed out.
CREATE TABLE event_bus.cursors (
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    topic        text COLLATE "C" NOT NULL,
    lane         smallint NOT NULL,
    position     bigint NOT NULL,
    PRIMARY KEY (subscription, topic, lane)
);

-- One row per claimed batch of one lane; ack removes seqs from it.
CREATE SEQUENCE event_bus.lease_id_seq AS bigint;
CREATE TABLE event_bus.leases (
    lease_id     bigint PRIMARY KEY DEFAULT pg_catalog.nextval('event_bus.lease_id_seq'),
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    topic        text COLLATE "C" NOT NULL,
    lane         smallint NOT NULL,
    seqs         bigint[] NOT NULL,
    claimed_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    claimed_by   integer NOT NULL
);
CREATE INDEX leases_subscription ON event_bus.leases (subscription, topic, lane);
CREATE INDEX leases_expires_at ON event_bus.leases (expires_at);

-- Events that failed or whose lease expired: only these get per-event rows.
-- attempt is the number the next delivery will carry.
CREATE TABLE event_bus.retries (
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    seq          bigint NOT NULL,
    topic        text COLLATE "C" NOT NULL,
    lane         smallint NOT NULL,
    attempt      integer NOT NULL,
    due_at       timestamptz NOT NULL,
    last_error   text,
    lease_id     bigint,
    PRIMARY KEY (subscription, seq)
);
CREATE INDEX retries_due ON event_bus.retries (subscription, due_at) WHERE lease_id IS NULL;
CREATE INDEX retries_lane ON event_bus.retries (subscription, topic, lane, seq);

-- Dead letters keep a full copy of the event, so they outlive the log.
CREATE SEQUENCE event_bus.dead_id_seq AS bigint;
CREATE TABLE event_bus.dead_letters (
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    seq          bigint NOT NULL,
    id           uuid NOT NULL,
    topic        text COLLATE "C" NOT NULL,
    type         text NOT NULL,
    version      integer NOT NULL,
    key          text,
    lane         smallint NOT NULL,
    payload      jsonb NOT NULL,
    headers      jsonb NOT NULL,
    emitted_at   timestamptz NOT NULL,
    attempts     integer NOT NULL,
    last_error   text,
    dead_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    dead_id      bigint NOT NULL DEFAULT pg_catalog.nextval('event_bus.dead_id_seq'),
    PRIMARY KEY (subscription, seq)
);
CREATE INDEX dead_letters_dead_id ON event_bus.dead_letters (dead_id);

SELECT pg_catalog.pg_extension_config_dump('event_bus.event_seq', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.topics', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.log_partitions', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.cursors', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.leases', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.lease_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.dead_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.retries', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.dead_letters', '');

COMMENT ON TABLE event_bus.topics IS 'Named event streams; lanes fix how many ordered lanes a topic is split into.';
COMMENT ON TABLE event_bus.events IS 'The append-only event log, partitioned by seq; never updated, trimmed by dropping whole partitions.';
COMMENT ON TABLE event_bus.log_partitions IS 'Partitions of event_bus.events and the seq range [lo, hi) each covers.';
COMMENT ON TABLE event_bus.subscriptions IS 'Consumer groups: each receives every event of its topics (optionally only some types).';
COMMENT ON TABLE event_bus.cursors IS 'Per subscription, topic and lane: the highest seq handed out.';
COMMENT ON TABLE event_bus.leases IS 'Claimed, unacknowledged batches (one row per lane per claim).';
COMMENT ON TABLE event_bus.retries IS 'Failed or expired events waiting for (or in) redelivery.';
COMMENT ON TABLE event_bus.dead_letters IS 'Events that exhausted their attempts or were dead-lettered, with a full copy of the event and the last error.';

-----------------------------------------------------------------------------
-- Internal SQL helpers
-----------------------------------------------------------------------------

-- Create log partitions until they cover every seq <= want.  Returns the
-- exclusive upper bound now covered (as this transaction sees it).
--
-- A partition is created as a plain table and then attached: ATTACH takes
-- only SHARE UPDATE EXCLUSIVE on the log, so emits and claims of other
-- sessions go on while the creating transaction is open.  Creators are
-- serialised by an advisory lock; a caller that finds another transaction
-- already extending the log does not wait for it as long as the existing
-- partitions still reach past need (the seqs it is about to take).
CREATE FUNCTION event_bus._ensure_partitions(want bigint, need bigint DEFAULT NULL) RETURNS bigint
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
        SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END
          INTO top FROM event_bus.event_seq s;
    END IF;
    WHILE top <= want LOOP
        name := pg_catalog.format('events_%s', pg_catalog.lpad(top::text, 19, '0'));
        EXECUTE pg_catalog.format('CREATE TABLE event_bus.%I (LIKE event_bus.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE pg_catalog.format('CREATE INDEX %I ON event_bus.%I (topic, lane, seq)', name || '_topic_lane_seq', name);
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

-- Exponential backoff with jitter: the delay before attempt + 1, given that
-- attempt failed.  Half of it fixed, half random ("equal jitter").
CREATE FUNCTION event_bus._backoff(base interval, cap interval, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d / 2 + d / 2 * pg_catalog.random()
      FROM (SELECT LEAST(cap, base * pg_catalog.power(2, LEAST(attempt - 1, 30))::float8) AS d) x
$$;

-- Look up a subscription for an operation, raising the usual errors.
CREATE FUNCTION event_bus._subscription(name text) RETURNS event_bus.subscriptions
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s event_bus.subscriptions;
BEGIN
    PERFORM event_bus._check_name('subscription', name);
    SELECT * INTO s FROM event_bus.subscriptions x WHERE x.subscription OPERATOR(pg_catalog.=) name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with event_bus.subscribe().';
    END IF;
    RETURN s;
END
$$;

-- Raise an error for seqs a subscription could not have been handed:
-- events that do not exist, belong to a topic it does not read, or have not
-- been delivered to it yet.  Seqs that pass were delivered earlier and have
-- since been acked, failed or dead-lettered (or were in a log partition that
-- retention has dropped, which it does only once every subscription is past).
CREATE FUNCTION event_bus._check_delivered(s event_bus.subscriptions, seqs bigint[]) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v     bigint;
    lanes smallint[];
    e     record;
BEGIN
    SELECT pg_catalog.array_agg(g::smallint) INTO lanes
      FROM pg_catalog.generate_series(0, (SELECT max(t.lanes) - 1 FROM event_bus.topics t
                                          WHERE t.topic OPERATOR(pg_catalog.=) ANY (s.topics))) g;
    FOREACH v IN ARRAY seqs LOOP
        SELECT ev.topic, ev.lane, c.position INTO e
          FROM event_bus.events ev
          LEFT JOIN event_bus.cursors c
            ON c.subscription OPERATOR(pg_catalog.=) s.subscription
           AND c.topic OPERATOR(pg_catalog.=) ev.topic AND c.lane OPERATOR(pg_catalog.=) ev.lane
         WHERE ev.topic OPERATOR(pg_catalog.=) ANY (s.topics)
           AND ev.lane OPERATOR(pg_catalog.=) ANY (lanes)
           AND ev.seq OPERATOR(pg_catalog.=) v;
        IF NOT FOUND AND NOT EXISTS (SELECT FROM event_bus.dead_letters d
                                      WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
                                        AND d.seq OPERATOR(pg_catalog.=) v)
           -- Below the oldest partition, retention dropped it: every
           -- subscription had finished it, so it was delivered.
           AND v OPERATOR(pg_catalog.>=) coalesce((SELECT min(p.lo) FROM event_bus.log_partitions p), 0) THEN
            RAISE EXCEPTION 'event % does not belong to subscription "%"', v, s.subscription
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('No event with seq %s exists in topics %s.', v, s.topics),
                      HINT = 'Pass the seqs returned by event_bus.claim() for this subscription.';
        ELSIF FOUND AND (e.position IS NULL OR v > e.position) THEN
            RAISE EXCEPTION 'event % has not been delivered to subscription "%"', v, s.subscription
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the seqs returned by event_bus.claim() for this subscription.';
        END IF;
    END LOOP;
END
$$;

-- Move one event to the dead letters of a subscription, with a copy of the
-- event.  The retry row, if any, goes.
CREATE FUNCTION event_bus._bury(s event_bus.subscriptions, p_seq bigint, p_topic text, p_lane smallint,
                                p_attempts integer, p_error text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO event_bus.dead_letters
           (subscription, seq, id, topic, type, version, key, lane, payload, headers, emitted_at,
            attempts, last_error)
    SELECT s.subscription, e.seq, e.id, e.topic, e.type, e.version, e.key, e.lane, e.payload,
           e.headers, e.emitted_at, p_attempts, p_error
      FROM event_bus.events e
     WHERE e.topic OPERATOR(pg_catalog.=) p_topic AND e.lane OPERATOR(pg_catalog.=) p_lane
       AND e.seq OPERATOR(pg_catalog.=) p_seq
    ON CONFLICT (subscription, seq) DO UPDATE
       SET attempts = excluded.attempts, last_error = excluded.last_error, dead_at = excluded.dead_at;
    DELETE FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) p_seq;
$$;

-- Record a failed delivery of one event: schedule attempt + 1 after a
-- backoff (or after retry_in), or dead-letter it once attempt reached
-- max_attempts.  Returns 'retry' or 'dead'.
CREATE FUNCTION event_bus._failed(s event_bus.subscriptions, p_seq bigint, p_topic text, p_lane smallint,
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
    RETURN 'retry';
END
$$;

-- For an ordered subscription, give back every seq still in a lease as a
-- retry at due_at, keeping its attempt: the lane then delivers them again in
-- seq order before anything newer.  The lease row goes.
CREATE FUNCTION event_bus._release(s event_bus.subscriptions, p_lease_id bigint, p_due timestamptz) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH l AS (DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) p_lease_id
               RETURNING x.topic, x.lane, x.seqs)
    INSERT INTO event_bus.retries AS r (subscription, seq, topic, lane, attempt, due_at, last_error, lease_id)
    SELECT s.subscription, v, l.topic, l.lane, 1, p_due, NULL, NULL
      FROM l, pg_catalog.unnest(l.seqs) v
    ON CONFLICT (subscription, seq) DO UPDATE SET due_at = excluded.due_at, lease_id = NULL;
$$;

-----------------------------------------------------------------------------
-- Topics
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.create_topic(topic text, lanes integer DEFAULT 4, description text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    existing integer;
BEGIN
    PERFORM event_bus._check_name('topic', create_topic.topic);
    IF create_topic.lanes IS NULL OR create_topic.lanes NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'lanes must be between 1 and 256, not %', coalesce(create_topic.lanes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO event_bus.topics AS t (topic, lanes, description)
    VALUES (create_topic.topic, create_topic.lanes, create_topic.description)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM event_bus._topics_changed();
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
COMMENT ON FUNCTION event_bus.create_topic(text, integer, text) IS
'Create a topic split into lanes (1-256); returns false if it already exists with the same lanes.';

CREATE FUNCTION event_bus.drop_topic(topic text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subs text;
BEGIN
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
    PERFORM event_bus._topics_changed();
END
$$;
COMMENT ON FUNCTION event_bus.drop_topic(text) IS
'Drop a topic no subscription reads; its events stay in the log until retention drops their partitions.';

-----------------------------------------------------------------------------
-- Publishing
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.emit(topic text, type text, payload jsonb, key text DEFAULT NULL,
                               headers jsonb DEFAULT NULL, version integer DEFAULT 1)
RETURNS bigint
AS 'MODULE_PATHNAME', 'eb_emit'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer) IS
'Publish one event in the current transaction; returns its seq.  The topic must exist.';

CREATE FUNCTION event_bus.emit_many(topic text, type text, payloads jsonb[], keys text[] DEFAULT NULL,
                                    headers jsonb DEFAULT NULL, version integer DEFAULT 1)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'eb_emit_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer) IS
'Publish one event per payload (with the matching key) in one INSERT; returns their seqs in order.';

-----------------------------------------------------------------------------
-- Subscriptions
-----------------------------------------------------------------------------

-- Where a new cursor starts: 'latest' (only events emitted from now on),
-- 'earliest' (everything still in the log) or a timestamp (events emitted
-- at or after it).
CREATE FUNCTION event_bus._start_position(p_topic text, p_lane smallint, start text, h bigint) RETURNS bigint
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
     WHERE e.topic OPERATOR(pg_catalog.=) p_topic AND e.lane OPERATOR(pg_catalog.=) p_lane
       AND e.seq OPERATOR(pg_catalog.<=) h AND e.emitted_at OPERATOR(pg_catalog.>=) ts;
    RETURN coalesce(pos, h);
END
$$;

CREATE FUNCTION event_bus.subscribe(subscription text, topics text[], types text[] DEFAULT NULL,
                                    start text DEFAULT 'latest', max_attempts integer DEFAULT 5,
                                    lease interval DEFAULT '30 seconds',
                                    backoff_base interval DEFAULT '1 second',
                                    backoff_max interval DEFAULT '10 minutes',
                                    ordered boolean DEFAULT false)
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
    PERFORM event_bus._check_name('subscription', subscribe.subscription);
    IF subscribe.topics IS NULL OR pg_catalog.cardinality(subscribe.topics) = 0 THEN
        RAISE EXCEPTION 'subscription "%" needs at least one topic', subscribe.subscription
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH t IN ARRAY subscribe.topics LOOP
        PERFORM event_bus._check_name('topic', t);
    END LOOP;
    SELECT pg_catalog.array_agg(DISTINCT x ORDER BY x) INTO tl FROM pg_catalog.unnest(subscribe.topics) x;
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
    IF subscribe.types IS NOT NULL AND (pg_catalog.cardinality(subscribe.types) = 0
                                        OR pg_catalog.array_position(subscribe.types, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'types must be NULL (every type) or a non-empty array without NULLs'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF subscribe.max_attempts IS NULL OR subscribe.max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF subscribe.lease IS NULL OR subscribe.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', coalesce(subscribe.lease::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF subscribe.backoff_base IS NULL OR subscribe.backoff_base < interval '0'
       OR subscribe.backoff_max IS NULL OR subscribe.backoff_max < subscribe.backoff_base THEN
        RAISE EXCEPTION 'backoff_base must not be negative and backoff_max must not be below it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF subscribe.start IS NULL THEN
        RAISE EXCEPTION 'start must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use ''latest'', ''earliest'' or a timestamp.';
    END IF;
    IF subscribe.ordered IS NULL THEN
        RAISE EXCEPTION 'ordered must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- Serialise with concurrent subscribe/unsubscribe of the same name.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus.subscribe:' || subscribe.subscription));
    SELECT * INTO old FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) subscribe.subscription;
    IF FOUND THEN
        IF old.topics OPERATOR(pg_catalog.<>) tl THEN
            RAISE EXCEPTION 'subscription "%" already exists with other topics', subscribe.subscription
                USING ERRCODE = 'duplicate_object',
                      DETAIL = pg_catalog.format('It reads %s.', old.topics),
                      HINT = 'Unsubscribe it first, or pick another name.';
        END IF;
        UPDATE event_bus.subscriptions s
           SET types = subscribe.types, max_attempts = subscribe.max_attempts, lease = subscribe.lease,
               backoff_base = subscribe.backoff_base, backoff_max = subscribe.backoff_max,
               ordered = subscribe.ordered
         WHERE s.subscription OPERATOR(pg_catalog.=) subscribe.subscription;
        RETURN false;
    END IF;

    INSERT INTO event_bus.subscriptions
           (subscription, topics, types, max_attempts, lease, backoff_base, backoff_max, ordered)
    VALUES (subscribe.subscription, tl, subscribe.types, subscribe.max_attempts, subscribe.lease,
            subscribe.backoff_base, subscribe.backoff_max, subscribe.ordered);
    h := event_bus._horizon();
    INSERT INTO event_bus.cursors (subscription, topic, lane, position)
    SELECT subscribe.subscription, tp.topic, g::smallint,
           event_bus._start_position(tp.topic, g::smallint, subscribe.start, h)
      FROM event_bus.topics tp, pg_catalog.generate_series(0, tp.lanes - 1) g
     WHERE tp.topic OPERATOR(pg_catalog.=) ANY (tl);
    RETURN true;
END
$$;
COMMENT ON FUNCTION event_bus.subscribe(text, text[], text[], text, integer, interval, interval, interval, boolean) IS
'Create a subscription (consumer group) on topics, starting at ''latest'', ''earliest'' or a timestamp; returns false and updates the options if it already exists with the same topics.';

CREATE FUNCTION event_bus.unsubscribe(subscription text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._subscription(unsubscribe.subscription);
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus.subscribe:' || unsubscribe.subscription));
    DELETE FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) unsubscribe.subscription;
END
$$;
COMMENT ON FUNCTION event_bus.unsubscribe(text) IS
'Remove a subscription with its cursors, leases, retries and dead letters.';

-----------------------------------------------------------------------------
-- Consuming
-----------------------------------------------------------------------------
-- One attempt at a claim for a validated, unpaused subscription.
-- Generic plans: a claim runs the same few statements over and over, and
-- planning them afresh each time (custom plans) was a tenth of its cost.
CREATE FUNCTION event_bus._claim_once(s event_bus.subscriptions, max_events integer, len interval)
RETURNS TABLE (seq bigint, id uuid, topic text, type text, version integer, key text, payload jsonb,
               headers jsonb, emitted_at timestamptz, attempt integer, lane integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    t        timestamptz := pg_catalog.clock_timestamp();
    h        bigint;
    left_    integer := max_events;
    c        record;
    pos      bigint;
    got      bigint[];
    lid      bigint;
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
            INSERT INTO event_bus.leases (subscription, topic, lane, seqs, claimed_at, expires_at, claimed_by)
            VALUES (s.subscription, c.topic, c.lane, c.seqs, t, t + len, pg_catalog.pg_backend_pid())
            RETURNING lease_id INTO lid;
            RETURN QUERY
            WITH u AS (
                UPDATE event_bus.retries r SET lease_id = lid
                 WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
                   AND r.seq OPERATOR(pg_catalog.=) ANY (c.seqs)
                RETURNING r.seq, r.attempt)
            SELECT e.seq, e.id, e.topic::text, e.type, e.version, e.key, e.payload, e.headers,
                   e.emitted_at, u.attempt, e.lane::integer
              FROM event_bus.events e JOIN u ON u.seq OPERATOR(pg_catalog.=) e.seq
             WHERE e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
               AND e.seq OPERATOR(pg_catalog.=) ANY (c.seqs)
             ORDER BY e.seq;
            left_ := left_ - pg_catalog.cardinality(c.seqs);
        END LOOP;
        IF left_ <= 0 THEN
            RETURN;
        END IF;
    END IF;

    -- 2. New events, lane by lane.  The horizon is computed before the
    --    statements below take their snapshots.
    h := event_bus._horizon();
    FOR c IN
        SELECT cu.topic, cu.lane FROM event_bus.cursors cu
         WHERE cu.subscription OPERATOR(pg_catalog.=) s.subscription
           AND (CASE WHEN s.ordered THEN
                    NOT EXISTS (SELECT FROM event_bus.leases l
                                 WHERE l.subscription OPERATOR(pg_catalog.=) cu.subscription
                                   AND l.topic OPERATOR(pg_catalog.=) cu.topic
                                   AND l.lane OPERATOR(pg_catalog.=) cu.lane)
                    AND EXISTS (SELECT FROM event_bus.retries r
                                 WHERE r.subscription OPERATOR(pg_catalog.=) cu.subscription
                                   AND r.topic OPERATOR(pg_catalog.=) cu.topic
                                   AND r.lane OPERATOR(pg_catalog.=) cu.lane)
                ELSE false END
                OR ((NOT s.ordered
                     OR NOT EXISTS (SELECT FROM event_bus.leases l
                                     WHERE l.subscription OPERATOR(pg_catalog.=) cu.subscription
                                       AND l.topic OPERATOR(pg_catalog.=) cu.topic
                                       AND l.lane OPERATOR(pg_catalog.=) cu.lane))
                    AND EXISTS (SELECT FROM event_bus.events e
                                 WHERE e.topic OPERATOR(pg_catalog.=) cu.topic
                                   AND e.lane OPERATOR(pg_catalog.=) cu.lane
                                   AND e.seq OPERATOR(pg_catalog.>) cu.position
                                   AND e.seq OPERATOR(pg_catalog.<=) h
                                   AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types)))))
         ORDER BY pg_catalog.random()
    LOOP
        SELECT cu.position INTO pos FROM event_bus.cursors cu
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
                INSERT INTO event_bus.leases (subscription, topic, lane, seqs, claimed_at, expires_at, claimed_by)
                VALUES (s.subscription, c.topic, c.lane, got, t, t + len, pg_catalog.pg_backend_pid())
                RETURNING lease_id INTO lid;
                RETURN QUERY
                WITH u AS (
                    UPDATE event_bus.retries r SET lease_id = lid
                     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription
                       AND r.seq OPERATOR(pg_catalog.=) ANY (got)
                    RETURNING r.seq, r.attempt)
                SELECT e.seq, e.id, e.topic::text, e.type, e.version, e.key, e.payload, e.headers,
                       e.emitted_at, u.attempt, e.lane::integer
                  FROM event_bus.events e JOIN u ON u.seq OPERATOR(pg_catalog.=) e.seq
                 WHERE e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
                   AND e.seq OPERATOR(pg_catalog.=) ANY (got)
                 ORDER BY e.seq;
                left_ := left_ - pg_catalog.cardinality(got);
                EXIT WHEN left_ <= 0;
                CONTINUE;
            END IF;
        END IF;

        RETURN QUERY
        WITH ev AS (
            SELECT e.* FROM event_bus.events e
             WHERE e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
               AND e.seq OPERATOR(pg_catalog.>) pos AND e.seq OPERATOR(pg_catalog.<=) h
               AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types))
             ORDER BY e.seq
             LIMIT left_),
        l AS (
            INSERT INTO event_bus.leases (subscription, topic, lane, seqs, claimed_at, expires_at, claimed_by)
            SELECT s.subscription, c.topic, c.lane, pg_catalog.array_agg(ev.seq ORDER BY ev.seq),
                   t, t + len, pg_catalog.pg_backend_pid()
              FROM ev HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0),
        u AS (
            UPDATE event_bus.cursors cu SET position = (SELECT max(ev.seq) FROM ev)
             WHERE cu.subscription OPERATOR(pg_catalog.=) s.subscription
               AND cu.topic OPERATOR(pg_catalog.=) c.topic AND cu.lane OPERATOR(pg_catalog.=) c.lane
               AND EXISTS (SELECT FROM ev))
        SELECT ev.seq, ev.id, ev.topic::text, ev.type, ev.version, ev.key, ev.payload, ev.headers,
               ev.emitted_at, 1, ev.lane::integer
          FROM ev ORDER BY ev.seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        left_ := left_ - n;
        EXIT WHEN left_ <= 0;
    END LOOP;
END
$$;

CREATE FUNCTION event_bus.claim(subscription text, max_events integer DEFAULT 100, lease interval DEFAULT NULL,
                                wait interval DEFAULT NULL)
RETURNS TABLE (seq bigint, id uuid, topic text, type text, version integer, key text, payload jsonb,
               headers jsonb, emitted_at timestamptz, attempt integer, lane integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s        event_bus.subscriptions;
    gen      bigint;
    deadline timestamptz;
    ms       bigint;
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
        RAISE EXCEPTION 'event_bus.claim() requires READ COMMITTED isolation'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = pg_catalog.format('The current transaction is %s.',
                                             pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))),
                  HINT = 'A claim must see events committed after the transaction began; run it in a READ COMMITTED transaction.';
    END IF;
    s := event_bus._subscription(claim.subscription);
    IF claim.max_events IS NULL OR claim.max_events NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 10000, not %', coalesce(claim.max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF claim.lease IS NOT NULL AND claim.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', claim.lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF claim.wait IS NOT NULL AND claim.wait < interval '0' THEN
        RAISE EXCEPTION 'wait must not be negative, not %', claim.wait
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    deadline := pg_catalog.clock_timestamp() + coalesce(claim.wait, interval '0');
    LOOP
        -- Read the wake-up generation before looking: an event that becomes
        -- claimable after the look bumps it, so the wait below returns at once.
        gen := event_bus._wake_gen();
        IF NOT s.paused THEN
            RETURN QUERY SELECT * FROM event_bus._claim_once(s, claim.max_events, coalesce(claim.lease, s.lease));
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
        ms := pg_catalog.ceil(pg_catalog.date_part('epoch', deadline - pg_catalog.clock_timestamp()) * 1000);
        EXIT WHEN ms <= 0;
        PERFORM event_bus._wait(gen, LEAST(ms, 2147483647)::integer);
        -- The subscription may have been paused, resumed or dropped meanwhile.
        s := event_bus._subscription(claim.subscription);
    END LOOP;
END
$$;
COMMENT ON FUNCTION event_bus.claim(text, integer, interval, interval) IS
'Lease up to max_events events of a subscription: due retries first, then new events lane by lane. With wait, sleep in the server until events arrive or the wait ends. Requires READ COMMITTED.';


CREATE FUNCTION event_bus.ack(subscription text, seqs bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    s      event_bus.subscriptions;
    acked  bigint[];
    rest   bigint[];
BEGIN
    s := event_bus._subscription(ack.subscription);
    IF ack.seqs IS NULL OR pg_catalog.array_position(ack.seqs, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'seqs must be an array of event seqs without NULLs'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    WITH l AS (
        SELECT x.lease_id, x.seqs FROM event_bus.leases x
         WHERE x.subscription OPERATOR(pg_catalog.=) s.subscription
           AND x.seqs OPERATOR(pg_catalog.&&) ack.seqs
         FOR UPDATE),
    d AS (
        DELETE FROM event_bus.leases x USING l
         WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id AND l.seqs OPERATOR(pg_catalog.<@) ack.seqs),
    u AS (
        UPDATE event_bus.leases x
           SET seqs = ARRAY(SELECT v FROM pg_catalog.unnest(l.seqs) v
                             WHERE v OPERATOR(pg_catalog.<>) ALL (ack.seqs) ORDER BY v)
          FROM l
         WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id AND NOT l.seqs OPERATOR(pg_catalog.<@) ack.seqs),
    a AS (
        SELECT DISTINCT v FROM l, pg_catalog.unnest(l.seqs) v WHERE v OPERATOR(pg_catalog.=) ANY (ack.seqs)),
    r AS (
        DELETE FROM event_bus.retries x
         WHERE x.subscription OPERATOR(pg_catalog.=) s.subscription
           AND x.seq IN (SELECT a.v FROM a))
    SELECT pg_catalog.array_agg(a.v) INTO acked FROM a;
    IF s.ordered AND acked IS NOT NULL THEN
        PERFORM event_bus._wake();      -- a lane may be free again
    END IF;

    SELECT pg_catalog.array_agg(DISTINCT v) INTO rest FROM pg_catalog.unnest(ack.seqs) v
     WHERE acked IS NULL OR v OPERATOR(pg_catalog.<>) ALL (acked);
    IF rest IS NOT NULL THEN
        -- Acking again is fine; acking what was never delivered is not.
        PERFORM event_bus._check_delivered(s, rest);
    END IF;
    RETURN coalesce(pg_catalog.cardinality(acked), 0);
END
$$;
COMMENT ON FUNCTION event_bus.ack(text, bigint[]) IS
'Acknowledge claimed events; idempotent, returns how many were still in flight and are now done.';

-- Find and lock the lease of a subscription that holds seq, or raise.
CREATE FUNCTION event_bus._leased(s event_bus.subscriptions, p_seq bigint) RETURNS event_bus.leases
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l event_bus.leases;
BEGIN
    IF p_seq IS NULL THEN
        RAISE EXCEPTION 'seq must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO l FROM event_bus.leases x
     WHERE x.subscription OPERATOR(pg_catalog.=) s.subscription
       AND p_seq OPERATOR(pg_catalog.=) ANY (x.seqs)
     FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM event_bus._check_delivered(s, ARRAY[p_seq]);
        RAISE EXCEPTION 'event % is not in flight for subscription "%"', p_seq, s.subscription
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It has already been acked, failed or dead-lettered, or its lease expired.';
    END IF;
    RETURN l;
END
$$;

CREATE FUNCTION event_bus.fail(subscription text, seq bigint, error text DEFAULT NULL,
                               retry_in interval DEFAULT NULL)
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
BEGIN
    s := event_bus._subscription(fail.subscription);
    IF fail.retry_in IS NOT NULL AND fail.retry_in < interval '0' THEN
        RAISE EXCEPTION 'retry_in must not be negative, not %', fail.retry_in
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    l := event_bus._leased(s, fail.seq);
    SELECT r.attempt INTO att FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) fail.seq
     FOR UPDATE;
    att := coalesce(att, 1);
    due := pg_catalog.clock_timestamp()
           + coalesce(fail.retry_in, event_bus._backoff(s.backoff_base, s.backoff_max, att));
    outcome := event_bus._failed(s, fail.seq, l.topic, l.lane, att, fail.error, due);
    PERFORM event_bus._wake();          -- the worker schedules the retry

    l.seqs := pg_catalog.array_remove(l.seqs, fail.seq);
    IF s.ordered THEN
        -- The rest of the lane's batch waits behind the failed event.
        UPDATE event_bus.leases x SET seqs = l.seqs WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id;
        PERFORM event_bus._release(s, l.lease_id,
                                   CASE WHEN outcome = 'dead' THEN pg_catalog.clock_timestamp() ELSE due END);
    ELSIF pg_catalog.cardinality(l.seqs) = 0 THEN
        DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id;
    ELSE
        UPDATE event_bus.leases x SET seqs = l.seqs WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id;
    END IF;
    RETURN outcome;
END
$$;
COMMENT ON FUNCTION event_bus.fail(text, bigint, text, interval) IS
'Report that processing a claimed event failed: returns ''retry'' (redelivered after backoff, or retry_in) or ''dead'' (max_attempts reached, moved to dead letters).';

CREATE FUNCTION event_bus.dead_letter(subscription text, seq bigint, reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s   event_bus.subscriptions;
    l   event_bus.leases;
    att integer;
BEGIN
    s := event_bus._subscription(dead_letter.subscription);
    l := event_bus._leased(s, dead_letter.seq);
    SELECT r.attempt INTO att FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) dead_letter.seq;
    PERFORM event_bus._bury(s, dead_letter.seq, l.topic, l.lane, coalesce(att, 1), dead_letter.reason);
    l.seqs := pg_catalog.array_remove(l.seqs, dead_letter.seq);
    IF pg_catalog.cardinality(l.seqs) = 0 THEN
        DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id;
    ELSE
        UPDATE event_bus.leases x SET seqs = l.seqs WHERE x.lease_id OPERATOR(pg_catalog.=) l.lease_id;
    END IF;
END
$$;
COMMENT ON FUNCTION event_bus.dead_letter(text, bigint, text) IS
'Move a claimed event straight to the dead letters of the subscription, with a reason.';

-----------------------------------------------------------------------------
-- Maintenance and administration
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.run_maintenance(
    OUT expired_leases integer, OUT retried integer, OUT dead_lettered integer, OUT log_covered_upto bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t   timestamptz := pg_catalog.clock_timestamp();
    l   record;
    s   event_bus.subscriptions;
    v   bigint;
    att integer;
    due timestamptz;
BEGIN
    expired_leases := 0;
    retried := 0;
    dead_lettered := 0;
    -- Expired leases: every event still in them failed one attempt.  Leases
    -- a consumer is acking right now are skipped and seen next time.
    FOR l IN
        SELECT x.* FROM event_bus.leases x
         WHERE x.expires_at OPERATOR(pg_catalog.<=) t
         ORDER BY x.lease_id
         LIMIT pg_catalog.current_setting('event_bus.expire_batch_size')::integer
         FOR UPDATE SKIP LOCKED
    LOOP
        SELECT * INTO s FROM event_bus.subscriptions x WHERE x.subscription OPERATOR(pg_catalog.=) l.subscription;
        expired_leases := expired_leases + 1;
        -- One due time per lease keeps an ordered lane's events together.
        due := t + event_bus._backoff(s.backoff_base, s.backoff_max, 1);
        FOREACH v IN ARRAY l.seqs LOOP
            SELECT r.attempt INTO att FROM event_bus.retries r
             WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) v
             FOR UPDATE;
            att := coalesce(att, 1);
            IF event_bus._failed(s, v, l.topic, l.lane, att, 'lease expired',
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

    -- Keep two partitions of room ahead of the newest seq.
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END INTO v FROM event_bus.event_seq q;
    log_covered_upto := event_bus._ensure_partitions(
        v + 2 * pg_catalog.current_setting('event_bus.partition_size')::bigint);
END
$$;
COMMENT ON FUNCTION event_bus.run_maintenance() IS
'Expire leases into retries or dead letters and create log partitions ahead; the worker calls it, tests and cron jobs may too.';

-----------------------------------------------------------------------------
-- The worker's jobs (each callable by hand or from cron as well)
-----------------------------------------------------------------------------

-- One dispatch round: NOTIFY "event_bus.<subscription>" once per
-- subscription with events that became claimable since seq p_from (all
-- claimable ones when p_from is NULL) or retries that became due, and
-- "event_bus.dead_letters" once per subscription with new dead letters.
-- p_state carries what the previous round saw; pass the returned state to
-- the next call.
CREATE FUNCTION event_bus._dispatch(p_from bigint, p_state jsonb,
                                    OUT horizon bigint, OUT state jsonb, OUT notified integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r         record;
    t         timestamptz := pg_catalog.clock_timestamp();
    due       jsonb;
    last_dead bigint := (p_state OPERATOR(pg_catalog.->>) 'dead_id')::bigint;
    dead      bigint;
BEGIN
    horizon := event_bus._horizon();
    notified := 0;
    IF p_from OPERATOR(pg_catalog.>) horizon THEN
        p_from := NULL;     -- the log was created anew
    END IF;

    IF p_from IS NULL THEN
        FOR r IN
            SELECT s.subscription FROM event_bus.subscriptions s
             WHERE NOT s.paused
               AND EXISTS (SELECT FROM event_bus.cursors c JOIN event_bus.events e
                              ON e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
                             AND e.seq OPERATOR(pg_catalog.>) c.position AND e.seq OPERATOR(pg_catalog.<=) horizon
                           WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription
                             AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types)))
        LOOP
            PERFORM pg_catalog.pg_notify('event_bus.' || r.subscription,
                pg_catalog.json_build_object('subscription', r.subscription, 'seq', horizon)::text);
            notified := notified + 1;
        END LOOP;
    ELSIF horizon OPERATOR(pg_catalog.>) p_from THEN
        FOR r IN
            -- One index range scan per topic and lane that a subscription
            -- reads (OFFSET 0 keeps the planner from turning it into a scan
            -- of the whole index).
            WITH fresh AS (
                SELECT l.topic, e.type, pg_catalog.count(*) AS n, max(e.seq) AS newest
                  FROM (SELECT DISTINCT c.topic, c.lane FROM event_bus.cursors c) l
                 CROSS JOIN LATERAL (
                       SELECT x.type, x.seq FROM event_bus.events x
                        WHERE x.topic OPERATOR(pg_catalog.=) l.topic
                          AND x.lane OPERATOR(pg_catalog.=) l.lane
                          AND x.seq OPERATOR(pg_catalog.>) p_from AND x.seq OPERATOR(pg_catalog.<=) horizon
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
                pg_catalog.json_build_object('subscription', r.subscription, 'seq', r.newest, 'events', r.n)::text);
            notified := notified + 1;
        END LOOP;
    END IF;

    -- Retries that became due since the previous round.
    SELECT pg_catalog.jsonb_object_agg(x.subscription, x.n) INTO due
      FROM (SELECT q.subscription, pg_catalog.count(*) AS n FROM event_bus.retries q
             WHERE q.lease_id IS NULL AND q.due_at OPERATOR(pg_catalog.<=) t
             GROUP BY q.subscription) x;
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
            pg_catalog.json_build_object('subscription', r.subscription, 'seq', horizon, 'retries', r.n)::text);
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
    state := pg_catalog.jsonb_build_object('due', due, 'dead_id', dead);
END
$$;

-- When the worker must look again: the next retry to become due or lease
-- to expire.
-- (PL/pgSQL rather than SQL so that its plan is kept between calls.)
CREATE FUNCTION event_bus._next_due() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN LEAST((SELECT min(r.due_at) FROM event_bus.retries r
                   WHERE r.lease_id IS NULL AND r.due_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()),
                 (SELECT min(l.expires_at) FROM event_bus.leases l));
END
$$;

-- The lowest seq any subscription still needs: the first event after each
-- cursor (a lane with nothing for its subscription up to the horizon needs
-- nothing below it), pending retries and leases.  Log partitions wholly
-- below it may go.  Read-only: cursors are never moved here, so events that
-- appear below the horizon later (pg_restore loading a dump) are not skipped.
CREATE FUNCTION event_bus._oldest_needed(p_subscription text, h bigint) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT LEAST(
        (SELECT min(CASE WHEN EXISTS (SELECT FROM event_bus.events e
                                       WHERE e.topic OPERATOR(pg_catalog.=) c.topic
                                         AND e.lane OPERATOR(pg_catalog.=) c.lane
                                         AND e.seq OPERATOR(pg_catalog.>) c.position
                                         AND e.seq OPERATOR(pg_catalog.<=) h
                                         AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types)))
                         THEN c.position + 1 ELSE h + 1 END)
           FROM event_bus.cursors c JOIN event_bus.subscriptions s
             ON s.subscription OPERATOR(pg_catalog.=) c.subscription
          WHERE p_subscription IS NULL OR c.subscription OPERATOR(pg_catalog.=) p_subscription),
        (SELECT min(r.seq) FROM event_bus.retries r
          WHERE p_subscription IS NULL OR r.subscription OPERATOR(pg_catalog.=) p_subscription),
        (SELECT min(l.seqs[1]) FROM event_bus.leases l
          WHERE p_subscription IS NULL OR l.subscription OPERATOR(pg_catalog.=) p_subscription),
        h + 1)
$$;

-- Retention: drop whole log partitions that every subscription has passed,
-- once event_bus.retention has elapsed since they were complete.  Never
-- DELETE on the log.  Returns the number of partitions dropped.
CREATE FUNCTION event_bus._retention() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms'
AS $$
DECLARE
    h       bigint := event_bus._horizon();
    keep    bigint;
    keep_for interval;
    p       record;
    dropped integer := 0;
BEGIN
    UPDATE event_bus.log_partitions lp SET closed_at = pg_catalog.now()
     WHERE lp.closed_at IS NULL AND lp.hi OPERATOR(pg_catalog.<=) h + 1;

    keep := event_bus._oldest_needed(NULL, h);
    SELECT pg_catalog.make_interval(secs => x.setting::float8) INTO keep_for
      FROM pg_catalog.pg_settings x WHERE x.name OPERATOR(pg_catalog.=) 'event_bus.retention';
    FOR p IN
        SELECT lp.* FROM event_bus.log_partitions lp
         WHERE lp.hi OPERATOR(pg_catalog.<=) keep
           AND lp.closed_at OPERATOR(pg_catalog.<=) pg_catalog.now() - coalesce(keep_for, interval '7 days')
         ORDER BY lp.lo
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP TABLE event_bus.%I', p.relname);
            DELETE FROM event_bus.log_partitions lp WHERE lp.lo OPERATOR(pg_catalog.=) p.lo;
            dropped := dropped + 1;
        EXCEPTION WHEN lock_not_available THEN
            EXIT;   -- busy right now: next time
        END;
    END LOOP;
    RETURN dropped;
END
$$;

CREATE FUNCTION event_bus.pause(subscription text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE event_bus.subscriptions s SET paused = true
     WHERE s.subscription OPERATOR(pg_catalog.=) (event_bus._subscription(pause.subscription)).subscription;
$$;
COMMENT ON FUNCTION event_bus.pause(text) IS 'Stop handing out events of a subscription; claims return nothing until resume().';

CREATE FUNCTION event_bus.resume(subscription text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE event_bus.subscriptions s SET paused = false
     WHERE s.subscription OPERATOR(pg_catalog.=) (event_bus._subscription(resume.subscription)).subscription;
    SELECT event_bus._wake();
$$;
COMMENT ON FUNCTION event_bus.resume(text) IS 'Resume a paused subscription.';

CREATE FUNCTION event_bus.replay(subscription text, start text DEFAULT 'earliest') RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s event_bus.subscriptions;
    h bigint;
    n integer;
BEGIN
    s := event_bus._subscription(replay.subscription);
    IF replay.start IS NULL THEN
        RAISE EXCEPTION 'start must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Use ''latest'', ''earliest'' or a timestamp.';
    END IF;
    h := event_bus._horizon();
    UPDATE event_bus.cursors c SET position = event_bus._start_position(c.topic, c.lane, replay.start, h)
     WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM event_bus._wake();
    RETURN n;
END
$$;
COMMENT ON FUNCTION event_bus.replay(text, text) IS
'Move every cursor of a subscription to ''earliest'', ''latest'' or a timestamp; returns the number of lane cursors moved. Leases in flight are not touched.';

CREATE FUNCTION event_bus.redrive(subscription text, seqs bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s event_bus.subscriptions;
    n integer;
    gone bigint;
BEGIN
    s := event_bus._subscription(redrive.subscription);
    -- Retention may have dropped the partition of an old dead letter: its
    -- copy stays here, but it can no longer be delivered from the log.
    SELECT d.seq INTO gone FROM event_bus.dead_letters d
     WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
       AND (redrive.seqs IS NULL OR d.seq OPERATOR(pg_catalog.=) ANY (redrive.seqs))
       AND NOT EXISTS (SELECT FROM event_bus.events e
                        WHERE e.topic OPERATOR(pg_catalog.=) d.topic AND e.lane OPERATOR(pg_catalog.=) d.lane
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
           AND (redrive.seqs IS NULL OR d.seq OPERATOR(pg_catalog.=) ANY (redrive.seqs))
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
COMMENT ON FUNCTION event_bus.redrive(text, bigint[]) IS
'Give dead letters of a subscription (all, or the given seqs) a fresh set of attempts; returns how many.';

CREATE FUNCTION event_bus.purge_dead_letters(subscription text, older_than interval DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s event_bus.subscriptions;
    n integer;
BEGIN
    s := event_bus._subscription(purge_dead_letters.subscription);
    DELETE FROM event_bus.dead_letters d
     WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
       AND (purge_dead_letters.older_than IS NULL
            OR d.dead_at OPERATOR(pg_catalog.<) pg_catalog.now() - purge_dead_letters.older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION event_bus.purge_dead_letters(text, interval) IS
'Delete dead letters of a subscription (all, or those dead for longer than older_than); returns how many.';

-----------------------------------------------------------------------------
-- Outbox capture: row changes of ordinary tables become events in the same
-- transaction, through statement-level triggers with transition tables.
-----------------------------------------------------------------------------
CREATE TABLE event_bus.captures (
    relid           regclass PRIMARY KEY,
    topic           text COLLATE "C" NOT NULL,
    operations      text[] NOT NULL,
    types           jsonb NOT NULL,
    key_columns     text[],
    key_attnums     smallint[],
    columns         text[],
    column_attnums  smallint[],
    exclude_columns text[],
    exclude_attnums smallint[],
    update_mode     text NOT NULL,
    condition       text,
    function_name   text NOT NULL,      -- the generated trigger function in schema event_bus
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('event_bus.captures', '');
COMMENT ON TABLE event_bus.captures IS 'Tables whose row changes are captured as events, and how (see event_bus.capture()).';

-- The live attnums of columns named in a list, raising a clear error for a
-- name that is not a column.
CREATE FUNCTION event_bus._capture_attnums(p_table regclass, p_cols text[], what text) RETURNS smallint[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c   text;
    n   smallint;
    res smallint[] := '{}';
BEGIN
    IF p_cols IS NULL THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.cardinality(p_cols) = 0 OR pg_catalog.array_position(p_cols, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '% must be NULL or a non-empty array of column names', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH c IN ARRAY p_cols LOOP
        SELECT a.attnum INTO n FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) p_table AND a.attname OPERATOR(pg_catalog.=) c
           AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'column "%" of table % does not exist', c, p_table
                USING ERRCODE = 'undefined_column',
                      DETAIL = pg_catalog.format('It is named in %s.', what);
        END IF;
        res := res || n;
    END LOOP;
    RETURN res;
END
$$;

-- Bring the column lists of a capture in line with the table after DDL:
-- renamed columns are followed by attnum, dropped excluded columns are
-- forgotten, and a dropped key or included column is an error.
CREATE FUNCTION event_bus._capture_columns(p_table regclass, names text[], nums smallint[], what text,
                                           may_vanish boolean, OUT new_names text[], OUT new_nums smallint[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i  integer;
    nm text;
BEGIN
    IF names IS NULL THEN
        RETURN;
    END IF;
    new_names := '{}';
    new_nums := '{}';
    FOR i IN 1 .. pg_catalog.cardinality(names) LOOP
        SELECT a.attname INTO nm FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) p_table AND a.attnum OPERATOR(pg_catalog.=) nums[i]
           AND NOT a.attisdropped;
        IF nm IS NULL THEN
            CONTINUE WHEN may_vanish;
            RAISE EXCEPTION 'cannot drop column "%" of table %: event_bus captures it as %', names[i], p_table, what
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Change the capture with event_bus.capture() or remove it with event_bus.uncapture() first.';
        END IF;
        new_names := new_names || nm;
        new_nums := new_nums || nums[i];
    END LOOP;
    IF pg_catalog.cardinality(new_names) = 0 THEN
        new_names := NULL;
        new_nums := NULL;
    END IF;
END
$$;

-- Drop the capture triggers of a table.
CREATE FUNCTION event_bus._capture_drop_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t name;
BEGIN
    FOR t IN SELECT g.tgname FROM pg_catalog.pg_trigger g
              WHERE g.tgrelid OPERATOR(pg_catalog.=) p_table AND g.tgname::text LIKE 'event\_bus\_capture\_%'
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t, p_table);
    END LOOP;
END
$$;

-- (Re)generate the trigger function and triggers of a captured table from
-- its row in event_bus.captures.
CREATE FUNCTION event_bus._capture_generate(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $gen$
DECLARE
    c        event_bus.captures;
    fn       text;
    qname    text;
    rowexpr  text;
    keyexpr  text;
    oldrow   text;
    okey     text;
    cond     text;
    payload  text;
    body     text := '';
    op       text;
    hdr      text;
    i        integer;
BEGIN
    SELECT * INTO c FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    fn := pg_catalog.format('event_bus.%I', c.function_name);
    SELECT pg_catalog.format('%I.%I', n.nspname, r.relname) INTO qname
      FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace
     WHERE r.oid OPERATOR(pg_catalog.=) p_table;

    -- The row image of alias a, as jsonb.
    IF c.columns IS NOT NULL THEN
        SELECT 'pg_catalog.jsonb_build_object(' ||
               pg_catalog.string_agg(pg_catalog.format('%L, %%1$s.%I', x, x), ', ' ORDER BY o) || ')'
          INTO rowexpr FROM pg_catalog.unnest(c.columns) WITH ORDINALITY AS u(x, o);
    ELSIF c.exclude_columns IS NOT NULL THEN
        rowexpr := pg_catalog.format('(pg_catalog.to_jsonb(%%1$s) OPERATOR(pg_catalog.-) %L::text[])', c.exclude_columns);
    ELSE
        rowexpr := 'pg_catalog.to_jsonb(%1$s)';
    END IF;
    -- The key of alias a: one column as text, several as a JSON array.
    IF c.key_columns IS NULL THEN
        keyexpr := 'NULL::text';
    ELSIF pg_catalog.cardinality(c.key_columns) = 1 THEN
        keyexpr := pg_catalog.format('(%%1$s.%I)::text', c.key_columns[1]);
    ELSE
        SELECT 'pg_catalog.jsonb_build_array(' ||
               pg_catalog.string_agg(pg_catalog.format('%%1$s.%I', x), ', ' ORDER BY o) || ')::text'
          INTO keyexpr FROM pg_catalog.unnest(c.key_columns) WITH ORDINALITY AS u(x, o);
    END IF;
    cond := coalesce('(' || c.condition || ')', 'true');

    FOREACH op IN ARRAY c.operations LOOP
        hdr := pg_catalog.quote_literal(pg_catalog.jsonb_build_object(
                   'source', 'table:' || qname, 'operation', op)::text) || '::jsonb';
        IF op = 'truncate' THEN
            body := body || pg_catalog.format($f$
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM event_bus.emit(%L, %L, pg_catalog.jsonb_build_object('table', %L), NULL, %s);
    END IF;$f$, c.topic, c.types OPERATOR(pg_catalog.->>) op, qname, hdr);
            CONTINUE;
        END IF;
        IF op = 'update' AND c.update_mode <> 'new' THEN
            -- Pair old and new rows by key.
            SELECT pg_catalog.string_agg(pg_catalog.format('o.%1$I IS NOT DISTINCT FROM (q.r).%1$I', x), ' AND ')
              INTO okey FROM pg_catalog.unnest(c.key_columns) x;
            oldrow := pg_catalog.format(rowexpr, 'o');
            IF c.update_mode = 'old_and_new' THEN
                payload := pg_catalog.format('pg_catalog.jsonb_build_object(''old'', %s, ''new'', %s)',
                                             oldrow, pg_catalog.format(rowexpr, '(q.r)'));
            ELSE
                payload := pg_catalog.format(
                    '(SELECT pg_catalog.jsonb_object_agg(e.key, e.value) FROM pg_catalog.jsonb_each(%s) e'
                    ' WHERE e.key OPERATOR(pg_catalog.=) ANY (%L::text[])'
                    ' OR (%s OPERATOR(pg_catalog.->) e.key) IS DISTINCT FROM e.value)',
                    pg_catalog.format(rowexpr, '(q.r)'), c.key_columns, oldrow);
            END IF;
            body := body || pg_catalog.format($f$
    IF TG_OP = 'UPDATE' THEN
        PERFORM event_bus.emit_many(%5$L, %6$L, a.ps, a.ks, %7$s)
           FROM (SELECT pg_catalog.array_agg(x.p ORDER BY x.ord) AS ps,
                        pg_catalog.array_agg(x.k ORDER BY x.ord) AS ks
                   FROM (SELECT %1$s AS p, %2$s AS k, q.ord
                           FROM (SELECT n AS r, pg_catalog.row_number() OVER () AS ord
                                   FROM new_rows n WHERE %3$s) q
                           LEFT JOIN old_rows o ON %4$s) x) a
          WHERE a.ps IS NOT NULL;
    END IF;$f$, payload, pg_catalog.format(keyexpr, '(q.r)'), cond, okey, c.topic, c.types OPERATOR(pg_catalog.->>) op, hdr);
            CONTINUE;
        END IF;
        -- A scan of the transition table returns rows in the order the
        -- statement wrote them; nothing here reorders them.
        -- The arrays stay inside one statement: passed through PL/pgSQL
        -- variables they would be copied into every plan as constants.
        body := body || pg_catalog.format($f$
    IF TG_OP = %1$L THEN
        PERFORM event_bus.emit_many(%6$L, %7$L, a.ps, a.ks, %8$s)
           FROM (SELECT pg_catalog.array_agg(x.p) AS ps, pg_catalog.array_agg(x.k) AS ks
                   FROM (SELECT %2$s AS p, %3$s AS k FROM %4$s n WHERE %5$s) x) a
          WHERE a.ps IS NOT NULL;
    END IF;$f$, pg_catalog.upper(op), pg_catalog.format(rowexpr, 'n'), pg_catalog.format(keyexpr, 'n'),
            CASE op WHEN 'delete' THEN 'old_rows' ELSE 'new_rows' END, cond,
            c.topic, c.types OPERATOR(pg_catalog.->>) op, hdr);
    END LOOP;

    EXECUTE pg_catalog.format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS %L$f$, fn,
        E'\nBEGIN' || body ||
        E'\n    RETURN NULL;\nEND\n');
    EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s() IS %L', fn,
                              'event_bus capture of ' || qname || ' (generated by event_bus.capture(); do not edit)');

    PERFORM event_bus._capture_drop_triggers(p_table);
    FOREACH op IN ARRAY c.operations LOOP
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
            'event_bus_capture_' || op, pg_catalog.upper(op), p_table,
            CASE op WHEN 'insert' THEN 'REFERENCING NEW TABLE AS new_rows'
                    WHEN 'update' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                    WHEN 'delete' THEN 'REFERENCING OLD TABLE AS old_rows'
                    ELSE '' END,
            fn);
    END LOOP;
END
$gen$;

-- Check that a capture condition compiles against the table.
CREATE FUNCTION event_bus._capture_check_condition(p_table regclass, p_condition text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_condition IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE pg_catalog.format('SELECT (%s)::boolean FROM %s n LIMIT 0', p_condition, p_table);
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'invalid capture condition for table %: %', p_table, SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The condition is a boolean SQL expression over the columns of the row, evaluated with search_path = pg_catalog, pg_temp.';
    END;
END
$$;

CREATE FUNCTION event_bus._capture_impl(p_table regclass, p_topic text, p_operations text[], p_types jsonb,
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
    PERFORM event_bus._capture_check_condition(p_table, p_condition);

    IF NOT EXISTS (SELECT FROM event_bus.topics tp WHERE tp.topic OPERATOR(pg_catalog.=) t) THEN
        PERFORM event_bus.create_topic(t);
    END IF;

    SELECT x.function_name INTO fname FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    existed := FOUND;
    DELETE FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    INSERT INTO event_bus.captures (relid, topic, operations, types, key_columns, key_attnums, columns,
                                    column_attnums, exclude_columns, exclude_attnums, update_mode, condition,
                                    function_name)
    VALUES (p_table, t, ops, types,
            keycols, event_bus._capture_attnums(p_table, keycols, 'key_columns'),
            p_columns, event_bus._capture_attnums(p_table, p_columns, 'columns'),
            p_exclude_columns, event_bus._capture_attnums(p_table, p_exclude_columns, 'exclude_columns'),
            p_update_mode, p_condition, coalesce(fname, '_capture_' || p_table::oid));
    PERFORM event_bus._capture_generate(p_table);
    RETURN NOT existed;
END
$$;

CREATE FUNCTION event_bus._uncapture_impl(p_table regclass) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fname text;
BEGIN
    SELECT x.function_name INTO fname FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM event_bus._capture_drop_triggers(p_table);
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS event_bus.%I()', fname);
    DELETE FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    RETURN true;
END
$$;

CREATE FUNCTION event_bus.capture("table" regclass, topic text DEFAULT NULL,
                                  operations text[] DEFAULT ARRAY['insert', 'update', 'delete'],
                                  types jsonb DEFAULT NULL, key_columns text[] DEFAULT NULL,
                                  columns text[] DEFAULT NULL, exclude_columns text[] DEFAULT NULL,
                                  update_mode text DEFAULT 'new', condition text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_call_as_owner'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION event_bus.capture(regclass, text, text[], jsonb, text[], text[], text[], text, text) IS
'Turn row changes of a table into events in the same transaction (statement-level triggers). Only the table''s owner may call it. Returns false when it replaced an existing capture.';

CREATE FUNCTION event_bus.uncapture("table" regclass) RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_call_as_owner'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION event_bus.uncapture(regclass) IS
'Stop capturing a table (idempotent: returns false if it was not captured).';

-- DDL on a captured table: follow renamed columns, forget dropped excluded
-- columns, refuse to drop key or included columns or to break the
-- condition, and regenerate the trigger function.
CREATE FUNCTION event_bus._capture_ddl() RETURNS event_trigger
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
        SELECT DISTINCT d.objid FROM pg_catalog.pg_event_trigger_ddl_commands() d
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
           AND d.objid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT x.relid::oid FROM event_bus.captures x))
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
        PERFORM event_bus._capture_check_condition(c.relid, c.condition);
        UPDATE event_bus.captures x
           SET key_columns = kc.new_names, key_attnums = kc.new_nums,
               columns = ic.new_names, column_attnums = ic.new_nums,
               exclude_columns = ec.new_names, exclude_attnums = ec.new_nums
         WHERE x.relid OPERATOR(pg_catalog.=) c.relid;
        PERFORM event_bus._capture_generate(c.relid);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER event_bus_capture_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION event_bus._capture_ddl();

-- A dropped captured table leaves the registry, with its trigger function.
CREATE FUNCTION event_bus._capture_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regclass('event_bus.captures') IS NULL THEN
        RETURN;     -- the extension itself is being dropped
    END IF;
    FOR r IN
        DELETE FROM event_bus.captures c
         USING pg_catalog.pg_event_trigger_dropped_objects() d
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
           AND d.objsubid OPERATOR(pg_catalog.=) 0
           AND d.objid OPERATOR(pg_catalog.=) c.relid::oid
        RETURNING c.function_name
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS event_bus.%I()', r.function_name);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER event_bus_capture_drop ON sql_drop
    EXECUTE FUNCTION event_bus._capture_dropped();

CREATE VIEW event_bus.captured_tables AS
SELECT c.relid AS "table", c.topic, c.operations, c.types, c.key_columns, c.columns, c.exclude_columns,
       c.update_mode, c.condition, c.created_at
  FROM event_bus.captures c;
COMMENT ON VIEW event_bus.captured_tables IS 'Which tables are captured, to which topic, and how.';

-----------------------------------------------------------------------------
-- CloudEvents
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.to_cloudevent(seq bigint, id uuid, topic text, type text, version integer,
                                        key text, payload jsonb, headers jsonb, emitted_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_object_agg(x.key, x.value)
      FROM pg_catalog.jsonb_each(pg_catalog.jsonb_build_object(
               'specversion', '1.0',
               'id', id::text,
               'source', coalesce(headers OPERATOR(pg_catalog.->>) 'source',
                                  '/event_bus/' || pg_catalog.current_database() || '/' || topic),
               'type', type,
               'subject', key,
               'time', pg_catalog.to_char(emitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'datacontenttype', 'application/json',
               'data', payload,
               'topic', topic,
               'sequence', seq::text,
               'partitionkey', key,
               'dataversion', version,
               'traceparent', headers OPERATOR(pg_catalog.->>) 'traceparent',
               'tracestate', headers OPERATOR(pg_catalog.->>) 'tracestate')) x
     WHERE x.value OPERATOR(pg_catalog.<>) 'null'::jsonb OR x.key OPERATOR(pg_catalog.=) 'data'
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(bigint, uuid, text, text, integer, text, jsonb, jsonb, timestamptz) IS
'Render an event as a CloudEvents 1.0 JSON document (structured mode).';

CREATE FUNCTION event_bus.to_cloudevent(e event_bus.events) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus.to_cloudevent(e.seq, e.id, e.topic, e.type, e.version, e.key, e.payload, e.headers, e.emitted_at)
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(event_bus.events) IS
'Render a row of event_bus.events as a CloudEvents 1.0 JSON document.';

-----------------------------------------------------------------------------
-- Views for psql
-----------------------------------------------------------------------------
CREATE VIEW event_bus.subscription_status AS
SELECT s.subscription, s.topics, s.types, s.ordered, s.paused,
       (SELECT pg_catalog.count(*) FROM event_bus.cursors c JOIN event_bus.events e
            ON e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
           AND e.seq OPERATOR(pg_catalog.>) c.position
         WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription
           AND (s.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (s.types))) AS pending,
       (SELECT coalesce(sum(pg_catalog.cardinality(l.seqs)), 0)::bigint FROM event_bus.leases l
         WHERE l.subscription OPERATOR(pg_catalog.=) s.subscription) AS in_flight,
       (SELECT pg_catalog.count(*) FROM event_bus.retries r
         WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.lease_id IS NULL) AS retrying,
       (SELECT pg_catalog.count(*) FROM event_bus.dead_letters d
         WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription) AS dead,
       (SELECT min(c.position) FROM event_bus.cursors c
         WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription) AS min_position,
       s.max_attempts, s.lease, s.created_at
  FROM event_bus.subscriptions s;
COMMENT ON VIEW event_bus.subscription_status IS
'Per subscription: events not yet handed out (pending), in flight, waiting for retry, dead.';

CREATE VIEW event_bus.in_flight AS
SELECT l.subscription, l.topic, l.lane, l.lease_id, pg_catalog.cardinality(l.seqs) AS events, l.seqs,
       l.claimed_at, l.expires_at, l.claimed_by
  FROM event_bus.leases l;
COMMENT ON VIEW event_bus.in_flight IS 'Claimed batches that are not yet acknowledged.';

CREATE VIEW event_bus.retry_queue AS
SELECT r.subscription, r.seq, r.topic, r.lane, r.attempt, r.due_at, r.last_error,
       r.lease_id IS NOT NULL AS in_flight
  FROM event_bus.retries r;
COMMENT ON VIEW event_bus.retry_queue IS 'Events waiting for redelivery (in_flight: redelivered and not yet acked).';

CREATE VIEW event_bus.worker_status AS
SELECT w.datname, w.database, w.pid, w.state, w.started_at, w.last_round, w.rounds,
       w.notifications, w.last_error
  FROM event_bus._worker_status() w;
COMMENT ON VIEW event_bus.worker_status IS
'The event_bus worker of each database: pid, state, last round, rounds, notifications sent, last error.';

CREATE VIEW event_bus.retention_status AS
WITH h AS (SELECT event_bus._horizon() AS h),
need AS (
    SELECT s.subscription, s.paused, event_bus._oldest_needed(s.subscription, h.h) AS oldest_needed_seq
      FROM event_bus.subscriptions s, h)
SELECT n.subscription, n.paused, n.oldest_needed_seq,
       (SELECT pg_catalog.count(*) FROM event_bus.log_partitions lp
         WHERE lp.closed_at IS NOT NULL AND lp.hi OPERATOR(pg_catalog.>) n.oldest_needed_seq) AS partitions_held,
       n.oldest_needed_seq OPERATOR(pg_catalog.=) (SELECT min(m.oldest_needed_seq) FROM need m)
       AND n.oldest_needed_seq OPERATOR(pg_catalog.<=) (SELECT h.h FROM h) AS holds_retention
  FROM need n;
COMMENT ON VIEW event_bus.retention_status IS
'Per subscription: the oldest seq it still needs and how many complete log partitions that keeps; holds_retention marks the one holding the log back.';

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
