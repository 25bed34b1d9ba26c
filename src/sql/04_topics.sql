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

