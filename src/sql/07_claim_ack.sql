-----------------------------------------------------------------------------
-- Consuming
-----------------------------------------------------------------------------
-- Lease retries of one lane (p_seqs, in seq order) under token tok and
-- return them with their attempt numbers: the due retries of an unordered
-- subscription, or the leading due retries of an ordered lane.
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

-- One attempt at a claim for a validated, unpaused ordered subscription (claim.c
-- claims for unordered ones itself).  Unordered subscriptions work here too.
-- Generic plans: a claim runs the same few statements over and over, and
-- planning them afresh each time (custom plans) was a tenth of its cost.
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

-- What claim() hands out, one row per event: a named type, so that a row
-- of a claim can be passed on whole (to_cloudevent(delivery)).
CREATE TYPE event_bus.delivery AS (
    seq bigint, id uuid, topic text, type text, version integer, key text, payload jsonb,
    headers jsonb, emitted_at timestamptz, attempt integer, lane integer, lease_token uuid);
COMMENT ON TYPE event_bus.delivery IS 'An event as claim() hands it out: the event, its attempt number, its lane and the lease_token of the claim.';

CREATE FUNCTION event_bus.claim(subscription text, max_events integer DEFAULT 100, lease interval DEFAULT NULL,
                                wait interval DEFAULT NULL)
RETURNS SETOF event_bus.delivery
AS 'MODULE_PATHNAME', 'eb_claim'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.claim(text, integer, interval, interval) IS
'Lease up to max_events events of a subscription: due retries first, then new events lane by lane. With wait, sleep in the server until events arrive or the wait ends. Every row carries the lease_token of this claim: pass it to ack, fail, dead_letter and extend so that a call made after the lease expired cannot touch a newer delivery. Requires READ COMMITTED.';


-- Would a claim of the subscription take something now?  Due retries, or
-- a lane a claim would look at, read without leasing.  It may say yes
-- for a lane whose new events are all of other types or rolled back: the
-- claim then moves the cursor past them, and the next check says no.
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

CREATE FUNCTION event_bus.ack(subscription text, seqs bigint[], token uuid DEFAULT NULL) RETURNS integer
AS 'MODULE_PATHNAME', 'eb_ack'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.ack(text, bigint[], uuid) IS
'Acknowledge claimed events; idempotent, returns how many were still in flight (under token, when given) and are now done.';

-- Find and lock the lease of a subscription that holds seq, or raise.  A
-- plain index scan, as ack's (claim.c): leases come and go with every claim
-- and ack, and a bitmap scan never marks the dead entries of the index, so
-- a subscription whose consumers only fail read thousands of them a call.
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

-- extend(): a heartbeat for slow handlers.
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

