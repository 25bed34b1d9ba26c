-----------------------------------------------------------------------------
-- Maintenance and administration
-----------------------------------------------------------------------------
-- Mark lanes (event_bus.lane_marks): a lane gets a mark at p_upto, with its
-- count of events per type up to there, once it has gathered 1000 new
-- events since its last mark - so that counting a lane's events up to any
-- seq reads one mark and fewer than about 1000 events past it - or, with
-- p_every, whatever it gathered: retention marks every lane at the end of
-- the partitions it is about to drop, so that counts never straddle a
-- dropped partition.  Every event up to p_upto must be final (p_upto at or
-- below the horizon).  Marks that no cursor can need any more go: per lane,
-- all but the newest below both its lowest cursor and the log's first
-- partition.  Returns the number of lanes marked.  JIT off (here and in
-- run_maintenance): the estimates of generate_series over each topic's lanes
-- put its small statements above jit_above_cost, and compiling them took
-- 0.3-0.4 s a call in a session that had JIT on (the worker's has it off).
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

CREATE FUNCTION event_bus.run_maintenance(
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

