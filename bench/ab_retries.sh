#!/usr/bin/env bash
# Retries: what failing consumers and a backlog of due retries cost.
#  - fail: one pgbench client claims 10 events of a 16-lane topic and fails
#    each of them (backoff_base BACKOFF, default 1 s; max_attempts 1000) for T
#    seconds
#    (default 10): transactions a second, and the CPU the database's
#    event_bus worker used meanwhile (each fail asks it to plan the retry);
#  - backlog: a subscription with R (default 100,000) due retries, drained by
#    one pgbench client with claim(100) + ack in 3 runs (transactions a
#    second).  The retries are written straight into event_bus.retries, as
#    fail() writes them (attempt 2, due a minute ago), for events the
#    subscription has passed: making 100,000 of them through fail() would
#    take longer than the measurement.
# Meant as the COMMAND of bench/ab.sh, e.g.
#   bash bench/ab.sh --rounds 2 REV_A REV_B -- bash bench/ab_retries.sh
set -euo pipefail
N=${N:-200000}
R=${R:-100000}
T=${T:-10}
BACKOFF=${BACKOFF:-1 s}
source "$(dirname "${BASH_SOURCE[0]}")/backlog.sh"
psql -X -q -v ON_ERROR_STOP=1 \
	-c "SELECT event_bus.create_topic('rt', 16)" \
	-c "SELECT event_bus.subscribe('fl', ARRAY['rt'], start => 'earliest', max_attempts => 1000,
	                                backoff_base => '$BACKOFF')" >/dev/null
eb_bench_backlog rt "$N"
psql -X -q -v ON_ERROR_STOP=1 \
	-c "SELECT event_bus.subscribe('bk', ARRAY['rt'], start => 'latest', max_attempts => 1000)" \
	-c "INSERT INTO event_bus.retries (subscription, seq, topic, lane, attempt, due_at, last_error)
	    SELECT 'bk', e.seq, e.topic, e.lane, 2, now() - interval '1 minute' + (e.seq % 1000) * interval '1 ms', 'failed'
	      FROM event_bus.events e ORDER BY e.seq LIMIT $R" \
	-c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
wpid=$(psql -X -At -c "SELECT pid FROM event_bus.worker_status WHERE datname = current_database()")
cpu() { awk '{print $14 + $15}' "/proc/$wpid/stat"; }
script=$(mktemp /tmp/event_bus-retries.XXXXXX.sql)
trap 'rm -f "$script"' EXIT
chmod 644 "$script"
echo "SELECT count(event_bus.fail('fl', c.seq, 'boom')) FROM event_bus.claim('fl', 10) c;" > "$script"
c0=$(cpu)
fail=$(pgbench -n -M prepared -T "$T" -f "$script" 2>/dev/null | grep -o "tps = [0-9.]*")
c1=$(cpu)
echo -n "fail: $fail, worker $(( (c1 - c0) * 100 / $(getconf CLK_TCK) / T ))% of a CPU," \
	"retries $(psql -X -At -c "SELECT count(*) FROM event_bus.retries WHERE subscription = 'fl'"); backlog:"
echo "SELECT event_bus.ack('bk', ARRAY(SELECT seq FROM event_bus.claim('bk', 100)));" > "$script"
for i in 1 2 3; do
	echo -n " $(pgbench -n -M prepared -t $((R / 3 / 100)) -f "$script" 2>/dev/null | grep -o "tps = [0-9.]*")"
done
echo " (left: $(psql -X -At -c "SELECT count(*) FROM event_bus.retries WHERE subscription = 'bk'"))"
