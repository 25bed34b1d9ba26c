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

-- Replay moves the cursors; events after the new positions are delivered
-- again, each once: their pending retries go (the cursor brings them back,
-- from attempt 1), and a replay that would hand out again an event that is
-- still in flight is refused.  The cursor and retry rows of the subscription
-- are locked first, so no claim can lease anything meanwhile.
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
CREATE FUNCTION event_bus.replay(subscription text, start text DEFAULT 'earliest') RETURNS integer
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
CREATE FUNCTION event_bus.redrive(subscription text, seqs bigint[] DEFAULT NULL) RETURNS integer
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
CREATE FUNCTION event_bus.purge_dead_letters(subscription text, older_than interval DEFAULT NULL) RETURNS integer
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.purge_dead_letters(text, interval) IS
'Delete dead letters of a subscription (all, or those dead for longer than older_than); returns how many.';

CREATE FUNCTION event_bus.stats_reset() RETURNS timestamptz
AS 'MODULE_PATHNAME', 'eb_stats_reset'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.stats_reset() IS
'Set every counter of event_bus.stats in this database to zero, at once; returns the time they count from now. Admins only.';
