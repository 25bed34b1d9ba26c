-- An inbox for a consumer whose effects live in a database of its own,
-- reached over the network (not the database event_bus runs in).  Run this
-- in that database; it does not need event_bus.
--
-- The pattern (examples/README.md, "Exactly once in another database"):
-- for each claimed event, in ONE transaction of the consumer's database,
--     SELECT inbox_first_time('fulfilment', <event id>);
-- and apply the event's effects only if it returned true; COMMIT; then ack
-- the event on the bus.  A redelivery (the consumer died before its ack,
-- the lease ran out, a dead letter was redriven) finds the id in the inbox
-- and is only acked.  Two consumers handed the same event at once
-- serialise on the primary key: the second waits for the first to commit
-- (false: skip) or roll back (true: apply).

CREATE TABLE IF NOT EXISTS event_inbox (
    subscription text NOT NULL,
    event_id     uuid NOT NULL,          -- the event's id: stable across redeliveries (seq is not, after a failover)
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, event_id)
);

-- True the first time an event of a subscription is recorded in this
-- transaction's database, false if it was recorded before.
CREATE OR REPLACE FUNCTION inbox_first_time(p_subscription text, p_event_id uuid) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    WITH recorded AS (
        INSERT INTO event_inbox (subscription, event_id) VALUES (p_subscription, p_event_id)
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) = 1 FROM recorded
$$;

-- Keep it bounded: forget events older than anything that may still be
-- delivered again.  An event comes back while it is retried (up to the
-- subscription's max_attempts x (lease + backoff_max)) and when a dead
-- letter is redriven, so keep rows at least as long as dead letters may be
-- redriven, e.g. a week:
--     DELETE FROM event_inbox WHERE received_at < now() - interval '7 days';
