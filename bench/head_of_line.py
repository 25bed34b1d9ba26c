#!/usr/bin/env python3
"""Head-of-line benchmark (issue 15): claim throughput with and without an
open emitting transaction, and the wait of a consumer of one topic while a
transaction on another topic stays open.

  throughput  N events pre-loaded into topic hol (8 lanes); one consumer
              drains them with claim(100) + ack (token), autocommit.  Runs:
              nothing open; one transaction open that emitted to hol before
              the load (its lanes are stepped over for the whole drain); one
              open that emitted to another topic; one open that emitted
              nothing (the cost of any long transaction: dead row versions
              of cursors and leases cannot be cleaned up meanwhile).
  wait        a transaction emits to topic a and stays open 6 s; another
              emits to topic b and commits; a consumer of b waiting in
              claim(wait => '10 s') reports how long it waited.

Usage: python3 bench/head_of_line.py --host H --port P --dbname D [--events N]
Needs a database with event_bus installed; creates and drops its topics.
"""
import argparse
import os
import threading
import time

import psycopg2


def connect(a):
    c = psycopg2.connect(host=a.host, port=a.port, dbname=a.dbname, user=a.user)
    c.autocommit = True
    return c


def setup(cur, n):
    cur.execute("SELECT event_bus.unsubscribe(subscription) FROM event_bus.subscriptions "
                "WHERE subscription IN ('hol_sub', 'hol_b')")
    for t in ('hol', 'hol_other'):
        cur.execute("SELECT event_bus.drop_topic(%s) FROM event_bus.topics WHERE topic = %s", (t, t))
    cur.execute("SELECT event_bus.create_topic('hol', 8)")
    cur.execute("SELECT event_bus.create_topic('hol_other', 1)")
    cur.execute("SELECT event_bus.subscribe('hol_sub', ARRAY['hol'])")


def load(cur, n):
    pad = 'x' * 250
    for i in range(0, n, 1000):
        cur.execute("SELECT event_bus.emit_many('hol', 'T', (SELECT array_agg(jsonb_build_object('n', g, 'pad', %s)) "
                    "FROM generate_series(%s, %s) g), "
                    "(SELECT array_agg('k' || (g %% 1000)) FROM generate_series(%s, %s) g))",
                    (pad, i, min(n, i + 1000) - 1, i, min(n, i + 1000) - 1))


def drain(cur, n):
    got = 0
    t0 = time.perf_counter()
    while got < n:
        cur.execute("SELECT array_agg(seq), (array_agg(lease_token))[1] FROM event_bus.claim('hol_sub', 100)")
        seqs, tok = cur.fetchone()
        if not seqs:
            break
        cur.execute("SELECT event_bus.ack('hol_sub', %s, %s)", (seqs, tok))
        got += len(seqs)
    return got, time.perf_counter() - t0


def throughput(a, label, open_topic):
    c = connect(a)
    cur = c.cursor()
    holder = None
    if open_topic:
        holder = connect(a)
        holder.autocommit = False
        hc = holder.cursor()
        if open_topic == '-':
            # A transaction that emits nothing: what any long transaction
            # costs (it holds back the cleanup of dead row versions).
            hc.execute("SELECT pg_current_xact_id()")
        else:
            hc.execute("SELECT event_bus.emit(%s, 'Open', '{}', 'k1')", (open_topic,))
    load(cur, a.events)
    got, secs = drain(cur, a.events)
    if holder is not None:
        holder.rollback()
        holder.close()
    drain(cur, 10 ** 9)
    c.close()
    return label, got, secs


def wait_case(a):
    c = connect(a)
    cur = c.cursor()
    cur.execute("SELECT event_bus.subscribe('hol_b', ARRAY['hol_other'])")
    holder = connect(a)
    holder.autocommit = False
    holder.cursor().execute("SELECT event_bus.emit('hol', 'Open', '{}')")
    res = {}

    def consumer():
        cc = connect(a)
        x = cc.cursor()
        t0 = time.perf_counter()
        x.execute("SELECT count(*) FROM event_bus.claim('hol_b', 10, wait => '10 s')")
        res['n'] = x.fetchone()[0]
        res['t'] = time.perf_counter()
        cc.close()
    th = threading.Thread(target=consumer)
    th.start()
    time.sleep(0.5)
    t_emit = time.perf_counter()
    cur.execute("SELECT event_bus.emit('hol_other', 'B', '{}')")
    t_commit = time.perf_counter()
    th.join()
    time.sleep(max(0.0, 6.0 - (time.perf_counter() - t_emit)))
    holder.rollback()
    holder.close()
    cur.execute("SELECT event_bus.unsubscribe('hol_b')")
    c.close()
    return res.get('n'), (res['t'] - t_commit) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--host', default=os.environ.get('PGHOST'))
    ap.add_argument('--port', type=int, default=int(os.environ.get('PGPORT', '5432')))
    ap.add_argument('--dbname', default=os.environ.get('PGDATABASE', 'postgres'))
    ap.add_argument('--user', default=os.environ.get('PGUSER'))
    ap.add_argument('--events', type=int, default=100000)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--cases', default='throughput,wait',
                    help='comma-separated: throughput, wait (default both)')
    ap.add_argument('--open', default='none,same,other,plain',
                    help='throughput runs, comma-separated: none, same, other, plain (a transaction '
                         'that emits nothing) (default all)')
    a = ap.parse_args()
    cases = a.cases.split(',')
    runs = [r for r in (('none', 'nothing open', None), ('same', 'one open on the same topic', 'hol'),
                        ('other', 'one open on another topic', 'hol_other'),
                        ('plain', 'one open, emitting nothing', '-'))
            if r[0] in a.open.split(',')]
    c = connect(a)
    setup(c.cursor(), a.events)
    c.close()
    print('load average: %.2f %.2f %.2f' % os.getloadavg())
    rows = []
    for r in range(a.reps if 'throughput' in cases else 0):
        # Each rep starts with another case: the log grows run after run.
        k = r % len(runs)
        for _, label, topic in runs[k:] + runs[:k]:
            rows.append(throughput(a, label, topic))
            print('%-30s %7d events in %6.2f s: %8.0f ev/s' % (rows[-1][0], rows[-1][1], rows[-1][2],
                                                              rows[-1][1] / rows[-1][2]), flush=True)
    if a.reps > 1 and rows:
        for _, label, _ in runs:
            rates = sorted(n / t for (l, n, t) in rows if l == label)
            print('median %-23s %8.0f ev/s of %d runs' % (label, rates[len(rates) // 2], len(rates)))
    if 'wait' in cases:
        n, ms = wait_case(a)
        print('claim(wait) on topic b while a transaction on topic a stays open 6 s: got %s event(s) '
              '%.1f ms after the emit on b committed' % (n, ms))
    print('load average: %.2f %.2f %.2f' % os.getloadavg())


if __name__ == '__main__':
    main()
