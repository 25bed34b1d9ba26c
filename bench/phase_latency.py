"""Latency phase: emit commit -> woken claim(wait), and emit commit -> LISTEN
notification from the worker."""
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


def claim_consumer_proc(db, ready, stop, out):
    """One consumer process: claim(wait) + ack until stop is set; send back
    {seq: perf_counter() when the claim returned}.  Processes, not threads:
    consumers in threads of one Python process took turns on its GIL."""
    woke = {}
    try:
        c = connect(db)
        cur = c.cursor()
        ready.set()
        while not stop.is_set():
            cur.execute("SELECT seq FROM event_bus.claim('lat_claim', 10, wait => '5 s')")
            rows = cur.fetchall()
            t = time.perf_counter()
            for (s,) in rows:
                woke[s] = t
            if rows:
                cur.execute("SELECT event_bus.ack('lat_claim', %s::bigint[])", ([r[0] for r in rows],))
        c.close()
    finally:
        out.send(woke)
        out.close()


def latency_claim(db, n, rate):
    commit_times, woke = {}, {}
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    procs = []
    for _ in range(ARGS.latency_consumers):
        ready = ctx.Event()
        rx, tx = ctx.Pipe(duplex=False)
        p = ctx.Process(target=claim_consumer_proc, args=(db, ready, stop, tx))
        p.start()
        ready.wait(10)
        procs.append((p, rx))
    start_evt = threading.Event()
    start_evt.set()
    time.sleep(0.3)
    producer(db, "lat_a", n, rate, commit_times, start_evt)
    time.sleep(1.0)
    stop.set()
    q(db, "SELECT event_bus.emit('lat_a', 'Stop', '{}')")      # wake the consumers
    for p, rx in procs:
        woke.update(rx.recv())
        p.join(10)
    return [(woke[s] - t) * 1000 for s, t in commit_times.items() if s in woke], len(commit_times)


def latency_listen(db, n, rate):
    commit_times, notes = {}, []
    start_evt, stop = threading.Event(), threading.Event()

    th = threading.Thread(target=listen_for_seqs, daemon=True,
                          args=(db, ["event_bus.lat_listen"], "event_bus.lat_listen", notes, start_evt, stop))
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
    log("latency phase: %d events at %d/s, emit commit -> claim(wait) return (%d consumer%s) ..."
        % (n, rate, ARGS.latency_consumers, "" if ARGS.latency_consumers == 1 else "s"))
    la = loadavg()
    lat, sent = latency_claim(db, n, rate)
    res["claim"] = dict(lat_ms=lat, sent=sent, load=la, consumers=ARGS.latency_consumers, rate=rate)
    log("  median %.3f ms, p99 %.3f ms (%d of %d)" % (pct(lat, 50), pct(lat, 99), len(lat), sent))
    log("latency phase: emit commit -> LISTEN notification ...")
    la = loadavg()
    lat, sent, notes = latency_listen(db, n, rate)
    res["listen"] = dict(lat_ms=lat, sent=sent, notifications=notes, load=la)
    log("  median %.3f ms, p99 %.3f ms (%d of %d, %d notifications)"
        % (pct(lat, 50), pct(lat, 99), len(lat), sent, notes))
    results["latency"] = res
    q("postgres", "DROP DATABASE %s" % db)
