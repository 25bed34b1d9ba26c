-----------------------------------------------------------------------------
-- Internal SQL helpers
-----------------------------------------------------------------------------

-- Create log partitions until they cover every seq <= want.  Returns the
-- exclusive upper bound now covered (as this transaction sees it).
--
-- A partition is created as a plain table and then attached: ATTACH takes
-- only SHARE UPDATE EXCLUSIVE on the log, so emits and claims of other
-- sessions go on while the creating transaction is open.  Creators are
-- serialised by an advisory lock; a caller that finds another transaction
-- already extending the log does not wait for it as long as the existing
-- partitions still reach past need (the highest seq it has taken).
CREATE FUNCTION event_bus._ensure_partitions(want bigint, need bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    top  bigint;
    size bigint := pg_catalog.current_setting('event_bus.partition_size')::bigint;
    name text;
BEGIN
    SELECT max(p.hi) INTO top FROM event_bus.log_partitions p;
    IF top IS NOT NULL AND top > want THEN
        PERFORM event_bus._note_coverage(top);
        RETURN top;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('event_bus._ensure_partitions')) THEN
        IF top IS NOT NULL AND top > coalesce(need, want) THEN
            RETURN top;
        END IF;
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('event_bus._ensure_partitions'));
    END IF;
    SELECT max(p.hi) INTO top FROM event_bus.log_partitions p;
    IF top IS NULL THEN
        -- The first partition starts at the lowest seq an open transaction
        -- may still insert: emitters take their seqs before they get here.
        top := event_bus._horizon() + 1;
    END IF;
    WHILE top <= want LOOP
        name := pg_catalog.format('events_%s', pg_catalog.lpad(top::text, 19, '0'));
        EXECUTE pg_catalog.format('CREATE TABLE event_bus.%I (LIKE event_bus.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE pg_catalog.format('CREATE INDEX %I ON event_bus.%I (topic_hash, lane, seq)', name || '_topic_lane_seq', name);
        EXECUTE pg_catalog.format(
            'ALTER TABLE event_bus.events ATTACH PARTITION event_bus.%I FOR VALUES FROM (%s) TO (%s)',
            name, top, top + size);
        INSERT INTO event_bus.log_partitions (lo, hi, relname) VALUES (top, top + size, name);
        top := top + size;
    END LOOP;
    PERFORM event_bus._note_coverage(top);
    RETURN top;
END
$$;

-- Exponential backoff with jitter: the delay before attempt + 1, given that
-- attempt failed.  Half of it fixed, half random ("equal jitter").  Computed
-- in seconds, so no base and attempt can overflow an interval.
CREATE FUNCTION event_bus._backoff(base interval, cap interval, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.make_interval(secs => d / 2 + d / 2 * pg_catalog.random())
      FROM (SELECT LEAST(pg_catalog.date_part('epoch', cap),
                         pg_catalog.date_part('epoch', base) * pg_catalog.power(2, LEAST(attempt - 1, 30))) AS d) x
$$;

-- Whether role may produce to or consume from a topic: admins may do both,
-- others need the privileges of a grantee.
CREATE FUNCTION event_bus._topic_allowed(p_topic text, p_privilege text, role oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_has_role(role, 'event_bus_admin', 'USAGE')
        OR EXISTS (SELECT FROM event_bus.topic_grants g
                    WHERE g.topic OPERATOR(pg_catalog.=) p_topic
                      AND g.privilege OPERATOR(pg_catalog.=) p_privilege
                      AND pg_catalog.pg_has_role(role, g.grantee::oid, 'USAGE'))
$$;

-- Raise 42501 unless the caller of the API may produce to (consume from)
-- every topic of a list.
CREATE FUNCTION event_bus._check_topic_privilege(p_topics text[], p_privilege text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who oid := event_bus._caller();
    t   text;
BEGIN
    FOREACH t IN ARRAY p_topics LOOP
        IF NOT event_bus._topic_allowed(t, p_privilege, who) THEN
            RAISE EXCEPTION 'permission denied to % topic "%"',
                            CASE p_privilege WHEN 'produce' THEN 'produce to' ELSE 'consume from' END, t
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = pg_catalog.format('Role "%s" has no %s grant on topic "%s".',
                                                 who::regrole, p_privilege, t),
                      HINT = pg_catalog.format('An event_bus_admin can grant it with event_bus.grant_topic(%L, %L, %L).',
                                               t, who::regrole::text, p_privilege);
        END IF;
    END LOOP;
END
$$;

-- Raise 22023 unless an interval a caller gave lies within [lo, hi].
CREATE FUNCTION event_bus._check_interval(what text, v interval, lo interval, hi interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v < lo OR v > hi THEN
        RAISE EXCEPTION '% must be between % and %, not %', what, lo, hi, v
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Whether the current user may see a subscription (or captured table)
-- owned by owner: its members and admins may.  (Views run with their owner's rights, but
-- current_user in them is whoever queries.)
CREATE FUNCTION event_bus._visible(owner regrole) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_has_role(owner::oid, 'USAGE')
        OR pg_catalog.pg_has_role('event_bus_admin', 'USAGE')
$$;

-- Look up a subscription for an operation, raising the usual errors.  Only
-- members of its owner and admins may work a subscription.
CREATE FUNCTION event_bus._subscription(name text) RETURNS event_bus.subscriptions
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s   event_bus.subscriptions;
    who oid := event_bus._caller();
BEGIN
    PERFORM event_bus._check_name('subscription', name);
    SELECT * INTO s FROM event_bus.subscriptions x WHERE x.subscription OPERATOR(pg_catalog.=) name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with event_bus.subscribe().';
    END IF;
    IF NOT (pg_catalog.pg_has_role(who, s.owner::oid, 'USAGE')
            OR pg_catalog.pg_has_role(who, 'event_bus_admin', 'USAGE')) THEN
        RAISE EXCEPTION 'permission denied for subscription "%"', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('It belongs to role "%s"; role "%s" is not a member.', s.owner, who::regrole),
                  HINT = 'Members of the owning role and of event_bus_admin may work a subscription.';
    END IF;
    RETURN s;
END
$$;

-- Raise an error for seqs a subscription could not have been handed:
-- events that do not exist, belong to a topic it does not read, or have not
-- been delivered to it yet.  Seqs that pass were delivered earlier and have
-- since been acked, failed or dead-lettered (or were in a log partition that
-- retention has dropped, which it does only once every subscription is past).
-- Was the event (seq, txid) of a lane handed out, given the lane's cursor
-- (high, pending_xids, pending_after)?  See event_bus.cursors.  A plain SQL
-- function, inlined where it is used.
CREATE FUNCTION event_bus._handed_out(seq bigint, txid xid8, high bigint, xids xid8[], afters bigint[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT seq OPERATOR(pg_catalog.<=) high
       AND coalesce(seq OPERATOR(pg_catalog.<=) afters[pg_catalog.array_position(xids, txid)], true)
$$;

-- The lanes of a subscription a claim should look at now, after the open
-- emitting transactions of its topics were read (max_seq, xids: see
-- _emitters): on an ordered subscription only lanes without a lease, and
-- of those with retries only the ones whose first retry is due (a lane's
-- retries come first, in seq order); otherwise lanes with events above
-- their cursor's high, or whose stepped-over transactions have ended since
-- (their events are due, or, rolled back, to be forgotten).  Any new event
-- counts, of a type the subscription reads or not: the cursor of a
-- type-filtered subscription moves past the others.  _claim_once leases
-- from these lanes (claim.c tests the same conditions lane by lane),
-- _wait_check asks whether there is one.  A plain SQL function, inlined
-- where it is used.
CREATE FUNCTION event_bus._claimable_lanes(s event_bus.subscriptions, max_seq bigint, xids xid8[],
                                           t timestamptz)
RETURNS TABLE (topic text, lane smallint)
LANGUAGE sql STABLE
AS $$
    SELECT cu.topic, cu.lane FROM event_bus.cursors cu
     WHERE cu.subscription OPERATOR(pg_catalog.=) s.subscription
       AND (NOT s.ordered
            OR NOT EXISTS (SELECT FROM event_bus.leases l
                            WHERE l.subscription OPERATOR(pg_catalog.=) cu.subscription
                              AND l.topic OPERATOR(pg_catalog.=) cu.topic
                              AND l.lane OPERATOR(pg_catalog.=) cu.lane))
       AND CASE WHEN s.ordered AND EXISTS (SELECT FROM event_bus.retries r
                                             WHERE r.subscription OPERATOR(pg_catalog.=) cu.subscription
                                               AND r.topic OPERATOR(pg_catalog.=) cu.topic
                                               AND r.lane OPERATOR(pg_catalog.=) cu.lane)
           THEN (SELECT r.due_at OPERATOR(pg_catalog.<=) t FROM event_bus.retries r
                  WHERE r.subscription OPERATOR(pg_catalog.=) cu.subscription
                    AND r.topic OPERATOR(pg_catalog.=) cu.topic
                    AND r.lane OPERATOR(pg_catalog.=) cu.lane
                  ORDER BY r.seq LIMIT 1)
           ELSE event_bus._lane_has(cu.topic, cu.lane, cu.high, max_seq)
                OR (cu.pending_xids OPERATOR(pg_catalog.<>) '{}'
                    AND NOT cu.pending_xids OPERATOR(pg_catalog.<@) xids)
           END
$$;

-- ack() and extend() take arrays of seqs without NULLs.
CREATE FUNCTION event_bus._check_seqs(seqs bigint[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF seqs IS NULL OR pg_catalog.array_position(seqs, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'seqs must be an array of event seqs without NULLs'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;

CREATE FUNCTION event_bus._check_delivered(s event_bus.subscriptions, seqs bigint[]) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v      bigint;
    lanes  smallint[];
    hashes integer[] := ARRAY(SELECT event_bus._topic_hash(x) FROM pg_catalog.unnest(s.topics) x);
    e      record;
BEGIN
    SELECT pg_catalog.array_agg(g::smallint) INTO lanes
      FROM pg_catalog.generate_series(0, (SELECT max(t.lanes) - 1 FROM event_bus.topics t
                                          WHERE t.topic OPERATOR(pg_catalog.=) ANY (s.topics))) g;
    FOREACH v IN ARRAY seqs LOOP
        SELECT ev.topic, ev.lane, c.subscription IS NOT NULL AS known,
               event_bus._handed_out(ev.seq, ev.txid, c.high, c.pending_xids, c.pending_after) AS handed_out INTO e
          FROM event_bus.events ev
          LEFT JOIN event_bus.cursors c
            ON c.subscription OPERATOR(pg_catalog.=) s.subscription
           AND c.topic OPERATOR(pg_catalog.=) ev.topic AND c.lane OPERATOR(pg_catalog.=) ev.lane
         WHERE ev.topic_hash OPERATOR(pg_catalog.=) ANY (hashes) AND ev.topic OPERATOR(pg_catalog.=) ANY (s.topics)
           AND ev.lane OPERATOR(pg_catalog.=) ANY (lanes)
           AND ev.seq OPERATOR(pg_catalog.=) v;
        IF NOT FOUND AND NOT EXISTS (SELECT FROM event_bus.dead_letters d
                                      WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription
                                        AND d.seq OPERATOR(pg_catalog.=) v)
           -- Below the oldest partition, retention dropped it: every
           -- subscription had finished it, so it was delivered.
           AND v OPERATOR(pg_catalog.>=) coalesce((SELECT min(p.lo) FROM event_bus.log_partitions p
                                                    WHERE p.detaching_at IS NULL), 0) THEN
            RAISE EXCEPTION 'event % does not belong to subscription "%"', v, s.subscription
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('No event with seq %s exists in topics %s.', v, s.topics),
                      HINT = 'Pass the seqs returned by event_bus.claim() for this subscription.';
        ELSIF FOUND AND (NOT e.known OR NOT e.handed_out) THEN
            RAISE EXCEPTION 'event % has not been delivered to subscription "%"', v, s.subscription
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the seqs returned by event_bus.claim() for this subscription.';
        END IF;
    END LOOP;
END
$$;

-- Move one event to the dead letters of a subscription, with a copy of the
-- event.  The retry row, if any, goes.  (This and the helpers of fail below
-- are PL/pgSQL rather than SQL so that their plans are kept between calls:
-- a SQL function with a SET clause is planned again on every call.)
CREATE FUNCTION event_bus._bury(s event_bus.subscriptions, p_seq bigint, p_topic text, p_lane smallint,
                                p_attempts integer, p_error text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO event_bus.dead_letters
           (subscription, seq, id, topic, type, version, key, lane, payload, headers, emitted_at,
            attempts, last_error)
    SELECT s.subscription, e.seq, e.id, e.topic, e.type, e.version, e.key, e.lane, e.payload,
           e.headers, e.emitted_at, p_attempts, p_error
      FROM event_bus.events e
     WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(p_topic) AND e.topic OPERATOR(pg_catalog.=) p_topic AND e.lane OPERATOR(pg_catalog.=) p_lane
       AND e.seq OPERATOR(pg_catalog.=) p_seq
    ON CONFLICT (subscription, seq) DO UPDATE
       SET attempts = excluded.attempts, last_error = excluded.last_error, dead_at = excluded.dead_at;
    DELETE FROM event_bus.retries r
     WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.seq OPERATOR(pg_catalog.=) p_seq;
    PERFORM event_bus._stat_add('s', s.subscription, 'dead_lettered', 1);
END
$$;

-- Record a failed delivery of one event: schedule attempt + 1 after a
-- backoff (or after retry_in), or dead-letter it once attempt reached
-- max_attempts.  Returns 'retry' or 'dead'.
CREATE FUNCTION event_bus._failed(s event_bus.subscriptions, p_seq bigint, p_topic text, p_lane smallint,
                                  p_attempt integer, p_error text, p_due timestamptz) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_attempt >= s.max_attempts THEN
        PERFORM event_bus._bury(s, p_seq, p_topic, p_lane, p_attempt, p_error);
        RETURN 'dead';
    END IF;
    INSERT INTO event_bus.retries AS r (subscription, seq, topic, lane, attempt, due_at, last_error, lease_id)
    VALUES (s.subscription, p_seq, p_topic, p_lane, p_attempt + 1, p_due, p_error, NULL)
    ON CONFLICT (subscription, seq) DO UPDATE
       SET attempt = excluded.attempt, due_at = excluded.due_at,
           last_error = excluded.last_error, lease_id = NULL;
    PERFORM event_bus._stat_add('s', s.subscription, 'retried', 1);
    RETURN 'retry';
END
$$;

-- A lease now holds only p_seqs (fail and dead_letter took some out): it
-- goes once none are left.
CREATE FUNCTION event_bus._keep_seqs(p_lease_id bigint, p_seqs bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.cardinality(p_seqs) OPERATOR(pg_catalog.=) 0 THEN
        DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) p_lease_id;
    ELSIF pg_catalog.cardinality(p_seqs) OPERATOR(pg_catalog.>) 0 THEN
        UPDATE event_bus.leases x SET seqs = event_bus._pack_seqs(p_seqs)
         WHERE x.lease_id OPERATOR(pg_catalog.=) p_lease_id;
    END IF;
END
$$;

-- For an ordered subscription, give back seqs of a lease as retries at
-- due_at, keeping their attempts: the lane then delivers them again in seq
-- order before anything newer.  The caller takes them out of the lease.
CREATE FUNCTION event_bus._release(s event_bus.subscriptions, p_topic text, p_lane smallint, p_seqs bigint[],
                                   p_due timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO event_bus.retries AS r (subscription, seq, topic, lane, attempt, due_at, last_error, lease_id)
    SELECT s.subscription, v, p_topic, p_lane, 1, p_due, NULL, NULL
      FROM pg_catalog.unnest(p_seqs) v
    ON CONFLICT (subscription, seq) DO UPDATE SET due_at = excluded.due_at, lease_id = NULL;
END
$$;

