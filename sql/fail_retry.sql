\set SHOW_CONTEXT never
SELECT event_bus.create_topic('mail', 1);
SELECT event_bus.subscribe('sender', ARRAY['mail'], max_attempts => 3,
                           backoff_base => '1 hour', backoff_max => '4 hours');
SELECT last_value AS base FROM event_bus.event_seq \gset
SELECT count(event_bus.emit('mail', 'MailRequested', jsonb_build_object('to', 'u' || g))) FROM generate_series(1, 3) g;
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender') ORDER BY seq;
-- fail with the subscription's backoff: retried later, not now
SELECT event_bus.fail('sender', :base + 1, 'smtp timeout');
SELECT seq - :base AS n, attempt, last_error, in_flight,
       due_at > now() + interval '29 minutes' AND due_at < now() + interval '61 minutes' AS backoff_in_range
  FROM event_bus.retry_queue;
SELECT count(*) FROM event_bus.claim('sender');
-- the other events of the batch stay leased
SELECT event_bus._unpack_seqs(seqs) = ARRAY[:base + 2, :base + 3]::bigint[] AS rest_leased FROM event_bus.leases WHERE subscription = 'sender';
-- backoff grows exponentially, capped at backoff_max, with jitter of at most half
SELECT bool_and(event_bus._backoff('1 second', '1 hour', a) BETWEEN
                least(interval '1 hour', interval '1 second' * 2 ^ (a - 1)) / 2 AND
                least(interval '1 hour', interval '1 second' * 2 ^ (a - 1))) AS within_bounds
  FROM generate_series(1, 20) a, generate_series(1, 20);
-- an explicit retry_in overrides the backoff; due retries come first, with attempt 2
SELECT event_bus.fail('sender', :base + 2, 'mailbox full', retry_in => '0');
SELECT event_bus.emit('mail', 'MailRequested', '{"to": "u4"}') - :base AS n;
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender', 1);
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender', 1);
-- the retry row follows the event until it is acked
SELECT seq - :base AS n, attempt, in_flight FROM event_bus.retry_queue ORDER BY seq;
SELECT event_bus.ack('sender', ARRAY[:base + 2]);
SELECT seq - :base AS n FROM event_bus.retry_queue ORDER BY seq;
-- attempts run out: attempt 3 of 3 fails -> dead
SELECT event_bus.fail('sender', :base + 3, 'bounce 1', retry_in => '0');
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender') ORDER BY seq;
SELECT event_bus.fail('sender', :base + 3, 'bounce 2', retry_in => '0');
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender') ORDER BY seq;
SELECT event_bus.fail('sender', :base + 3, 'bounce 3', retry_in => '0');
SELECT seq - :base AS n, attempts, last_error, payload FROM event_bus.dead_letters ORDER BY seq;
-- a failed event is no longer in flight
SELECT try(format($$SELECT event_bus.fail('sender', %s, 'again')$$, :base + 3));
SELECT event_bus.ack('sender', ARRAY[:base + 3]);
-- lease expiry counts as a failed attempt
SELECT event_bus.emit('mail', 'MailRequested', '{"to": "u5"}') - :base AS n;
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender', 10, lease => '1 millisecond') ORDER BY seq;
SELECT pg_sleep(0.01);
SELECT expired_leases, retried, dead_lettered FROM event_bus.run_maintenance();
SELECT seq - :base AS n, attempt, last_error FROM event_bus.retry_queue ORDER BY seq;
UPDATE event_bus.retries SET due_at = now() - interval '1 second';
SELECT seq - :base AS n, attempt FROM event_bus.claim('sender') ORDER BY seq;
SELECT event_bus.ack('sender', ARRAY(SELECT seq FROM event_bus.retries));
SELECT count(*) FROM event_bus.retries;
SELECT count(*) FROM event_bus.leases;

-- Ordered subscriptions: one lease per lane, and a failure holds back the
-- rest of its lane, retries included, so per-key order is kept.
SELECT event_bus.create_topic('ledger', 2);
SELECT event_bus.subscribe('books', ARRAY['ledger'], ordered => true, start => 'earliest');
SELECT count(event_bus.emit('ledger', 'Posted', jsonb_build_object('n', g), key => 'acct-1')) FROM generate_series(1, 4) g;
SELECT payload, attempt FROM event_bus.claim('books', 2) ORDER BY seq;
-- the lane is leased: nothing more from it until the lease ends
SELECT count(*) FROM event_bus.claim('books');
SELECT (event_bus._unpack_seqs(seqs))[1] AS first, (event_bus._unpack_seqs(seqs))[2] AS second FROM event_bus.leases WHERE subscription = 'books' \gset
SELECT event_bus.fail('books', :first, 'ledger locked', retry_in => '0');
-- both events of the batch come back, in order, then the rest of the lane
SELECT payload, attempt FROM event_bus.claim('books') ORDER BY seq;
SELECT event_bus.ack('books', ARRAY[:first, :second]);
SELECT payload, attempt FROM event_bus.claim('books') ORDER BY seq;
-- expiry in an ordered lane redelivers the whole batch in order
SELECT event_bus._unpack_seqs(seqs) AS batch FROM event_bus.leases WHERE subscription = 'books' \gset
UPDATE event_bus.leases SET expires_at = now() - interval '1 second' WHERE subscription = 'books';
SELECT expired_leases, retried, dead_lettered FROM event_bus.run_maintenance();
UPDATE event_bus.retries SET due_at = now() - interval '1 second' WHERE subscription = 'books';
SELECT payload, attempt FROM event_bus.claim('books') ORDER BY seq;
SELECT event_bus.ack('books', :'batch');
SELECT count(*) FROM event_bus.claim('books');
SELECT event_bus.unsubscribe('books');
SELECT event_bus.unsubscribe('sender');

-- What the worker reads of retries: the next one to become due (the first
-- of each subscription in retries_due), and per subscription how many are
-- due, counted up to 100.  Claims take due retries in (due_at, seq) order.
SELECT event_bus.create_topic('backlog', 4);
SELECT event_bus.subscribe('early', ARRAY['backlog'], start => 'earliest', max_attempts => 10);
SELECT event_bus.subscribe('late', ARRAY['backlog'], start => 'earliest', max_attempts => 10);
SELECT cardinality(event_bus.emit_many('backlog', 'JobQueued',
       (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 150) g)));
SELECT count(event_bus.fail('early', c.seq, 'busy', retry_in => '2 hours')) FROM event_bus.claim('early', 150) c;
SELECT count(event_bus.fail('late', c.seq, 'busy', retry_in => '3 hours')) FROM event_bus.claim('late', 150) c;
SELECT event_bus._next_due() BETWEEN now() + interval '119 minutes' AND now() + interval '121 minutes' AS in_2_hours;
UPDATE event_bus.retries SET due_at = now() + interval '30 minutes'
 WHERE subscription = 'late' AND seq = (SELECT max(seq) FROM event_bus.retries WHERE subscription = 'late');
SELECT event_bus._next_due() BETWEEN now() + interval '29 minutes' AND now() + interval '31 minutes' AS in_30_minutes;
-- 150 due retries of 'early' count as 100, 'late' has none due yet
UPDATE event_bus.retries SET due_at = now() - interval '1 second' WHERE subscription = 'early';
SELECT d.state -> 'due' AS due, d.notified FROM event_bus._dispatch_due('{}', 0) d;
-- the five that fell due first are claimed first
UPDATE event_bus.retries SET due_at = now() - interval '1 hour'
 WHERE subscription = 'early' AND seq IN (SELECT seq FROM event_bus.retries WHERE subscription = 'early'
                                          ORDER BY seq DESC LIMIT 5);
SELECT count(*) AS newest_five FROM event_bus.claim('early', 5) c
 WHERE c.seq IN (SELECT seq FROM event_bus.retries WHERE subscription = 'early' ORDER BY seq DESC LIMIT 5);
SELECT event_bus.unsubscribe('early');
SELECT event_bus.unsubscribe('late');
