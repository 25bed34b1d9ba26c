"""Profile phase (opt-in, --phases profile): where a claim and an emit spend
their time.  pgbench drives one backend with each workload while
`perf record -e cpu-clock -g` samples it; the report lists the hottest
functions (self time) and the share of event_bus's own functions
(including what they call).  Symbols of the PostgreSQL binary are those of
the Debian package (exported functions only; static ones show as
addresses)."""
import os
import re
import subprocess
import threading
import time

from common import ARGS, PAYLOAD, create_bus_db, log, q, write_script, pgbench

WORKLOADS = [
    ("emit", "one event per transaction, 1 client, synchronous_commit off",
     "SELECT event_bus.emit('p', 'OrderPlaced', '%s');\n" % PAYLOAD.replace("'", "''"), "off"),
    ("emit_many", "emit_many of 1,000 events per call, 1 client, synchronous_commit off",
     "SELECT event_bus.emit_many('p', 'OrderPlaced', (SELECT array_agg('%s'::jsonb) "
     "FROM generate_series(1, 1000)));\n" % PAYLOAD.replace("'", "''"), "off"),
    ("claim", "claim(sub, 100) with its rows sent to the client, rolled back (the backlog stays), 1 client",
     "BEGIN;\nSELECT * FROM event_bus.claim('p_sub', 100);\nROLLBACK;\n", "on"),
    ("claim_ack", "claim(sub, 100) + ack of the batch in one statement (no rows sent), 1 client",
     "SELECT event_bus.ack('p_sub', ARRAY(SELECT seq FROM event_bus.claim('p_sub', 100)));\n", "on"),
]


def perf_available():
    try:
        return subprocess.run(["perf", "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE).returncode == 0
    except OSError:
        return False


def backend_pid(db, seen):
    """The backend of the pgbench just started (not one of an earlier run, which may still be exiting)."""
    for _ in range(200):
        r = q(db, "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgbench' "
                  "AND state = 'active' AND NOT pid = ANY (%s) ORDER BY backend_start DESC LIMIT 1",
              (db, list(seen)), one=True)
        if r:
            seen.add(r[0])
            return r[0]
        time.sleep(0.05)
    return None


def perf_top(data, children):
    args = ["perf", "report", "-i", data, "--stdio", "-g", "none", "--percent-limit", "0.5"]
    args.append("--children" if children else "--no-children")
    out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s+([0-9.]+)%\s+(?:([0-9.]+)%\s+)?\S+\s+(\S+)\s+\[.\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(3), m.group(4).strip()))
    return rows


def run_profile_phase(results):
    if not perf_available():
        log("profile phase: perf is not installed (Debian: apt-get install linux-perf); skipped")
        results["profile"] = dict(skipped="perf is not installed")
        return
    db = "bench_profile"
    c, cur = create_bus_db(db)
    cur.execute("SELECT event_bus.create_topic('p', 8)")
    cur.execute("SELECT event_bus.subscribe('p_sub', ARRAY['p'])")
    cur.execute("SET synchronous_commit = off")
    cur.execute("""DO $$ BEGIN FOR i IN 1..300 LOOP
        PERFORM event_bus.emit_many('p', 'OrderPlaced', (SELECT array_agg(%s::jsonb) FROM generate_series(1, 1000)),
                                    (SELECT array_agg('k' || g) FROM generate_series(1, 1000) g));
        COMMIT; END LOOP; END $$""", (PAYLOAD,))
    cur.execute("VACUUM ANALYZE")
    c.close()
    secs = max(4, ARGS.seconds // 2)
    out = {}
    seen = set()
    for name, what, sql, sync in WORKLOADS:
        script = write_script("profile_%s.sql" % name, sql)
        data = os.path.join(ARGS.work, "perf_%s.data" % name)
        res = {}

        def drive():
            res["tps"] = pgbench(db, script, 1, secs + 2, sync=sync)[0]
        th = threading.Thread(target=drive)
        th.start()
        pid = backend_pid(db, seen)
        time.sleep(0.5)
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(pid), "-o", data, "--",
                        "sleep", str(secs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        th.join()
        flat = perf_top(data, False)[:15]
        mine = [r for r in perf_top(data, True) if r[2].startswith("eb_") or r[2].startswith("claim")][:12]
        out[name] = dict(what=what, tps=res.get("tps"), flat=flat, event_bus=mine)
        log("  profile %-9s %.0f calls/s; hottest: %s" % (name, res.get("tps") or 0,
                                                         ", ".join("%s %.1f%%" % (r[2], r[0]) for r in flat[:4])))
    results["profile"] = out
    q("postgres", "DROP DATABASE %s" % db)
