# Drain of N events (default 200,000; env N) by claim + ack at batch 100 and
# 500, three subscriptions each: the consuming backend's CPU per event and
# events a second, per drain.  Meant as the COMMAND of bench/ab.sh, e.g.
#   N=100000 bash bench/ab.sh --rounds 3 REV_A REV_B -- python3 bench/ab_drain.py
import psycopg2, time, os, sys, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import json_as_text, load_eb_backlog
def conn():
    c = psycopg2.connect(""); c.autocommit = True
    json_as_text(c); return c
def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
N = int(os.environ.get("N", "200000")); REPS = 3
c = conn(); cur = c.cursor()
cur.execute("SELECT event_bus.create_topic('drain', 16)")
subs = ["s%d_%d" % (b, r) for b in (100, 500) for r in range(REPS)]
for s in subs: cur.execute("SELECT event_bus.subscribe(%s, ARRAY['drain'])", (s,))
cur.execute("SET synchronous_commit = off")
tl0 = time.perf_counter()
load_eb_backlog(cur, "drain", N)
load_s = time.perf_counter() - tl0
cur.execute("VACUUM ANALYZE"); cur.execute("CHECKPOINT")
res = {100: [], 500: []}
for r in range(REPS):
    for b in (100, 500):
        s = "s%d_%d" % (b, r)
        d = conn(); dc = d.cursor(); dc.execute("select pg_backend_pid()"); pid = dc.fetchone()[0]
        n = 0; c0 = cpu(pid); t0 = time.perf_counter()
        while True:
            dc.execute("SELECT seq, id, topic, type, version, key, payload, headers, emitted_at, attempt FROM event_bus.claim(%s, %s)", (s, b))
            rows = dc.fetchall()
            if not rows: break
            dc.execute("SELECT event_bus.ack(%s, %s::bigint[])", (s, "{" + ",".join(str(x[0]) for x in rows) + "}"))
            n += len(rows)
        el = time.perf_counter() - t0; us = (cpu(pid) - c0) / n * 1e6
        assert n == N, n
        res[b].append((us, n / el)); d.close()
print("RESULT load %.2fs backend" % load_s, " us/ev b100 %s b500 %s | ev/s b100 %s b500 %s" % (
    " ".join("%.2f" % x[0] for x in res[100]), " ".join("%.2f" % x[0] for x in res[500]),
    " ".join("%.0f" % x[1] for x in res[100]), " ".join("%.0f" % x[1] for x in res[500])))
