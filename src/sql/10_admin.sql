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

