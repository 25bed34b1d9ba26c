-----------------------------------------------------------------------------
-- Maintenance and administration
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.run_maintenance(
    OUT expired_leases integer, OUT retried integer, OUT dead_lettered integer, OUT log_covered_upto bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
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
        SELECT x.* FROM event_bus.leases x
         WHERE x.expires_at OPERATOR(pg_catalog.<=) t OR x.claimed_at OPERATOR(pg_catalog.<) life
         ORDER BY x.lease_id
         LIMIT pg_catalog.current_setting('event_bus.expire_batch_size')::integer
         FOR UPDATE SKIP LOCKED
    LOOP
        SELECT * INTO s FROM event_bus.subscriptions x WHERE x.subscription OPERATOR(pg_catalog.=) l.subscription;
        expired_leases := expired_leases + 1;
        PERFORM event_bus._stat_add('s', s.subscription, 'expired', pg_catalog.cardinality(l.seqs));
        -- One due time per lease keeps an ordered lane's events together.
        due := t + event_bus._backoff(s.backoff_base, s.backoff_max, 1);
        FOREACH v IN ARRAY l.seqs LOOP
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

    -- Keep two partitions of room ahead of the newest seq.
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END INTO v FROM event_bus.event_seq q;
    log_covered_upto := event_bus._ensure_partitions(
        v + 2 * pg_catalog.current_setting('event_bus.partition_size')::bigint);
END
$$;
COMMENT ON FUNCTION event_bus.run_maintenance() IS
'Expire leases into retries or dead letters and create log partitions ahead; the worker calls it, tests and cron jobs may too.';

