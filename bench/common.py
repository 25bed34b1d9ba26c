"""Shared by the phases of bench/bench.py: the cluster it talks to, pgbench,
process CPU, small statistics, and the constants of the phases."""
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

# Payloads and JSON come back as text: neither contender's consumer parses
# them.  json and jsonb go through psycopg2's own string conversion, as
# PgQ's text ev_data does (psycopg2's JSON casters with loads=lambda s: s
# called a Python function per value: 0.3-0.45 us a row of client CPU for a
# claim's payload and headers).
JSON_AS_TEXT = psycopg2.extensions.new_type((114, 3802), "JSON_AS_TEXT", psycopg2.STRING)
psycopg2.extensions.register_type(JSON_AS_TEXT)


def json_as_text(conn):
    """Make json and jsonb reach conn's cursors as str (see JSON_AS_TEXT)."""
    psycopg2.extensions.register_type(JSON_AS_TEXT, conn)

# The command line (bench.py fills it in); one object shared by every module.
ARGS = argparse.Namespace()
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


def listen_for_seqs(db, channels, record, notes, ready, stop):
    """LISTEN on channels until stop is set; for each notification on the
    channel record, append (perf_counter() when it arrived, its payload's
    seq) to notes.  ready is set once listening."""
    c = connect(db)
    c.cursor().execute("; ".join('LISTEN "%s"' % ch for ch in channels))
    ready.set()
    while not stop.is_set():
        if select.select([c], [], [], 0.2) == ([], [], []):
            continue
        c.poll()
        t = time.perf_counter()
        while c.notifies:
            note = c.notifies.pop(0)
            if note.channel != record:
                continue
            try:
                notes.append((t, int(json.loads(note.payload)["seq"])))
            except (ValueError, KeyError, TypeError):
                pass
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


def settle(db, quiet=0.05, window=0.5, limit=60.0):
    """Before a measured run: VACUUM (ANALYZE) what earlier runs wrote, then
    wait until the cluster is idle (less than quiet CPU seconds in a window:
    the event_bus worker done with their events, no autovacuum).  Without
    it a run pays for the one before: after a bulk run's millions of rows
    autovacuum and the worker's lane marks kept a CPU of two busy for
    seconds into the next run, whichever it was.  Returns the seconds
    waited (the VACUUM included)."""
    t0 = time.perf_counter()
    q(db, "VACUUM (ANALYZE)")
    last = cluster_cpu()
    while last is not None and time.perf_counter() - t0 < limit:
        time.sleep(window)
        now = cluster_cpu()
        if now is None or now - last < quiet:
            break
        last = now
    return time.perf_counter() - t0


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


FANOUT = (1, 10, 50)
BULK = 1000

EB_DRAINS = [("drain_c1", 1, 100), ("drain_c4", 4, 100), ("drain_c8", 8, 100), ("drain_b500", 1, 500)]
PGQ_DRAINS = [("pgq_c100", 100), ("pgq_c500", 500)]

SOAK_TABLES = ["leases", "cursors", "retries", "subscriptions", "dead_letters", "log_partitions", "topics"]



def create_bus_db(db):
    """Create a database with event_bus installed; returns (connection, cursor)."""
    q("postgres", "CREATE DATABASE %s" % db)
    c = connect(db)
    cur = c.cursor()
    cur.execute("CREATE EXTENSION event_bus")
    return c, cur


def load_eb_backlog(cur, topic, n):
    """n events into topic by emit_many of 1,000 with random keys, a commit after each call."""
    cur.execute("""
        DO $$
        DECLARE
            p jsonb[] := (SELECT array_agg(%s::jsonb) FROM generate_series(1, 1000));
        BEGIN
            FOR i IN 1..%s LOOP
                PERFORM event_bus.emit_many(%s, 'OrderPlaced', p,
                    (SELECT array_agg('customer-' || (random() * 10000)::int) FROM generate_series(1, 1000)));
                COMMIT;
            END LOOP;
        END $$""", (PAYLOAD, n // 1000, topic))


def pgq_batch(cur, queue, consumer, batch):
    """One PgQ consumer cycle: next_batch (batch 100: the ticks hold 100 events
    each) or next_batch_custom with min_count batch, get_batch_events with the
    columns a consumer fetches, finish_batch.  Returns the events fetched, or
    None when no batch was ready."""
    if batch == 100:
        cur.execute("SELECT pgq.next_batch(%s, %s)", (queue, consumer))
    else:
        cur.execute("SELECT batch_id FROM pgq.next_batch_custom(%s, %s, NULL, %s, NULL)",
                    (queue, consumer, batch))
    bid = cur.fetchone()[0]
    if bid is None:
        return None
    cur.execute("SELECT ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, "
                "ev_extra3, ev_extra4 FROM pgq.get_batch_events(%s)", (bid,))
    n = len(cur.fetchall())
    cur.execute("SELECT pgq.finish_batch(%s)", (bid,))
    return n


def load_pgq_backlog(cur, queue, n):
    """n events into a PgQ queue: insert_event in transactions of 100, pgq.ticker() after each."""
    cur.execute("""
        DO $$
        BEGIN
            FOR i IN 1..%s LOOP
                PERFORM pgq.insert_event(%s, 'OrderPlaced', %s) FROM generate_series(1, 100);
                COMMIT;
                PERFORM pgq.ticker(%s);
                COMMIT;
            END LOOP;
        END $$""", (n // 100, queue, PAYLOAD, queue))


def med(samples, field="events_per_s", **kw):
    v = [s[field] for s in samples if all(s[k] == val for k, val in kw.items()) and s.get(field) is not None]
    return (statistics.median(v), min(v), max(v), len(v)) if v else (float("nan"),) * 3 + (0,)
