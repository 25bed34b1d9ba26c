-- The shop both example producers and consumers work on.  Run it once, in
-- the application's database, as a role that may create extensions and
-- topics (event_bus_admin):  psql -f examples/schema.sql
CREATE EXTENSION IF NOT EXISTS event_bus;

-- The producer's data: every order row commits together with its event.
CREATE TABLE orders (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer  text NOT NULL,
    total     numeric(10, 2) NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now(),
    paid_at   timestamptz
);

-- Orders put on hold (say, for a fraud review): the consumer refuses to
-- handle them, so their events are retried and end in the dead letters
-- until the hold is lifted and they are redriven.
CREATE TABLE held_orders (
    order_id bigint PRIMARY KEY REFERENCES orders,
    reason   text NOT NULL
);

-- The consumers' effect: one row per event handled, written in the
-- transaction that acks the event, so it commits exactly when the ack does.
-- 'applied' counts how many times that happened: it stays 1.
CREATE TABLE handled_events (
    event_id   uuid PRIMARY KEY,     -- the event's id: seq may be reused after a failover
    seq        bigint NOT NULL,
    type       text NOT NULL,
    order_id   bigint NOT NULL,
    attempt    integer NOT NULL,     -- the delivery that succeeded
    handled_by text NOT NULL,        -- the consumer's name
    applied    integer NOT NULL DEFAULT 1,
    handled_at timestamptz NOT NULL DEFAULT now()
);

SELECT event_bus.create_topic('orders', lanes => 4);
-- Demo settings: three attempts, and a short backoff so that failed events
-- come back quickly.  The defaults (5 attempts, 1 s doubling up to 10 min)
-- suit most production handlers better.
SELECT event_bus.subscribe('fulfilment', ARRAY['orders'], start => 'earliest',
                           max_attempts => 3, backoff_base => '100 ms', backoff_max => '10 s');
