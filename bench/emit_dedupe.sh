#!/usr/bin/env bash
# Emit throughput without and with dedupe keys (issue 11): pgbench -M
# prepared, one event per transaction, the same ~300-byte payload.
#   plain    emit without a dedupe key (what every emit was before)
#   fresh    emit with a new dedupe key each time (writes the event and a key)
#   repeat   emit with a key already held (writes nothing, returns the seq)
#   scheduled emit with deliver_at an hour ahead (a row in scheduled_events)
# Prints one line per case: "case clients tps".  Needs PGHOST, PGPORT,
# PGDATABASE and PGUSER (bench/ab.sh sets them) and a database with
# event_bus installed; --cases and --clients pick a subset, --seconds N.
#   bash bench/ab.sh A B -- bash bench/emit_dedupe.sh --cases plain
set -euo pipefail
CASES="plain fresh repeat scheduled"
CLIENTS="1 8"
SECS=10
AB_NAME=emit_dedupe
source "$(dirname "${BASH_SOURCE[0]}")/ab_scratch.sh" "$@"
"$PSQL" -X -q -v ON_ERROR_STOP=1 -c "SELECT event_bus.create_topic('dedupe_bench', 4)" \
    -c "SELECT event_bus.run_maintenance()" >/dev/null
echo "SELECT event_bus.emit('dedupe_bench', 'OrderPlaced', '$PAYLOAD');" > "$DIR/plain.sql"
printf '%s\n' "SELECT event_bus.emit('dedupe_bench', 'OrderPlaced', '$PAYLOAD', dedupe_key => 'k-' || :client_id || '-' || pg_backend_pid() || '-' || random());" > "$DIR/fresh.sql"
printf '%s\n' "SELECT event_bus.emit('dedupe_bench', 'OrderPlaced', '$PAYLOAD', deliver_at => now() + interval '1 hour');" > "$DIR/scheduled.sql"
printf '%s\n' "\\set k random(1, 1000)" "SELECT event_bus.emit('dedupe_bench', 'OrderPlaced', '$PAYLOAD', dedupe_key => 'held-' || :k);" > "$DIR/repeat.sql"
for c in $CASES; do
    if [ "$c" = repeat ]; then      # hold the keys first
        "$PSQL" -X -q -v ON_ERROR_STOP=1 -c "SELECT count(event_bus.emit('dedupe_bench', 'OrderPlaced', '{}', dedupe_key => 'held-' || g)) FROM generate_series(1, 1000) g" >/dev/null
    fi
    for n in $CLIENTS; do
        tps=$(ab_tps "$DIR/$c.sql" "$n")
        echo "$c $n ${tps:-failed}"
    done
done
