#!/usr/bin/env bash
# Regenerate event_bus--1.0--1.1.sql: its hand-written parts (storage changes,
# data migrations, drops, the privilege migration) are taken from the
# committed file itself, everything else from the current src/sql/.  Run it
# after changing a function, view or grant of 1.1, then run
# test/t/050_upgrade.pl, which compares an upgraded database with a fresh
# install.  It does not invent upgrade steps for new tables or columns:
# write those into the hand-written storage section first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PREV=$(mktemp)
STORAGE=$(mktemp)
trap 'rm -f "$PREV" "$STORAGE"' EXIT
cp event_bus--1.0--1.1.sql "$PREV"
G="python3 scripts/upgrade/functions.py"
{
sed -n '1,/^-- Internal helpers implemented in C/p' "$PREV"
echo "-----------------------------------------------------------------------------"
grep -A1 "_caller()\|_capture_compile(\|_capture_condition_sql(\|_capture_depend(\|_check_writable()\|_life_started()\|_wait_topics(" src/sql/01_c_helpers.sql | grep -v "^--$"
sed -n '/^CREATE FUNCTION event_bus._emitters(/,$p' src/sql/01_c_helpers.sql
sed -n '/^-- Storage: topic grants/,/^-- Internal SQL helpers/p' "$PREV" | sed '1i -----------------------------------------------------------------------------' | sed '$a -----------------------------------------------------------------------------' | sed -n '1,$p' > "$STORAGE"
echo
cat "$STORAGE"
echo "DROP FUNCTION event_bus._release(event_bus.subscriptions, bigint, timestamptz);"
$G =_handed_out =_claimable_lanes =_check_seqs _ensure_partitions =_droppable_partitions _retention =_retention_candidates =_retention_drop =_release =_keep_seqs _check_delivered _bury _failed _backoff =_topic_allowed =_check_topic_privilege =_check_interval =_visible _subscription
sed -n '/^-- Topics and their grants/,/^DROP FUNCTION event_bus.create_topic/p' "$PREV" | sed '1i -----------------------------------------------------------------------------'
$G =create_topic drop_topic =_check_grant =grant_topic =revoke_topic =_mark_lanes run_maintenance _dispatch =_dispatch_due _next_due _oldest_needed
cat <<'EOF'
-----------------------------------------------------------------------------
-- Publishing: emit and emit_many run as their caller and check its grant
-----------------------------------------------------------------------------
EOF
cat <<'EOF2'
-- emit and emit_many take dedupe keys: their signatures change.
DROP FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer);
DROP FUNCTION event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer);
EOF2
$G =emit =emit_many =_emit_scheduled =_release_scheduled =_cancel_scheduled_impl =cancel_scheduled
cat <<'EOF'
-----------------------------------------------------------------------------
-- The API functions become C entry points (eb_api) that record the caller
-- and call their SECURITY DEFINER implementations.
-----------------------------------------------------------------------------
EOF
cat <<'EOF2'
-- claim() returns a lease_token, which ack(), fail() and dead_letter()
-- accept: their signatures change, so the 1.0 functions go.
DROP FUNCTION event_bus.claim(text, integer, interval, interval);
DROP FUNCTION event_bus._claim_once(event_bus.subscriptions, integer, interval);
DROP FUNCTION event_bus.ack(text, bigint[]);
DROP FUNCTION event_bus.fail(text, bigint, text, interval);
DROP FUNCTION event_bus.dead_letter(text, bigint, text);
DROP FUNCTION event_bus._leased(event_bus.subscriptions, bigint);
EOF2
sed -n '/^-- What claim() hands out/,/^COMMENT ON TYPE event_bus.delivery/p' src/sql/07_claim_ack.sql
echo
$G =_lease_retries =_claim_once =_leased
$G _start_position
for f in subscribe unsubscribe replay redrive purge_dead_letters; do $G =_${f}_impl $f; done
cat <<'EOF2'
-- pause() and resume() return whether they changed anything.
DROP FUNCTION event_bus.pause(text);
DROP FUNCTION event_bus.resume(text);
EOF2
for f in pause resume; do $G =_${f}_impl =$f; done
$G =stats_reset
$G =claim =ack
for f in fail dead_letter extend; do $G =_${f}_impl =$f; done
sed -n '/^CREATE FUNCTION event_bus.to_cloudevent(d event_bus.delivery)/,/^.Render a row returned by claim/p' src/sql/12_cloudevents.sql
$G =alter_subscription_owner
$G =_wait_check
sed -n '/^CREATE PROCEDURE event_bus.wait(/,/^COMMENT ON PROCEDURE event_bus.wait/p' src/sql/07_claim_ack.sql
sed -n '/^COMMENT ON PROCEDURE event_bus.wait/,/;$/p' src/sql/07_claim_ack.sql | sed '1d'
echo
cat <<'EOF'
-----------------------------------------------------------------------------
-- Capture: conditions compiled as the table's owner, generated code that no
-- column name can shadow, trigger functions that DROP EXTENSION sees.
-----------------------------------------------------------------------------
DROP FUNCTION event_bus._capture_check_condition(regclass, text);
EOF
$G =_capture_tree _capture_drop_triggers =_capture_row_sql =_capture_key_sql =_capture_keyjson_sql _capture_generate _capture_impl capture uncapture _capture_ddl
sed -n '/^DROP EVENT TRIGGER event_bus_capture_ddl/,/^\$upgrade\$;/p' "$PREV"
cat <<'EOF'

-----------------------------------------------------------------------------
-- Views: consumers see the subscriptions of their roles, producers the
-- captures of the tables their roles own
-----------------------------------------------------------------------------
EOF
sed -n '/^CREATE VIEW event_bus.captured_tables/,/^COMMENT ON VIEW event_bus.captured_tables/p' src/sql/11_capture.sql | sed 's/^CREATE VIEW/CREATE OR REPLACE VIEW/'
echo
$G =_lag_impl =_lag
sed -n '/^CREATE VIEW event_bus.subscription_status/,/^COMMENT ON VIEW event_bus.dead_letter_queue/p' src/sql/13_views.sql | sed 's/^CREATE VIEW/CREATE OR REPLACE VIEW/'
echo
sed -n "/^CREATE VIEW event_bus.worker_status/,/^'The event_bus worker of each database/p" src/sql/13_views.sql | sed 's/^CREATE VIEW/CREATE OR REPLACE VIEW/'
echo
sed -n '/^CREATE VIEW event_bus.open_emitters/,$p' src/sql/13_views.sql
echo
sed -n '/^-- Privileges$/,/^GRANT SELECT ON event_bus.topic_grants, event_bus.dead_letter_queue TO event_bus_admin;/p' "$PREV" | sed '1i -----------------------------------------------------------------------------'
echo "GRANT SELECT ON SEQUENCE event_bus.event_seq TO event_bus_admin;"
echo "GRANT SELECT ON event_bus.open_emitters, event_bus.stats, event_bus.lane_marks, event_bus.dedupe_keys,
    event_bus.scheduled_events, event_bus.scheduled TO event_bus_admin;"
echo "-- Dropped and made again for the packed leases (storage, above):"
echo "GRANT SELECT ON event_bus.subscription_status, event_bus.in_flight TO event_bus_admin;"
sed -n '/^GRANT EXECUTE/,/^GRANT SELECT ON ALL TABLES/p' src/sql/14_privileges.sql | grep -v "GRANT SELECT ON ALL TABLES"
} > event_bus--1.0--1.1.sql.new
mv event_bus--1.0--1.1.sql.new event_bus--1.0--1.1.sql
