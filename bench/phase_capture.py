"""Capture phase: a 100,000-row INSERT ... SELECT into a captured table
against the same statement into the same table without capture."""
import statistics
import time

from common import ARGS, connect, create_bus_db, loadavg, log, q, settle

TABLE = """CREATE TABLE %s (
    id          bigserial PRIMARY KEY,
    customer    text NOT NULL,
    amount      numeric(12,2) NOT NULL,
    status      text NOT NULL,
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now())"""

INSERT = """INSERT INTO %s (customer, amount, status, note)
SELECT 'customer-' || g, g * 1.25, 'new', 'leave at the door'
  FROM generate_series(1, %d) g"""


def run_capture_phase(results):
    db = "bench_capture"
    rows = ARGS.capture_rows
    c, cur = create_bus_db(db)
    for t in ("orders_bare", "orders_captured"):
        cur.execute(TABLE % t)
    cur.execute("SELECT event_bus.capture('orders_captured')")
    c.close()
    log("capture phase: INSERT ... SELECT of %d rows, bare vs captured, %d interleaved rounds ..."
        % (rows, ARGS.reps))
    samples = []
    la = loadavg()
    for rnd in range(ARGS.reps + 1):            # round 0 warms up
        for t in (("orders_bare", "orders_captured") if rnd % 2 else ("orders_captured", "orders_bare")):
            settle(db)      # the worker done with the last captured run's events
            c = connect(db)
            cur = c.cursor()
            cur.execute("TRUNCATE %s" % t)
            cur.execute("CHECKPOINT")
            t0 = time.perf_counter()
            cur.execute(INSERT % (t, rows))
            el = time.perf_counter() - t0
            c.close()
            if rnd > 0:
                samples.append(dict(table=t, seconds=el))
                log("  %-16s %.3f s" % (t, el))
    n = q(db, "SELECT count(*) FROM event_bus.events WHERE topic = 'orders_captured'", one=True)[0]
    bare = statistics.median(s["seconds"] for s in samples if s["table"] == "orders_bare")
    cap = statistics.median(s["seconds"] for s in samples if s["table"] == "orders_captured")
    log("  median: bare %.3f s, captured %.3f s = %.2fx (%d events in the log)" % (bare, cap, cap / bare, n))
    results["capture"] = dict(rows=rows, samples=samples, bare_s=bare, captured_s=cap, events=n, load=la,
                              settled=True)
    q("postgres", "DROP DATABASE %s" % db)
