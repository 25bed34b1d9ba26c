#!/usr/bin/env bash
# What a single emit is up against: one event per transaction, pgbench -M
# prepared, synchronous_commit off, the same ~300-byte payload, against
# plain statements that write what emit writes, without event_bus:
#   emit      event_bus.emit into a topic of 8 lanes with one subscription
#             (as bench/run.sh's emit phase)
#   plain     INSERT INTO plain (payload): a bigserial primary key and the
#             payload (the emit phase's reference)
#   wide      a row with the log's columns, every one filled as emit fills
#             it, under a bigserial primary key: what the event's row costs
#   logshape  the same row in a table shaped like a log partition: no
#             primary key, one index on (topic_hash, lane, seq), the seq
#             from a sequence and the rows spread over 8 lanes: what the
#             event's row and its index entry cost a plain statement
# The uuid is a constant in wide and logshape (emit makes one per event), so
# both are floors of emit's write, not of its work.  Prints one line per
# case and run: "case clients tps".  Needs PGHOST, PGPORT, PGDATABASE and
# PGUSER (bench/ab.sh sets them) and a database with event_bus installed;
# --cases, --clients, --seconds N, --runs N (the cases interleaved).
#   bash bench/ab.sh --rounds 2 HEAD HEAD -- bash bench/emit_floor.sh
set -euo pipefail
CASES="emit plain wide logshape"
CLIENTS="1 8"
SECS=10
RUNS=2
AB_NAME=emit_floor
source "$(dirname "${BASH_SOURCE[0]}")/ab_scratch.sh" "$@"
COLS="id uuid NOT NULL, topic text COLLATE \"C\" NOT NULL, type text NOT NULL, version integer NOT NULL,
      key text, lane smallint NOT NULL, payload jsonb NOT NULL, headers jsonb NOT NULL,
      emitted_at timestamptz NOT NULL, txid xid8, topic_hash integer NOT NULL"
"$PSQL" -X -q -v ON_ERROR_STOP=1 \
    -c "SELECT event_bus.create_topic('floor_bench', 8)" \
    -c "SELECT event_bus.subscribe('floor_bench_sub', ARRAY['floor_bench'])" \
    -c "CREATE TABLE plain (id bigserial PRIMARY KEY, payload jsonb)" \
    -c "CREATE TABLE wide (seq bigserial PRIMARY KEY, $COLS)" \
    -c "CREATE SEQUENCE logshape_seq" \
    -c "CREATE TABLE logshape (seq bigint NOT NULL, $COLS)" \
    -c "CREATE INDEX ON logshape (topic_hash, lane, seq)" \
    -c "SELECT event_bus.run_maintenance()" >/dev/null
ROW="'00000000-0000-7000-8000-000000000001'::uuid, 'floor_bench', 'OrderPlaced', 1, NULL"
echo "SELECT event_bus.emit('floor_bench', 'OrderPlaced', '$PAYLOAD');" > "$DIR/emit.sql"
echo "INSERT INTO plain (payload) VALUES ('$PAYLOAD');" > "$DIR/plain.sql"
echo "INSERT INTO wide (id, topic, type, version, key, lane, payload, headers, emitted_at, txid, topic_hash)
      VALUES ($ROW, 0, '$PAYLOAD', '{}', now(), pg_current_xact_id(), 12345);" > "$DIR/wide.sql"
echo "INSERT INTO logshape SELECT s, $ROW, (s % 8)::smallint, '$PAYLOAD', '{}', now(), pg_current_xact_id(), 12345
      FROM nextval('logshape_seq') s;" > "$DIR/logshape.sql"
for r in $(seq 1 "$RUNS"); do
    for c in $CASES; do
        [ -f "$DIR/$c.sql" ] || { echo "emit_floor.sh: unknown case $c" >&2; exit 2; }
        for n in $CLIENTS; do
            tps=$(ab_tps "$DIR/$c.sql" "$n")
            echo "$c $n ${tps:-failed}"
        done
    done
done
