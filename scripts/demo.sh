#!/usr/bin/env bash
# The main job: install what is missing, build and install event_bus, start a
# throwaway cluster (Unix socket only) with shared_preload_libraries =
# 'event_bus', and show events flowing to two subscriptions.
#   --keep   leave the cluster running afterwards (it prints how to connect)
set -euo pipefail
source "$(dirname "$0")/common.sh"

keep=no
[ "${1:-}" = "--keep" ] && keep=yes

eb_build_install
eb_pick_user

DIR=$(mktemp -d /tmp/event_bus-demo.XXXXXX)
chown "$EB_USER" "$DIR" 2>/dev/null || true
PORT=5488
eb_start_cluster "$DIR" $PORT </dev/null
stop() { eb_as_user pg_ctl -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
[ $keep = no ] && trap stop EXIT

psql_demo() { eb_as_user psql -X -q -h "$DIR" -p $PORT -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

psql_demo <<'SQL'
\pset footer off
\echo '== CREATE EXTENSION event_bus, a topic with 4 lanes, two subscriptions'
CREATE EXTENSION event_bus;
SELECT event_bus.create_topic('orders', lanes => 4);
SELECT event_bus.subscribe('billing',  ARRAY['orders']);
SELECT event_bus.subscribe('shipping', ARRAY['orders'], types => ARRAY['OrderPaid'], max_attempts => 3);

\echo '== A transaction changes business data and emits the facts with it'
CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric, paid boolean DEFAULT false);
BEGIN;
INSERT INTO orders VALUES (1, 'ada', 42.00), (2, 'bob', 7.50);
SELECT event_bus.emit('orders', 'OrderPlaced', jsonb_build_object('order', 1, 'total', 42.00), key => 'ada') AS seq;
SELECT event_bus.emit('orders', 'OrderPlaced', jsonb_build_object('order', 2, 'total', 7.50), key => 'bob') AS seq;
COMMIT;
\echo '== A rolled-back transaction emits nothing'
BEGIN;
SELECT event_bus.emit('orders', 'OrderPlaced', '{"order": 3}', key => 'eve') AS seq;
ROLLBACK;
UPDATE orders SET paid = true WHERE id = 1;
SELECT cardinality(event_bus.emit_many('orders', 'OrderPaid',
         ARRAY['{"order": 1}', '{"order": 2}']::jsonb[], ARRAY['ada', 'bob'])) AS emitted_in_one_call;

\echo '== billing claims a batch (every type), acks it'
SELECT seq, type, key, payload, attempt FROM event_bus.claim('billing', 10) ORDER BY seq;
SELECT event_bus.ack('billing', ARRAY(SELECT seq FROM event_bus.in_flight, unnest(seqs) seq
                                       WHERE subscription = 'billing')) AS acked;

\echo '== shipping only sees OrderPaid; it fails one event, which is retried'
CREATE TEMP TABLE batch AS SELECT seq, key, payload FROM event_bus.claim('shipping', 10);
SELECT * FROM batch ORDER BY seq;
SELECT event_bus.fail('shipping', (SELECT min(seq) FROM batch WHERE key = 'ada'),
                      'carrier API down', retry_in => '0') AS outcome;
SELECT event_bus.ack('shipping', ARRAY(SELECT seq FROM batch WHERE key = 'bob')) AS acked;
SELECT seq, key, attempt FROM event_bus.claim('shipping', 10) ORDER BY seq;
\echo '== ... and dead-lettered once it fails again and again'
SELECT event_bus.fail('shipping', (SELECT min(seq) FROM batch WHERE key = 'ada'), 'still down', retry_in => '0') AS outcome;
SELECT seq, key, attempt FROM event_bus.claim('shipping', 10) ORDER BY seq;
SELECT event_bus.fail('shipping', (SELECT min(seq) FROM batch WHERE key = 'ada'), 'gave up') AS outcome;
SELECT subscription, seq, type, payload, attempts, last_error FROM event_bus.dead_letters;

\echo '== Status, as an operator sees it in psql'
SELECT subscription, topics, pending, in_flight, retrying, dead FROM event_bus.subscription_status ORDER BY 1;
SQL

if [ $keep = yes ]; then
    echo "cluster left running: psql -h $DIR -p $PORT -U postgres   (stop: pg_ctl -D $DIR/data stop, as $EB_USER)"
else
    echo "demo done; the throwaway cluster is stopped and removed (--keep leaves it running)"
fi
