#!/usr/bin/env bash
# A short emit + consume measurement for bench/ab.sh (libpq's PG* variables
# say where): one client emitting one ~300-byte event per transaction, then
# one consumer draining a pre-loaded backlog with claim(100) + ack in one
# statement.  Prints "emit N ev/s" and "consume N ev/s".
#   bash bench/ab.sh --rounds 3 REV_A REV_B -- bash bench/emit_claim.sh [SECONDS]
set -euo pipefail
SECS=${1:-8}
DIR=$(mktemp -d /tmp/event_bus-emit-claim.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
PAYLOAD='{"order_id": 123456, "customer": {"id": 98765, "name": "Ada Lovelace", "email": "ada@example.com"}, "items": [{"sku": "A-1", "qty": 2, "price": 19.99}, {"sku": "B-22", "qty": 1, "price": 5.49}], "total": 45.47, "currency": "EUR", "placed_at": "2026-11-27T10:00:00Z", "note": "leave at the door"}'
psql -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
SELECT event_bus.create_topic('t', 8);
SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest');
SQL
echo "SELECT event_bus.emit('t', 'OrderPlaced', '$PAYLOAD'::jsonb, key => 'k' || (random() * 1000)::int);" > "$DIR/emit.sql"
echo "SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 100)));" > "$DIR/consume.sql"
tps() { pgbench -n -M prepared -c 1 -T "$SECS" -f "$1" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1; }
echo "emit $(tps "$DIR/emit.sql") ev/s"
# A backlog the consumer cannot finish in SECS seconds.
for i in $(seq 1 60); do
    psql -X -q -c "SELECT event_bus.emit_many('t', 'OrderPlaced', (SELECT array_agg('$PAYLOAD'::jsonb) FROM generate_series(1, 10000)), keys => (SELECT array_agg('k' || g) FROM generate_series(1, 10000) g))" >/dev/null
done
psql -X -q -c "VACUUM ANALYZE" >/dev/null
echo "consume $(awk -v t="$(tps "$DIR/consume.sql")" 'BEGIN { printf "%.0f", t * 100 }') ev/s"
