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

