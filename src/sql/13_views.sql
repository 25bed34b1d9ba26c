-----------------------------------------------------------------------------
-- Views for psql
-----------------------------------------------------------------------------

-- The lag of each subscription the caller may see (through _lag(), which
-- records the caller): its pending events and the age of the oldest.
-- Pending events are counted per lane from the lane marks
-- (event_bus._mark_lanes): with top the lane's newest mark and below its
-- newest mark at or under a cursor's high, the events above high are
-- n(top) - n(below) + the events after top - those in (below, high]: a few
-- index probes per lane and about a thousand events at most, whatever the
-- backlog.  What depends on the lane alone is computed once per lane, what
-- depends on the position once per distinct position.  Events of
-- stepped-over transactions under high are counted from the log.  A cursor
-- below the log's first partition (a replay, a new subscription from the
-- earliest event) counts from where the log starts now: retention marked
-- every lane there before dropping what was below.  The oldest pending
-- event is one index probe per distinct cursor.  Run as the extension's
-- owner, and without JIT: the estimates of these counts grow with the log,
-- and compiling the query cost seconds where running it costs milliseconds.
CREATE FUNCTION event_bus._lag_impl(OUT subscription text, OUT pending bigint, OUT oldest_pending_age interval)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
BEGIN
    RETURN QUERY
    WITH subs AS (
        SELECT s.subscription, s.types FROM event_bus.subscriptions s
         WHERE pg_catalog.pg_has_role(event_bus._caller(), s.owner::oid, 'USAGE')
            OR pg_catalog.pg_has_role(event_bus._caller(), 'event_bus_admin', 'USAGE')),
    cur AS (
        SELECT c.subscription, c.topic, c.lane, c.position, c.high, c.pending_xids, c.pending_after, s.types,
               GREATEST(c.high, (SELECT min(lp.lo) FROM event_bus.log_partitions lp
                                  WHERE lp.detaching_at IS NULL) - 1) AS h
          FROM event_bus.cursors c JOIN subs s ON s.subscription OPERATOR(pg_catalog.=) c.subscription),
    lane_top AS MATERIALIZED (  -- per lane and type: every event
        SELECT l.topic, l.lane, t.type, sum(t.n) AS n
          FROM (SELECT DISTINCT x.topic, x.lane FROM cur x) l
         CROSS JOIN LATERAL (SELECT max(x.upto) AS top FROM event_bus.lane_marks x
                              WHERE x.topic OPERATOR(pg_catalog.=) l.topic AND x.lane OPERATOR(pg_catalog.=) l.lane) tm
         CROSS JOIN LATERAL (
               SELECT m.type, m.n FROM event_bus.lane_marks m
                WHERE m.topic OPERATOR(pg_catalog.=) l.topic AND m.lane OPERATOR(pg_catalog.=) l.lane
                  AND m.upto OPERATOR(pg_catalog.=) tm.top
               UNION ALL
               SELECT e.type, pg_catalog.count(*) FROM event_bus.events e
                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(l.topic) AND e.topic OPERATOR(pg_catalog.=) l.topic AND e.lane OPERATOR(pg_catalog.=) l.lane
                  AND e.seq OPERATOR(pg_catalog.>) coalesce(tm.top, 0)
                  AND e.seq OPERATOR(pg_catalog.<=) (SELECT q.last_value FROM event_bus.event_seq q)  -- an index range
                GROUP BY e.type) t
         GROUP BY l.topic, l.lane, t.type),
    lane_upto AS MATERIALIZED ( -- per lane, position and type: the events up to it
        SELECT b.topic, b.lane, b.h, t.type, sum(t.n) AS n
          FROM (SELECT DISTINCT x.topic, x.lane, x.h FROM cur x) b
         CROSS JOIN LATERAL (SELECT max(x.upto) AS below FROM event_bus.lane_marks x
                              WHERE x.topic OPERATOR(pg_catalog.=) b.topic AND x.lane OPERATOR(pg_catalog.=) b.lane
                                AND x.upto OPERATOR(pg_catalog.<=) b.h) bm
         CROSS JOIN LATERAL (
               SELECT m.type, m.n FROM event_bus.lane_marks m
                WHERE m.topic OPERATOR(pg_catalog.=) b.topic AND m.lane OPERATOR(pg_catalog.=) b.lane
                  AND m.upto OPERATOR(pg_catalog.=) bm.below
               UNION ALL
               SELECT e.type, pg_catalog.count(*) FROM event_bus.events e
                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(b.topic) AND e.topic OPERATOR(pg_catalog.=) b.topic AND e.lane OPERATOR(pg_catalog.=) b.lane
                  AND e.seq OPERATOR(pg_catalog.>) coalesce(bm.below, 0) AND e.seq OPERATOR(pg_catalog.<=) b.h
                GROUP BY e.type) t
         GROUP BY b.topic, b.lane, b.h, t.type),
    oldest AS MATERIALIZED (    -- per distinct cursor: its oldest event not handed out
        SELECT o.topic, o.lane, o.position, o.high, o.pending_xids, o.pending_after, o.types, x.emitted_at
          FROM (SELECT DISTINCT y.topic, y.lane, y.position, y.high, y.pending_xids, y.pending_after, y.types
                  FROM cur y) o
         CROSS JOIN LATERAL (
               SELECT e.emitted_at FROM event_bus.events e
                WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(o.topic) AND e.topic OPERATOR(pg_catalog.=) o.topic AND e.lane OPERATOR(pg_catalog.=) o.lane
                  AND e.seq OPERATOR(pg_catalog.>) o.position
                  AND NOT event_bus._handed_out(e.seq, e.txid, o.high, o.pending_xids, o.pending_after)
                  AND (o.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (o.types))
                ORDER BY e.seq LIMIT 1) x),
    per_cursor AS (
        SELECT c.subscription,
               coalesce((SELECT sum(t.n) FROM lane_top t
                          WHERE t.topic OPERATOR(pg_catalog.=) c.topic AND t.lane OPERATOR(pg_catalog.=) c.lane
                            AND (c.types IS NULL OR t.type OPERATOR(pg_catalog.=) ANY (c.types))), 0)
             - coalesce((SELECT sum(u.n) FROM lane_upto u
                          WHERE u.topic OPERATOR(pg_catalog.=) c.topic AND u.lane OPERATOR(pg_catalog.=) c.lane
                            AND u.h OPERATOR(pg_catalog.=) c.h
                            AND (c.types IS NULL OR u.type OPERATOR(pg_catalog.=) ANY (c.types))), 0)
             + CASE WHEN c.pending_xids OPERATOR(pg_catalog.=) '{}' THEN 0 ELSE
               (SELECT pg_catalog.count(*) FROM event_bus.events e
                 WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash(c.topic) AND e.topic OPERATOR(pg_catalog.=) c.topic AND e.lane OPERATOR(pg_catalog.=) c.lane
                   AND e.seq OPERATOR(pg_catalog.>) c.position AND e.seq OPERATOR(pg_catalog.<=) c.high
                   AND NOT event_bus._handed_out(e.seq, e.txid, c.high, c.pending_xids, c.pending_after)
                   AND (c.types IS NULL OR e.type OPERATOR(pg_catalog.=) ANY (c.types))) END AS pending,
               (SELECT o.emitted_at FROM oldest o
                 WHERE o.topic OPERATOR(pg_catalog.=) c.topic AND o.lane OPERATOR(pg_catalog.=) c.lane
                   AND o.position OPERATOR(pg_catalog.=) c.position AND o.high OPERATOR(pg_catalog.=) c.high
                   AND o.pending_xids OPERATOR(pg_catalog.=) c.pending_xids
                   AND o.pending_after OPERATOR(pg_catalog.=) c.pending_after
                   AND o.types IS NOT DISTINCT FROM c.types) AS oldest_at
          FROM cur c)
    SELECT s.subscription, coalesce(sum(p.pending), 0)::bigint,
           pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) min(p.oldest_at)
      FROM subs s LEFT JOIN per_cursor p ON p.subscription OPERATOR(pg_catalog.=) s.subscription
     GROUP BY s.subscription;
END
$$;
CREATE FUNCTION event_bus._lag(OUT subscription text, OUT pending bigint, OUT oldest_pending_age interval)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'eb_lag'
LANGUAGE C STABLE;

CREATE VIEW event_bus.subscription_status AS
SELECT s.subscription, s.topics, s.types, s.ordered, s.paused,
       lag.pending,
       (SELECT coalesce(sum(pg_catalog.cardinality(event_bus._unpack_seqs(l.seqs))), 0)::bigint FROM event_bus.leases l
         WHERE l.subscription OPERATOR(pg_catalog.=) s.subscription) AS in_flight,
       (SELECT pg_catalog.count(*) FROM event_bus.retries r
         WHERE r.subscription OPERATOR(pg_catalog.=) s.subscription AND r.lease_id IS NULL) AS retrying,
       (SELECT pg_catalog.count(*) FROM event_bus.dead_letters d
         WHERE d.subscription OPERATOR(pg_catalog.=) s.subscription) AS dead,
       (SELECT min(c.position) FROM event_bus.cursors c
         WHERE c.subscription OPERATOR(pg_catalog.=) s.subscription) AS min_position,
       s.max_attempts, s.lease, s.created_at, s.owner,
       lag.oldest_pending_age
  FROM event_bus.subscriptions s
  LEFT JOIN event_bus._lag() lag ON lag.subscription OPERATOR(pg_catalog.=) s.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.subscription_status IS
'Per subscription: events not yet handed out (pending, counted from per-lane marks without reading the backlog; oldest_pending_age, the age of the oldest of them), in flight, waiting for retry, dead. Consumers see the subscriptions of their roles, admins all.';

CREATE VIEW event_bus.in_flight AS
SELECT l.subscription, l.topic, l.lane, l.lease_id, pg_catalog.cardinality(x.seqs) AS events, x.seqs,
       l.claimed_at, l.expires_at, l.claimed_by
  FROM event_bus.leases l CROSS JOIN LATERAL (SELECT event_bus._unpack_seqs(l.seqs) AS seqs) x JOIN event_bus.subscriptions s ON s.subscription OPERATOR(pg_catalog.=) l.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.in_flight IS 'Claimed batches that are not yet acknowledged (of the subscriptions one may see).';

CREATE VIEW event_bus.retry_queue AS
SELECT r.subscription, r.seq, r.topic, r.lane, r.attempt, r.due_at, r.last_error,
       r.lease_id IS NOT NULL AS in_flight
  FROM event_bus.retries r JOIN event_bus.subscriptions s ON s.subscription OPERATOR(pg_catalog.=) r.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.retry_queue IS 'Events waiting for redelivery (in_flight: redelivered and not yet acked), of the subscriptions one may see.';

CREATE VIEW event_bus.dead_letter_queue AS
SELECT d.subscription, d.seq, d.id, d.topic, d.type, d.version, d.key, d.payload, d.headers, d.emitted_at,
       d.attempts, d.last_error, d.dead_at
  FROM event_bus.dead_letters d JOIN event_bus.subscriptions s ON s.subscription OPERATOR(pg_catalog.=) d.subscription
 WHERE event_bus._visible(s.owner);
COMMENT ON VIEW event_bus.dead_letter_queue IS 'Dead letters, with the whole event and the last error, of the subscriptions one may see (redrive or purge them).';

CREATE VIEW event_bus.worker_status AS
SELECT w.datname, w.database, w.pid, w.state, w.started_at, w.last_round, w.rounds,
       w.notifications, w.last_error,
       r.retention_runs, r.retention_failures, r.partitions_dropped, r.last_retention
  FROM event_bus._worker_status() w
  LEFT JOIN event_bus._retention_counts() r ON r.database OPERATOR(pg_catalog.=) w.database;
COMMENT ON VIEW event_bus.worker_status IS
'The event_bus worker of each database: pid, state, last round, rounds, notifications sent, last error (of any part, retention included); and its retention processes since the server started: runs, failures (last_error says why), partitions dropped, end of the last run.';

CREATE VIEW event_bus.retention_status AS
WITH h AS (SELECT event_bus._horizon() AS h),
need AS (
    SELECT s.subscription, s.paused, event_bus._oldest_needed(s.subscription, h.h) AS oldest_needed_seq
      FROM event_bus.subscriptions s, h)
SELECT n.subscription, n.paused, n.oldest_needed_seq,
       (SELECT pg_catalog.count(*) FROM event_bus.log_partitions lp
         WHERE lp.closed_at IS NOT NULL AND lp.hi OPERATOR(pg_catalog.>) n.oldest_needed_seq) AS partitions_held,
       n.oldest_needed_seq OPERATOR(pg_catalog.=) (SELECT min(m.oldest_needed_seq) FROM need m)
       AND n.oldest_needed_seq OPERATOR(pg_catalog.<=) (SELECT h.h FROM h) AS holds_retention
  FROM need n;
COMMENT ON VIEW event_bus.retention_status IS
'Per subscription: the oldest seq it still needs and how many complete log partitions that keeps; holds_retention marks the one holding the log back.';


CREATE VIEW event_bus.open_emitters AS
SELECT o.pid, a.usename, a.application_name, o.xid, a.xact_start, o.emitting_since,
       pg_catalog.now() OPERATOR(pg_catalog.-) o.emitting_since AS emitting_for,
       ARRAY(SELECT t.topic FROM event_bus.topics t
              WHERE (o.topic_bits OPERATOR(pg_catalog.&) event_bus._topic_bit(t.topic)) OPERATOR(pg_catalog.<>) 0
              ORDER BY t.topic) AS topics,
       o.lowest_seq, a.state
  FROM event_bus._open_emitters() o
  LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) o.pid;
COMMENT ON VIEW event_bus.open_emitters IS
'Open transactions of this database that have emitted: since when, to which topics (by a 64-way hash: rarely a topic it did not emit to as well), and the lowest seq they may hold. Their events are delivered when they commit; until then log partitions from lowest_seq on are kept. event_bus.long_emit_warning logs the long ones.';

CREATE VIEW event_bus.stats AS
SELECT 'topic'::text AS kind, t.topic AS name, st.emitted,
       NULL::bigint AS claimed, NULL::bigint AS acked, NULL::bigint AS failed, NULL::bigint AS retried,
       NULL::bigint AS dead_lettered, NULL::bigint AS expired,
       NULL::bigint AS pending, NULL::interval AS oldest_pending_age, st.since AS stats_since
  FROM event_bus.topics t, LATERAL event_bus._stat('t', t.topic) st
UNION ALL
SELECT 'subscription', ss.subscription, NULL, st.claimed, st.acked, st.failed, st.retried,
       st.dead_lettered, st.expired, ss.pending, ss.oldest_pending_age, st.since
  FROM event_bus.subscription_status ss, LATERAL event_bus._stat('s', ss.subscription) st;
COMMENT ON VIEW event_bus.stats IS
'Cumulative counts since stats_since (the server start, the topic''s or subscription''s creation, or the last stats_reset()): per topic, events emitted; per subscription, events claimed, acked, failed (fail() calls), retried (scheduled for another attempt), dead_lettered, expired (leases that ran out), and its lag: pending events and the age of the oldest. Counted in shared memory at commit.';

-- (CloudEvents of dead letters: the view must exist first.)
CREATE FUNCTION event_bus.to_cloudevent(d event_bus.dead_letter_queue) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus.to_cloudevent(d.seq, d.id, d.topic, d.type, d.version, d.key, d.payload, d.headers, d.emitted_at)
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(event_bus.dead_letter_queue) IS
'Render a dead letter (a row of event_bus.dead_letter_queue) as a CloudEvents 1.0 JSON document.';

CREATE VIEW event_bus.scheduled AS
SELECT s.id, s.topic, s.type, s.version, s.key, s.payload, s.headers, s.deliver_at, s.scheduled_at,
       s.scheduled_by
  FROM event_bus.scheduled_events s
 WHERE event_bus._visible(s.scheduled_by);
COMMENT ON VIEW event_bus.scheduled IS
'Events emitted with deliver_at that have not entered the log yet; each enters it (with a seq, keeping its id) when it is due.  Members of the role that scheduled one, and admins, see it and may cancel it with cancel_scheduled(id).';
