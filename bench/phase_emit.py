"""Emit phase: emit, emit_many, fan-out and PgQ's insert_event against a plain
INSERT, with pgbench, interleaved and repeated."""
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

from common import *  # noqa: F401,F403


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
    total = len(runs) * ARGS.reps * (secs + 7)     # 5-6 s of settling a run
    log("emit phase: %d configurations x %d rounds x %d s (about %d min)"
        % (len(runs), ARGS.reps, secs, total // 60 + 1))
    rng = random.Random(5)
    samples = []
    settled = []
    for rep in range(ARGS.reps):
        q(db, "CHECKPOINT")
        order = runs[:]
        rng.shuffle(order)
        for r in order:
            settled.append(settle(db))
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
    results["emit_settle_s"] = settled
    sizes = q(db, """SELECT pg_total_relation_size('plain'),
                     (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                       WHERE inhparent = 'event_bus.events'::regclass)""", one=True)
    results["emit_sizes"] = dict(plain=sizes[0], events=int(sizes[1] or 0))
    q("postgres", "DROP DATABASE %s" % db)
