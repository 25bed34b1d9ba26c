-----------------------------------------------------------------------------
-- Topics
-----------------------------------------------------------------------------
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

CREATE FUNCTION event_bus.drop_topic(topic text) RETURNS void
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

-- Check the arguments of grant_topic() and revoke_topic().
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

