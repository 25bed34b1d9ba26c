#!/usr/bin/env python3
"""Stress checker for event_bus.

Producers emit events (emit, emit_many, and rows of a captured table) in
transactions of random size, rolling back ~20% of the transactions and ~15% of
the savepoints; every event
carries a unique id (producer + counter) in its payload, so the checker knows
exactly which events committed.  Consumers of two subscriptions (unordered and
ordered) claim, fail at random, "crash" now and then (abandoning a claimed
batch), sometimes claim and ack inside one explicit transaction, and ack in
batches; some stall past their lease ("zombies") and then ack or fail what
they no longer hold; idle ones sometimes claim with wait => ...  A maintenance
thread runs run_maintenance() every 200 ms and the retention job every second
(run.sh sets event_bus.retention = 0, so consumed log partitions are dropped
under load), and pauses a subscription for a moment now and then, alongside
the extension's own worker.  When the producers are done the consumers drain
both subscriptions, then the checker verifies:

  lost      a committed event that a subscription never acked        (must be 0)
  phantom   a delivery of an event that did not commit                (must be 0)
  order     ordered subscription: per key, no event is delivered while an
            earlier event of the key is unacked (other than earlier events
            in the same claimed batch), and no event's ack takes effect
            before an earlier one's was sent; "earlier" is causal: a's
            COMMIT returned before b's emit was called                 (must be 0)
  errors    unexpected SQL errors, wrong ack counts, mismatching
            seq/id/key between emit and claim, an ordered lane held by
            two leases at once (sampled every 200 ms)                  (must be 0)
  drained   nothing pending, in flight, retrying or dead at the end
  scheduled some events are emitted with deliver_at 0.2-2 s ahead: each
            must enter the log once, and no claim may return it before
            deliver_at                                               (must be 0)
  dedupe    producers pass dedupe keys: fresh ones (must write), keys shared
            by all producers (one transaction waits for another's), and
            repeats of a key this producer committed before (must write
            nothing and return the holder's seq); no two committed events
            may hold one key, and event_bus.dedupe_keys must name the holder
            of each                                                   (must be 0)
  duplicates an event whose delivery was acked twice: each ack counted
            only the seqs its lease token still held, so a second one means
            the event was handed out again after an ack of it committed
            (delivery is at least once, but only a lease expiry, a failure
            or a rollback may repeat it)                                (must be 0)

A long producer (--long-txns) keeps transactions open for seconds after
emitting, committing some and rolling back others, while the others go on;
the report gives the delivery delay (commit returned -> first claim) of the
events committed while such a transaction was open, next to that of the
others: with claims that step over open transactions the two are alike.

Consumers pass the lease token of their claim to ack and fail (unless
--no-tokens): a zombie's late ack then completes nothing and its late fail is
a 55000, whatever newer delivery of the event another consumer holds.

A late ack or fail of a seq whose log partition retention has already
dropped (a consumer that stalled past its lease while another consumer
finished the event) must be a no-op ack / a 55000 "not in flight"; a 22023
"does not belong" there is counted as a failure (it was an extension bug).

Acks go through a small helper function (public.stress_ack) that locks the
lease rows holding the seqs before calling event_bus.ack(sub, seqs), so the
checker knows exactly which seqs each ack completed (and that ack's count is
right); it reads event_bus.leases, so it follows that table's layout.

Connection parameters come from --host/--port/--dbname/--user (run.sh passes
them).  Standard library + psycopg2 only.
"""

import argparse
import bisect
import collections
import json
import os
import random
import sys
import threading
import time
import traceback

import psycopg2

TOPIC = 'stress'          # 4 lanes, keyed events
TOPIC2 = 'stress.two'     # 2 lanes, half the events without a key
SUBS = ('unordered', 'ordered')
KEYS = ['k%02d' % i for i in range(50)]
KEYS2 = ['j%02d' % i for i in range(10)]
INF = float('inf')

now = time.monotonic   # CLOCK_MONOTONIC: one clock for every thread


def log(msg):
    print(msg, flush=True)


class Run:
    """Shared state: stop flags, errors, counters."""

    def __init__(self, args):
        self.args = args
        self.stop_producers = threading.Event()
        self.stop_consumers = threading.Event()
        self.stop_maint = threading.Event()
        self.lock = threading.Lock()
        self.errors = []            # (where, message)
        self.known = []             # late acks refused as 'does not belong' (a failure)
        self.t0 = now()
        self.has_wait = False        # claim(..., wait => ...) exists
        self.has_retention = False   # event_bus._retention() exists

    def known_issue(self, msg):
        with self.lock:
            self.known.append(msg)
            n = len(self.known)
        if n <= 3:
            log('KNOWN ISSUE ' + msg)

    def error(self, where, msg):
        with self.lock:
            self.errors.append((where, msg))
            n = len(self.errors)
        if n <= 20:
            log('ERROR [%s] %s' % (where, msg.rstrip()))

    def connect(self, name):
        a = self.args
        conn = psycopg2.connect(host=a.host, port=a.port, dbname=a.dbname, user=a.user,
                                application_name='stress-' + name, connect_timeout=30)
        conn.autocommit = True   # transactions are explicit BEGIN/COMMIT
        return conn


# ---------------------------------------------------------------------------
# Producers
# ---------------------------------------------------------------------------
class Producer(threading.Thread):
    def __init__(self, run, pid, seed):
        super().__init__(name='producer-%d' % pid, daemon=True)
        self.run_ = run
        self.pid = pid
        self.rnd = random.Random(seed)
        self.counter = 0
        self.committed = {}    # id -> (seq, topic, key)
        self.aborted = {}      # id -> (seq, topic, key, why)
        self.uncertain = {}    # id -> (seq, topic, key): COMMIT raised
        self.txns = collections.Counter()
        self.calls = collections.Counter()
        self.emit_t = {}       # id -> when the emit call was made
        self.commit_t = {}     # id -> when its COMMIT returned
        # Dedupe keys: some events get one of their own, some a key shared by
        # every producer (at most one per transaction, so that two
        # transactions never wait for each other's keys), and some repeat the
        # key of an event this producer committed earlier on purpose.
        self.shared_keys = True
        self.dkey_of = {}      # id -> dedupe key of an event that was written with one
        self.keyed = []        # (dedupe key, seq, topic) of committed keyed events
        self.txn_shared = False
        # Scheduled events (deliver_at): their seq is known only once they
        # enter the log; due_t is deliver_at on the monotonic clock.
        self.due_t = {}        # id -> when it may be delivered at the earliest

    def new_event(self, topic):
        self.counter += 1
        eid = 'p%d-%d' % (self.pid, self.counter)
        if topic == TOPIC:
            key = self.rnd.choice(KEYS)
        else:
            key = self.rnd.choice(KEYS2) if self.rnd.random() < 0.5 else None
        payload = {'id': eid, 'p': self.pid, 'n': self.counter,
                   'pad': 'x' * self.rnd.randint(0, 200)}
        return eid, key, json.dumps(payload)

    def dedupe_key(self, eid, topic):
        """(dedupe key or None, kind, seq of the event holding it if known)."""
        r = self.rnd.random()
        if r < 0.10:
            return 'own-' + eid, 'own', None
        if r < 0.14 and self.shared_keys and not self.txn_shared:
            self.txn_shared = True
            return 'shared-%d' % self.rnd.randint(0, 40), 'shared', None
        if r < 0.18:
            mine = [k for k in self.keyed[-200:] if k[2] == topic]
            if mine:
                k = self.rnd.choice(mine)
                return k[0], 'repeat', k[1]
        return None, None, None

    def emit_some(self, cur):
        """One emit or emit_many call; returns [(id, seq, topic, key)] of the
        events it wrote (a deduplicated one writes nothing)."""
        rnd = self.rnd
        topic = TOPIC if rnd.random() < 0.8 else TOPIC2
        typ = rnd.choice(('created', 'updated'))
        t_emit = now()
        if rnd.random() < 0.03:
            # Scheduled 0.2-2 s ahead: it enters the log (with a seq) then.
            eid, key, payload = self.new_event(topic)
            delay = rnd.uniform(0.2, 2.0)
            due_t, wall = now() + delay, time.time() + delay
            cur.execute('SELECT event_bus.emit(%s, %s, %s::jsonb, key => %s, deliver_at => to_timestamp(%s))',
                        (topic, typ, payload, key, wall))
            if cur.fetchone()[0] is not None:
                self.run_.error(self.name, 'a scheduled emit returned a seq')
            self.calls['scheduled'] += 1
            self.emit_t[eid] = due_t
            self.due_t[eid] = due_t
            return [(eid, None, topic, key)]
        if topic == TOPIC2 and rnd.random() < 0.3:
            # Rows of a table captured into TOPIC2 (key column k): the
            # capture trigger emits them through _emit_rows, in row order.
            n = rnd.randint(1, 30)
            evs = [self.new_event(topic) for _ in range(n)]
            # (Read under the sequence's buffer lock: a plain SELECT from the
            # sequence can see the value a concurrent nextval logs ahead.)
            cur.execute("SELECT coalesce(pg_sequence_last_value('event_bus.event_seq'), 0)")
            before = cur.fetchone()[0]
            cur.execute('INSERT INTO stress_rows (id, k, p, n, pad) '
                        "SELECT x->>'id', k, (x->>'p')::int, (x->>'n')::int, x->>'pad' "
                        'FROM unnest(%s::jsonb[], %s::text[]) u(x, k)',
                        ([e[2] for e in evs], [e[1] for e in evs]))
            cur.execute("SELECT payload->>'id', seq, key FROM event_bus.events "
                        "WHERE topic = %s AND seq > %s AND payload->>'id' = ANY (%s) ORDER BY seq",
                        (topic, before, [e[0] for e in evs]))
            got = cur.fetchall()
            self.calls['captured'] += 1
            if [g[0] for g in got] != [e[0] for e in evs] or [g[2] for g in got] != [e[1] for e in evs]:
                self.run_.error(self.name, 'a captured statement of %d rows gave events %s' % (n, got))
                return []
            for e in evs:
                self.emit_t[e[0]] = t_emit
            return [(e[0], g[1], topic, e[1]) for e, g in zip(evs, got)]
        if rnd.random() < 0.5:
            eid, key, payload = self.new_event(topic)
            dk = [self.dedupe_key(eid, topic)]
            cur.execute('SELECT event_bus.emit(%s, %s, %s::jsonb, key => %s, dedupe_key => %s)',
                        (topic, typ, payload, key, dk[0][0]))
            seqs = [cur.fetchone()[0]]
            self.calls['emit'] += 1
            evs = [(eid, key, payload)]
        else:
            n = rnd.randint(1, 10)
            evs = [self.new_event(topic) for _ in range(n)]
            dk = [self.dedupe_key(e[0], topic) for e in evs]
            cur.execute('SELECT event_bus.emit_many(%s, %s, %s::jsonb[], %s::text[], dedupe_keys => %s::text[])',
                        (topic, typ, [e[2] for e in evs], [e[1] for e in evs], [d[0] for d in dk]))
            seqs = cur.fetchone()[0]
            self.calls['emit_many'] += 1
            if len(seqs) != n:
                self.run_.error(self.name, 'emit_many returned %d seqs for %d payloads' % (len(seqs), n))
                return []
        for e in evs:
            self.emit_t[e[0]] = t_emit
        written_by = {}
        if any(d[0] for d in dk):
            cur.execute("SELECT seq, payload->>'id' FROM event_bus.events WHERE seq = ANY (%s)",
                        ([s for s, d in zip(seqs, dk) if d[0]],))
            written_by = dict(cur.fetchall())
        out = []
        for e, s, (dkey, kind, holder) in zip(evs, seqs, dk):
            if dkey is None:
                out.append((e[0], s, topic, e[1]))
                continue
            written = written_by.get(s) == e[0]
            if kind == 'own' and not written:
                self.run_.error(self.name, 'an emit with a fresh dedupe key %s wrote nothing (seq %s)' % (dkey, s))
            if kind == 'repeat' and (written or s != holder):
                self.run_.error(self.name, 'dedupe key %s of event %s: a repeat returned seq %s and wrote %s'
                                % (dkey, holder, s, 'it' if written else 'nothing'))
            if written:
                self.dkey_of[e[0]] = dkey
                out.append((e[0], s, topic, e[1]))
            else:
                self.calls['deduplicated_' + kind] += 1
        return out

    def one_txn(self, cur):
        rnd = self.rnd
        live = []       # events of this transaction not rolled back by a savepoint
        self.txn_shared = False
        cur.execute('BEGIN')
        try:
            for i in range(rnd.randint(1, 6)):
                if rnd.random() < 0.4:
                    sp = 'sp%d' % i
                    cur.execute('SAVEPOINT ' + sp)
                    evs = self.emit_some(cur)
                    if rnd.random() < 0.15:
                        cur.execute('ROLLBACK TO SAVEPOINT ' + sp)
                        for (eid, seq, topic, key) in evs:
                            self.aborted[eid] = (seq, topic, key, 'savepoint')
                        self.txns['savepoint_rollbacks'] += 1
                    else:
                        cur.execute('RELEASE SAVEPOINT ' + sp)
                        live.extend(evs)
                    self.txns['savepoints'] += 1
                else:
                    live.extend(self.emit_some(cur))
            # Some transactions stay open a while after emitting, so that
            # later seqs commit first (the commit-order gap).
            if rnd.random() < 0.05:
                time.sleep(rnd.uniform(0.02, 0.25))
        except Exception:
            self.failed(cur, live)
            raise
        self.finish(cur, live, 0.2)

    def failed(self, cur, live):
        """The transaction raised: roll it back, its events did not commit."""
        try:
            cur.execute('ROLLBACK')
        except Exception:
            pass
        for (eid, seq, topic, key) in live:
            self.aborted[eid] = (seq, topic, key, 'error')

    def finish(self, cur, live, rollback_rate):
        """Roll the transaction back (with probability rollback_rate) or
        commit it, and record what became of its events."""
        if self.rnd.random() < rollback_rate:
            cur.execute('ROLLBACK')
            for (eid, seq, topic, key) in live:
                self.aborted[eid] = (seq, topic, key, 'rollback')
            self.txns['rollbacks'] += 1
            return
        try:
            cur.execute('COMMIT')
        except Exception:
            for (eid, seq, topic, key) in live:
                self.uncertain[eid] = (seq, topic, key)
            raise
        # Only now, after COMMIT returned, do these count as committed.
        t = now()
        for (eid, seq, topic, key) in live:
            self.committed[eid] = (seq, topic, key)
            self.commit_t[eid] = t
            if eid in self.dkey_of:
                self.keyed.append((self.dkey_of[eid], seq, topic))
        self.txns['commits'] += 1

    def run(self):
        run = self.run_
        conn = None
        while not run.stop_producers.is_set():
            try:
                if conn is None:
                    conn = run.connect(self.name)
                    cur = conn.cursor()
                self.one_txn(cur)
            except Exception as e:
                run.error(self.name, '%s: %s' % (type(e).__name__, e))
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.1)
                continue
            time.sleep(self.rnd.uniform(0, run.args.producer_pause))
        if conn is not None:
            conn.close()


class LongProducer(Producer):
    """Keeps each transaction open for seconds after its emits (sometimes
    with a savepoint rolled back inside), then commits it or rolls it back;
    records when each was open."""

    def __init__(self, run, pid, seed):
        super().__init__(run, pid, seed)
        self.name = 'long-producer-%d' % pid
        self.windows = []      # (t_first_emit, t_end)
        self.shared_keys = False   # others would wait seconds for its keys

    def one_txn(self, cur):
        rnd = self.rnd
        live = []
        cur.execute('BEGIN')
        t_begin = now()
        try:
            live.extend(self.emit_some(cur))
            if rnd.random() < 0.5:
                cur.execute('SAVEPOINT s')
                evs = self.emit_some(cur)
                cur.execute('ROLLBACK TO SAVEPOINT s')
                for (eid, seq, topic, key) in evs:
                    self.aborted[eid] = (seq, topic, key, 'savepoint')
                self.txns['savepoint_rollbacks'] += 1
                self.txns['savepoints'] += 1
            time.sleep(rnd.uniform(1.0, 3.0))
            live.extend(self.emit_some(cur))
        except Exception:
            self.failed(cur, live)
            raise
        try:
            self.finish(cur, live, 0.3)
        finally:
            self.windows.append((t_begin, now()))


# ---------------------------------------------------------------------------
# Consumers
# ---------------------------------------------------------------------------
# The ack helper: locks the leases holding the given seqs, then calls
# event_bus.ack(sub, seqs) with one array.  "held" tells exactly which seqs
# this ack completed (the locks make it exact), so the checker can attribute
# every successful ack to an event; n must equal cardinality(held).
ACK_HELPER = """
CREATE OR REPLACE FUNCTION public.stress_ack(sub text, s bigint[], tok uuid, OUT held bigint[], OUT n integer)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT coalesce(array_agg(DISTINCT v ORDER BY v), '{}') INTO held
      FROM (SELECT event_bus._unpack_seqs(l.seqs) AS seqs FROM event_bus.leases l
             WHERE l.subscription = sub AND event_bus._unpack_seqs(l.seqs) && s AND (tok IS NULL OR l.token = tok)
             FOR UPDATE) x,
           unnest(x.seqs) v
     WHERE v = ANY (s);
    n := event_bus.ack(sub, s, token => tok);
END
$$;
"""


class Consumer(threading.Thread):
    def __init__(self, run, sub, idx, seed):
        super().__init__(name='%s-%d' % (sub, idx), daemon=True)
        self.run_ = run
        self.sub = sub
        self.ordered = sub == 'ordered'
        self.rnd = random.Random(seed)
        self.conn = None
        self.cur = None
        # (seq, id, topic, key, lane, attempt, t_claimed, batch, in_txn)
        self.deliveries = []
        # (seq, t_ack_sent, t_ack_effective)
        self.acks = []
        self.stats = collections.Counter()
        self.last_nonempty = now()
        self.batch_no = 0
        # Second claims of transactions that did not commit (see one_round).
        self.void_batches = set()
        self.idle = False      # the last claim returned nothing
        self.token = None      # lease token of the batch being processed

    # -- connection ----------------------------------------------------------
    def ensure_conn(self):
        if self.conn is None:
            self.conn = self.run_.connect(self.name)
            self.cur = self.conn.cursor()

    def drop_conn(self):
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:
            pass
        self.conn = None
        self.cur = None

    # -- primitives ----------------------------------------------------------
    def claim(self, n, in_txn, wait=None):
        t_sent = now()
        if wait:
            self.cur.execute('SELECT * FROM event_bus.claim(%s, %s, wait => %s::interval)',
                             (self.sub, n, wait))
        else:
            self.cur.execute('SELECT * FROM event_bus.claim(%s, %s)', (self.sub, n))
        cols = [d[0] for d in self.cur.description]
        rows = [dict(zip(cols, r)) for r in self.cur.fetchall()]
        self.token = rows[0].get('lease_token') if rows and self.run_.args.tokens else None
        t = now()
        self.batch_no += 1
        batch = (self.name, self.batch_no)
        for r in rows:
            p = r['payload'] if isinstance(r['payload'], dict) else {}
            self.deliveries.append((r['seq'], p.get('id'), r['topic'], r['key'], r['lane'],
                                    r['attempt'], t, batch, in_txn))
        self.stats['claims'] += 1
        if rows:
            self.stats['nonempty_claims'] += 1
            self.last_nonempty = t
        self.stats['delivered'] += len(rows)
        return rows, t_sent

    def ack(self, seqs, pending):
        """Ack seqs with one event_bus.ack() call.  Acks done inside an explicit
        transaction are appended to 'pending' and count only after COMMIT."""
        if not seqs:
            return
        t_sent = now()
        try:
            self.cur.execute('SELECT held, n FROM public.stress_ack(%s, %s::bigint[], %s::uuid)',
                             (self.sub, list(seqs), self.token))
        except psycopg2.Error as e:
            gone = self.retention_refusal(e, seqs, pending is not None)
            if not gone:
                raise
            # Known issue: ack of a seq whose log partition retention dropped
            # (it was acked by another consumer meanwhile) raises instead of
            # returning 0, and takes the rest of the array down with it.  Ack
            # the others again, as a client would.
            self.stats['retention_refusals'] += 1
            self.ack([x for x in seqs if x not in gone], pending)
            return
        held, n = self.cur.fetchone()
        t_done = now()
        self.stats['ack_calls'] += 1
        if n != len(held):
            self.run_.error(self.name, 'event_bus.ack(%r, %s) returned %d but %d of those seqs '
                            'were in its leases (%s)' % (self.sub, list(seqs), n, len(held), held))
        missing = len(seqs) - len(held)
        if missing:
            self.stats['ack_not_in_flight'] += missing
        if pending is None:
            for s in held:
                self.acks.append((s, t_sent, t_done))
        else:
            for s in held:
                pending.append((s, t_sent))

    def retention_refusal(self, e, seqs, in_txn):
        """If error e is event_bus refusing (22023 "does not belong") late
        acks/fails of seqs whose log partition retention has dropped, return
        those seqs; else an empty set."""
        if in_txn or e.pgcode != '22023' or 'does not belong' not in str(e):
            return set()
        self.cur.execute("""SELECT coalesce(array_agg(v), '{}') FROM unnest(%s::bigint[]) v
                             WHERE NOT EXISTS (SELECT FROM event_bus.log_partitions p
                                                WHERE p.lo <= v AND v < p.hi)""", (list(seqs),))
        gone = set(self.cur.fetchone()[0])
        if gone:
            self.run_.known_issue('%s: ack/fail of seqs %s refused after retention dropped their '
                                  'partition: %s' % (self.name, sorted(gone), str(e).splitlines()[0]))
        return gone

    def fail(self, seq, in_txn):
        """fail() one event; False if it was no longer in flight (its lease
        expired while we were slow).  Inside our own claim transaction the
        lease cannot have expired, so there that is an error."""
        self.stats['fails'] += 1
        try:
            if self.rnd.random() < 0.5:
                self.cur.execute("SELECT event_bus.fail(%s, %s, 'random failure', retry_in => '0', token => %s::uuid)",
                                 (self.sub, seq, self.token))
            else:
                self.cur.execute("SELECT event_bus.fail(%s, %s, 'random failure', token => %s::uuid)",
                                 (self.sub, seq, self.token))
            outcome = self.cur.fetchone()[0]
            if outcome != 'retry':
                self.run_.error(self.name, 'fail(%s) returned %r' % (seq, outcome))
        except psycopg2.Error as e:
            if e.pgcode == '55000' and not in_txn:   # not in flight any more (lease expired)
                self.stats['fail_not_in_flight'] += 1
                return False
            if self.retention_refusal(e, [seq], in_txn):
                self.stats['fail_not_in_flight'] += 1
                self.stats['retention_refusals'] += 1
                return False
            raise
        return True

    # -- one claimed batch ---------------------------------------------------
    def process(self, rows, in_txn, pending):
        """Process a batch; returns False if the consumer 'crashed' (abandoned
        the rest of the batch)."""
        rnd = self.rnd
        a = self.run_.args
        crash_at = rnd.randrange(len(rows) + 1) if rnd.random() < a.crash_rate else None
        if not self.ordered:
            to_ack = []
            for i, r in enumerate(rows):
                if i == crash_at:
                    return False
                if rnd.random() < a.fail_rate:
                    self.fail(r['seq'], in_txn)
                else:
                    to_ack.append(r['seq'])
            if crash_at == len(rows):
                return False
            self.ack(to_ack, pending)
            return True

        # Ordered: each lane's events are one lease, in seq order.  Process a
        # lane in order and stop at its first failure, after acking the events
        # processed before it (fail releases the rest of the lease).
        lanes = collections.OrderedDict()
        for r in sorted(rows, key=lambda r: r['seq']):
            lanes.setdefault((r['topic'], r['lane']), []).append(r)
        to_ack = []
        i = 0
        for evs in lanes.values():
            done = []
            for r in evs:
                if i == crash_at:
                    return False
                i += 1
                if rnd.random() < a.fail_rate:
                    self.ack(done, pending)
                    done = []
                    self.fail(r['seq'], in_txn)
                    break
                done.append(r['seq'])
            to_ack.extend(done)
        if crash_at == len(rows):
            return False
        self.ack(to_ack, pending)
        return True

    def one_round(self):
        rnd = self.rnd
        a = self.run_.args
        n = a.batch if rnd.random() < 0.7 else rnd.randint(1, a.batch)
        if rnd.random() < a.txn_rate:
            # Claim, process and ack inside one explicit transaction.
            pending = []
            self.cur.execute('BEGIN')
            rows, _ = self.claim(n, True)
            if not rows:
                self.cur.execute('COMMIT')
                return 0
            self.stats['txn_batches'] += 1
            ok = self.process(rows, True, pending)
            second = None
            if ok and rnd.random() < 0.3:
                # A second claim in the same transaction, after a pause in
                # which log partitions may have been attached: it must read
                # them (a first version of claim moved its cursor past them).
                # Its deliveries follow acks of this same transaction; if the
                # transaction does not commit, those acks never happened for
                # the order check, so its batch is left out of it until the
                # COMMIT returns.
                time.sleep(rnd.uniform(0, 0.02))
                more, _ = self.claim(n, True)
                second = (self.name, self.batch_no)
                self.void_batches.add(second)
                self.stats['txn_second_claims'] += 1
                if more:
                    ok = self.process(more, True, pending)
                    rows = rows + more
            if not ok:
                # A crash inside the transaction: the connection goes away
                # and the server rolls everything back.
                self.stats['crashes'] += 1
                self.stats['txn_crashes'] += 1
                self.drop_conn()
                return len(rows)
            if rnd.random() < 0.1:
                time.sleep(rnd.uniform(0, 0.05))   # hold the claim a little
            if rnd.random() < 0.1:
                self.cur.execute('ROLLBACK')
                self.stats['txn_rollbacks'] += 1
                return len(rows)
            self.cur.execute('COMMIT')
            t = now()
            self.void_batches.discard(second)
            for (s, t_sent) in pending:
                self.acks.append((s, t_sent, t))
            return len(rows)

        # An idle consumer sometimes waits inside the server for events.
        wait = None
        if self.idle and self.run_.has_wait and rnd.random() < 0.5:
            wait = '%d ms' % rnd.randint(50, 300)
            self.stats['waiting_claims'] += 1
        rows, t_claim = self.claim(n, False, wait)
        if not rows:
            return 0
        if rnd.random() < 0.02:
            time.sleep(rnd.uniform(0, 0.05))   # a slow consumer
        elif rnd.random() < a.zombie_rate:
            # A stalled consumer: its lease expires and the events go to
            # others, then it wakes up and acks/fails what it still holds.
            self.stats['zombies'] += 1
            time.sleep(a.zombie_sleep)
        ok = self.process(rows, False, None)
        if not ok:
            self.stats['crashes'] += 1
            if rnd.random() < 0.5:
                self.drop_conn()      # and the process went away
        return len(rows)

    def run(self):
        run = self.run_
        while not run.stop_consumers.is_set():
            try:
                self.ensure_conn()
                got = self.one_round()
            except Exception as e:
                run.error(self.name, '%s: %s' % (type(e).__name__, e))
                self.drop_conn()
                time.sleep(0.1)
                continue
            self.idle = not got
            if not got:
                self.stats['empty_claims'] += 1
                time.sleep(self.rnd.uniform(0.005, 0.03))
        self.drop_conn()


# ---------------------------------------------------------------------------
# Maintenance
# ---------------------------------------------------------------------------
class Maintenance(threading.Thread):
    def __init__(self, run):
        super().__init__(name='maintenance', daemon=True)
        self.run_ = run
        self.stats = collections.Counter()

    def run(self):
        run = self.run_
        conn = None
        next_retention = now() + 1.0
        rnd = random.Random(run.args.seed)
        next_pause = now() + rnd.uniform(3, 10)
        paused = None          # (subscription, resume at)
        while not run.stop_maint.is_set():
            try:
                if conn is None:
                    conn = run.connect(self.name)
                    cur = conn.cursor()
                cur.execute('SELECT expired_leases, retried, dead_lettered FROM event_bus.run_maintenance()')
                e, r, d = cur.fetchone()
                self.stats['runs'] += 1
                # Never two consumers holding one key of the ordered
                # subscription: at most one lease per lane, at any moment.
                cur.execute("""SELECT topic, lane, count(*) FROM event_bus.leases
                                WHERE subscription = 'ordered' GROUP BY 1, 2 HAVING count(*) > 1""")
                for topic, lane, n in cur.fetchall():
                    run.error(self.name, 'ordered lane %s/%s held by %d leases at once' % (topic, lane, n))
                self.stats['lane_checks'] += 1
                self.stats['expired_leases'] += e
                self.stats['retried'] += r
                self.stats['dead_lettered'] += d
                # Retention as well (the worker runs it every 10 s; run.sh
                # sets event_bus.retention = 0, so consumed partitions go).
                if run.has_retention and now() >= next_retention:
                    cur.execute('SELECT event_bus._retention()')
                    self.stats['partitions_dropped'] += cur.fetchone()[0]
                    self.stats['retention_runs'] += 1
                    next_retention = now() + 1.0
                # While producing, pause a subscription for a moment now and
                # then: it falls behind and must hold retention back.
                if paused and (now() >= paused[1] or run.stop_producers.is_set()):
                    cur.execute('SELECT event_bus.resume(%s)', (paused[0],))
                    paused = None
                elif not paused and now() >= next_pause and not run.stop_producers.is_set():
                    sub = rnd.choice(SUBS)
                    cur.execute('SELECT event_bus.pause(%s)', (sub,))
                    paused = (sub, now() + rnd.uniform(1, 3))
                    next_pause = now() + rnd.uniform(5, 15)
                    self.stats['pauses'] += 1
            except Exception as ex:
                run.error(self.name, '%s: %s' % (type(ex).__name__, ex))
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            run.stop_maint.wait(0.2)
        if paused:
            run.error(self.name, 'subscription %s still paused at the end' % paused[0])
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
def order_check(groups, ack_first, deliveries, t0, emit_t, commit_t):
    """groups: group -> list of committed seqs.  ack_first: seq -> (t_sent,
    t_effective) of its first successful ack.  deliveries: list of (group,
    seq, t_claimed, batch).  emit_t / commit_t: seq -> when its emit was
    called / its COMMIT returned.

    "e is earlier than s" is causal: e's COMMIT returned before s's emit was
    called (transactions open at the same time may arrive in either order).
    Sorted by commit time, the events earlier than s are a prefix.
    Delivery rule: when seq s of a group is delivered, every earlier committed
    seq of the group must have been acked before (ack sent before the claim
    returned) or be part of the same claimed batch.
    Ack rule: no seq is acked definitely before an earlier seq of its group
    (ack of the later one effective before the earlier one's ack was sent).
    Returns (delivery_violations, ack_violations, examples)."""
    order = {}      # group -> seqs by commit time
    ctimes = {}     # group -> their commit times
    prefix = {}     # group -> running max of first-ack send times (unacked: INF)
    aprefix = {}    # group -> the same, over acked seqs only
    for g, seqs in groups.items():
        o = sorted(seqs, key=lambda s: (commit_t[s], s))
        order[g] = o
        ctimes[g] = [commit_t[s] for s in o]
        pm, am = [], []
        m = a_m = -INF
        for s in o:
            a = ack_first.get(s)
            m = max(m, a[0] if a else INF)
            if a:
                a_m = max(a_m, a[0])
            pm.append(m)
            am.append(a_m)
        prefix[g], aprefix[g] = pm, am

    def earlier(g, s):
        """How many events of g are causally earlier than s."""
        return bisect.bisect_left(ctimes[g], emit_t[s])

    batch_members = collections.defaultdict(set)
    for (g, s, t, batch) in deliveries:
        batch_members[(batch, g)].add(s)
    dv = 0
    examples = []
    # The deliveries to look at closely: some earlier event of the group was
    # first acked at or after the claim (or never).  Each is a violation if
    # one such event is neither s nor of the same batch.  Counted with a
    # Fenwick tree over the group's positions, sweeping claim times down
    # (scanning every earlier event of each such delivery took hours for a
    # --long run: most deliveries of a batch have earlier members unacked).
    pending = collections.defaultdict(list)     # group -> (t, k, s, batch)
    for (g, s, t, batch) in deliveries:
        if s not in emit_t or g not in order:
            continue
        k = earlier(g, s)
        if k == 0 or prefix[g][k - 1] < t:
            continue
        pending[g].append((t, k, s, batch))
    for g, qs in pending.items():
        o = order[g]
        pos = {x: i for i, x in enumerate(o)}
        ackt = [ack_first.get(x, (INF, INF))[0] for x in o]
        by_ack = sorted(range(len(o)), key=lambda i: -ackt[i])
        tree = [0] * (len(o) + 1)
        j = 0
        for (t, k, s, batch) in sorted(qs, key=lambda q: -q[0]):
            while j < len(by_ack) and ackt[by_ack[j]] >= t:
                i = by_ack[j] + 1
                while i <= len(o):
                    tree[i] += 1
                    i += i & -i
                j += 1
            late, i = 0, k          # late events among the first k
            while i > 0:
                late += tree[i]
                i -= i & -i
            members = batch_members[(batch, g)]
            late -= sum(1 for e in members if pos.get(e, k) < k and ackt[pos[e]] >= t)
            if late <= 0:
                continue
            dv += 1
            if len(examples) < 5:
                e = next(e for e in o[:k] if e != s and e not in members and ack_first.get(e, (INF, INF))[0] >= t)
                a = ack_first.get(e)
                examples.append('%s: seq %d delivered (batch %s) at %.3fs while earlier seq %d '
                                '(committed %.3fs before it was emitted) was %s'
                                % (g, s, batch, t - t0, e, emit_t[s] - commit_t[e],
                                   'never acked' if a is None
                                   else 'acked only at %.3fs' % (a[0] - t0)))
    av = 0
    for g, seqs in groups.items():
        for s in seqs:
            a = ack_first.get(s)
            k = earlier(g, s)
            if a is None or k == 0 or aprefix[g][k - 1] <= a[1]:
                continue
            e = max((x for x in order[g][:k] if x in ack_first), key=lambda x: ack_first[x][0])
            av += 1
            if len(examples) < 10:
                examples.append('%s: seq %d acked (effective by %.3fs) before earlier seq %d '
                                '(ack sent at %.3fs)' % (g, s, a[1] - t0, e, ack_first[e][0] - t0))
    return dv, av, examples


def delay_report(deliveries, commit_t, windows, own):
    """Delivery delay (COMMIT returned -> first claim) of the events other
    producers committed while a long transaction was open, of the others, and
    of the long transactions' own (seqs in own): (n, p50, p99, max) in ms for
    each."""
    first = {}
    for (seq, t) in deliveries:
        if seq in commit_t and (seq not in first or t < first[seq]):
            first[seq] = t
    during, other, mine = [], [], []
    for seq, t in first.items():
        c = commit_t[seq]
        if c == float('inf'):
            continue            # a scheduled event
        d = max(0.0, t - c) * 1000
        if seq in own:
            mine.append(d)
        elif any(b <= c <= e for (b, e) in windows):
            during.append(d)
        else:
            other.append(d)

    def stats(v):
        if not v:
            return (0, 0.0, 0.0, 0.0)
        v.sort()
        return (len(v), v[len(v) // 2], v[min(len(v) - 1, int(len(v) * 0.99))], v[-1])
    return stats(during), stats(other), stats(mine)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--host', default=os.environ.get('PGHOST'))
    ap.add_argument('--port', type=int, default=int(os.environ.get('PGPORT', '5432')))
    ap.add_argument('--dbname', default=os.environ.get('PGDATABASE', 'postgres'))
    ap.add_argument('--user', default=os.environ.get('PGUSER'))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument('--short', dest='mode', action='store_const', const='short',
                      help='produce for 25 s, about 10,000 committed events (default)')
    mode.add_argument('--long', dest='mode', action='store_const', const='long',
                      help='produce for 10 minutes')
    ap.add_argument('--seconds', type=float, help='produce for this many seconds (overrides the mode)')
    ap.add_argument('--drain-timeout', type=float, help='seconds allowed to drain (120 short, 300 long)')
    ap.add_argument('--seed', type=int,
                    help='random seed (printed; repeats the random choices, not the thread timing)')
    ap.add_argument('--producers', type=int, default=4)
    ap.add_argument('--consumers', type=int, default=3, help='consumers per subscription')
    ap.add_argument('--batch', type=int, default=50, help='claim size')
    ap.add_argument('--fail-rate', type=float, default=0.10)
    ap.add_argument('--crash-rate', type=float, default=0.02)
    ap.add_argument('--txn-rate', type=float, default=0.15,
                    help='share of claims done as BEGIN; claim; ack; COMMIT')
    ap.add_argument('--long-txns', type=int, default=1,
                    help='producers that keep their transactions open for 1-3 s')
    ap.add_argument('--producer-pause', type=float, default=0.15,
                    help='max random pause between a producer\'s transactions (s)')
    ap.add_argument('--lease', default='2 seconds')
    ap.add_argument('--zombie-rate', type=float, default=0.003,
                    help='share of claimed batches whose consumer stalls past its lease')
    ap.add_argument('--zombie-sleep', type=float, default=2.5, help='how long such a stall lasts (s)')
    ap.add_argument('--no-tokens', dest='tokens', action='store_false',
                    help='ack and fail without the lease token (the 1.0 calls)')
    ap.set_defaults(mode='short')
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 25.0 if args.mode == 'short' else 600.0
    if args.drain_timeout is None:
        args.drain_timeout = 120.0 if args.mode == 'short' and args.seconds <= 60 else 300.0
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    progress_every = 5.0 if args.seconds <= 60 else 30.0
    master = random.Random(args.seed)

    log('stress: mode=%s produce=%.0fs seed=%d producers=%d consumers=%dx%d fail=%.2f crash=%.2f '
        'txn=%.2f zombie=%.3f tokens=%s' % (args.mode, args.seconds, args.seed, args.producers, args.consumers,
                                           len(SUBS), args.fail_rate, args.crash_rate, args.txn_rate,
                                           args.zombie_rate, 'yes' if args.tokens else 'no'))

    run = Run(args)
    # --- set-up ---------------------------------------------------------------
    conn = run.connect('main')
    cur = conn.cursor()
    cur.execute('SELECT event_bus.create_topic(%s, 4)', (TOPIC,))
    cur.execute('SELECT event_bus.create_topic(%s, 2)', (TOPIC2,))
    cur.execute('CREATE TABLE stress_rows (id text PRIMARY KEY, k text, p int, n int, pad text)')
    cur.execute("SELECT event_bus.capture('stress_rows', topic => %s, key_columns => ARRAY['k'], "
                "types => '{\"insert\": \"created\"}')", (TOPIC2,))
    for sub in SUBS:
        cur.execute("""SELECT event_bus.subscribe(%s, %s, start => 'earliest', max_attempts => 100,
                              lease => %s::interval, backoff_base => '10 ms', backoff_max => '50 ms',
                              ordered => %s)""",
                    (sub, [TOPIC, TOPIC2], args.lease, sub == 'ordered'))
    cur.execute(ACK_HELPER)
    cur.execute("""SELECT EXISTS (SELECT FROM pg_proc WHERE oid = 'event_bus.claim'::regproc
                                    AND 'wait' = ANY (proargnames)),
                          to_regproc('event_bus._retention') IS NOT NULL,
                          current_setting('event_bus.retention', true)""")
    run.has_wait, run.has_retention, retention = cur.fetchone()
    log('stress: claim(wait) %s, retention job %s (event_bus.retention=%s)'
        % ('used' if run.has_wait else 'absent', 'run every second' if run.has_retention else 'absent',
           retention))

    producers = [Producer(run, i + 1, master.randrange(1 << 31)) for i in range(args.producers)]
    producers += [LongProducer(run, args.producers + i + 1, master.randrange(1 << 31))
                  for i in range(args.long_txns)]
    consumers = [Consumer(run, sub, i + 1, master.randrange(1 << 31))
                 for sub in SUBS for i in range(args.consumers)]
    maint = Maintenance(run)
    for t in [maint] + consumers + producers:
        t.start()

    def status():
        cur.execute("""SELECT subscription, pending, in_flight, retrying, dead
                         FROM event_bus.subscription_status ORDER BY subscription""")
        return {r[0]: r[1:] for r in cur.fetchall()}

    def progress(phase):
        committed = sum(len(p.committed) for p in producers)
        acked = collections.Counter()
        for c in consumers:
            acked[c.sub] += len(c.acks)
        st = status()
        log('  [%5.1fs] %s: committed=%d acked unordered=%d ordered=%d | %s' % (
            now() - run.t0, phase, committed, acked['unordered'], acked['ordered'],
            ' '.join('%s(pending=%d in_flight=%d retrying=%d dead=%d)' % ((s,) + tuple(v))
                     for s, v in sorted(st.items()))))

    # --- produce --------------------------------------------------------------
    t_end = now() + args.seconds
    next_progress = now() + progress_every
    while now() < t_end:
        time.sleep(min(0.25, max(0.0, t_end - now())))
        if now() >= next_progress:
            progress('producing')
            next_progress += progress_every
    run.stop_producers.set()
    for p in producers:
        p.join(60)
        if p.is_alive():
            run.error('main', '%s did not stop' % p.name)
    t_produced = now()
    progress('producers done')

    # --- drain ----------------------------------------------------------------
    drained = False
    quiet_since = None
    deadline = now() + args.drain_timeout
    next_progress = now() + progress_every
    while now() < deadline:
        time.sleep(0.25)
        st = status()
        cur.execute('SELECT count(*) FROM event_bus.scheduled_events')
        n_scheduled = cur.fetchone()[0]
        idle = n_scheduled == 0 and all(v[0] == 0 and v[1] == 0 and v[2] == 0 for v in st.values())
        recent = max(c.last_nonempty for c in consumers)
        if idle and now() - recent >= 1.0:
            if quiet_since is None:
                quiet_since = now()
            elif now() - quiet_since >= 1.0:
                drained = True
                break
        else:
            quiet_since = None
        if now() >= next_progress:
            progress('draining')
            next_progress += progress_every
    t_drain = now() - t_produced
    run.stop_consumers.set()
    for c in consumers:
        c.join(60)
        if c.is_alive():
            run.error('main', '%s did not stop' % c.name)
    run.stop_maint.set()
    maint.join(30)

    # --- final state from SQL ---------------------------------------------------
    st = status()
    cur.execute('SELECT count(*) FROM event_bus.leases')
    n_leases = cur.fetchone()[0]
    cur.execute('SELECT count(*) FROM event_bus.retries')
    n_retries = cur.fetchone()[0]
    cur.execute('SELECT count(*) FROM event_bus.dead_letters')
    n_dead = cur.fetchone()[0]
    leftover_claims = {}
    for sub in SUBS:
        cur.execute('SELECT count(*) FROM event_bus.claim(%s, 10000)', (sub,))
        leftover_claims[sub] = cur.fetchone()[0]
    cur.execute("SELECT seq, topic, lane, key, payload->>'id' FROM event_bus.events")
    log_rows = cur.fetchall()
    cur.execute('SELECT topic, dedupe_key, seq FROM event_bus.dedupe_keys')
    dedupe_rows = {(t, k): q for t, k, q in cur.fetchall()}
    cur.execute('SELECT lo, hi FROM event_bus.log_partitions ORDER BY lo')
    live_ranges = cur.fetchall()
    n_partitions = len(live_ranges)

    # --- checks ---------------------------------------------------------------
    # Scheduled events got their seq when they entered the log: find it there
    # or in a delivery.  They count as committed when they entered it (never
    # "earlier" than another event in the order checks), and no delivery may
    # come before their deliver_at.
    seq_of = {eid: seq for seq, topic, lane, key, eid in log_rows}
    for c in consumers:
        for d in c.deliveries:
            seq_of.setdefault(d[1], d[0])
    sched_lost = []
    for p in producers:
        for eid in p.due_t:
            if eid in p.committed:
                seq, topic, key = p.committed[eid]
                if eid in seq_of:
                    p.committed[eid] = (seq_of[eid], topic, key)
                    p.commit_t[eid] = float('inf')
                else:
                    sched_lost.append(eid)
                    del p.committed[eid]
                    p.commit_t.pop(eid, None)
    due_t = {eid: t for p in producers for eid, t in p.due_t.items()}
    early = [(d[1], round(due_t[d[1]] - d[6], 3)) for c in consumers for d in c.deliveries
             if d[1] in due_t and d[6] < due_t[d[1]] - 0.005]
    sched_failures = []
    if sched_lost or early:
        sched_failures.append('scheduled: %d committed scheduled events never entered the log (e.g. %s), %d deliveries '
                        'before deliver_at (e.g. id, seconds early: %s)' % (len(sched_lost), sched_lost[:3],
                                                                           len(early), early[:3]))

    committed = {}     # id -> (seq, topic, key)
    aborted = {}
    uncertain = {}
    txns = collections.Counter()
    calls = collections.Counter()
    for p in producers:
        committed.update(p.committed)
        aborted.update(p.aborted)
        uncertain.update(p.uncertain)
        txns.update(p.txns)
        calls.update(p.calls)
    by_seq = {v[0]: (eid,) + v[1:] for eid, v in committed.items()}
    emit_t, commit_t = {}, {}      # seq -> when emitted / committed
    for p in producers:
        for eid, t in p.commit_t.items():
            commit_t[p.committed[eid][0]] = t
            emit_t[p.committed[eid][0]] = p.emit_t[eid]
    windows = [w for p in producers for w in getattr(p, 'windows', [])]
    long_own = set(p.committed[eid][0] for p in producers if isinstance(p, LongProducer) for eid in p.commit_t)
    failures = list(sched_failures)
    problems = []
    warnings = []

    # Dedupe keys: no two committed events hold one key of a topic, and the
    # key's row names the committed event that holds it.
    holders = collections.defaultdict(list)
    for p in producers:
        for eid, dkey in p.dkey_of.items():
            if eid in p.committed:
                holders[(p.committed[eid][1], dkey)].append(p.committed[eid][0])
    dedupe_twice = {k: v for k, v in holders.items() if len(v) > 1}
    dedupe_wrong = {k: (v[0], dedupe_rows.get(k)) for k, v in holders.items()
                    if len(v) == 1 and dedupe_rows.get(k) != v[0]}
    if dedupe_twice or dedupe_wrong:
        failures.append('dedupe: %d keys held by two committed events (e.g. %s), %d keys whose row names '
                        'another seq (e.g. %s)' % (len(dedupe_twice), list(dedupe_twice.items())[:3],
                                                   len(dedupe_wrong), list(dedupe_wrong.items())[:3]))

    # The log must hold exactly the committed events.
    log_lane = {}
    log_ids = {}
    for seq, topic, lane, key, eid in log_rows:
        log_lane[seq] = (topic, lane)
        log_ids[eid] = (seq, topic, key)
    # The lane of every delivered event (the log may no longer hold it), and
    # the same event must always come with the same lane.
    lane_of = dict(log_lane)
    lane_conflicts = []
    for c in consumers:
        for d in c.deliveries:
            tl = (d[2], d[4])
            if lane_of.setdefault(d[0], tl) != tl:
                lane_conflicts.append((d[0], lane_of[d[0]], tl))
    if lane_conflicts:
        problems.append('%d deliveries with a lane other than the event\'s, e.g. %s'
                        % (len(lane_conflicts), lane_conflicts[:5]))
    def in_live_partition(seq):
        return any(lo <= seq < hi for lo, hi in live_ranges)
    # Retention may have dropped partitions: only live ones can be checked.
    log_missing = [e for e in committed if e not in log_ids and in_live_partition(committed[e][0])]
    log_dropped = sum(1 for e in committed if not in_live_partition(committed[e][0]))
    log_aborted = [e for e in log_ids if e in aborted]
    log_unknown = [e for e in log_ids if e not in committed and e not in aborted and e not in uncertain]
    log_mismatch = [e for e in committed if e in log_ids and log_ids[e] != committed[e]]
    if log_missing or log_aborted or log_unknown or log_mismatch:
        problems.append('event log: %d committed events missing, %d aborted events present, %d unknown, '
                        '%d with other seq/topic/key (e.g. %s)' % (
                            len(log_missing), len(log_aborted), len(log_unknown), len(log_mismatch),
                            (log_missing + log_aborted + log_unknown + log_mismatch)[:5]))

    results = {}
    for sub in SUBS:
        cs = [c for c in consumers if c.sub == sub]
        dels = [d for c in cs for d in c.deliveries]
        acks = [a for c in cs for a in c.acks]
        stats = collections.Counter()
        for c in cs:
            stats.update(c.stats)
        phantom = 0
        phantom_ex = []
        mismatch = 0
        mismatch_ex = []
        delivered_seqs = set()
        for (seq, eid, topic, key, lane, attempt, t, batch, in_txn) in dels:
            delivered_seqs.add(seq)
            if eid not in committed:
                phantom += 1
                if len(phantom_ex) < 5:
                    phantom_ex.append('seq %s id %s (%s)' % (
                        seq, eid, 'aborted: ' + aborted[eid][3] if eid in aborted
                        else 'commit uncertain' if eid in uncertain else 'never emitted'))
            elif committed[eid] != (seq, topic, key):
                mismatch += 1
                if len(mismatch_ex) < 5:
                    mismatch_ex.append('claimed seq %s topic %s key %s id %s; emitted as %s'
                                       % (seq, topic, key, eid, committed[eid]))
        ack_count = collections.Counter(a[0] for a in acks)
        ack_first = {}
        for (s, t_sent, t_eff) in sorted(acks, key=lambda a: a[1]):
            if s not in ack_first:
                ack_first[s] = (t_sent, t_eff)
        lost = [s for s in by_seq if s not in ack_count]
        lost_undelivered = [s for s in lost if s not in delivered_seqs]
        dup = sum(c - 1 for c in ack_count.values() if c > 1)
        acked_not_committed = [s for s in ack_count if s not in by_seq]
        redeliveries = len(dels) - len(delivered_seqs)
        r = dict(delivered=len(dels), acked=len(ack_count), lost=len(lost),
                 lost_undelivered=len(lost_undelivered), phantom=phantom,
                 duplicates_acked=dup, mismatch=mismatch, redeliveries=redeliveries,
                 max_attempt=max([d[5] for d in dels] or [0]), stats=stats)
        if lost:
            failures.append('%s: %d committed events never acked (%d never delivered), e.g. seqs %s'
                            % (sub, len(lost), len(lost_undelivered), sorted(lost)[:10]))
        if phantom:
            failures.append('%s: %d deliveries of events that did not commit, e.g. %s'
                            % (sub, phantom, phantom_ex))
        if mismatch:
            problems.append('%s: %d deliveries whose seq/topic/key differ from the emit, e.g. %s'
                            % (sub, mismatch, mismatch_ex))
        if acked_not_committed:
            problems.append('%s: acks of seqs that never committed: %s' % (sub, acked_not_committed[:10]))
        if dup:
            ex = []
            for s in sorted(x for x, c in ack_count.items() if c > 1)[:3]:
                hist = ['delivered to %s batch %s attempt %s at %.3f%s' % (d[7][0], d[7][1], d[5], d[6] - run.t0,
                                                                          ' (in txn)' if d[8] else '')
                        for d in dels if d[0] == s]
                hist += ['acked by %s sent %.3f done %.3f' % (c.name, a[1] - run.t0, a[2] - run.t0)
                         for c in cs for a in c.acks if a[0] == s]
                ex.append('seq %s: %s' % (s, '; '.join(hist)))
            failures.append('%s: %d acks of events already acked, e.g. %s' % (sub, dup, ' | '.join(ex)))

        if sub == 'ordered':
            keyed = collections.defaultdict(list)
            laned = collections.defaultdict(list)
            for s in sorted(by_seq):
                eid, topic, key = by_seq[s]
                if key is not None:
                    keyed[(topic, key)].append(s)
                if s in lane_of:
                    laned[lane_of[s]].append(s)
            void = set().union(*(c.void_batches for c in cs))
            kd = [((by_seq[d[0]][1], by_seq[d[0]][2]), d[0], d[6], d[7]) for d in dels
                  if d[0] in by_seq and by_seq[d[0]][2] is not None and d[7] not in void]
            dv, av, ex = order_check(keyed, ack_first, kd, run.t0, emit_t, commit_t)
            ld = [(lane_of[d[0]], d[0], d[6], d[7]) for d in dels
                  if d[0] in by_seq and d[0] in lane_of and d[7] not in void]
            ldv, lav, lex = order_check(laned, ack_first, ld, run.t0, emit_t, commit_t)
            r.update(order_violations=dv + av, delivery_order_violations=dv, ack_order_violations=av,
                     lane_order_violations=ldv + lav)
            if dv or av:
                failures.append('ordered: %d order violations (%d at delivery, %d in ack order), e.g. %s'
                                % (dv + av, dv, av, ex))
            if ldv or lav:
                problems.append('ordered: %d per-lane order violations (one lease per lane), e.g. %s'
                                % (ldv + lav, lex))
        r['delay_during'], r['delay_other'], r['delay_long'] = delay_report(
            [(d[0], d[6]) for d in dels], commit_t, windows, long_own)
        results[sub] = r

    total_errors = len(run.errors)
    if total_errors:
        failures.append('%d unexpected errors, first: %s' % (total_errors, run.errors[0]))
    if run.known:
        msg = ('%d known-issue incidents: late ack/fail of seqs whose log partition retention had '
               'dropped was refused with SQLSTATE 22023 instead of ack returning 0 / fail raising 55000'
               % len(run.known))
        failures.append(msg)
    if uncertain:
        problems.append('%d events whose COMMIT raised (outcome unknown)' % len(uncertain))
    if not drained:
        failures.append('not drained within %.0f s: %s' % (args.drain_timeout, st))
    if n_leases or n_retries or n_dead:
        failures.append('rows left at the end: leases=%d retries=%d dead_letters=%d'
                        % (n_leases, n_retries, n_dead))
    if any(leftover_claims.values()):
        failures.append('claims after the drain still returned events: %s' % leftover_claims)
    if len(committed) == 0:
        failures.append('no event committed: the run tested nothing')
    failures.extend(problems)

    # --- report ---------------------------------------------------------------
    ms = maint.stats
    u, o = results['unordered'], results['ordered']
    elapsed = now() - run.t0
    log('')
    log('==== event_bus stress results (seed=%d, produced %.0fs, drained in %.1fs, total %.1fs) ===='
        % (args.seed, args.seconds, t_drain, elapsed))
    log('events committed=%d aborted=%d (txn rollbacks=%d, savepoint rollbacks=%d of %d) '
        'uncertain=%d | txns committed=%d | emit calls=%d emit_many calls=%d captured statements=%d | '
        'log rows=%d partitions=%d (committed events in dropped partitions=%d)'
        % (len(committed), len(aborted), txns['rollbacks'], txns['savepoint_rollbacks'], txns['savepoints'],
           len(uncertain), txns['commits'], calls['emit'], calls['emit_many'], calls['captured'],
           len(log_rows), n_partitions, log_dropped))
    for name, r in (('unordered', u), ('ordered', o)):
        s = r['stats']
        extra = ''
        if name == 'ordered':
            extra = ' order_violations=%d (delivery=%d ack=%d) lane_order_violations=%d' % (
                r['order_violations'], r['delivery_order_violations'], r['ack_order_violations'],
                r['lane_order_violations'])
        log('%-9s acked=%d lost=%d phantom=%d duplicates_acked=%d%s | delivered=%d redeliveries=%d '
            'max_attempt=%d fails=%d crashes=%d txn_batches=%d (second claims %d) txn_rollbacks=%d claims=%d '
            'zombies=%d waits=%d late_acks=%d late_fails=%d'
            % (name + ':', r['acked'], r['lost'], r['phantom'], r['duplicates_acked'], extra,
               r['delivered'], r['redeliveries'], r['max_attempt'], s['fails'], s['crashes'],
               s['txn_batches'], s['txn_second_claims'], s['txn_rollbacks'], s['claims'], s['zombies'], s['waiting_claims'], s['ack_not_in_flight'],
               s['fail_not_in_flight']))
    log('scheduled events: %d committed, %d never entered the log, %d delivered before deliver_at'
        % (sum(1 for p in producers for e in p.due_t if e in p.committed) + len(sched_lost), len(sched_lost),
           len(early)))
    log('dedupe keys: %d committed events hold one (%d of them shared keys) | deduplicated emits: repeats=%d '
        'shared=%d | keys held twice=%d, rows naming another seq=%d'
        % (len(holders), sum(1 for k in holders if k[1].startswith('shared-')), calls['deduplicated_repeat'],
           calls['deduplicated_shared'], len(dedupe_twice), len(dedupe_wrong)))
    log('long transactions: %d (open %.1f s in all) | delivery delay, COMMIT returned -> first claim, ms '
        '(n p50 p99 max):' % (len(windows), sum(e - b for (b, e) in windows)))
    for name, r in (('unordered', u), ('ordered', o)):
        log('  %-9s committed while one was open: %d %.1f %.1f %.1f | otherwise: %d %.1f %.1f %.1f'
            ' | the long transactions\' own: %d %.1f %.1f %.1f'
            % ((name,) + tuple(r['delay_during']) + tuple(r['delay_other']) + tuple(r['delay_long'])))
    log('maintenance thread: runs=%d expired_leases=%d retried=%d dead_lettered=%d retention_runs=%d '
        'partitions_dropped=%d pauses=%d (the worker does the same work too)'
        % (ms['runs'], ms['expired_leases'], ms['retried'], ms['dead_lettered'], ms['retention_runs'],
           ms['partitions_dropped'], ms['pauses']))
    log('final: drained=%s leases=%d retries=%d dead_letters=%d leftover_claims=%s errors=%d '
        'known_issues=%d'
        % ('yes' if drained else 'NO', n_leases, n_retries, n_dead,
           sum(leftover_claims.values()), total_errors, len(run.known)))
    log('events committed=%d aborted=%d | unordered: acked=%d lost=%d phantom=%d duplicates_acked=%d '
        '| ordered: acked=%d lost=%d phantom=%d order_violations=%d duplicates_acked=%d | drained=%s errors=%d'
        % (len(committed), len(aborted), u['acked'], u['lost'], u['phantom'], u['duplicates_acked'],
           o['acked'], o['lost'], o['phantom'], o['order_violations'], o['duplicates_acked'],
           'yes' if drained else 'no', total_errors))
    for w in warnings:
        log('WARNING: ' + w)
    if failures:
        log('RESULT: FAIL')
        for f in failures:
            log('  - ' + f)
        if run.errors:
            log('  errors (first 10):')
            for where, msg in run.errors[:10]:
                log('    [%s] %s' % (where, msg.rstrip()))
        return 1
    log('RESULT: PASS')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        log('RESULT: FAIL (the checker itself raised)')
        sys.exit(2)
