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
     WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(p_topic) AND e.topic OPERATOR(pg_catalog.=) p_topic AND e.lane OPERATOR(pg_catalog.=) p_lane
       AND e.seq OPERATOR(pg_catalog.<=) h AND e.emitted_at OPERATOR(pg_catalog.>=) ts;
    RETURN coalesce(pos, h);
END
$$;

CREATE FUNCTION event_bus._subscribe_impl(subscription text, topics text[], types text[],
                                    start text, max_attempts integer,
                                    lease interval,
                                    backoff_base interval,
                                    backoff_max interval,
                                    ordered boolean)
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
    PERFORM event_bus._check_name('subscription', _subscribe_impl.subscription);
    IF _subscribe_impl.topics IS NULL OR pg_catalog.cardinality(_subscribe_impl.topics) = 0 THEN
        RAISE EXCEPTION 'subscription "%" needs at least one topic', _subscribe_impl.subscription
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH t IN ARRAY _subscribe_impl.topics LOOP
        PERFORM event_bus._check_name('topic', t);
    END LOOP;
    SELECT pg_catalog.array_agg(DISTINCT x ORDER BY x) INTO tl FROM pg_catalog.unnest(_subscribe_impl.topics) x;
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
    IF _subscribe_impl.types IS NOT NULL AND (pg_catalog.cardinality(_subscribe_impl.types) = 0
                                        OR pg_catalog.array_position(_subscribe_impl.types, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'types must be NULL (every type) or a non-empty array without NULLs'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF _subscribe_impl.max_attempts IS NULL OR _subscribe_impl.max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1000, not %', coalesce(_subscribe_impl.max_attempts::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF _subscribe_impl.lease IS NULL OR _subscribe_impl.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', coalesce(_subscribe_impl.lease::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM event_bus._check_interval('lease', _subscribe_impl.lease, interval '1 millisecond', interval '1 day');
    IF _subscribe_impl.backoff_base IS NULL OR _subscribe_impl.backoff_base < interval '0'
       OR _subscribe_impl.backoff_max IS NULL OR _subscribe_impl.backoff_max < _subscribe_impl.backoff_base THEN
        RAISE EXCEPTION 'backoff_base must not be negative and backoff_max must not be below it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM event_bus._check_interval('backoff_base', _subscribe_impl.backoff_base, interval '0', interval '1 day');
    PERFORM event_bus._check_interval('backoff_max', _subscribe_impl.backoff_max, interval '0', interval '7 days');
    IF _subscribe_impl.start IS NULL THEN
        RAISE EXCEPTION 'start must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use ''latest'', ''earliest'' or a timestamp.';
    END IF;
    IF _subscribe_impl.ordered IS NULL THEN
        RAISE EXCEPTION 'ordered must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    PERFORM event_bus._check_topic_privilege(tl, 'consume');

    -- Serialise with concurrent subscribe/unsubscribe of the same name.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus.subscribe:' || _subscribe_impl.subscription));
    SELECT * INTO old FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) _subscribe_impl.subscription;
    IF FOUND THEN
        PERFORM event_bus._subscription(_subscribe_impl.subscription);     -- only its owner's roles may change it
        IF old.topics OPERATOR(pg_catalog.<>) tl THEN
            RAISE EXCEPTION 'subscription "%" already exists with other topics', _subscribe_impl.subscription
                USING ERRCODE = 'duplicate_object',
                      DETAIL = pg_catalog.format('It reads %s.', old.topics),
                      HINT = 'Unsubscribe it first, or pick another name.';
        END IF;
        UPDATE event_bus.subscriptions s
           SET types = _subscribe_impl.types, max_attempts = _subscribe_impl.max_attempts, lease = _subscribe_impl.lease,
               backoff_base = _subscribe_impl.backoff_base, backoff_max = _subscribe_impl.backoff_max,
               ordered = _subscribe_impl.ordered
         WHERE s.subscription OPERATOR(pg_catalog.=) _subscribe_impl.subscription;
        RETURN false;
    END IF;

    INSERT INTO event_bus.subscriptions
           (subscription, topics, types, max_attempts, lease, backoff_base, backoff_max, ordered, owner)
    VALUES (_subscribe_impl.subscription, tl, _subscribe_impl.types, _subscribe_impl.max_attempts, _subscribe_impl.lease,
            _subscribe_impl.backoff_base, _subscribe_impl.backoff_max, _subscribe_impl.ordered, event_bus._caller()::regrole);
    h := event_bus._horizon();
    INSERT INTO event_bus.cursors (subscription, topic, lane, position, high)
    SELECT _subscribe_impl.subscription, x.topic, x.lane, x.pos, x.pos
      FROM (SELECT tp.topic, g::smallint AS lane,
                   event_bus._start_position(tp.topic, g::smallint, _subscribe_impl.start, h) AS pos
              FROM event_bus.topics tp, pg_catalog.generate_series(0, tp.lanes - 1) g
             WHERE tp.topic OPERATOR(pg_catalog.=) ANY (tl)) x;
    PERFORM event_bus._stat_new('s', _subscribe_impl.subscription);
    RETURN true;
END
$$;
CREATE FUNCTION event_bus.subscribe(subscription text, topics text[], types text[] DEFAULT NULL,
                                    start text DEFAULT 'latest', max_attempts integer DEFAULT 5,
                                    lease interval DEFAULT '30 seconds',
                                    backoff_base interval DEFAULT '1 second',
                                    backoff_max interval DEFAULT '10 minutes',
                                    ordered boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.subscribe(text, text[], text[], text, integer, interval, interval, interval, boolean) IS
'Create a subscription (consumer group) on topics the caller may consume from, starting at ''latest'', ''earliest'' or a timestamp; the caller''s role owns it. Returns false and updates the options if it already exists with the same topics (only its owner''s roles may).';

CREATE FUNCTION event_bus._unsubscribe_impl(subscription text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._subscription(_unsubscribe_impl.subscription);
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus.subscribe:' || _unsubscribe_impl.subscription));
    DELETE FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) _unsubscribe_impl.subscription;
END
$$;
CREATE FUNCTION event_bus.unsubscribe(subscription text) RETURNS void
AS 'MODULE_PATHNAME', 'eb_api'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.unsubscribe(text) IS
'Remove a subscription with its cursors, leases, retries and dead letters (its owner''s roles and admins).';

CREATE FUNCTION event_bus.alter_subscription_owner(subscription text, owner regrole) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM event_bus._check_writable();
    PERFORM event_bus._check_name('subscription', alter_subscription_owner.subscription);
    IF alter_subscription_owner.owner IS NULL THEN
        RAISE EXCEPTION 'owner must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE event_bus.subscriptions s SET owner = alter_subscription_owner.owner
     WHERE s.subscription OPERATOR(pg_catalog.=) alter_subscription_owner.subscription;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', alter_subscription_owner.subscription
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
COMMENT ON FUNCTION event_bus.alter_subscription_owner(text, regrole) IS
'Give a subscription to another role: its members (and admins) may then work it.';

