#!/usr/bin/env node
// An event_bus consumer in Node.js (node-postgres): the shop's fulfilment worker.
//
// Claims the events of one subscription in batches and runs the handler of
// each event's type.  A handler's database changes commit in the same
// transaction as the event's ack, so they happen exactly once.  A handler that
// throws fails the event: event_bus retries it after a backoff and, once the
// subscription's max_attempts are spent, moves it to the dead letters.
// SIGTERM (or Ctrl-C) finishes the event in hand, gives the rest of the batch
// back and exits 0.
//
//   node consumer.js --name worker-1            # the PG* environment variables say where
//   node consumer.js --dsn postgres:///shop?host=/tmp --batch 20
'use strict';

const { parseArgs } = require('node:util');
const { setTimeout: sleep } = require('node:timers/promises');
const pg = require('pg');

const MAX_RECONNECT_DELAY_MS = 30000;
const SLOW_CALL_MS = 3000; // how long a call marked "slow" by the producer takes

const { values: opts } = parseArgs({
  options: {
    dsn: { type: 'string', default: '' }, // a postgres:// URL; default: the PG* variables
    subscription: { type: 'string', default: 'fulfilment' },
    name: { type: 'string', default: `consumer-${process.pid}` }, // application_name, logs, handled_events
    batch: { type: 'string', default: '50' }, // events per claim
    lease: { type: 'string', default: '30' }, // seconds a batch is leased for
    wait: { type: 'string', default: '5' }, // seconds a claim waits in the server (and so at
    //                                         most how long a shutdown takes while idle)
  },
});

const stopping = new AbortController(); // aborted by SIGTERM and SIGINT

function log(level, message) {
  console.log(`${new Date().toISOString()} ${opts.name} ${level} ${message}`);
}

// The lease ran out before the ack: another delivery of the event owns it.
class LeaseLost extends Error {}

// The events of one claim, and the lease they share.
class Batch {
  constructor(consumer, events) {
    this.consumer = consumer;
    this.events = events;
    this.token = events[0].lease_token;
    this.todo = new Set(events.map((e) => e.seq)); // neither acked, failed nor given back yet
    this.renewedAt = Date.now();
  }

  // Extend the lease of the events still to do, once a third of it has passed.
  // The consumer calls it before each event and slow handlers call it while
  // they work, so that neither a slow event nor those queued behind it in the
  // batch lose their lease and get delivered a second time meanwhile.
  async heartbeat() {
    const c = this.consumer;
    if (Date.now() - this.renewedAt < (c.leaseSeconds * 1000) / 3) return;
    await c.client.query('SELECT event_bus.extend($1, $2::bigint[], lease => $3::interval, token => $4)',
      [c.subscription, [...this.todo], `${c.leaseSeconds} s`, this.token]);
    this.renewedAt = Date.now();
    log('INFO', `extended the lease of ${this.todo.size} events`);
  }
}

// What a handler gets with its event: heartbeat() for slow work, and
// commit(work), the transaction for its database changes, which acks the event.
class Job {
  constructor(batch, event) {
    this.batch = batch;
    this.event = event;
    this.client = batch.consumer.client;
    this.consumerName = batch.consumer.name;
    this.acked = false;
  }

  // Call it every second or so from slow work (never inside commit()).
  heartbeat() {
    return this.batch.heartbeat();
  }

  async commit(work) {
    const c = this.batch.consumer;
    await this.client.query('BEGIN');
    try {
      await work(this.client);
      const { rows } = await this.client.query(
        'SELECT event_bus.ack($1, ARRAY[$2::bigint], token => $3) AS acked',
        [c.subscription, this.event.seq, this.batch.token]);
      if (rows[0].acked !== 1) throw new LeaseLost(); // roll back: the new delivery makes the changes
      await this.client.query('COMMIT');
    } catch (err) {
      // Without a connection there is nothing left to roll back.
      await this.client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    this.acked = true;
  }
}

// --- The application's part: one handler per event type ---------------------

// Stands in for a call to another service.  The demo producer marks some
// orders so that the call times out on the first attempt ("flaky") or takes
// longer than a short lease ("slow").
async function callService(service, event, job) {
  const simulate = event.payload.simulate;
  if (simulate === 'flaky' && event.attempt === 1) {
    throw new Error(`${service} did not answer (simulated)`);
  }
  if (simulate === 'slow') {
    const doneAt = Date.now() + SLOW_CALL_MS;
    while (Date.now() < doneAt) {
      await sleep(200);
      await job.heartbeat();
    }
  }
}

// The demo's effect, which the test counts: a row per event handled.
async function recordHandled(tx, event, job) {
  await tx.query(`
    INSERT INTO handled_events (event_id, seq, type, order_id, attempt, handled_by)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (event_id) DO UPDATE SET applied = handled_events.applied + 1`,
  [event.id, event.seq, event.type, event.payload.order_id, event.attempt, job.consumerName]);
}

// Reserve the stock of a new order, unless the order is on hold.
async function onOrderPlaced(event, job) {
  const orderId = event.payload.order_id;
  const { rows } = await job.client.query('SELECT reason FROM held_orders WHERE order_id = $1', [orderId]);
  if (rows.length > 0) throw new Error(`order ${orderId} is on hold: ${rows[0].reason}`);
  await callService('warehouse', event, job);
  await job.commit((tx) => recordHandled(tx, event, job));
}

// Book a courier for a paid order.
async function onOrderPaid(event, job) {
  await callService('courier', event, job);
  await job.commit((tx) => recordHandled(tx, event, job));
}

const HANDLERS = {
  OrderPlaced: onOrderPlaced,
  OrderPaid: onOrderPaid,
};

// --- The loop ------------------------------------------------------------------

// Errors that mean the connection failed, rather than a mistake in a query:
// like psycopg's OperationalError (connection exceptions, insufficient
// resources, operator intervention, system errors), and errors of the socket.
function isConnectionError(err) {
  return !(err instanceof pg.DatabaseError) || /^(08|53|57|58)/.test(err.code);
}

class Consumer {
  constructor() {
    this.subscription = opts.subscription;
    this.name = opts.name;
    this.batchSize = Number(opts.batch);
    this.leaseSeconds = Number(opts.lease);
    this.waitSeconds = Number(opts.wait);
    this.client = null;
  }

  // Claim and handle until stopped; reconnect with back-off when the
  // connection fails.  Events of a batch that was in hand come back to this or
  // another consumer when their lease runs out.
  async run() {
    let delay = 0;
    while (!stopping.signal.aborted) {
      this.client = new pg.Client({ connectionString: opts.dsn || undefined, application_name: this.name });
      // Reported again by the query that was running, if any.
      this.client.on('error', (err) => log('WARNING', `connection error: ${err.message}`));
      try {
        await this.client.connect();
        log('INFO', 'connected');
        while (!stopping.signal.aborted) {
          const events = await this.claim();
          delay = 0; // the database answers again
          if (events.length > 0) await this.handleBatch(new Batch(this, events));
        }
      } catch (err) {
        if (!isConnectionError(err)) throw err;
        delay = Math.min(MAX_RECONNECT_DELAY_MS, Math.max(500, 2 * delay));
        log('WARNING', `connection failed (${err.message}); reconnecting in ${(delay / 1000).toFixed(1)} s`);
        // With jitter, so that consumers do not all come back at once; SIGTERM cuts it short.
        await sleep(delay * (0.5 + Math.random() / 2), undefined, { signal: stopping.signal }).catch(() => {});
      } finally {
        await this.client.end().catch(() => {}); // a broken connection is closed already
      }
    }
  }

  // The next batch: at once if events are waiting, else as soon as some
  // arrive - the server wakes the claim - or [] once the wait is over.
  async claim() {
    const { rows } = await this.client.query(
      'SELECT * FROM event_bus.claim($1, $2, lease => $3::interval, wait => $4::interval)',
      [this.subscription, this.batchSize, `${this.leaseSeconds} s`, `${this.waitSeconds} s`]);
    return rows;
  }

  async handleBatch(batch) {
    for (const [i, event] of batch.events.entries()) {
      if (stopping.signal.aborted) {
        await this.giveBack(batch, batch.events.slice(i));
        return;
      }
      await batch.heartbeat();
      await this.handle(batch, event);
      batch.todo.delete(event.seq);
    }
  }

  async handle(batch, event) {
    const what = `event ${event.seq} (${event.type} ${event.id}, attempt ${event.attempt})`;
    const handler = HANDLERS[event.type];
    if (handler === undefined) {
      // Retrying cannot help: straight to the dead letters.
      await this.client.query('SELECT event_bus.dead_letter($1, $2, $3, token => $4)',
        [this.subscription, event.seq, `no handler for type ${event.type}`, batch.token]);
      log('ERROR', `${what}: no handler for its type, moved to the dead letters`);
      return;
    }
    const job = new Job(batch, event);
    try {
      await handler(event, job);
      if (!job.acked) await job.commit(async () => {}); // a handler without database changes
    } catch (err) {
      if (err instanceof LeaseLost) {
        log('WARNING', `${what}: its lease ran out before the ack; rolled back, it comes again`);
        return;
      }
      // (Should the connection be gone, fail() throws and run() reconnects;
      // the lease runs out and the event comes back.)
      const error = `${err.name}: ${err.message}`;
      const outcome = await this.fail(batch, event, error);
      log(outcome === 'dead' ? 'ERROR' : 'WARNING',
        `${what} failed: ${error} (${outcome ?? 'its lease had run out'})`);
    }
  }

  // fail() the event: 'retry' or 'dead', or null if our lease had run out.
  async fail(batch, event, error, retryIn = null) {
    try {
      const { rows } = await this.client.query(
        'SELECT event_bus.fail($1, $2, $3, retry_in => $4::interval, token => $5) AS outcome',
        [this.subscription, event.seq, error, retryIn, batch.token]);
      return rows[0].outcome;
    } catch (err) {
      if (err.code === '55000') return null; // object_not_in_prerequisite_state
      throw err;
    }
  }

  // On shutdown, hand the events not yet handled back at once rather than
  // keep them until the lease runs out.  event_bus has no release that does
  // not count an attempt: like an expired lease, this counts one.
  async giveBack(batch, events) {
    for (const event of events) await this.fail(batch, event, 'consumer shutting down', '0 s');
    log('INFO', `shutting down: gave back ${events.length} events`);
  }
}

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => stopping.abort());

new Consumer().run().then(
  () => log('INFO', 'stopped'),
  (err) => {
    log('ERROR', err.stack);
    process.exitCode = 1;
  });
