#!/usr/bin/env bash
# The bulk write paths against the statements they are compared with, as
# bench/run.sh measures them (emit and capture phases), in one short run:
#   many      emit_many of 1,000 events per call (topic of 8 lanes, one
#             subscription), pgbench -M prepared, synchronous_commit off
#   plain     INSERT INTO plain SELECT FROM unnest(the same 1,000 payloads)
#   plainlane the same INSERT into a table shaped like the log's index:
#             no primary key, one index on (topic_hash, lane, seq), the rows
#             spread over 8 lanes and written lane by lane as emit_many
#             writes them: what the log's index costs a plain statement
#   captured  a 100,000-row INSERT ... SELECT into a captured table
#             (synchronous_commit on, after TRUNCATE and CHECKPOINT)
#   bare      the same statement into the same table without capture
#   logonly   what capture adds at the least: the events of those 100,000
#             rows (the capture trigger's row images, keys and headers,
#             built beforehand from orders_bare, so after "bare") written by
#             one emit_many into a topic of 4 lanes, as capture's topic has;
#             captured >= bare + logonly, so logonly >= bare puts capture
#             at 2x the bare statement or more
# Prints one line per case and run: "many CLIENTS ev/s", "plain CLIENTS
# ev/s", "plainlane CLIENTS ev/s", "captured SECONDS", "bare SECONDS",
# "logonly SECONDS".  Needs PGHOST, PGPORT,
# PGDATABASE and PGUSER (bench/ab.sh sets them) and a database with
# event_bus installed.  --cases, --clients, --seconds N, --runs N.
#   bash bench/ab.sh A B -- bash bench/ab_bulk.sh --cases "many plain"
set -euo pipefail
CASES="many plain plainlane captured bare logonly"
CLIENTS="8"
SECS=10
RUNS=2
AB_NAME=ab_bulk
source "$(dirname "${BASH_SOURCE[0]}")/ab_scratch.sh" "$@"
TABLE="(id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
        status text NOT NULL, note text, created_at timestamptz NOT NULL DEFAULT now())"
"$PSQL" -X -q -v ON_ERROR_STOP=1 \
    -c "SELECT event_bus.create_topic('bulk_bench', 8)" \
    -c "SELECT event_bus.subscribe('bulk_bench_sub', ARRAY['bulk_bench'])" \
    -c "CREATE TABLE plain (id bigserial PRIMARY KEY, payload jsonb)" \
    -c "CREATE TABLE plainlane (seq bigserial, topic_hash integer, lane smallint, payload jsonb)" \
    -c "CREATE INDEX ON plainlane (topic_hash, lane, seq)" \
    -c "CREATE TABLE orders_bare $TABLE" -c "CREATE TABLE orders_captured $TABLE" \
    -c "SELECT event_bus.capture('orders_captured')" \
    -c "SELECT event_bus.create_topic('orders_log', 4)" \
    -c "SELECT event_bus.run_maintenance()" >/dev/null
ARRAY="(SELECT array_agg('$PAYLOAD'::jsonb) FROM generate_series(1, 1000))"
"$PSQL" -X -q -v ON_ERROR_STOP=1 -At -c "SELECT $ARRAY::text" > "$DIR/array"
printf "SELECT event_bus.emit_many('bulk_bench', 'OrderPlaced', '%s');\n" "$(cat "$DIR/array")" > "$DIR/many.sql"
printf "INSERT INTO plain (payload) SELECT p FROM unnest('%s'::jsonb[]) p;\n" "$(cat "$DIR/array")" > "$DIR/plain.sql"
printf "INSERT INTO plainlane (topic_hash, lane, payload) SELECT 1, (i %% 8), p FROM unnest('%s'::jsonb[]) WITH ORDINALITY u(p, i) ORDER BY i %% 8, i;\n" \
    "$(cat "$DIR/array")" > "$DIR/plainlane.sql"
for r in $(seq 1 "$RUNS"); do
    for c in $CASES; do
        case "$c" in
            many|plain|plainlane)
                for n in $CLIENTS; do
                    tps=$(ab_tps "$DIR/$c.sql" "$n")
                    echo "$c $n $(awk -v t="${tps:-0}" 'BEGIN { printf "%.0f", t * 1000 }')"
                done ;;
            captured|bare)
                ms=$("$PSQL" -X -q -v ON_ERROR_STOP=1 <<SQL | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
SET synchronous_commit = on;
TRUNCATE orders_$c;
CHECKPOINT;
\\timing on
INSERT INTO orders_$c (customer, amount, status, note)
SELECT 'customer-' || g, g * 1.25, 'new', 'leave at the door' FROM generate_series(1, 100000) g;
SQL
)
                echo "$c $(awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }')" ;;
            logonly)
                "$PSQL" -X -q -v ON_ERROR_STOP=1 <<'SQL' 2>&1 | sed -n 's/.*NOTICE: *\(logonly .*\)/\1/p'
SET synchronous_commit = on;
DO $$
DECLARE
    ps jsonb[];
    ks text[];
    t0 timestamptz;
BEGIN
    SELECT pg_catalog.array_agg(event_bus._row_jsonb(r)), pg_catalog.array_agg(r.id::text)
      INTO ps, ks FROM orders_bare r;
    t0 := clock_timestamp();
    PERFORM event_bus.emit_many('orders_log', 'orders_log.inserted', ps, ks,
        '{"source": "table:public.orders_captured", "operation": "insert"}'::jsonb);
    RAISE NOTICE 'logonly %', round(extract(epoch FROM clock_timestamp() - t0), 3);
END $$;
SQL
                ;;
            *) echo "ab_bulk.sh: unknown case $c" >&2; exit 2 ;;
        esac
    done
done
