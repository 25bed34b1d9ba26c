#!/usr/bin/env bash
# Quick side-by-side figures on a throwaway cluster (Unix socket only):
#   emit vs a plain INSERT of the same ~300-byte jsonb into a bigserial table,
#   1 and 8 pgbench clients, synchronous_commit off and on;
#   consumption: pre-load events, drain with claim(100) + ack.
# Usage: bench/quick.sh [seconds per pgbench run, default 15] [events to drain, default 200000]
# Run as root (it uses the unprivileged user of scripts/common.sh) or as a
# normal user with the extension installed.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
SECS=${1:-15}
DRAIN=${2:-200000}
eb_pick_user

DIR=$(mktemp -d /tmp/event_bus-bench.XXXXXX)
chown "$EB_USER" "$DIR" 2>/dev/null || true
PORT=5477
eb_as_user initdb -D "$DIR/data" -A trust -U postgres >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'event_bus'
listen_addresses = ''
unix_socket_directories = '$DIR'
port = $PORT
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
CONF
eb_as_user pg_ctl -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
trap 'eb_as_user pg_ctl -D "$DIR/data" -m fast -w stop >/dev/null 2>&1; rm -rf "$DIR"' EXIT

q() { eb_as_user psql -X -q -At -h "$DIR" -p $PORT -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

q <<'SQL'
CREATE EXTENSION event_bus;
SELECT event_bus.create_topic('bench', 8);
CREATE TABLE plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
SELECT * FROM event_bus.run_maintenance();
SQL

# ~300 bytes of JSON, the same for both.
PAYLOAD='{"order_id": 123456, "customer": {"id": 98765, "name": "Ada Lovelace", "email": "ada@example.com"}, "items": [{"sku": "A-1", "qty": 2, "price": 19.99}, {"sku": "B-22", "qty": 1, "price": 5.49}], "total": 45.47, "currency": "EUR", "placed_at": "2026-11-27T10:00:00Z", "note": "leave at the door"}'
echo "SELECT event_bus.emit('bench', 'OrderPlaced', '$PAYLOAD', key => (random() * 1000)::int::text);" > "$DIR/emit.sql"
echo "INSERT INTO plain (payload) VALUES ('$PAYLOAD');" > "$DIR/insert.sql"
chown "$EB_USER" "$DIR"/*.sql 2>/dev/null || true

tps() { # script clients
    eb_as_user env PGOPTIONS="-c synchronous_commit=$SC" pgbench -n -h "$DIR" -p $PORT -U postgres \
        -c "$2" -j "$2" -T "$SECS" -f "$1" postgres 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'
}

echo "| synchronous_commit | clients | plain INSERT tx/s | emit tx/s | ratio |"
echo "|---|---|---|---|---|"
for SC in off on; do
    for c in 1 8; do
        i=$(tps "$DIR/insert.sql" $c)
        e=$(tps "$DIR/emit.sql" $c)
        echo "| $SC | $c | $i | $e | $(awk -v e="$e" -v i="$i" 'BEGIN {printf "%.2f", e / i}') |"
    done
done

# Consumption: load DRAIN events in bulk, then one consumer drains with
# claim(100) + ack, each in its own transaction.
q -c "SELECT event_bus.subscribe('drain', ARRAY['bench'])" >/dev/null
q -c "SELECT sum(cardinality(event_bus.emit_many('bench', 'OrderPlaced',
        (SELECT array_agg('$PAYLOAD'::jsonb) FROM generate_series(1, 1000)),
        (SELECT array_agg((random() * 1000)::int::text) FROM generate_series(1, 1000)))))
      FROM generate_series(1, $DRAIN / 1000)" >/dev/null
q -c "VACUUM ANALYZE" >/dev/null
cat > "$DIR/drain.sql" <<'SQL'
CREATE TEMP TABLE IF NOT EXISTS b (seq bigint);
DO $$
DECLARE s bigint[]; n bigint := 0; t0 timestamptz := clock_timestamp();
BEGIN
  LOOP
    SELECT array_agg(seq) INTO s FROM event_bus.claim('drain', 100);
    EXIT WHEN s IS NULL;
    PERFORM event_bus.ack('drain', s);
    COMMIT;
    n := n + cardinality(s);
  END LOOP;
  RAISE NOTICE 'drained % events in % s: % events/s', n,
    round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2),
    round(n / extract(epoch FROM clock_timestamp() - t0));
END $$;
SQL
chown "$EB_USER" "$DIR/drain.sql" 2>/dev/null || true
echo
echo "consume, 1 consumer, claim 100 + ack per transaction (synchronous_commit on):"
q -f "$DIR/drain.sql" 2>&1 | sed 's/^psql:[^ ]* NOTICE:  /  /'
