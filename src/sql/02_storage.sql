-----------------------------------------------------------------------------
-- Storage
-----------------------------------------------------------------------------

-- Seqs of the log.  CACHE 1 (the default) keeps seqs monotonic across
-- backends, which the visibility horizon relies on.
CREATE SEQUENCE event_bus.event_seq AS bigint CACHE 1;

CREATE TABLE event_bus.topics (
    topic       text COLLATE "C" PRIMARY KEY,
    lanes       integer NOT NULL CHECK (lanes BETWEEN 1 AND 256),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    description text,
    dedupe_window interval          -- NULL: event_bus.dedupe_window
);

-- Who may produce to and consume from a topic.  A role has a privilege if
-- it has the privileges of a grantee (pg_has_role(..., 'USAGE')).
CREATE TABLE event_bus.topic_grants (
    topic       text COLLATE "C" NOT NULL REFERENCES event_bus.topics ON DELETE CASCADE,
    privilege   text NOT NULL CHECK (privilege IN ('produce', 'consume')),
    grantee     regrole NOT NULL,
    PRIMARY KEY (topic, privilege, grantee)
);

-- The append-only log.  Partitioned by seq so retention drops whole
-- partitions; rows are never updated or deleted.
CREATE TABLE event_bus.events (
    seq         bigint NOT NULL,
    id          uuid NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    version     integer NOT NULL,
    key         text,
    lane        smallint NOT NULL,
    payload     jsonb NOT NULL,
    headers     jsonb NOT NULL,
    emitted_at  timestamptz NOT NULL,
    txid        xid8,       -- the emitting transaction (NULL: emitted by 1.0)
    topic_hash  integer NOT NULL    -- _topic_hash(topic): the topic's key in the index
) PARTITION BY RANGE (seq);
-- emit writes rows without the executor, so this trigger (on every
-- partition too) fires only for rows that enter the log some other way: a
-- restore's COPY, an INSERT.  Claims then read every lane's highest seq
-- again (the lane heads in shared memory would not know these rows).
CREATE TRIGGER log_written BEFORE INSERT ON event_bus.events
    FOR EACH ROW EXECUTE FUNCTION event_bus._log_written();
-- Each partition gets one index, (topic_hash, lane, seq): claims read one
-- lane of one topic in seq order (see _ensure_partitions).  Its keys are
-- fixed-width integers, which an insert compares several times per row:
-- with the topic's text first, finding a row's place cost twice as much.
-- Two topics may share a hash, so every query on the log compares both
-- topic_hash (for the index) and topic.  The index is created per partition
-- rather than on the parent so that pg_dump can restore the partitions of
-- this extension-owned table.

-- Partitions of the log, created ahead by _ensure_partitions().
CREATE TABLE event_bus.log_partitions (
    lo          bigint PRIMARY KEY,
    hi          bigint NOT NULL,
    relname     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    closed_at   timestamptz,    -- when every seq in it was final
    detaching_at timestamptz    -- when retention began to detach it
);

CREATE TABLE event_bus.subscriptions (
    subscription text COLLATE "C" PRIMARY KEY,
    topics       text[] COLLATE "C" NOT NULL,
    types        text[],
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    lease        interval NOT NULL,
    backoff_base interval NOT NULL,
    backoff_max  interval NOT NULL,
    ordered      boolean NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    owner        regrole NOT NULL   -- its members (and admins) may work it
);
CREATE TRIGGER subscriptions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_bus.subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION event_bus._subscriptions_changed();

-- One cursor per subscription, topic and lane: every event of the lane at
-- or below position has been handed out; so has every one up to high,
-- except the events of the transactions in pending_xids above their entry
-- in pending_after (they were still open when claims passed them).
CREATE TABLE event_bus.cursors (
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    topic        text COLLATE "C" NOT NULL,
    lane         smallint NOT NULL,
    position     bigint NOT NULL,
    high         bigint NOT NULL,
    pending_xids xid8[] NOT NULL DEFAULT '{}',
    pending_after bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (subscription, topic, lane)
);

-- One row per claimed batch of one lane; ack removes seqs from it.
CREATE SEQUENCE event_bus.lease_id_seq AS bigint;
CREATE TABLE event_bus.leases (
    lease_id     bigint PRIMARY KEY DEFAULT pg_catalog.nextval('event_bus.lease_id_seq'),
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    topic        text COLLATE "C" NOT NULL,
    lane         smallint NOT NULL,
    seqs         bytea NOT NULL,    -- _pack_seqs(): a bitmap, read with _unpack_seqs()
    claimed_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    claimed_by   integer NOT NULL,
    token        uuid NOT NULL      -- the lease token claim() handed out
);
-- A lease of a few hundred events stays in its row, uncompressed: compressing
-- its seqs with pglz on every claim was an eighth of a claim of 500.
ALTER TABLE event_bus.leases SET (toast_tuple_target = 8160);
CREATE INDEX leases_subscription ON event_bus.leases (subscription, topic, lane);
CREATE INDEX leases_expires_at ON event_bus.leases (expires_at);

-- Events that failed or whose lease expired: only these get per-event rows.
-- attempt is the number the next delivery will carry.
CREATE TABLE event_bus.retries (
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    seq          bigint NOT NULL,
    topic        text COLLATE "C" NOT NULL,
    lane         smallint NOT NULL,
    attempt      integer NOT NULL,
    due_at       timestamptz NOT NULL,
    last_error   text,
    lease_id     bigint,
    PRIMARY KEY (subscription, seq)
);
-- Claims take due retries in (due_at, seq) order straight from this index,
-- without sorting every due retry of the subscription.
CREATE INDEX retries_due ON event_bus.retries (subscription, due_at, seq) WHERE lease_id IS NULL;
CREATE INDEX retries_lane ON event_bus.retries (subscription, topic, lane, seq);

-- Per lane and event type: how many committed events have a seq up to
-- upto.  Monitoring counts a subscription's pending events from these marks
-- and two short ranges of the log instead of its whole backlog (see
-- event_bus._mark_lanes).  Derived from the log, so not dumped: the worker
-- counts it again after a restore.
CREATE TABLE event_bus.lane_marks (
    topic  text COLLATE "C" NOT NULL,
    lane   smallint NOT NULL,
    upto   bigint NOT NULL,
    type   text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (topic, lane, upto, type)
);
COMMENT ON TABLE event_bus.lane_marks IS 'Per lane and type, the number of committed events with seq <= upto; pending counts read these instead of the backlog.';

-- Dead letters keep a full copy of the event, so they outlive the log.
CREATE SEQUENCE event_bus.dead_id_seq AS bigint;
CREATE TABLE event_bus.dead_letters (
    subscription text COLLATE "C" NOT NULL
                 REFERENCES event_bus.subscriptions ON DELETE CASCADE,
    seq          bigint NOT NULL,
    id           uuid NOT NULL,
    topic        text COLLATE "C" NOT NULL,
    type         text NOT NULL,
    version      integer NOT NULL,
    key          text,
    lane         smallint NOT NULL,
    payload      jsonb NOT NULL,
    headers      jsonb NOT NULL,
    emitted_at   timestamptz NOT NULL,
    attempts     integer NOT NULL,
    last_error   text,
    dead_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    dead_id      bigint NOT NULL DEFAULT pg_catalog.nextval('event_bus.dead_id_seq'),
    PRIMARY KEY (subscription, seq)
);
CREATE INDEX dead_letters_dead_id ON event_bus.dead_letters (dead_id);

-- Events emitted with deliver_at, until they are due: run_maintenance()
-- (which the worker runs at the earliest deliver_at) moves each into the
-- log then, where it gets its seq and keeps the id it was given.  Members
-- of scheduled_by (and admins) see and may cancel it.
CREATE TABLE event_bus.scheduled_events (
    id           uuid PRIMARY KEY,
    topic        text COLLATE "C" NOT NULL,
    type         text NOT NULL,
    version      integer NOT NULL,
    key          text,
    payload      jsonb NOT NULL,
    headers      jsonb NOT NULL,
    deliver_at   timestamptz NOT NULL,
    scheduled_at timestamptz NOT NULL,
    scheduled_by regrole NOT NULL
);
CREATE INDEX scheduled_events_deliver_at ON event_bus.scheduled_events (deliver_at, id);
COMMENT ON TABLE event_bus.scheduled_events IS 'Events emitted with deliver_at that have not entered the log yet.';

-- Dedupe keys of emits (emit(..., dedupe_key => ...)): per topic and key,
-- the seq of the event that holds it until expires_at (emit time plus the
-- topic's dedupe window).  run_maintenance() deletes expired keys in
-- batches, off the emit path; an emit that meets an expired key before then
-- takes it over.
CREATE TABLE event_bus.dedupe_keys (
    topic      text COLLATE "C" NOT NULL,
    dedupe_key text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (topic, dedupe_key)
);
CREATE INDEX dedupe_keys_expires_at ON event_bus.dedupe_keys (expires_at);
COMMENT ON TABLE event_bus.dedupe_keys IS 'Per topic and dedupe key, the seq of the event that holds the key until expires_at.';

SELECT pg_catalog.pg_extension_config_dump('event_bus.event_seq', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.topics', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.log_partitions', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.cursors', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.leases', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.lease_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.dead_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.retries', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.dedupe_keys', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.scheduled_events', '');
SELECT pg_catalog.pg_extension_config_dump('event_bus.topic_grants', '');

COMMENT ON TABLE event_bus.topics IS 'Named event streams; lanes fix how many ordered lanes a topic is split into.';
COMMENT ON TABLE event_bus.events IS 'The append-only event log, partitioned by seq; never updated, trimmed by dropping whole partitions.';
COMMENT ON TABLE event_bus.log_partitions IS 'Partitions of event_bus.events and the seq range [lo, hi) each covers.';
COMMENT ON TABLE event_bus.subscriptions IS 'Consumer groups: each receives every event of its topics (optionally only some types); members of its owner and admins may work it.';
COMMENT ON TABLE event_bus.cursors IS 'Per subscription, topic and lane: how far events were handed out (position: all of them; high: all but those of transactions still open then, listed in pending_xids).';
COMMENT ON TABLE event_bus.leases IS 'Claimed, unacknowledged batches (one row per lane per claim).';
COMMENT ON TABLE event_bus.retries IS 'Failed or expired events waiting for (or in) redelivery.';
COMMENT ON TABLE event_bus.topic_grants IS 'Roles that may produce to (emit, capture into) or consume from (subscribe to) each topic.';
COMMENT ON TABLE event_bus.dead_letters IS 'Events that exhausted their attempts or were dead-lettered, with a full copy of the event and the last error.';

