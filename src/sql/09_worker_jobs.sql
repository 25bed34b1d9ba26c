-----------------------------------------------------------------------------
-- The worker's jobs (each callable by hand or from cron as well)
-----------------------------------------------------------------------------

-- One dispatch round from the log: NOTIFY "event_bus.<subscription>" once
-- per subscription with events that became claimable since the previous
-- round (all claimable ones when p_from is NULL) or retries that became due,
-- and "event_bus.dead_letters" once per subscription with new dead letters.
-- p_from is the previous round's horizon and p_state what else it saw: its
-- max_seq and the transactions then open.  New are the events above that
-- max_seq, and those above p_from of the transactions that have ended since.
-- Pass the returned horizon and state to the next call.  The worker counts
-- new events itself from what emitting commits report (dispatch.c), and
-- calls this only for its first round and when it missed reports.
-- Generic plans: with the log's partitions, the plan cache keeps choosing
-- custom plans (they prune partitions at plan time), and planning was most
-- of a round's cost; generic plans prune when they start.
CREATE FUNCTION event_bus._dispatch(p_from bigint, p_state jsonb,
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

-- The part of a dispatch round that is not about new events: NOTIFY
-- "event_bus.<subscription>" for retries that became due since the previous
-- round, "event_bus.dead_letters" for new dead letters.  p_state is the
-- previous round's state (its "due" and "dead_id"); the returned state has
-- them updated.  The worker calls it after it has dispatched new events
-- itself (dispatch.c), when retries or leases changed or one became due.
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

-- When the worker must look again: the next retry to become due, lease to
-- expire, or scheduled event to enter the log.
-- (PL/pgSQL rather than SQL so that its plan is kept between calls.)
CREATE FUNCTION event_bus._next_due() RETURNS timestamptz
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

-- The lowest seq any subscription still needs: the first event after each
-- cursor (a lane with nothing for its subscription up to the horizon needs
-- nothing below it), pending retries and leases.  Log partitions wholly
-- below it may go.  Read-only: cursors are never moved here, so events that
-- appear below the horizon later (pg_restore loading a dump) are not skipped.
CREATE FUNCTION event_bus._oldest_needed(p_subscription text, h bigint) RETURNS bigint
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

-- The log partitions retention may drop now, in seq order: registered
-- partitions that every subscription has passed and that have been complete
-- for event_bus.retention.  Partitions that became complete get their
-- closed_at first, and every lane a mark where the droppable ones end.
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

-- Retention in one transaction, for hosts without the worker (which uses
-- _retention_candidates instead): drop the droppable partitions with DROP
-- TABLE under a short lock timeout.  Never DELETE on the log.  Returns the
-- number of partitions dropped.
CREATE FUNCTION event_bus._retention() RETURNS integer
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

-- The log partitions retention may drop now, for the worker's retention
-- process, which detaches them with DETACH PARTITION ... CONCURRENTLY (no
-- ACCESS EXCLUSIVE lock on the log, so emits and claims never queue behind
-- it) and then drops them.  With take, the droppable partitions are marked
-- (detaching_at) in this transaction, and every marked partition is
-- returned with how far its removal got - 'attached', 'pending' (detach
-- started), 'detached' or 'gone' - so that a run that was interrupted is
-- finished by the next one.
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

-- Drop a log partition that retention has detached (never one still
-- attached to the log) and take it out of the registry.
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
