#!/usr/bin/env bash
# How late scheduled events enter the log: schedules N events (default 200)
# due 1 s from now, one every 10 ms, waits until they are all in the log,
# and prints count, median, p99 and max of (emitted_at - deliver_at) in ms.
# Needs a database with event_bus and its worker running; uses the usual
# PGHOST/PGPORT/PGDATABASE/PGUSER (bench/ab.sh sets them).
set -euo pipefail
N=${1:-200}
PSQL=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
q() { "$PSQL" -X -At -v ON_ERROR_STOP=1 -c "$1"; }
q "SELECT event_bus.create_topic('scheduled_lag', 1)" >/dev/null
q "SELECT count(event_bus.emit('scheduled_lag', 'Due',
          jsonb_build_object('due', clock_timestamp() + interval '1 s' + i * interval '10 ms'),
          deliver_at => clock_timestamp() + interval '1 s' + i * interval '10 ms'))
     FROM generate_series(1, $N) i" >/dev/null
for _ in $(seq 1 100); do
    [ "$(q "SELECT count(*) FROM event_bus.scheduled WHERE topic = 'scheduled_lag'")" = 0 ] && break
    sleep 0.2
done
q "SELECT 'events ' || count(*) || ', late by median ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2)
          || ' ms, p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2)
          || ' ms, max ' || round(max(ms)::numeric, 2) || ' ms'
     FROM (SELECT extract(epoch FROM emitted_at - (payload->>'due')::timestamptz) * 1000 AS ms
             FROM event_bus.events WHERE topic = 'scheduled_lag') x"
