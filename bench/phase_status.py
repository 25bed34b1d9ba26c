"""Status phase: what monitoring costs with a large backlog - the time of
subscription_status and of stats with --status-events pending events
(default 10,000,000) and 20 subscriptions (5 of them reading one type
only), against the exact count that reads the backlog."""
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

SUBSCRIPTIONS = 20
FILTERED = 5
CHUNK = 10000


def timed(cur, sql, runs):
    """Median and highest wall time of a query over runs, in ms."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        cur.execute(sql)
        cur.fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def run_status_phase(results):
    db = "bench_status"
    c, cur = create_bus_db(db)
    cur.execute("SELECT event_bus.create_topic('orders', %s)", (ARGS.lanes,))
    for i in range(SUBSCRIPTIONS):
        cur.execute("SELECT event_bus.subscribe(%s, ARRAY['orders'], types => %s, start => 'earliest')",
                    ("status_%02d" % i, ["OrderPaid"] if i < FILTERED else None))
    n = ARGS.status_events // CHUNK * CHUNK
    log("status: loading %d events" % n)
    t0 = time.perf_counter()
    for k in range(n // CHUNK):
        cur.execute("""SELECT event_bus.emit_many('orders', %s,
                          (SELECT array_agg(%s::jsonb) FROM generate_series(1, %s)),
                          keys => (SELECT array_agg('customer-' || (g %% 5000)) FROM generate_series(1, %s) g))""",
                    ("OrderPaid" if k % 4 == 0 else "OrderPlaced", PAYLOAD, CHUNK, CHUNK))
    load_s = time.perf_counter() - t0
    cur.execute("VACUUM ANALYZE")
    # The worker marks the lanes at its next maintenance round; time a
    # marking of our own too (the first one counts every lane from scratch).
    t0 = time.perf_counter()
    cur.execute("SELECT event_bus._mark_lanes(event_bus._horizon(), false)")
    mark_s = time.perf_counter() - t0
    cur.execute("SELECT count(*) FROM event_bus.lane_marks")
    marks = cur.fetchone()[0]
    status_ms = timed(cur, "SELECT * FROM event_bus.subscription_status", 20)
    stats_ms = timed(cur, "SELECT * FROM event_bus.stats", 20)
    cur.execute("SELECT sum(pending) FROM event_bus.subscription_status")
    pending = int(cur.fetchone()[0])
    # The exact count as 1.0's subscription_status made it, for one
    # subscription of each kind, to check the marks and to compare.
    exact = {}
    exact_ms = {}
    for sub in ("status_00", "status_%02d" % FILTERED):
        t0 = time.perf_counter()
        cur.execute("""
            SELECT count(*) FROM event_bus.subscriptions s
              JOIN event_bus.cursors c ON c.subscription = s.subscription
              JOIN event_bus.events e ON e.topic = c.topic AND e.lane = c.lane AND e.seq > c.position
             WHERE s.subscription = %s
               AND NOT event_bus._handed_out(e.seq, e.txid, c.high, c.pending_xids, c.pending_after)
               AND (s.types IS NULL OR e.type = ANY (s.types))""", (sub,))
        exact[sub] = cur.fetchone()[0]
        exact_ms[sub] = (time.perf_counter() - t0) * 1000
    cur.execute("SELECT subscription, pending FROM event_bus.subscription_status WHERE subscription IN %s",
                (tuple(exact),))
    marked = dict(cur.fetchall())
    results["status"] = dict(events=n, subscriptions=SUBSCRIPTIONS, filtered=FILTERED, lanes=ARGS.lanes,
                             load_s=load_s, mark_s=mark_s, marks=marks,
                             status_ms=status_ms, stats_ms=stats_ms, pending_total=pending,
                             exact=exact, exact_ms=exact_ms, marked=marked)
    log("status: subscription_status median %.2f ms (max %.2f), stats %.2f ms; exact count of one "
        "subscription %.0f ms; marks agree: %s"
        % (status_ms[0], status_ms[1], stats_ms[0], exact_ms["status_00"],
           all(marked[s] == exact[s] for s in exact)))
    c.close()
    q("postgres", "DROP DATABASE %s" % db)
