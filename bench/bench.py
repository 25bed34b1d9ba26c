#!/usr/bin/python3
"""event_bus benchmark (issue #5): the measuring half of bench/run.sh.

run.sh installs what is missing, starts a throwaway cluster (Unix socket
only) and runs this script as the unprivileged cluster user.  Everything is
measured side by side on that one cluster, with the same ~300-byte JSON
payload:

  emit     pgbench -M prepared, one event per transaction, 1 and 8 clients,
           synchronous_commit off and on: event_bus.emit() vs a plain INSERT
           into a bigserial table vs PgQ's pgq.insert_event(); bulk
           emit_many(1000) vs INSERT ... SELECT FROM unnest() vs PgQ.
  fan-out  emit with 1, 10 and 50 subscriptions on the topic.
  consume  1,000,000 events pre-loaded, drained with claim() + ack() by 1, 4
           and 8 consumers (batch 100) and 1 consumer (batch 500); PgQ drained
           with next_batch / get_batch_events / finish_batch.
  latency  emit commit -> woken claim(wait) return, and emit commit -> LISTEN
           notification from the worker, at a moderate rate.
  soak     steady emit + consume at a fixed rate with small log partitions
           and retention 0, sampling the size of every event_bus table.

Each emit-side measurement is repeated (--reps) with the order shuffled in
every round, and the median is reported.  The report goes to
<out>/report.md; plots (gnuplot) to <out>/*.png; raw data to <out>/raw/.
Progress goes to stderr.
"""
import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import select
import statistics
import subprocess
import sys
import threading
import time

import psycopg2
import psycopg2.extensions
import psycopg2.extras

PG_BIN = "/usr/lib/postgresql/15/bin"
PGBENCH = os.path.join(PG_BIN, "pgbench")

# ~300 bytes of JSON, the same for every contender.
PAYLOAD = ('{"order_id": 123456, "customer": {"id": 98765, "name": "Ada Lovelace", '
           '"email": "ada@example.com"}, "items": [{"sku": "A-1", "qty": 2, "price": 19.99}, '
           '{"sku": "B-22", "qty": 1, "price": 5.49}], "total": 45.47, "currency": "EUR", '
           '"placed_at": "2026-11-27T10:00:00Z", "note": "leave at the door"}')

# Payloads and JSON come back as text: neither contender's consumer parses them.
psycopg2.extras.register_default_jsonb(globally=True, loads=lambda s: s)
psycopg2.extras.register_default_json(globally=True, loads=lambda s: s)

ARGS = None
T_START = time.time()


def log(msg):
    el = time.time() - T_START
    print("[%3d:%02d] %s" % (el // 60, el % 60, msg), file=sys.stderr, flush=True)


def dsn(db):
    return "host=%s port=%s user=postgres dbname=%s application_name=event_bus_bench" % (
        ARGS.host, ARGS.port, db)


def connect(db, autocommit=True):
    c = psycopg2.connect(dsn(db))
    c.autocommit = autocommit
    return c


def q(db, sql, args=None, one=False, all_=False):
    """Run one statement in autocommit on a fresh connection."""
    c = connect(db)
    try:
        cur = c.cursor()
        cur.execute(sql, args)
        if one:
            return cur.fetchone()
        if all_:
            return cur.fetchall()
        return None
    finally:
        c.close()


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def proc_cpu(pid):
    """utime + stime of a process, in seconds (None if unreadable)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cluster_cpu():
    """CPU seconds used so far by the whole cluster: the postmaster, its live
    children, and the children that have exited (counted in the postmaster's
    cutime/cstime once reaped)."""
    tck = os.sysconf("SC_CLK_TCK")
    try:
        with open(os.path.join(ARGS.datadir, "postmaster.pid")) as f:
            pm = int(f.readline())
        with open("/proc/%d/stat" % pm) as f:
            x = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    total = sum(int(v) for v in x[11:15])
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                y = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(y[1]) == pm:
            total += int(y[11]) + int(y[12])
    return total / tck


def other_postgres_processes():
    """postgres processes on the machine that are not part of our cluster."""
    ours = set()
    try:
        with open(os.path.join(ARGS.datadir, "postmaster.pid")) as f:
            pm = int(f.readline())
        ours.add(pm)
    except (OSError, ValueError):
        pm = None
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.find("(") + 1:st.rfind(")")]
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        if comm.startswith("postgres") and int(d) != pm and ppid != pm:
            n += 1
    return n


def worker_pid(db):
    """The pid of the event_bus worker of db (it starts when CREATE EXTENSION commits)."""
    for _ in range(50):
        r = q(db, "SELECT pid FROM event_bus.worker_status WHERE datname = current_database() "
                  "AND state = 'running'", one=True)
        if r and r[0]:
            return r[0]
        time.sleep(0.1)
    return None


def worker_rounds(db):
    r = q(db, "SELECT rounds FROM event_bus.worker_status WHERE datname = current_database()", one=True)
    return r[0] if r else None


def pct(values, p):
    """Percentile with linear interpolation (p in 0..100)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


# ---------------------------------------------------------------------------
# pgbench
# ---------------------------------------------------------------------------
def write_script(name, text):
    path = os.path.join(ARGS.work, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def pgbench(db, script, clients, secs, sync="on", rate=None, jobs=None):
    env = dict(os.environ, PGOPTIONS="-c synchronous_commit=%s" % sync)
    cmd = [PGBENCH, "-n", "-h", ARGS.host, "-p", str(ARGS.port), "-U", "postgres",
           "-M", "prepared", "-c", str(clients), "-j", str(jobs or clients),
           "-T", str(secs), "-f", script]
    if rate:
        cmd += ["-R", str(rate)]
    cmd.append(db)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    m = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError("pgbench failed (%s):\n%s\n%s" % (" ".join(cmd), p.stdout, p.stderr))
    failed = re.search(r"number of failed transactions: (\d+)", p.stdout)
    return float(m.group(1)), int(failed.group(1)) if failed else 0, p.stdout


# ---------------------------------------------------------------------------
# 1 + 3 + 4: emit, bulk, fan-out, and PgQ's insert_event, interleaved
# ---------------------------------------------------------------------------
FANOUT = (1, 10, 50)
BULK = 1000


def create_bus_db(db):
    """Create a database with event_bus installed; returns (connection, cursor)."""
    q("postgres", "CREATE DATABASE %s" % db)
    c = connect(db)
    cur = c.cursor()
    cur.execute("CREATE EXTENSION event_bus")
    return c, cur


def setup_emit_db(db):
    c, cur = create_bus_db(db)
    cur.execute("CREATE EXTENSION pgq")
    cur.execute("CREATE TABLE plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
    for n in FANOUT:
        cur.execute("SELECT event_bus.create_topic(%s, 8)", ("fan%d" % n,))
        for i in range(n):
            cur.execute("SELECT event_bus.subscribe(%s, ARRAY[%s])", ("fan%d_s%02d" % (n, i), "fan%d" % n))
    cur.execute("SELECT event_bus.create_topic('bulk', 8)")
    cur.execute("SELECT event_bus.subscribe('bulk_s', ARRAY['bulk'])")
    cur.execute("SELECT pgq.create_queue('emitq')")
    cur.execute("SELECT pgq.register_consumer('emitq', 'c')")
    cur.execute("SELECT * FROM event_bus.run_maintenance()")
    c.close()


def emit_runs():
    """The list of pgbench runs of the emit phase (one round)."""
    s = {}
    s["plain"] = write_script("plain.sql", "INSERT INTO plain (payload) VALUES ('%s');\n" % PAYLOAD)
    for n in FANOUT:
        s["emit%d" % n] = write_script(
            "emit_fan%d.sql" % n,
            "SELECT event_bus.emit('fan%d', 'OrderPlaced', '%s');\n" % (n, PAYLOAD))
    s["pgq"] = write_script("pgq.sql", "SELECT pgq.insert_event('emitq', 'OrderPlaced', '%s');\n" % PAYLOAD)
    arr = "(SELECT array_agg('%s'::jsonb) FROM generate_series(1, %d))" % (PAYLOAD, BULK)
    s["plain_bulk"] = write_script(
        "plain_bulk.sql", "INSERT INTO plain (payload) SELECT p FROM unnest(%s) p;\n" % arr)
    s["emit_bulk"] = write_script(
        "emit_bulk.sql", "SELECT event_bus.emit_many('bulk', 'OrderPlaced', %s);\n" % arr)
    s["pgq_bulk"] = write_script(
        "pgq_bulk.sql",
        "SELECT pgq.insert_event('emitq', 'OrderPlaced', p) FROM unnest("
        "(SELECT array_agg('%s'::text) FROM generate_series(1, %d))) p;\n" % (PAYLOAD, BULK))

    runs = []
    for sync in ("off", "on"):
        for clients in (1, 8):
            kinds = ["plain", "emit1", "pgq"]
            if sync == "off":
                kinds += ["emit%d" % n for n in FANOUT if n != 1]
            for k in kinds:
                runs.append(dict(kind=k, sync=sync, clients=clients, script=s[k], per_tx=1))
    for k in ("plain_bulk", "emit_bulk", "pgq_bulk"):
        runs.append(dict(kind=k, sync="off", clients=ARGS.bulk_clients, script=s[k], per_tx=BULK))
    return runs


def run_emit_phase(results):
    db = "bench_emit"
    setup_emit_db(db)
    wpid = worker_pid(db)
    runs = emit_runs()
    secs = ARGS.seconds
    total = len(runs) * ARGS.reps * (secs + 1.5)
    log("emit phase: %d configurations x %d rounds x %d s (about %d min)"
        % (len(runs), ARGS.reps, secs, total // 60 + 1))
    rng = random.Random(5)
    samples = []
    for rep in range(ARGS.reps):
        q(db, "CHECKPOINT")
        order = runs[:]
        rng.shuffle(order)
        for r in order:
            la = loadavg()
            w0 = proc_cpu(wpid) if wpid else None
            n0 = worker_rounds(db)
            c0 = cluster_cpu()
            t0 = time.perf_counter()
            tps, failed, _ = pgbench(db, r["script"], r["clients"], secs, sync=r["sync"])
            time.sleep(0.2)         # let the backends exit (their CPU is then counted)
            el = time.perf_counter() - t0
            c1 = cluster_cpu()
            w1 = proc_cpu(wpid) if wpid else None
            n1 = worker_rounds(db)
            rounds = (n1 - n0) if (n0 is not None and n1 is not None) else None
            wcpu = (w1 - w0) / el if (w0 is not None and w1 is not None) else None
            evs = tps * r["per_tx"]
            n = evs * secs
            samples.append(dict(kind=r["kind"], sync=r["sync"], clients=r["clients"], rep=rep,
                                events_per_s=evs, tps=tps, failed=failed, load=la,
                                worker_cpu=wcpu,
                                server_us=(c1 - c0) / n * 1e6 if (c0 is not None and c1 is not None and n) else None,
                                worker_us=(w1 - w0) / n * 1e6 if (w0 is not None and w1 is not None and n) else None,
                                rounds=rounds,
                                round_ms=(w1 - w0) / rounds * 1e3 if (rounds and w0 is not None and w1 is not None) else None,
                                events_per_round=n / rounds if rounds else None))
            s = samples[-1]
            log("  round %d/%d  %-10s sync=%-3s clients=%d  %9.0f events/s  server CPU %6.1f us/event%s"
                % (rep + 1, ARGS.reps, r["kind"], r["sync"], r["clients"], evs, s["server_us"] or float("nan"),
                   " (worker %.1f; %d rounds, %.2f ms CPU each)" % (s["worker_us"], s["rounds"] or 0, s["round_ms"] or float("nan"))
                   if s["worker_us"] is not None and r["kind"].startswith("emit") else ""))
    results["emit_samples"] = samples
    sizes = q(db, """SELECT pg_total_relation_size('plain'),
                     (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                       WHERE inhparent = 'event_bus.events'::regclass)""", one=True)
    results["emit_sizes"] = dict(plain=sizes[0], events=int(sizes[1] or 0))
    q("postgres", "DROP DATABASE %s" % db)


def med(samples, field="events_per_s", **kw):
    v = [s[field] for s in samples if all(s[k] == val for k, val in kw.items()) and s.get(field) is not None]
    return (statistics.median(v), min(v), max(v), len(v)) if v else (float("nan"),) * 3 + (0,)


# ---------------------------------------------------------------------------
# 2 + 3: consumption
# ---------------------------------------------------------------------------
EB_DRAINS = [("drain_c1", 1, 100), ("drain_c4", 4, 100), ("drain_c8", 8, 100), ("drain_b500", 1, 500)]
PGQ_DRAINS = [("pgq_c100", 100), ("pgq_c500", 500)]


def eb_consumer(db, sub, batch, target, counter, calls, barrier, errors):
    try:
        c = connect(db)
        cur = c.cursor()
        barrier.wait()
        empty = 0
        while True:
            cur.execute("SELECT seq, id, topic, type, version, key, payload, headers, emitted_at, attempt "
                        "FROM event_bus.claim(%s, %s)", (sub, batch))
            rows = cur.fetchall()
            if not rows:
                if counter.value >= target:
                    break
                empty += 1
                if empty > 20000:       # ~20 s of nothing: give up
                    raise RuntimeError("%s: no events left but only %d of %d drained"
                                       % (sub, counter.value, target))
                time.sleep(0.001)
                continue
            empty = 0
            cur.execute("SELECT event_bus.ack(%s, %s::bigint[])", (sub, [r[0] for r in rows]))
            with counter.get_lock():
                counter.value += len(rows)
            with calls.get_lock():
                calls.value += 1
        c.close()
    except Exception as e:     # reported by the parent
        errors.put("%s: %s" % (sub, e))
        try:
            barrier.abort()
        except Exception:
            pass


def drain_event_bus(db, sub, consumers, batch, target):
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    calls = ctx.Value("q", 0)
    barrier = ctx.Barrier(consumers + 1)
    errors = ctx.Queue()
    procs = [ctx.Process(target=eb_consumer, args=(db, sub, batch, target, counter, calls, barrier, errors))
             for _ in range(consumers)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    el = time.perf_counter() - t0
    if not errors.empty():
        raise RuntimeError(errors.get())
    return counter.value, el, calls.value


class PgqTicker(threading.Thread):
    """Calls pgq.ticker() periodically, standing in for the pgqd daemon."""

    def __init__(self, db, every):
        super().__init__(daemon=True)
        self.db, self.every, self.stop = db, every, threading.Event()

    def run(self):
        c = connect(self.db)
        cur = c.cursor()
        while not self.stop.wait(self.every):
            cur.execute("SELECT pgq.ticker()")
        c.close()


def drain_pgq(db, consumer, batch, target):
    ticker = PgqTicker(db, 0.5)
    ticker.start()
    c = connect(db)
    cur = c.cursor()
    n = 0
    empty = 0
    batches = 0
    t0 = time.perf_counter()
    while n < target:
        if batch == 100:
            cur.execute("SELECT pgq.next_batch('drainq', %s)", (consumer,))
        else:
            cur.execute("SELECT batch_id FROM pgq.next_batch_custom('drainq', %s, NULL, %s, NULL)",
                        (consumer, batch))
        b = cur.fetchone()[0]
        if b is None:
            empty += 1
            if empty > 20000:
                raise RuntimeError("pgq %s: no batch but only %d of %d drained" % (consumer, n, target))
            time.sleep(0.001)
            continue
        empty = 0
        cur.execute("SELECT ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, "
                    "ev_extra3, ev_extra4 FROM pgq.get_batch_events(%s)", (b,))
        n += len(cur.fetchall())
        batches += 1
        cur.execute("SELECT pgq.finish_batch(%s)", (b,))
    el = time.perf_counter() - t0
    ticker.stop.set()
    ticker.join()
    c.close()
    return n, el, batches


def run_consume_phase(results):
    db = "bench_consume"
    N = ARGS.events
    c, cur = create_bus_db(db)
    cur.execute("CREATE EXTENSION pgq")
    cur.execute("SELECT event_bus.create_topic('drain', %s)", (ARGS.lanes,))
    for sub, _, _ in EB_DRAINS:
        cur.execute("SELECT event_bus.subscribe(%s, ARRAY['drain'])", (sub,))
    cur.execute("SELECT * FROM event_bus.run_maintenance()")
    cur.execute("SELECT pgq.create_queue('drainq')")
    # A tick after every 100 events: PgQ's batches are the events between
    # two ticks, so this gives batches of 100 (next_batch) and lets
    # next_batch_custom(min_count => 500) take five ticks at a time.
    cur.execute("SELECT pgq.set_queue_config('drainq', 'ticker_max_count', '100')")
    for name, _ in PGQ_DRAINS:
        cur.execute("SELECT pgq.register_consumer('drainq', %s)", (name,))

    log("consume phase: pre-loading %d events into event_bus (emit_many, 1000 per call) ..." % N)
    t0 = time.perf_counter()
    cur.execute("SET synchronous_commit = off")     # loading is not what is measured
    cur.execute("""
        DO $$
        DECLARE
            p jsonb[] := (SELECT array_agg(%s::jsonb) FROM generate_series(1, 1000));
        BEGIN
            FOR i IN 1..%s LOOP
                PERFORM event_bus.emit_many('drain', 'OrderPlaced', p,
                    (SELECT array_agg('customer-' || (random() * 10000)::int) FROM generate_series(1, 1000)));
                COMMIT;
            END LOOP;
        END $$""", (PAYLOAD, N // 1000))
    eb_load = time.perf_counter() - t0
    log("  %.1f s (%.0f events/s); pre-loading %d events into PgQ (insert_event, 100 per "
        "transaction, pgq.ticker() after each) ..." % (eb_load, N / eb_load, N))
    t0 = time.perf_counter()
    cur.execute("""
        DO $$
        BEGIN
            FOR i IN 1..%s LOOP
                PERFORM pgq.insert_event('drainq', 'OrderPlaced', %s) FROM generate_series(1, 100);
                COMMIT;
                PERFORM pgq.ticker('drainq');
                COMMIT;
            END LOOP;
        END $$""", (N // 100, PAYLOAD))
    pgq_load = time.perf_counter() - t0
    cur.execute("SELECT count(*) FROM pgq.tick t JOIN pgq.queue q ON q.queue_id = t.tick_queue "
                "WHERE q.queue_name = 'drainq'")
    ticks = cur.fetchone()[0]
    log("  %.1f s (%.0f events/s, %d ticks); VACUUM ANALYZE ..." % (pgq_load, N / pgq_load, ticks))
    cur.execute("VACUUM ANALYZE")
    cur.execute("CHECKPOINT")
    c.close()
    results["preload"] = dict(events=N, event_bus_s=eb_load, pgq_s=pgq_load, pgq_ticks=ticks)

    out = []
    order = [("eb",) + d for d in EB_DRAINS] + [("pgq",) + d for d in PGQ_DRAINS]
    # Interleave the contenders.
    order = [order[0], order[4], order[1], order[2], order[3], order[5]]
    for entry in order:
        la = loadavg()
        c0 = cluster_cpu()
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if entry[0] == "eb":
            _, sub, consumers, batch = entry
            n, el, calls = drain_event_bus(db, sub, consumers, batch, N)
            out.append(dict(system="event_bus", name=sub, consumers=consumers, batch=batch,
                            events=n, seconds=el, events_per_s=n / el, load=la, calls=calls))
        else:
            _, name, batch = entry
            n, el, calls = drain_pgq(db, name, batch, N)
            out.append(dict(system="PgQ", name=name, consumers=1, batch=batch,
                            events=n, seconds=el, events_per_s=n / el, load=la, calls=calls))
        time.sleep(0.2)
        c1 = cluster_cpu()
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = out[-1]
        r["server_us"] = (c1 - c0) / n * 1e6 if (c0 is not None and c1 is not None and n) else None
        r["client_us"] = ((u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime)
                          + (k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime)) / n * 1e6 if n else None
        log("  %-9s %-10s consumers=%d batch=%d: %d events in %.1f s = %.0f events/s (%.1f per call), "
            "server CPU %.1f us/event"
            % (r["system"], r["name"], r["consumers"], r["batch"], r["events"], r["seconds"], r["events_per_s"],
               n / max(1, calls), r["server_us"] or float("nan")))
    results["consume"] = out
    q("postgres", "DROP DATABASE %s" % db)


# ---------------------------------------------------------------------------
# 5: latency
# ---------------------------------------------------------------------------
def producer_proc(db, topic, n, rate, start_evt, out):
    """Emit n events, one per transaction (autocommit), at about rate/s; send
    back {seq: perf_counter() when its COMMIT returned}.  A process of its own,
    so that the consumer's thread never delays it (perf_counter is
    CLOCK_MONOTONIC, the same clock in every process)."""
    times = {}
    try:
        c = connect(db)
        cur = c.cursor()
        start_evt.wait()
        rng = random.Random(7)
        period = 1.0 / rate
        t = time.perf_counter()
        for _ in range(n):
            t += period * rng.uniform(0.5, 1.5)
            d = t - time.perf_counter()
            if d > 0:
                time.sleep(d)
            cur.execute("SELECT event_bus.emit(%s, 'OrderPlaced', %s)", (topic, PAYLOAD))
            seq = cur.fetchone()[0]
            times[seq] = time.perf_counter()
        c.close()
    finally:
        out.send(times)
        out.close()


def producer(db, topic, n, rate, commit_times, start_evt):
    ctx = mp.get_context("fork")
    evt = ctx.Event()
    rx, tx = ctx.Pipe(duplex=False)
    p = ctx.Process(target=producer_proc, args=(db, topic, n, rate, evt, tx))
    p.start()
    start_evt.wait()
    evt.set()
    commit_times.update(rx.recv())
    p.join()


def latency_claim(db, n, rate):
    commit_times, woke = {}, {}
    start_evt, stop = threading.Event(), threading.Event()

    def consumer():
        c = connect(db)
        cur = c.cursor()
        start_evt.set()
        while not stop.is_set():
            cur.execute("SELECT seq FROM event_bus.claim('lat_claim', 10, wait => '5 s')")
            rows = cur.fetchall()
            t = time.perf_counter()
            for (s,) in rows:
                woke[s] = t
            if rows:
                cur.execute("SELECT event_bus.ack('lat_claim', %s::bigint[])", ([r[0] for r in rows],))
        c.close()

    th = threading.Thread(target=consumer, daemon=True)
    th.start()
    time.sleep(0.3)
    producer(db, "lat_a", n, rate, commit_times, start_evt)
    deadline = time.time() + 10
    while len(woke) < len(commit_times) and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    q(db, "SELECT event_bus.emit('lat_a', 'Stop', '{}')")      # wake the consumer
    th.join(10)
    return [(woke[s] - t) * 1000 for s, t in commit_times.items() if s in woke], len(commit_times)


def latency_listen(db, n, rate):
    commit_times, notes = {}, []
    start_evt, stop = threading.Event(), threading.Event()

    def listener():
        c = connect(db)
        cur = c.cursor()
        cur.execute('LISTEN "event_bus.lat_listen"')
        start_evt.set()
        while not stop.is_set():
            if select.select([c], [], [], 0.2) == ([], [], []):
                continue
            c.poll()
            t = time.perf_counter()
            while c.notifies:
                note = c.notifies.pop(0)
                try:
                    notes.append((t, int(json.loads(note.payload)["seq"])))
                except (ValueError, KeyError, TypeError):
                    pass
        c.close()

    th = threading.Thread(target=listener, daemon=True)
    th.start()
    producer(db, "lat_b", n, rate, commit_times, start_evt)
    time.sleep(1.0)
    stop.set()
    th.join(5)
    # Each notification covers every event up to its seq.
    notes.sort()
    lat = []
    for s, t in sorted(commit_times.items()):
        for tn, top in notes:
            if top >= s:
                lat.append((tn - t) * 1000)
                break
    return lat, len(commit_times), len(notes)


def run_latency_phase(results):
    db = "bench_latency"
    c, cur = create_bus_db(db)
    cur.execute("SELECT event_bus.create_topic('lat_a', 4), event_bus.create_topic('lat_b', 4)")
    cur.execute("SELECT event_bus.subscribe('lat_claim', ARRAY['lat_a'])")
    cur.execute("SELECT event_bus.subscribe('lat_listen', ARRAY['lat_b'])")
    cur.execute("SELECT * FROM event_bus.run_maintenance()")
    c.close()
    n, rate = ARGS.latency_samples, ARGS.latency_rate
    res = {}
    log("latency phase: %d events at %d/s, emit commit -> claim(wait) return ..." % (n, rate))
    la = loadavg()
    lat, sent = latency_claim(db, n, rate)
    res["claim"] = dict(lat_ms=lat, sent=sent, load=la)
    log("  median %.3f ms, p99 %.3f ms (%d of %d)" % (pct(lat, 50), pct(lat, 99), len(lat), sent))
    log("latency phase: emit commit -> LISTEN notification ...")
    la = loadavg()
    lat, sent, notes = latency_listen(db, n, rate)
    res["listen"] = dict(lat_ms=lat, sent=sent, notifications=notes, load=la)
    log("  median %.3f ms, p99 %.3f ms (%d of %d, %d notifications)"
        % (pct(lat, 50), pct(lat, 99), len(lat), sent, notes))
    results["latency"] = res
    q("postgres", "DROP DATABASE %s" % db)


# ---------------------------------------------------------------------------
# 6: soak
# ---------------------------------------------------------------------------
SOAK_TABLES = ["leases", "cursors", "retries", "subscriptions", "dead_letters", "log_partitions", "topics"]


def soak_sample(cur):
    cur.execute("""
        SELECT (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
                 WHERE i.inhparent = 'event_bus.events'::regclass)::bigint,
               (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'event_bus.events'::regclass),
               %s,
               (SELECT last_value FROM event_bus.event_seq),
               (SELECT coalesce(sum(pending), 0) FROM event_bus.subscription_status)::bigint,
               (SELECT coalesce(sum(in_flight), 0) FROM event_bus.subscription_status)::bigint,
               (SELECT count(*) FROM event_bus.leases)
        """ % ", ".join("pg_total_relation_size('event_bus.%s')" % t for t in SOAK_TABLES))
    r = cur.fetchone()
    d = dict(events=int(r[0]), partitions=int(r[1]))
    for i, t in enumerate(SOAK_TABLES):
        d[t] = int(r[2 + i])
    k = 2 + len(SOAK_TABLES)
    d.update(last_seq=int(r[k]), pending=int(r[k + 1]), in_flight=int(r[k + 2]), lease_rows=int(r[k + 3]))
    return d


def run_soak_phase(results):
    db = "bench_soak"
    secs = int(ARGS.soak_minutes * 60)
    if secs <= 0:
        return
    # Small partitions and no retention delay, for this phase only.
    q("postgres", "ALTER SYSTEM SET event_bus.partition_size = %d" % ARGS.soak_partition_size)
    q("postgres", "ALTER SYSTEM SET event_bus.retention = 0")
    q("postgres", "SELECT pg_reload_conf()")
    time.sleep(1)
    c, cur = create_bus_db(db)
    cur.execute("SHOW event_bus.partition_size")
    psize = cur.fetchone()[0]
    cur.execute("SELECT event_bus.create_topic('soak', 8)")
    cur.execute("SELECT event_bus.subscribe('soak', ARRAY['soak'])")
    cur.execute("SELECT * FROM event_bus.run_maintenance()")
    wpid = worker_pid(db)
    rate = ARGS.soak_rate
    crate = max(1, int(round(2.0 * rate / 100)))     # claim(100) calls per second: twice the need
    prod = write_script("soak_emit.sql",
                        "\\set k random(1, 100000)\n"
                        "SELECT event_bus.emit('soak', 'OrderPlaced', '%s', key => (:k)::text);\n" % PAYLOAD)
    cons = write_script("soak_consume.sql",
                        "SELECT coalesce(array_agg(seq), '{}') AS seqs FROM event_bus.claim('soak', 100) \\gset\n"
                        "SELECT event_bus.ack('soak', :seqs);\n")
    log("soak phase: %d s, emit %d events/s (4 clients), consume with claim(100) + ack at %d calls/s "
        "(2 clients), partition_size %s, retention 0, a sample every %d s"
        % (secs, rate, crate, psize, ARGS.soak_sample))
    out = {}

    def bench(name, script, clients, r):
        try:
            out[name] = pgbench(db, script, clients, secs, sync="off", rate=r)
        except Exception as e:
            out[name + "_error"] = str(e)

    tp = threading.Thread(target=bench, args=("producers", prod, 4, rate))
    tc = threading.Thread(target=bench, args=("consumers", cons, 2, crate))
    samples = []
    t0 = time.time()
    tp.start()
    tc.start()
    cpu0 = proc_cpu(wpid) if wpid else None
    next_t = t0
    while True:
        d = soak_sample(cur)
        now = time.time()
        cpu = proc_cpu(wpid) if wpid else None
        d["t"] = now - t0
        d["worker_cpu_s"] = (cpu - cpu0) if (cpu is not None and cpu0 is not None) else None
        d["load"] = loadavg()
        samples.append(d)
        log("  t=%4.0f s  events %7.1f MB in %d partitions, leases %d kB, cursors %d kB, retries %d kB, "
            "pending %d" % (d["t"], d["events"] / 1e6, d["partitions"], d["leases"] // 1024,
                            d["cursors"] // 1024, d["retries"] // 1024, d["pending"]))
        if not (tp.is_alive() or tc.is_alive()):
            break
        next_t += ARGS.soak_sample
        time.sleep(max(0.0, next_t - time.time()))
    tp.join()
    tc.join()
    for k in ("producers_error", "consumers_error"):
        if k in out:
            raise RuntimeError(out[k])
    c.close()
    results["soak"] = dict(samples=samples, seconds=secs, rate=rate, claim_rate=crate,
                           partition_size=int(psize),
                           producers_tps=out["producers"][0], consumers_tps=out["consumers"][0])
    q("postgres", "DROP DATABASE %s" % db)
    q("postgres", "ALTER SYSTEM RESET event_bus.partition_size")
    q("postgres", "ALTER SYSTEM RESET event_bus.retention")
    q("postgres", "SELECT pg_reload_conf()")


def levels_off(values):
    """Sizes level off when the last third of the run sets no new high: its
    maximum stays within 10% (+16 kB, two pages, for tiny tables) of the maximum before.
    Steady growth fails this (the last third of a line is 1.5 times the rest);
    a bounded sawtooth, such as the log between partition drops, passes."""
    if len(values) < 6:
        return None
    k = len(values) - len(values) // 3
    return max(values[k:]) <= 1.10 * max(values[:k]) + 16384


# ---------------------------------------------------------------------------
# Report and plots
# ---------------------------------------------------------------------------
def fmt(v):
    if v != v:      # NaN
        return "n/a"
    if v >= 100:
        return "{:,.0f}".format(v)
    return "%.1f" % v


def kb(b):
    if b >= 10 * 1024 * 1024:
        return "%.1f MB" % (b / 1024 / 1024)
    return "%d kB" % (b // 1024)


def ratio(x):
    """A ratio with two decimals, or three when two would round it onto a
    target (0.9 or 1) that it misses or meets by less than the rounding."""
    if abs(x - 0.9) < 0.005 or abs(x - 1.0) < 0.005:
        return "%.3f" % x
    return "%.2f" % x


def verdict(ok):
    return "**yes**" if ok else "**no**"


def build_report(results, info):
    L = []
    S = results.get("emit_samples", [])
    add = L.append
    add("# event_bus benchmark report")
    add("")
    add("Generated by `%s` on %s." % (("bash bench/run.sh " + info["argv"]).strip(), info["date"]))
    add("")
    add("| machine | |")
    add("|---|---|")
    add("| CPUs (nproc) | %s (%s) |" % (info["nproc"], info["cpu"]))
    add("| memory | %s |" % info["mem"])
    add("| kernel | %s |" % info["kernel"])
    add("| PostgreSQL | %s |" % info["pg"])
    add("| event_bus | %s (checkout at commit %s%s); installed library: %s |"
        % (info["eb_version"], info["commit"], info["dirty"], info["installed"] or "?"))
    add("| PgQ | %s |" % info["pgq"])
    add("| cluster | shared_buffers %s, max_wal_size %s, fsync on, Unix socket, pgbench -M prepared |"
        % (info["shared_buffers"], info["max_wal_size"]))
    add("| load average (1 min) | at start %.2f, at end %.2f, highest seen %.2f |"
        % (info["load_start"], info["load_end"], info["load_max"]))
    add("| other postgres processes on the machine | %d at start, %d at end |"
        % (info["others_start"], info["others_end"]))
    add("")
    if info["load_max"] > 1.5 or info["others_start"] or info["others_end"]:
        add("> **Note:** the machine was not idle while this ran (see the load average and the other "
            "postgres processes above: other test suites were running). Absolute numbers are noisy; "
            "the ratios, measured in interleaved rounds, are the figures to read.")
        add("")
    add("Payload: the same %d-byte JSON document for every contender. Each emit figure is the median "
        "of %d runs of %d s, measured in %d interleaved rounds whose order is shuffled; the range "
        "(min–max) follows in brackets." % (len(PAYLOAD), ARGS.reps, ARGS.seconds, ARGS.reps))
    add("")

    summary = []
    if S:
        add("## Emit: one event per transaction")
        add("")
        add("`SELECT event_bus.emit('fan1', 'OrderPlaced', <payload>)` (topic with 8 lanes and 1 "
            "subscription) vs `INSERT INTO plain (payload) VALUES (<payload>)` (`id bigserial PRIMARY KEY, "
            "payload jsonb`) vs PgQ `SELECT pgq.insert_event('emitq', 'OrderPlaced', <payload>)`. "
            "`synchronous_commit` set per run with PGOPTIONS.")
        add("")
        add("| synchronous_commit | clients | plain INSERT ev/s | event_bus.emit ev/s | emit / plain | PgQ insert_event ev/s | PgQ / plain | server CPU µs/event: plain / emit / PgQ | of which the event_bus worker |")
        add("|---|---|---|---|---|---|---|---|---|")
        for sync in ("off", "on"):
            for cl in (1, 8):
                p = med(S, kind="plain", sync=sync, clients=cl)
                e = med(S, kind="emit1", sync=sync, clients=cl)
                g = med(S, kind="pgq", sync=sync, clients=cl)
                cpu = [med(S, "server_us", kind=k, sync=sync, clients=cl)[0] for k in ("plain", "emit1", "pgq")]
                wus = med(S, "worker_us", kind="emit1", sync=sync, clients=cl)[0]
                wcpu = med(S, "worker_cpu", kind="emit1", sync=sync, clients=cl)[0]
                rms = med(S, "round_ms", kind="emit1", sync=sync, clients=cl)[0]
                epr = med(S, "events_per_round", kind="emit1", sync=sync, clients=cl)[0]
                add("| %s | %d | %s (%s–%s) | %s (%s–%s) | **%.2f** | %s (%s–%s) | %.2f | %.0f / %.0f / %.0f | %.0f µs (%.0f%% of a CPU; %.1f events and %.2f ms CPU per round) |"
                    % (sync, cl, fmt(p[0]), fmt(p[1]), fmt(p[2]), fmt(e[0]), fmt(e[1]), fmt(e[2]),
                       e[0] / p[0], fmt(g[0]), fmt(g[1]), fmt(g[2]), g[0] / p[0], cpu[0], cpu[1], cpu[2],
                       wus, 100 * wcpu, epr, rms))
                summary.append(("emit, 1 event/txn, %d client%s, sync %s" % (cl, "s" if cl > 1 else "", sync),
                                "%s ev/s = **%s×** plain (%s); PgQ %.2f×; server CPU/event %.1f× plain"
                                % (fmt(e[0]), ratio(e[0] / p[0]), fmt(p[0]), g[0] / p[0], cpu[1] / cpu[0]),
                                "≥ 0.9× plain", verdict(e[0] / p[0] >= 0.9)))
        add("")
        add("## Bulk emit: %d events per call, %d clients, synchronous_commit off" % (BULK, ARGS.bulk_clients))
        add("")
        add("`event_bus.emit_many('bulk', 'OrderPlaced', <array of %d payloads>)` vs "
            "`INSERT INTO plain (payload) SELECT p FROM unnest(<same array>) p` vs "
            "`SELECT pgq.insert_event('emitq', 'OrderPlaced', p) FROM unnest(<same array>) p`." % BULK)
        add("")
        add("| | ev/s | / plain | server CPU µs/event |")
        add("|---|---|---|---|")
        p = med(S, kind="plain_bulk")
        for k, label in (("plain_bulk", "plain INSERT ... SELECT FROM unnest"), ("emit_bulk", "event_bus.emit_many"),
                         ("pgq_bulk", "PgQ insert_event over unnest")):
            m = med(S, kind=k)
            add("| %s | %s (%s–%s) | **%.2f** | %.1f |" % (label, fmt(m[0]), fmt(m[1]), fmt(m[2]), m[0] / p[0],
                                                       med(S, "server_us", kind=k)[0]))
        e = med(S, kind="emit_bulk")
        summary.append(("bulk emit, %d events/call, %d clients, sync off" % (BULK, ARGS.bulk_clients),
                        "%s ev/s = **%s×** plain (%s); PgQ %.2f×" % (fmt(e[0]), ratio(e[0] / p[0]), fmt(p[0]),
                                                                      med(S, kind="pgq_bulk")[0] / p[0]),
                        "≥ 0.9× plain", verdict(e[0] / p[0] >= 0.9)))
        add("")
        add("## Fan-out: emit cost with 1, 10 and 50 subscriptions (synchronous_commit off)")
        add("")
        add("Subscriptions on the topic have no consumers; each topic has 8 lanes.")
        add("")
        add("| clients | plain INSERT ev/s | 1 subscription | 10 subscriptions | 50 subscriptions | 50 / 1 | server CPU µs/event (1 / 10 / 50 subs) | of which the worker |")
        add("|---|---|---|---|---|---|---|---|")
        for cl in (1, 8):
            p = med(S, kind="plain", sync="off", clients=cl)
            v = [med(S, kind="emit%d" % n, sync="off", clients=cl)[0] for n in FANOUT]
            cu = [med(S, "server_us", kind="emit%d" % n, sync="off", clients=cl)[0] for n in FANOUT]
            wu = [med(S, "worker_us", kind="emit%d" % n, sync="off", clients=cl)[0] for n in FANOUT]
            add("| %d | %s | %s | %s | %s | **%.2f** | %.0f / %.0f / %.0f | %.0f / %.0f / %.0f |"
                % (cl, fmt(p[0]), fmt(v[0]), fmt(v[1]), fmt(v[2]), v[2] / v[0], cu[0], cu[1], cu[2], wu[0], wu[1], wu[2]))
            summary.append(("fan-out, %d client%s: emit with 50 vs 1 subscriptions" % (cl, "s" if cl > 1 else ""),
                            "**%s×** (10 subs: %.2f×)" % (ratio(v[2] / v[0]), v[1] / v[0]),
                            "flat: no slowdown (≥ 0.9×)", verdict(v[2] / v[0] >= 0.9)))
        add("")
        add("\"Server CPU µs/event\" is the CPU time of every process of the cluster (backends, the event_bus "
            "worker, WAL writer, autovacuum, ...) during the run divided by the events written: a figure much "
            "less sensitive than throughput to other load on the machine. \"Of which the worker\" is the part "
            "used by the event_bus worker of the benchmark database (it runs a dispatch round after every burst "
            "of commits) and the share of one CPU it kept busy.")
        add("")

    if "consume" in results:
        C = results["consume"]
        pre = results["preload"]
        add("## Consume: drain %s pre-loaded events" % "{:,}".format(pre["events"]))
        add("")
        add("event_bus: topic with %d lanes, events pre-loaded with `emit_many` (1,000 per call, random keys; "
            "%.0f ev/s); each consumer loops `SELECT * FROM event_bus.claim(sub, batch)` then "
            "`SELECT event_bus.ack(sub, seqs)`, each in its own transaction (autocommit, psycopg2, one "
            "process per consumer; payloads are fetched to the client). "
            "PgQ: the same events pre-loaded with `pgq.insert_event` in transactions of 100 followed by "
            "`pgq.ticker()` (%d ticks, %.0f ev/s), so a batch between two ticks holds 100 events; one consumer "
            "loops `pgq.next_batch` (batch 100) or `pgq.next_batch_custom(..., min_count => 500)` (batch 500), "
            "`pgq.get_batch_events`, `pgq.finish_batch`, each in its own transaction, while a thread of the "
            "benchmark calls `pgq.ticker()` every 0.5 s (no pgqd daemon runs). synchronous_commit on. "
            "One run each (a drain is long)."
            % (ARGS.lanes, pre["events"] / pre["event_bus_s"], pre["pgq_ticks"], pre["events"] / pre["pgq_s"]))
        add("")
        add("| system | consumers | batch | events | seconds | events/s | events per claim / batch | server CPU µs/event | client CPU µs/event | load avg at start |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for r in C:
            add("| %s | %d | %d | %s | %.1f | **%s** | %.1f | %.1f | %.1f | %.1f |"
                % (r["system"], r["consumers"], r["batch"], "{:,}".format(r["events"]), r["seconds"],
                   fmt(r["events_per_s"]), r["events"] / max(1, r["calls"]),
                   r["server_us"] if r["server_us"] is not None else float("nan"),
                   r["client_us"] if r["client_us"] is not None else float("nan"), r["load"]))
        add("")

        def get(system, consumers, batch):
            for r in C:
                if r["system"] == system and r["consumers"] == consumers and r["batch"] == batch:
                    return r["events_per_s"]
            return float("nan")
        for b in (100, 500):
            e, g = get("event_bus", 1, b), get("PgQ", 1, b)
            summary.append(("consume, batch %d, 1 consumer" % b, "%s ev/s vs PgQ %s (**%s×**)" % (fmt(e), fmt(g), ratio(e / g)),
                            "faster than PgQ", verdict(e > g)))
        summary.append(("consume, batch 100, 4 / 8 consumers", "%s / %s ev/s" % (fmt(get("event_bus", 4, 100)),
                                                                          fmt(get("event_bus", 8, 100))),
                        "(scales with consumers)", "—"))

    if "latency" in results:
        Lr = results["latency"]
        add("## Latency (emit commit → consumer wakes)")
        add("")
        add("Two Python processes (psycopg2): a producer emits one event per transaction at about %d/s "
            "(uniformly jittered spacing) and records `time.perf_counter()` when its COMMIT returns; the consumer "
            "records it when it wakes (`perf_counter` is CLOCK_MONOTONIC, one clock for both processes). **claim**: the consumer sits in `event_bus.claim(sub, 10, wait => '5 s')` "
            "(then acks). **LISTEN**: the consumer listens on `\"event_bus.<subscription>\"` and is woken by the "
            "worker's NOTIFY (payload `{\"subscription\", \"seq\", \"events\"}`); a notification counts for "
            "every event up to its seq. A negative value means the consumer woke before the producer's process had "
            "read its own COMMIT reply (both run on a 2-core machine)." % ARGS.latency_rate)
        add("")
        add("| path | samples | min | median | p90 | p99 | max |")
        add("|---|---|---|---|---|---|---|")
        for k, label in (("claim", "emit commit → claim(wait) returns"), ("listen", "emit commit → LISTEN notification")):
            v = Lr[k]["lat_ms"]
            add("| %s | %d of %d | %.3f ms | **%.3f ms** | %.3f ms | **%.3f ms** | %.3f ms |"
                % (label, len(v), Lr[k]["sent"], min(v) if v else float("nan"), pct(v, 50), pct(v, 90),
                   pct(v, 99), max(v) if v else float("nan")))
        add("")
        if Lr["listen"].get("notifications") is not None:
            add("The worker sent %d notifications for %d events on the LISTEN run."
                % (Lr["listen"]["notifications"], Lr["listen"]["sent"]))
            add("")
        v = Lr["claim"]["lat_ms"]
        summary.append(("latency emit → claim(wait)", "median %.3f ms, p99 %.3f ms" % (pct(v, 50), pct(v, 99)),
                        "median < 1 ms, p99 < 10 ms", verdict(pct(v, 50) < 1 and pct(v, 99) < 10)))
        v = Lr["listen"]["lat_ms"]
        summary.append(("latency emit → LISTEN notification", "median %.3f ms, p99 %.3f ms" % (pct(v, 50), pct(v, 99)),
                        "(same bar, for reference)", verdict(pct(v, 50) < 1 and pct(v, 99) < 10)))

    if "soak" in results:
        K = results["soak"]
        sm = K["samples"]
        add("## Soak: %s of steady emit + consume" % ("%g min" % (K["seconds"] / 60)))
        add("")
        add("pgbench -R: 4 producer clients emitting one keyed event per transaction at %d ev/s in total "
            "(achieved %.0f), 2 consumer clients calling `claim(sub, 100)` then `ack` at %d calls/s "
            "(achieved %.1f), synchronous_commit off (the soak watches sizes, not durability); `event_bus.partition_size = %d`, "
            "`event_bus.retention = 0`, one topic of 8 lanes, one subscription. A sample every %d s "
            "(`pg_total_relation_size`, indexes and TOAST included; the log is the sum of its partitions)."
            % (K["rate"], K["producers_tps"], K["claim_rate"], K["consumers_tps"], K["partition_size"],
               ARGS.soak_sample))
        add("")
        add("| table | first | last | max | levels off |")
        add("|---|---|---|---|---|")
        flat_all = True
        for t in ["events"] + SOAK_TABLES:
            v = [s[t] for s in sm]
            lo = levels_off(v)
            flat_all = flat_all and (lo is not False)
            add("| %s | %s | %s | %s | %s |" % ("events (all partitions)" if t == "events" else t, kb(v[0]), kb(v[-1]),
                                                kb(max(v)), {True: "yes", False: "**no**", None: "n/a"}[lo]))
        v = [s["partitions"] for s in sm]
        add("| log partitions (count) | %d | %d | %d | %s |" % (v[0], v[-1], max(v),
                                                              {True: "yes", False: "**no**", None: "n/a"}[levels_off(v)]))
        add("")
        add("Events emitted during the soak: %s; still pending at the end: %d; in flight: %d. "
            "Worker CPU over the soak: %s."
            % ("{:,}".format(sm[-1]["last_seq"] - sm[0]["last_seq"]), sm[-1]["pending"], sm[-1]["in_flight"],
               "%.1f%% of one CPU" % (100 * sm[-1]["worker_cpu_s"] / sm[-1]["t"])
               if sm[-1].get("worker_cpu_s") is not None and sm[-1]["t"] > 0 else "n/a"))
        add("")
        add("\"Levels off\": the last third of the samples sets no new high (its maximum stays within 10%, "
            "+16 kB, of the maximum before it); steady growth fails this, a bounded sawtooth such as the log "
            "between partition drops passes. Two minutes cover only about two autovacuum rounds "
            "(autovacuum_naptime = 1 min): run `--soak-minutes 10` or more for a firmer answer.")
        add("")
        summary.append(("soak %g min: table and index sizes" % (K["seconds"] / 60),
                        "log %s → %s (max %s), %d → %d partitions; leases max %s, cursors max %s"
                        % (kb(sm[0]["events"]), kb(sm[-1]["events"]), kb(max(s["events"] for s in sm)),
                           sm[0]["partitions"], sm[-1]["partitions"], kb(max(s["leases"] for s in sm)),
                           kb(max(s["cursors"] for s in sm))),
                        "level off", verdict(flat_all)))

    plots = [p for p in ("emit_throughput.png", "fanout.png", "consume_throughput.png", "latency.png",
                         "soak_sizes.png") if os.path.exists(os.path.join(ARGS.out, p))]
    if plots:
        add("## Plots")
        add("")
        for p in plots:
            add("![%s](%s)" % (p[:-4].replace("_", " "), p))
            add("")

    head = ["## Summary against the targets of DESIGN.md", "",
            "| measurement | result | target | met |", "|---|---|---|---|"]
    head += ["| %s | %s | %s | %s |" % s for s in summary]
    head.append("")
    # Summary first, after the machine table.
    i = L.index("## Emit: one event per transaction") if "## Emit: one event per transaction" in L else len(L)
    return "\n".join(L[:i] + head + L[i:]) + "\n", head


def gnuplot(name, script):
    path = os.path.join(ARGS.out, "raw", name + ".gp")
    with open(path, "w") as f:
        f.write(script)
    p = subprocess.run(["gnuplot", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, cwd=ARGS.out)
    if p.returncode != 0:
        log("gnuplot %s failed: %s" % (name, p.stderr.strip()))


def make_plots(results):
    raw = os.path.join(ARGS.out, "raw")
    term = "set terminal pngcairo noenhanced size 1100,520 font 'DejaVu Sans,10'\n"
    S = results.get("emit_samples", [])
    if S:
        with open(os.path.join(raw, "emit.dat"), "w") as f:
            f.write("# clients plain_off emit_off pgq_off plain_on emit_on pgq_on\n")
            for cl in (1, 8):
                f.write("%d %s\n" % (cl, " ".join("%.1f" % med(S, kind=k, sync=s, clients=cl)[0]
                                                  for s in ("off", "on") for k in ("plain", "emit1", "pgq"))))
        with open(os.path.join(raw, "bulk.dat"), "w") as f:
            for i, (k, label) in enumerate((("plain_bulk", "plain"), ("emit_bulk", "emit_many"),
                                            ("pgq_bulk", "PgQ"))):
                f.write('%d "%s" %.1f\n' % (i, label, med(S, kind=k)[0]))
        gnuplot("emit_throughput", term + """
set output 'emit_throughput.png'
set multiplot layout 1,3 title "Emit throughput (events/s, median of runs)"
set key bottom left
set grid
set xlabel 'clients'
set ylabel 'events/s'
set xtics (1, 8)
set xrange [0:9]
set yrange [0:*]
set title 'one event per txn, synchronous_commit off'
plot 'raw/emit.dat' u 1:2 w lp lw 2 pt 7 t 'plain INSERT', '' u 1:3 w lp lw 2 pt 5 t 'event_bus.emit', '' u 1:4 w lp lw 2 pt 9 t 'PgQ insert_event'
set title 'one event per txn, synchronous_commit on'
plot 'raw/emit.dat' u 1:5 w lp lw 2 pt 7 t 'plain INSERT', '' u 1:6 w lp lw 2 pt 5 t 'event_bus.emit', '' u 1:7 w lp lw 2 pt 9 t 'PgQ insert_event'
set title 'bulk, %d events/call, %d clients, sync off'
set xlabel ''
set xrange [-0.6:2.6]
set style fill solid 0.6
set boxwidth 0.6
unset key
plot 'raw/bulk.dat' u 1:3:xtic(2) w boxes lc rgb '#4477aa'
unset multiplot
""" % (BULK, ARGS.bulk_clients))
        with open(os.path.join(raw, "fanout.dat"), "w") as f:
            f.write("# subscriptions emit_1client emit_8clients plain_1client plain_8clients\n")
            for n in FANOUT:
                f.write("%d %.1f %.1f %.1f %.1f\n" % (n, med(S, kind="emit%d" % n, sync="off", clients=1)[0],
                                                     med(S, kind="emit%d" % n, sync="off", clients=8)[0],
                                                     med(S, kind="plain", sync="off", clients=1)[0],
                                                     med(S, kind="plain", sync="off", clients=8)[0]))
        gnuplot("fanout", term + """
set output 'fanout.png'
set title 'Fan-out: emit throughput vs subscriptions on the topic (synchronous_commit off)'
set key bottom right
set grid
set logscale x
set xtics (1, 10, 50)
set xrange [0.8:65]
set yrange [0:*]
set xlabel 'subscriptions'
set ylabel 'events/s'
plot 'raw/fanout.dat' u 1:2 w lp lw 2 pt 7 t 'emit, 1 client', '' u 1:3 w lp lw 2 pt 5 t 'emit, 8 clients', \\
     '' u 1:4 w l dt 2 lw 1 t 'plain INSERT, 1 client', '' u 1:5 w l dt 2 lw 1 t 'plain INSERT, 8 clients'
""")
    if "consume" in results:
        C = results["consume"]
        with open(os.path.join(raw, "consume.dat"), "w") as f:
            # one gnuplot data block per series, in the order the plot uses
            for i, (system, batch) in enumerate([("event_bus", 100), ("event_bus", 500),
                                                 ("PgQ", 100), ("PgQ", 500)]):
                f.write("%s# %s batch %d%s\n" % ("\n\n" if i else "", system, batch,
                                                   " by consumers" if i == 0 else ""))
                for r in C:
                    if r["system"] == system and r["batch"] == batch:
                        f.write("%d %.1f\n" % (r["consumers"], r["events_per_s"]))
        gnuplot("consume_throughput", term + """
set output 'consume_throughput.png'
set title 'Consume: draining %s pre-loaded events (events/s)'
set key top right
set grid
set xtics (1, 4, 8)
set xrange [0:9]
set yrange [0:*]
set xlabel 'consumers'
set ylabel 'events/s'
plot 'raw/consume.dat' index 0 u 1:2 w lp lw 2 pt 7 t 'event_bus claim(100) + ack', \\
     '' index 1 u 1:2 w p pt 5 ps 2 t 'event_bus claim(500) + ack', \\
     '' index 2 u 1:2 w p pt 9 ps 2 t 'PgQ batch 100', \\
     '' index 3 u 1:2 w p pt 11 ps 2 t 'PgQ batch 500'
""" % "{:,}".format(ARGS.events))
    if "latency" in results:
        Lr = results["latency"]
        for k in ("claim", "listen"):
            v = sorted(Lr[k]["lat_ms"])
            with open(os.path.join(raw, "latency_%s.dat" % k), "w") as f:
                for i, x in enumerate(v):
                    f.write("%.4f %.5f\n" % (x, (i + 1) / len(v)))
        gnuplot("latency", term + """
set output 'latency.png'
set title 'Latency from emit commit to consumer wake-up (CDF)'
set key bottom right
set grid
set logscale x
set xlabel 'milliseconds'
set ylabel 'fraction of events'
set yrange [0:1]
plot 'raw/latency_claim.dat' u ($1 > 0.001 ? $1 : 0.001):2 w l lw 2 t 'claim(wait) returns', \\
     'raw/latency_listen.dat' u ($1 > 0.001 ? $1 : 0.001):2 w l lw 2 t 'LISTEN notification'
""")
    if "soak" in results:
        sm = results["soak"]["samples"]
        with open(os.path.join(raw, "soak.dat"), "w") as f:
            f.write("# minutes events_MB partitions " + " ".join("%s_kB" % t for t in SOAK_TABLES) + " pending\n")
            for s in sm:
                f.write("%.3f %.3f %d %s %d\n" % (s["t"] / 60, s["events"] / 1e6, s["partitions"],
                                                  " ".join("%.1f" % (s[t] / 1024) for t in SOAK_TABLES), s["pending"]))
        plot_meta = ", ".join("'raw/soak.dat' u 1:%d w lp lw 2 t '%s'" % (4 + i, t)
                              for i, t in enumerate(SOAK_TABLES))
        gnuplot("soak_sizes", "set terminal pngcairo noenhanced size 1100,700 font 'DejaVu Sans,10'\n" + """
set output 'soak_sizes.png'
set multiplot layout 2,1 title 'Soak: sizes over time (pg_total_relation_size)'
set grid
set key top left
set xlabel 'minutes'
set ylabel 'MB'
set y2label 'partitions'
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:%d]
set title 'event log (all partitions) and number of partitions'
plot 'raw/soak.dat' u 1:2 w lp lw 2 t 'events (MB)', '' u 1:3 axes x1y2 w steps lw 2 t 'partitions'
unset y2tics
unset y2label
set ylabel 'kB'
set title 'metadata tables'
set key outside right
plot %s
unset multiplot
""" % (max(s["partitions"] for s in sm) + 1, plot_meta))


def machine_info():
    info = {}
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["nproc"] = os.cpu_count()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = cpu
    with open("/proc/meminfo") as f:
        kbm = int(f.readline().split()[1])
    info["mem"] = "%.1f GiB" % (kbm / 1024 / 1024)
    info["kernel"] = platform.release()
    r = q("postgres", "SELECT version(), current_setting('shared_buffers'), current_setting('max_wal_size')", one=True)
    info["pg"], info["shared_buffers"], info["max_wal_size"] = r[0].split(" on ")[0], r[1], r[2]
    r = q("postgres", "SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'pgq'), "
          "(SELECT default_version FROM pg_available_extensions WHERE name = 'event_bus')", one=True)
    info["pgq"] = "pgq %s (Debian postgresql-15-pgq3)" % r[0]
    info["eb_version"] = r[1]
    info["commit"] = ARGS.commit or "?"
    info["dirty"] = ", with uncommitted changes" if ARGS.dirty else ""
    info["installed"] = ARGS.installed
    return info


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report-only", metavar="DIR",
                    help="rebuild report.md and the plots in DIR from DIR/raw/results.json and info.json")
    ap.add_argument("--host")
    ap.add_argument("--port")
    ap.add_argument("--datadir")
    ap.add_argument("--out")
    ap.add_argument("--work")
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bulk-clients", type=int, default=8)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--latency-samples", type=int, default=1000)
    ap.add_argument("--latency-rate", type=int, default=200)
    ap.add_argument("--soak-minutes", type=float, default=2)
    ap.add_argument("--soak-rate", type=int, default=2000)
    ap.add_argument("--soak-partition-size", type=int, default=50000)
    ap.add_argument("--soak-sample", type=int, default=10)
    ap.add_argument("--phases", default="emit,consume,latency,soak")
    ap.add_argument("--argv", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--dirty", action="store_true")
    ap.add_argument("--installed", default="")
    ARGS = ap.parse_args()
    if ARGS.report_only:
        out = ARGS.report_only
        with open(os.path.join(out, "raw", "info.json")) as f:
            info = json.load(f)
        with open(os.path.join(out, "raw", "results.json")) as f:
            results = json.load(f)
        for k, v in info.pop("args").items():
            setattr(ARGS, k, v)
        ARGS.out = out
        write_report(results, info)
        return
    if not all((ARGS.host, ARGS.port, ARGS.datadir, ARGS.out, ARGS.work)):
        ap.error("--host, --port, --datadir, --out and --work are required")
    ARGS.events = max(1000, ARGS.events // 1000 * 1000)
    os.makedirs(os.path.join(ARGS.out, "raw"), exist_ok=True)
    phases = ARGS.phases.split(",")

    info = machine_info()
    info["argv"] = ARGS.argv
    info["load_start"] = loadavg()
    info["others_start"] = other_postgres_processes()
    log("%s, %s CPUs, %s; load average %.2f, %d other postgres processes on the machine"
        % (info["pg"], info["nproc"], info["mem"], info["load_start"], info["others_start"]))
    results = {}
    loads = [info["load_start"]]
    stop = threading.Event()

    def watch_load():
        while not stop.wait(5):
            loads.append(loadavg())
    threading.Thread(target=watch_load, daemon=True).start()

    try:
        if "emit" in phases:
            run_emit_phase(results)
        if "consume" in phases:
            run_consume_phase(results)
        if "latency" in phases:
            run_latency_phase(results)
        if "soak" in phases:
            run_soak_phase(results)
    finally:
        stop.set()
        with open(os.path.join(ARGS.out, "raw", "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    info["load_end"] = loadavg()
    info["load_max"] = max(loads + [info["load_end"]])
    info["others_end"] = other_postgres_processes()
    info["args"] = {k: v for k, v in vars(ARGS).items() if k not in ("report_only",)}
    with open(os.path.join(ARGS.out, "raw", "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    write_report(results, info)
    log("done in %.1f min" % ((time.time() - T_START) / 60))


def write_report(results, info):
    make_plots(results)
    report, summary = build_report(results, info)
    with open(os.path.join(ARGS.out, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(ARGS.out, "raw", "summary.md"), "w") as f:
        f.write("\n".join(summary[2:]) + "\n")


if __name__ == "__main__":
    main()
