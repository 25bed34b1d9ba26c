#!/usr/bin/env bash
# Idle claims: one pgbench client claiming from a 16-lane topic whose events
# are all acked (the fixed cost of a claim), 3 x 6 s.  Meant as the COMMAND
# of bench/ab.sh, e.g.
#   bash bench/ab.sh --rounds 2 REV_A REV_B -- bash bench/ab_idle_claims.sh
set -euo pipefail
psql -X -q -v ON_ERROR_STOP=1 \
	-c "SELECT event_bus.create_topic('idle', 16)" \
	-c "SELECT event_bus.subscribe('si', ARRAY['idle'])" \
	-c "SELECT event_bus.emit('idle', 'E', '{}')" \
	-c "SELECT event_bus.ack('si', ARRAY(SELECT seq FROM event_bus.claim('si', 10)))" >/dev/null
script=$(mktemp /tmp/event_bus-idle.XXXXXX.sql)
trap 'rm -f "$script"' EXIT
echo "SELECT count(*) FROM event_bus.claim('si', 100);" > "$script"
chmod 644 "$script"
for i in 1 2 3; do
	pgbench -n -M prepared -T 6 -f "$script" 2>/dev/null | grep -o "tps = [0-9.]*"
done | tr '\n' ' '
echo
