#!/usr/bin/env node
// The event_bus example producer in Node.js (node-postgres): places orders.
//
// Each order's row and its OrderPlaced event commit in one transaction, so
// there is never an order without its event nor an event without its order.
// Every --pay-every'th order is then paid: the paid_at update and its
// OrderPaid event commit together too.
//
//   node producer.js --orders 1000              # the PG* environment variables say where
//   node producer.js --dsn postgres:///shop?host=/tmp --orders 10 --flaky-every 3
'use strict';

const { parseArgs } = require('node:util');
const pg = require('pg');

const EMIT = "SELECT event_bus.emit('orders', $1, $2, key => $3)";

const { values: opts } = parseArgs({
  options: {
    dsn: { type: 'string', default: '' }, // a postgres:// URL; default: the PG* variables
    orders: { type: 'string', default: '100' }, // how many orders to place
    customers: { type: 'string', default: '50' }, // spread over this many customers
    'pay-every': { type: 'string', default: '2' }, // pay the orders whose id is a multiple of this
    // Demo knobs: the consumers' callService() reads payload "simulate".
    'flaky-every': { type: 'string', default: '0' }, // the handling of every Nth order fails once
    'slow-every': { type: 'string', default: '0' }, // ... takes longer than a short lease
  },
});

const every = (n, orderId) => Number(n) > 0 && orderId % Number(n) === 0;

// Run work(client) in a transaction: it commits, or nothing of it does.
async function inTransaction(client, work) {
  await client.query('BEGIN');
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
}

async function main() {
  const client = new pg.Client({ connectionString: opts.dsn || undefined, application_name: 'producer' });
  await client.connect();
  let events = 0;
  try {
    for (let i = 0; i < Number(opts.orders); i++) {
      const customer = `customer-${i % Number(opts.customers)}`;
      const payload = await inTransaction(client, async () => {
        const { rows } = await client.query(
          'INSERT INTO orders (customer, total) VALUES ($1, $2) RETURNING id', [customer, 10 + (i % 90)]);
        const orderId = Number(rows[0].id); // bigint comes as a string; ids stay well below 2^53
        const p = { order_id: orderId, customer };
        if (every(opts['flaky-every'], orderId)) p.simulate = 'flaky';
        else if (every(opts['slow-every'], orderId)) p.simulate = 'slow';
        // Keyed by customer: a customer's events share a lane, in order.
        await client.query(EMIT, ['OrderPlaced', p, customer]);
        return p;
      });
      events++;
      if (every(opts['pay-every'], payload.order_id)) {
        await inTransaction(client, async () => {
          await client.query('UPDATE orders SET paid_at = now() WHERE id = $1', [payload.order_id]);
          await client.query(EMIT, ['OrderPaid', payload, customer]);
        });
        events++;
      }
    }
  } finally {
    await client.end();
  }
  console.log(`placed ${opts.orders} orders: ${events} events`);
}

main().catch((err) => {
  console.error(err.stack);
  process.exitCode = 1;
});
