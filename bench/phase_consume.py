"""Consume phase: a pre-loaded backlog drained with claim() + ack() by 1, 4 and 8
consumers (batch 100) and 1 consumer (batch 500), and by PgQ."""
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

from common import *  # noqa: F401,F403


SKIP_LOCKED_SQL = ("DELETE FROM dq WHERE id IN (SELECT id FROM dq ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
                   "RETURNING id, payload")


def eb_consumer(db, sub, batch, target, counter, calls, barrier, errors):
    """One consumer: event_bus claim + ack, or (sub None) the plain queue's DELETE ... SKIP LOCKED."""
    try:
        c = connect(db)
        # Payloads reach the consumer as text, as PgQ's ev_data does: the
        # drain measures the queue, not the client's JSON parser (psycopg2
        # would otherwise parse every payload and header, which cost more
        # client CPU than the whole claim on the server).
        json_as_text(c)
        cur = c.cursor()
        barrier.wait()
        empty = 0
        while True:
            if sub is None:
                cur.execute(SKIP_LOCKED_SQL, (batch,))
            else:
                cur.execute("SELECT seq, id, topic, type, version, key, payload, headers, emitted_at, attempt "
                            "FROM event_bus.claim(%s, %s)", (sub, batch))
            rows = cur.fetchall()
            if not rows:
                if counter.value >= target:
                    break
                empty += 1
                if empty > 20000:       # ~20 s of nothing: give up
                    raise RuntimeError("%s: no events left but only %d of %d drained"
                                       % (sub or "dq", counter.value, target))
                time.sleep(0.001)
                continue
            empty = 0
            if sub is not None:
                # The seqs as one array literal, as drivers that bind arrays
                # send them (psycopg2 would inline ARRAY[...] with a constant
                # per seq, which costs more to build and to parse than the ack).
                cur.execute("SELECT event_bus.ack(%s, %s::bigint[])",
                            (sub, "{" + ",".join(str(r[0]) for r in rows) + "}"))
            with counter.get_lock():
                counter.value += len(rows)
            with calls.get_lock():
                calls.value += 1
        c.close()
    except Exception as e:     # reported by the parent
        errors.put("%s: %s" % (sub or "dq", e))
        try:
            barrier.abort()
        except Exception:
            pass


def drain_event_bus(db, sub, consumers, batch, target):
    """Drain with competing consumers: event_bus's subscription sub, or the plain queue (sub None)."""
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
        got = pgq_batch(cur, 'drainq', consumer, batch)
        if got is None:
            empty += 1
            if empty > 20000:
                raise RuntimeError("pgq %s: no batch but only %d of %d drained" % (consumer, n, target))
            time.sleep(0.001)
            continue
        empty = 0
        n += got
        batches += 1
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
    load_eb_backlog(cur, "drain", N)
    eb_load = time.perf_counter() - t0
    log("  %.1f s (%.0f events/s); pre-loading %d events into PgQ (insert_event, 100 per "
        "transaction, pgq.ticker() after each) ..." % (eb_load, N / eb_load, N))
    t0 = time.perf_counter()
    load_pgq_backlog(cur, "drainq", N)
    pgq_load = time.perf_counter() - t0
    log("  %.1f s; pre-loading %d rows into the plain queue table dq ..." % (pgq_load, N))
    cur.execute("CREATE TABLE dq (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
    cur.execute("INSERT INTO dq (payload) SELECT %s::jsonb FROM generate_series(1, %s)", (PAYLOAD, N))
    cur.execute("SELECT count(*) FROM pgq.tick t JOIN pgq.queue q ON q.queue_id = t.tick_queue "
                "WHERE q.queue_name = 'drainq'")
    ticks = cur.fetchone()[0]
    log("  %.1f s (%.0f events/s, %d ticks); VACUUM ANALYZE ..." % (pgq_load, N / pgq_load, ticks))
    cur.execute("VACUUM ANALYZE")
    cur.execute("CHECKPOINT")
    c.close()
    results["preload"] = dict(events=N, event_bus_s=eb_load, pgq_s=pgq_load, pgq_ticks=ticks)

    out = []
    order = [("eb",) + d for d in EB_DRAINS] + [("pgq",) + d for d in PGQ_DRAINS] + [("dq", None, 8, 100)]
    # Interleave the contenders.
    order = [order[0], order[4], order[1], order[2], order[6], order[3], order[5]]
    settled = []
    for entry in order:
        settled.append(settle(db))
        la = loadavg()
        c0 = cluster_cpu()
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if entry[0] in ("eb", "dq"):
            _, sub, consumers, batch = entry
            n, el, calls = drain_event_bus(db, sub, consumers, batch, N)
            out.append(dict(system="event_bus" if sub else "DELETE SKIP LOCKED", name=sub or "dq",
                            consumers=consumers, batch=batch,
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
    results["consume_settle_s"] = settled
    q("postgres", "DROP DATABASE %s" % db)
