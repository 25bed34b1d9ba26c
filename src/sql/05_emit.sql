-----------------------------------------------------------------------------
-- Publishing
-----------------------------------------------------------------------------
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


-- A scheduled event entering the log (from _release_scheduled()): emitted
-- with the id it was given when it was scheduled; no grant check (it was
-- made then).
CREATE FUNCTION event_bus._emit_scheduled(topic text, type text, payload jsonb, key text, headers jsonb,
                                          version integer, id uuid)
RETURNS bigint
AS 'MODULE_PATHNAME', 'eb_emit_scheduled'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Move the events whose deliver_at has come into the log (the worker calls
-- it through run_maintenance() at the earliest deliver_at), in deliver_at
-- order, at most 1,000 a call.  Each enters the log in the same
-- transaction that removes it from scheduled_events, so a crash neither
-- loses one nor moves one twice.  Returns how many moved.
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
