\set SHOW_CONTEXT never
SELECT event_bus.create_topic('invoices', 1);
SELECT event_bus.subscribe('accounting', ARRAY['invoices'], max_attempts => 1);
SELECT last_value AS base FROM event_bus.event_seq \gset
SELECT event_bus.emit('invoices', 'InvoiceIssued', '{"invoice": 1}', key => 'c1',
                      headers => '{"trace": "t1"}', version => 3) - :base AS n;
SELECT event_bus.emit('invoices', 'InvoiceIssued', '{"invoice": 2}', key => 'c2') - :base AS n;
SELECT event_bus.emit('invoices', 'InvoiceIssued', '{"invoice": 3}', key => 'c3') - :base AS n;
SELECT seq - :base AS n FROM event_bus.claim('accounting') ORDER BY seq;
-- max_attempts 1: the first failure is final
SELECT event_bus.fail('accounting', :base + 1, 'invalid VAT number');
-- dead_letter() buries an event at once, whatever attempts are left
SELECT event_bus.dead_letter('accounting', :base + 2, 'poison message');
-- the whole event is kept, with the error
SELECT seq - :base AS n, topic, type, version, key, payload, headers, attempts, last_error,
       id = (SELECT e.id FROM event_bus.events e WHERE e.seq = d.seq) AS same_id
  FROM event_bus.dead_letters d ORDER BY seq;
SELECT subscription, in_flight, retrying, dead FROM event_bus.subscription_status;
-- acking a dead event is a no-op, not an error
SELECT event_bus.ack('accounting', ARRAY[:base + 1]);
-- redrive one: it comes back with a fresh attempt count
SELECT event_bus.redrive('accounting', ARRAY[:base + 1]);
SELECT seq - :base AS n, attempt, payload FROM event_bus.claim('accounting') ORDER BY seq;
SELECT event_bus.ack('accounting', ARRAY[:base + 1, :base + 3]);
-- redrive all
SELECT event_bus.redrive('accounting');
SELECT event_bus.redrive('accounting');
SELECT seq - :base AS n, attempt FROM event_bus.claim('accounting') ORDER BY seq;
SELECT event_bus.fail('accounting', :base + 2, 'still poison');
SELECT seq - :base AS n, attempts, last_error FROM event_bus.dead_letters ORDER BY seq;
-- purge
SELECT event_bus.purge_dead_letters('accounting', older_than => '1 hour');
SELECT event_bus.purge_dead_letters('accounting');
SELECT count(*) FROM event_bus.dead_letters;
SELECT event_bus.unsubscribe('accounting');
SELECT event_bus.drop_topic('invoices');
