#!/usr/bin/env python3
"""The event_bus example producer in Python (psycopg 3): places orders.

Each order's row and its OrderPlaced event commit in one transaction, so there
is never an order without its event nor an event without its order.  Every
--pay-every'th order is then paid: the paid_at update and its OrderPaid event
commit together too.

    python3 producer.py --orders 1000              # libpq's PG* variables say where
    python3 producer.py --dsn "host=/tmp dbname=shop" --orders 10 --flaky-every 3
"""
import argparse

import psycopg
from psycopg.types.json import Jsonb

EMIT = "SELECT event_bus.emit('orders', %s, %s, key => %s)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default="",
                   help="libpq connection string (default: the PG* environment variables)")
    p.add_argument("--orders", type=int, default=100, help="how many orders to place")
    p.add_argument("--customers", type=int, default=50, help="spread over this many customers")
    p.add_argument("--pay-every", type=int, default=2, help="pay the orders whose id is a multiple of this")
    # Demo knobs: the consumers' call_service() reads payload "simulate".
    p.add_argument("--flaky-every", type=int, default=0,
                   help="make the handling of every Nth order fail on its first attempt")
    p.add_argument("--slow-every", type=int, default=0,
                   help="make the handling of every Nth order take longer than a short lease")
    args = p.parse_args()

    def every(n, order_id):
        return n > 0 and order_id % n == 0

    events = 0
    with psycopg.connect(args.dsn, autocommit=True, application_name="producer") as conn:
        for i in range(args.orders):
            customer = f"customer-{i % args.customers}"
            with conn.transaction():
                order_id = conn.execute(
                    "INSERT INTO orders (customer, total) VALUES (%s, %s) RETURNING id",
                    [customer, 10 + i % 90]).fetchone()[0]
                payload = {"order_id": order_id, "customer": customer}
                if every(args.flaky_every, order_id):
                    payload["simulate"] = "flaky"
                elif every(args.slow_every, order_id):
                    payload["simulate"] = "slow"
                # Keyed by customer: a customer's events share a lane, in order.
                conn.execute(EMIT, ["OrderPlaced", Jsonb(payload), customer])
            events += 1
            if every(args.pay_every, order_id):
                with conn.transaction():
                    conn.execute("UPDATE orders SET paid_at = now() WHERE id = %s", [order_id])
                    conn.execute(EMIT, ["OrderPaid", Jsonb(payload), customer])
                events += 1
    print(f"placed {args.orders} orders: {events} events")


if __name__ == "__main__":
    main()
