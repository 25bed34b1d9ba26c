#!/usr/bin/env python3
"""An event_bus consumer in Python (psycopg 3): the shop's fulfilment worker.

Claims the events of one subscription in batches and runs the handler of each
event's type.  A handler's database changes commit in the same transaction as
the event's ack, so they happen exactly once.  A handler that raises fails the
event: event_bus retries it after a backoff and, once the subscription's
max_attempts are spent, moves it to the dead letters.  SIGTERM (or Ctrl-C)
finishes the event in hand, gives the rest of the batch back and exits 0.

    python3 consumer.py --name worker-1          # libpq's PG* variables say where
    python3 consumer.py --dsn "host=/tmp dbname=shop" --batch 20
"""
import argparse
import contextlib
import datetime
import logging
import os
import random
import signal
import threading
import time

import psycopg
from psycopg.rows import namedtuple_row

log = logging.getLogger("consumer")
stopping = threading.Event()  # set by SIGTERM and SIGINT

MAX_RECONNECT_DELAY = 30.0  # seconds
SLOW_CALL_SECONDS = 3.0  # how long a call marked "slow" by the producer takes


class LeaseLost(Exception):
    """The lease ran out before the ack: another delivery of the event owns it."""


class Batch:
    """The events of one claim, and the lease they share."""

    def __init__(self, consumer, events):
        self.consumer = consumer
        self.events = events
        self.token = events[0].lease_token
        self.todo = [e.seq for e in events]  # neither acked, failed nor given back yet
        self.renewed_at = time.monotonic()

    def heartbeat(self):
        """Extend the lease of the events still to do, once a third of it has passed.

        The consumer calls it before each event and slow handlers call it while
        they work, so that neither a slow event nor those queued behind it in
        the batch lose their lease and get delivered a second time meanwhile.
        """
        c = self.consumer
        if time.monotonic() - self.renewed_at < c.lease.total_seconds() / 3:
            return
        c.conn.execute("SELECT event_bus.extend(%s, %s::bigint[], lease => %s, token => %s)",
                       [c.subscription, self.todo, c.lease, self.token])
        self.renewed_at = time.monotonic()
        log.info("extended the lease of %d events", len(self.todo))


class Job:
    """What a handler gets with its event: heartbeat() for slow work, and
    commit(), the transaction for its database changes, which acks the event."""

    def __init__(self, batch, event):
        self.batch = batch
        self.event = event
        self.conn = batch.consumer.conn
        self.consumer_name = batch.consumer.name
        self.acked = False

    def heartbeat(self):
        """Call it every second or so from slow work (never inside commit())."""
        self.batch.heartbeat()

    @contextlib.contextmanager
    def commit(self):
        c, e = self.batch.consumer, self.event
        with self.conn.transaction():
            yield self.conn
            acked = self.conn.execute("SELECT event_bus.ack(%s, ARRAY[%s::bigint], token => %s)",
                                      [c.subscription, e.seq, self.batch.token]).fetchone()[0]
            if acked != 1:
                raise LeaseLost()  # roll the changes back: the new delivery will make them
        self.acked = True


# --- The application's part: one handler per event type ---------------------

def call_service(service, event, job):
    """Stands in for a call to another service.  The demo producer marks some
    orders so that the call times out on the first attempt ("flaky") or takes
    longer than a short lease ("slow")."""
    simulate = event.payload.get("simulate")
    if simulate == "flaky" and event.attempt == 1:
        raise TimeoutError(f"{service} did not answer (simulated)")
    if simulate == "slow":
        done_at = time.monotonic() + SLOW_CALL_SECONDS
        while time.monotonic() < done_at:
            time.sleep(0.2)
            job.heartbeat()


def record_handled(tx, event, job):
    """The demo's effect, which the test counts: a row per event handled."""
    tx.execute("""
        INSERT INTO handled_events (event_id, seq, type, order_id, attempt, handled_by)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (event_id) DO UPDATE SET applied = handled_events.applied + 1""",
               [event.id, event.seq, event.type, event.payload["order_id"], event.attempt,
                job.consumer_name])


def on_order_placed(event, job):
    """Reserve the stock of a new order, unless the order is on hold."""
    order_id = event.payload["order_id"]
    hold = job.conn.execute("SELECT reason FROM held_orders WHERE order_id = %s",
                            [order_id]).fetchone()
    if hold:
        raise RuntimeError(f"order {order_id} is on hold: {hold.reason}")
    call_service("warehouse", event, job)
    with job.commit() as tx:
        record_handled(tx, event, job)


def on_order_paid(event, job):
    """Book a courier for a paid order."""
    call_service("courier", event, job)
    with job.commit() as tx:
        record_handled(tx, event, job)


HANDLERS = {
    "OrderPlaced": on_order_placed,
    "OrderPaid": on_order_paid,
}


# --- The loop ----------------------------------------------------------------

class Consumer:
    def __init__(self, args):
        self.dsn = args.dsn
        self.subscription = args.subscription
        self.name = args.name
        self.batch_size = args.batch
        self.lease = datetime.timedelta(seconds=args.lease)
        self.wait = datetime.timedelta(seconds=args.wait)
        self.conn = None

    def run(self):
        """Claim and handle until stopped; reconnect with back-off when the
        connection fails.  Events of a batch that was in hand come back to this
        or another consumer when their lease runs out."""
        delay = 0.0
        while not stopping.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, application_name=self.name,
                                     row_factory=namedtuple_row) as self.conn:
                    log.info("connected")
                    while not stopping.is_set():
                        batch = self.claim()
                        delay = 0.0  # the database answers again
                        if batch:
                            self.handle_batch(Batch(self, batch))
            except psycopg.OperationalError as e:
                delay = min(MAX_RECONNECT_DELAY, max(0.5, 2 * delay))
                log.warning("connection failed (%s); reconnecting in %.1f s", str(e).splitlines()[0], delay)
                stopping.wait(delay * random.uniform(0.5, 1.0))  # jitter: not all at once

    def claim(self):
        """The next batch: at once if events are waiting, else as soon as some
        arrive - the server wakes the claim - or [] once the wait is over."""
        return self.conn.execute(
            "SELECT * FROM event_bus.claim(%s, %s, lease => %s, wait => %s)",
            [self.subscription, self.batch_size, self.lease, self.wait]).fetchall()

    def handle_batch(self, batch):
        for i, event in enumerate(batch.events):
            if stopping.is_set():
                self.give_back(batch, batch.events[i:])
                return
            batch.heartbeat()
            self.handle(batch, event)
            batch.todo.remove(event.seq)

    def handle(self, batch, event):
        what = f"event {event.seq} ({event.type} {event.id}, attempt {event.attempt})"
        handler = HANDLERS.get(event.type)
        if handler is None:
            # Retrying cannot help: straight to the dead letters.
            self.conn.execute("SELECT event_bus.dead_letter(%s, %s, %s, token => %s)",
                              [self.subscription, event.seq, f"no handler for type {event.type}",
                               batch.token])
            log.error("%s: no handler for its type, moved to the dead letters", what)
            return
        job = Job(batch, event)
        try:
            handler(event, job)
            if not job.acked:  # a handler without database changes
                with job.commit():
                    pass
        except LeaseLost:
            log.warning("%s: its lease ran out before the ack; rolled back, it comes again", what)
        except Exception as e:
            # (Should the connection be gone, fail() raises and run() reconnects;
            # the lease runs out and the event comes back.)
            error = f"{type(e).__name__}: {e}"
            outcome = self.fail(batch, event, error)
            log.log(logging.ERROR if outcome == "dead" else logging.WARNING,
                    "%s failed: %s (%s)", what, error, outcome or "its lease had run out")

    def fail(self, batch, event, error, retry_in=None):
        """fail() the event: 'retry' or 'dead', or None if our lease had run out."""
        try:
            return self.conn.execute(
                "SELECT event_bus.fail(%s, %s, %s, retry_in => %s, token => %s)",
                [self.subscription, event.seq, error, retry_in, batch.token]).fetchone()[0]
        except psycopg.errors.ObjectNotInPrerequisiteState:
            return None

    def give_back(self, batch, events):
        """On shutdown, hand the events not yet handled back at once rather than
        keep them until the lease runs out.  event_bus has no release that does
        not count an attempt: like an expired lease, this counts one."""
        for event in events:
            self.fail(batch, event, "consumer shutting down", retry_in=datetime.timedelta(0))
        log.info("shutting down: gave back %d events", len(events))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default="",
                   help="libpq connection string (default: the PG* environment variables)")
    p.add_argument("--subscription", default="fulfilment")
    p.add_argument("--name", default=f"consumer-{os.getpid()}",
                   help="application_name, and the name in the logs and in handled_events")
    p.add_argument("--batch", type=int, default=50, help="events per claim")
    p.add_argument("--lease", type=float, default=30, help="seconds a batch is leased for")
    p.add_argument("--wait", type=float, default=5,
                   help="seconds a claim waits in the server for events (and so at most "
                        "how long a shutdown takes while idle)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    Consumer(args).run()
    log.info("stopped")


if __name__ == "__main__":
    main()
