"""Soak phase: steady emit + consume at a fixed rate with small partitions and
retention 0, sampling the size of every event_bus table and the worker's CPU."""
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


def soak_sample(cur):
    cur.execute("""
        SELECT (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
                 WHERE i.inhparent = 'event_bus.events'::regclass)::bigint,
               (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'event_bus.events'::regclass),
               %s,
               (SELECT last_value FROM event_bus.event_seq),
               (SELECT coalesce(sum(pending), 0) FROM event_bus.subscription_status)::bigint,
               (SELECT coalesce(sum(in_flight), 0) FROM event_bus.subscription_status)::bigint,
               (SELECT count(*) FROM event_bus.leases),
               (SELECT row(retention_runs, retention_failures, partitions_dropped)::text
                  FROM event_bus.worker_status WHERE datname = current_database())
        """ % ", ".join("pg_total_relation_size('event_bus.%s')" % t for t in SOAK_TABLES))
    r = cur.fetchone()
    d = dict(events=int(r[0]), partitions=int(r[1]))
    for i, t in enumerate(SOAK_TABLES):
        d[t] = int(r[2 + i])
    k = 2 + len(SOAK_TABLES)
    d.update(last_seq=int(r[k]), pending=int(r[k + 1]), in_flight=int(r[k + 2]), lease_rows=int(r[k + 3]))
    # Retention as the worker saw it: processes run, failed, partitions dropped.
    runs, failures, dropped = (int(x or 0) for x in (r[k + 4] or "(0,0,0)").strip("()").split(","))
    d.update(retention_runs=runs, retention_failures=failures, partitions_dropped=dropped)
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
