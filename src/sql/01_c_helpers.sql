-----------------------------------------------------------------------------
-- Internal helpers implemented in C
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus._check_name(kind text, name text) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_check_name_sql' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION event_bus._horizon() RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_horizon_sql' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._note_coverage(bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_note_coverage_sql' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._topics_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_topics_changed' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._launcher_rescan() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_launcher_rescan' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._wake_gen() RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_wake_gen' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._wait(gen bigint, timeout_ms integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_wait' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._wake() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_wake' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._worker_status(
    OUT database oid, OUT datname text, OUT pid integer, OUT state text, OUT started_at timestamptz,
    OUT last_round timestamptz, OUT rounds bigint, OUT notifications bigint, OUT last_error text)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_worker_status' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._caller() RETURNS oid
    AS 'MODULE_PATHNAME', 'eb_caller_sql' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._capture_compile(p_table regclass, p_condition text) RETURNS text
    AS 'MODULE_PATHNAME', 'eb_capture_compile' LANGUAGE C STRICT STABLE;
CREATE FUNCTION event_bus._capture_condition_sql(p_table regclass, p_expr text) RETURNS text
    AS 'MODULE_PATHNAME', 'eb_capture_condition_sql' LANGUAGE C STRICT STABLE;
CREATE FUNCTION event_bus._capture_depend(fn regprocedure) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_capture_depend' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._check_writable() RETURNS void
    AS 'MODULE_PATHNAME', 'eb_check_writable_sql' LANGUAGE C STABLE;
CREATE FUNCTION event_bus._life_started() RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'eb_life_started' LANGUAGE C STABLE;
CREATE FUNCTION event_bus._wait_topics(gen bigint, timeout_ms integer, topics text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_wait_topics' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION event_bus._emitters(topics text[], OUT max_seq bigint, OUT topics text[],
                                    OUT xids xid8[], OUT floors bigint[])
    AS 'MODULE_PATHNAME', 'eb_emitters_sql' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._open_emitters(OUT pid integer, OUT xid xid8, OUT lowest_seq bigint,
                                         OUT emitting_since timestamptz, OUT topic_bits bigint)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_open_emitters' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._topic_bit(topic text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_topic_bit_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
-- The topic's key in the log's index (events.topic_hash); fixed for ever,
-- since every log row stores it.
CREATE FUNCTION event_bus._topic_hash(topic text) RETURNS integer
    AS 'MODULE_PATHNAME', 'eb_topic_hash_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
-- The log's trigger: rows written other than by emit (a restore's COPY, an
-- INSERT) make every lane's head be read from the log again at commit.
CREATE FUNCTION event_bus._log_written() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eb_log_written' LANGUAGE C;
-- A lease's seqs, packed (leases.seqs): a bitmap from the lowest seq, or the
-- seqs themselves when they are too sparse for one (claim.c).
CREATE FUNCTION event_bus._pack_seqs(seqs bigint[]) RETURNS bytea
    AS 'MODULE_PATHNAME', 'eb_pack_seqs' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION event_bus._unpack_seqs(packed bytea) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'eb_unpack_seqs' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION event_bus._lane_next(p_position bigint, p_high bigint, p_xids xid8[], p_afters bigint[],
                                     max_seq bigint, emitters xid8[], floors bigint[],
                                     full_ boolean, last bigint, snap pg_snapshot, pending_read boolean,
                                     OUT next_position bigint, OUT next_high bigint, OUT next_xids xid8[], OUT next_afters bigint[])
    AS 'MODULE_PATHNAME', 'eb_lane_next' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._retention_counts(OUT database oid, OUT retention_runs bigint,
                                            OUT retention_failures bigint, OUT partitions_dropped bigint,
                                            OUT last_retention timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_retention_counts' LANGUAGE C VOLATILE;
-- Statistics in shared memory (see event_bus.stats).
CREATE FUNCTION event_bus._stat_add(kind "char", name text, counter text, n bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_stat_add' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._stat_new(kind "char", name text) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_stat_new' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION event_bus._stat(kind "char", name text, OUT since timestamptz, OUT emitted bigint,
                                OUT claimed bigint, OUT acked bigint, OUT failed bigint, OUT retried bigint,
                                OUT dead_lettered bigint, OUT expired bigint)
    AS 'MODULE_PATHNAME', 'eb_stat_sql' LANGUAGE C STRICT VOLATILE;
-- Statement trigger on event_bus.subscriptions: the worker, which sends
-- NOTIFYs from its own copy of them (dispatch.c), reads them again.
CREATE FUNCTION event_bus._subscriptions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eb_subscriptions_changed' LANGUAGE C;
-- A row as a JSON object, as to_jsonb(row) makes it, with each column's
-- conversion looked up once per row type (capture.c): capture triggers turn
-- every captured row into a payload with it.
CREATE FUNCTION event_bus._row_jsonb(r record) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'eb_row_jsonb' LANGUAGE C STRICT STABLE PARALLEL SAFE;
-- Emit one event per row aggregated, each written as its row comes, and
-- return how many (emit.c): capture triggers run it over a statement's
-- transition table.  It checks what emit_many checks (EXECUTE on emit_many,
-- the produce grant of the topic); topic and type are the same for every row.
CREATE FUNCTION event_bus._emit_rows_step(internal, topic text, type text, payload jsonb, key text, headers jsonb)
    RETURNS internal AS 'MODULE_PATHNAME', 'eb_emit_rows_step' LANGUAGE C VOLATILE;
CREATE FUNCTION event_bus._emit_rows_final(internal) RETURNS bigint
    AS 'MODULE_PATHNAME', 'eb_emit_rows_final' LANGUAGE C VOLATILE;
CREATE AGGREGATE event_bus._emit_rows(topic text, type text, payload jsonb, key text, headers jsonb) (
    SFUNC = event_bus._emit_rows_step, STYPE = internal,
    FINALFUNC = event_bus._emit_rows_final, FINALFUNC_MODIFY = READ_WRITE);
-- The reads of an ordered claim (_claim_once, _claimable_lanes) and of
-- retries (_lease_retries), partition by partition of the log under the
-- calling statement's snapshot: a statement on the log's parent locks
-- every partition each time it runs (claim.c).
CREATE FUNCTION event_bus._lane_read(p_topic text, p_lane smallint, lo bigint, max_seq bigint, high bigint,
                                     pending_xids xid8[], pending_after bigint[], rescan boolean,
                                     token uuid, types text[], n integer,
                                     OUT seq bigint, OUT id uuid, OUT topic text, OUT type text,
                                     OUT version integer, OUT key text, OUT payload jsonb, OUT headers jsonb,
                                     OUT emitted_at timestamptz, OUT attempt integer, OUT lane integer,
                                     OUT lease_token uuid)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_lane_read' LANGUAGE C STABLE;
CREATE FUNCTION event_bus._lane_has(topic text, lane smallint, after bigint, upto bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'eb_lane_has' LANGUAGE C STRICT STABLE;
CREATE FUNCTION event_bus._lane_events(p_topic text, p_lane smallint, p_seqs bigint[],
                                       OUT seq bigint, OUT id uuid, OUT topic text, OUT type text,
                                       OUT version integer, OUT key text, OUT payload jsonb, OUT headers jsonb,
                                       OUT emitted_at timestamptz, OUT lane integer)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eb_lane_events' LANGUAGE C STRICT STABLE;
-- _wake() for something that falls due at a time (fail's retry): the worker
-- and claimers are woken at commit only if the worker does not already plan
-- to look by then.
CREATE FUNCTION event_bus._wake_at(due timestamptz) RETURNS void
    AS 'MODULE_PATHNAME', 'eb_wake_at' LANGUAGE C VOLATILE;
