# What a drain costs at the least, next to claim + ack and PgQ: one client,
# batches of 100 and 500, the same events (the consume phase's payload,
# loaded by emit_many of 1,000 with keys, and PgQ's insert_event with a
# tick after every 100), fetched with the columns bench/run.sh fetches.
#   eb        claim(sub, B) + ack, as the consume phase drains
#   read      the same rows and columns read straight from the log, lane by
#             lane, one prepared SELECT per batch (generic plan; index scan on
#             topic_hash, lane, seq): no cursor, lease, ack or visibility work
#   readtext  the same from a copy of those rows whose payload and headers
#             are text columns, as PgQ's ev_data is: what the output of jsonb
#             costs against text
#   pgq       next_batch / get_batch_events / finish_batch
# Prints per case and batch size the median over --reps drains of events a
# second, the server backend's CPU per event and the client's (this Python
# process, psycopg2 parsing the rows).  Needs PGHOST, PGPORT, PGDATABASE,
# PGUSER of a database with event_bus and PgQ available (bench/ab.sh makes
# one; bench/run.sh installs Debian's postgresql-15-pgq3):
#   bash bench/ab.sh --rounds 1 HEAD HEAD -- python3 bench/consume_floor.py
import os
import statistics
import sys
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import json_as_text, load_eb_backlog, load_pgq_backlog, pgq_batch  # noqa: E402

N = int(os.environ.get("N", "200000"))
REPS = int(os.environ.get("REPS", "3"))
LANES = 16
COLS = "seq, id, topic, type, version, key, payload, headers, emitted_at"


def conn():
    c = psycopg2.connect("")
    c.autocommit = True
    # Payloads reach the client as text, as in the consume phase.
    json_as_text(c)
    return c


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def setup(cur):
    cur.execute("CREATE EXTENSION IF NOT EXISTS pgq")
    cur.execute("SELECT event_bus.create_topic('floor', %s)", (LANES,))
    for r in range(REPS):
        for b in (100, 500):
            cur.execute("SELECT event_bus.subscribe(%s, ARRAY['floor'])", ("f%d_%d" % (b, r),))
    cur.execute("SELECT pgq.create_queue('floorq')")
    cur.execute("SELECT pgq.set_queue_config('floorq', 'ticker_max_count', '100')")
    for r in range(REPS):
        for b in (100, 500):
            cur.execute("SELECT pgq.register_consumer('floorq', %s)", ("p%d_%d" % (b, r),))
    cur.execute("SET synchronous_commit = off")
    load_eb_backlog(cur, "floor", N)
    load_pgq_backlog(cur, "floorq", N)
    cur.execute("CREATE TABLE floor_text AS SELECT seq, id, topic, type, version, key, lane, topic_hash,"
                " payload::text AS payload, headers::text AS headers, emitted_at"
                " FROM event_bus.events WHERE topic = 'floor'")    # in the log's heap order
    cur.execute("CREATE INDEX ON floor_text (topic_hash, lane, seq)")
    cur.execute("VACUUM ANALYZE")
    cur.execute("CHECKPOINT")


def drain(kind, b, r):
    d = conn()
    dc = d.cursor()
    dc.execute("SELECT pg_backend_pid(), event_bus._topic_hash('floor')")
    pid, h = dc.fetchone()
    n = 0
    c0, p0, t0 = cpu(pid), time.process_time(), time.perf_counter()
    if kind == "eb":
        s = "f%d_%d" % (b, r)
        while True:
            dc.execute("SELECT " + COLS + ", attempt FROM event_bus.claim(%s, %s)", (s, b))
            rows = dc.fetchall()
            if not rows:
                break
            dc.execute("SELECT event_bus.ack(%s, %s::bigint[])",
                       (s, "{" + ",".join(str(x[0]) for x in rows) + "}"))
            n += len(rows)
    elif kind in ("read", "readtext"):
        # A generic plan, as a claim keeps its plans: planning a statement on
        # the log's parent takes about 0.25 ms a batch (and PostgreSQL keeps
        # planning a prepared one each time: with every partition in it, the
        # generic plan looks dearer).
        rel = "event_bus.events" if kind == "read" else "floor_text"
        dc.execute("SET plan_cache_mode = force_generic_plan")
        dc.execute("PREPARE rd (integer, smallint, bigint, integer) AS SELECT " + COLS + ", 1 FROM " + rel +
                   " e WHERE topic_hash = $1 AND topic = 'floor' AND lane = $2 AND seq > $3"
                   " ORDER BY topic_hash, lane, seq LIMIT $4")
        for lane in range(LANES):
            pos = 0
            while True:
                dc.execute("EXECUTE rd (%s, %s, %s, %s)", (h, lane, pos, b))
                rows = dc.fetchall()
                if not rows:
                    break
                pos = rows[-1][0]
                n += len(rows)
    else:
        consumer = "p%d_%d" % (b, r)
        while n < N:
            got = pgq_batch(dc, 'floorq', consumer, b)
            if got is None:
                dc.execute("SELECT pgq.ticker()")
                continue
            n += got
    el = time.perf_counter() - t0
    server, client = (cpu(pid) - c0) / n * 1e6, (time.process_time() - p0) / n * 1e6
    d.close()
    if n != N:
        raise SystemExit("%s b%d drained %d of %d" % (kind, b, n, N))
    return n / el, server, client


def main():
    c = conn()
    setup(c.cursor())
    c.close()
    res = {}
    kinds = ("pgq", "eb", "read", "readtext")
    for r in range(REPS):
        for b in (100, 500):
            for k in (kinds if r % 2 == 0 else kinds[::-1]):
                res.setdefault((k, b), []).append(drain(k, b, r))
    print("| batch | case | ev/s | server CPU us/event | client CPU us/event |")
    print("|---|---|---|---|---|")
    for b in (100, 500):
        for k in kinds:
            v = res[(k, b)]
            print("| %d | %s | %.0f (%s) | %.2f | %.2f |" % (
                b, k, statistics.median(x[0] for x in v), ", ".join("%.0f" % x[0] for x in v),
                statistics.median(x[1] for x in v), statistics.median(x[2] for x in v)))
    with open("/proc/loadavg") as f:
        print("load average at the end: %s" % " ".join(f.read().split()[:3]))


main()
