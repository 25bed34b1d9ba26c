#!/usr/bin/env bash
# Small batches: one pgbench client claiming B events (default 10) from a
# 16-lane topic with a backlog of N events (default 600,000) and acking them
# in the same statement, in 3 runs of N / 3 / B cycles that drain the backlog
# (claim + ack cycles a second; the fixed cost of a claim and an ack shows).
# ORDERED=true makes the subscription ordered; PARTITION_SIZE=n puts the
# backlog into partitions of n seqs (above the ones CREATE EXTENSION made).
# Meant as the COMMAND of bench/ab.sh, e.g.
#   bash bench/ab.sh --rounds 2 REV_A REV_B -- bash bench/ab_small_batches.sh
#   ORDERED=true PARTITION_SIZE=2000 N=200000 bash bench/ab.sh ... -- bash bench/ab_small_batches.sh
set -euo pipefail
B=${B:-10}
N=${N:-600000}
ORDERED=${ORDERED:-false}
if [ -n "${PARTITION_SIZE:-}" ]; then
	# Seqs from above the partitions there are, in partitions of PARTITION_SIZE.
	psql -X -q -v ON_ERROR_STOP=1 \
		-c "SELECT count(*) FROM event_bus.run_maintenance()" \
		-c "SET event_bus.partition_size = $PARTITION_SIZE" \
		-c "SELECT pg_catalog.setval('event_bus.event_seq', (SELECT max(hi) - 1 FROM event_bus.log_partitions))" \
		-c "SELECT event_bus._ensure_partitions((SELECT max(hi) - 1 FROM event_bus.log_partitions) + $N)" >/dev/null
fi
source "$(dirname "${BASH_SOURCE[0]}")/backlog.sh"
psql -X -q -v ON_ERROR_STOP=1 \
	-c "SELECT event_bus.create_topic('small', 16)" \
	-c "SELECT event_bus.subscribe('sb', ARRAY['small'], ordered => $ORDERED)" >/dev/null
eb_bench_backlog small "$N"
psql -X -q -v ON_ERROR_STOP=1 -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
parts=$(psql -X -At -c "SELECT count(*) FROM event_bus.log_partitions")
script=$(mktemp /tmp/event_bus-small.XXXXXX.sql)
trap 'rm -f "$script"' EXIT
echo "SELECT event_bus.ack('sb', ARRAY(SELECT seq FROM event_bus.claim('sb', $B)));" > "$script"
chmod 644 "$script"
for i in 1 2 3; do
	pgbench -n -M prepared -t $((N / 3 / B)) -f "$script" 2>/dev/null | grep -o "tps = [0-9.]*"
done | tr '\n' ' '
echo "(left: $(psql -X -At -c "SELECT sum(pending) FROM event_bus.subscription_status WHERE subscription = 'sb'");" \
	"partitions: $parts)"
