#!/usr/bin/env bash
# Compare two builds of event_bus on one throwaway cluster, interleaved.
#
# Usage: bash bench/ab.sh [--rounds N] REV_A REV_B -- COMMAND [ARGS...]
#   REV_A, REV_B  git revisions of this repository; "WORKTREE" means the
#                 checkout as it is now (uncommitted changes included)
#   --rounds N    rounds (default 3); each round installs A, runs COMMAND,
#                 then installs B and runs it again, each time on a
#                 restarted cluster and in a fresh database "ab" with
#                 CREATE EXTENSION event_bus done
#   COMMAND       run with PGHOST/PGPORT/PGDATABASE/PGUSER set, e.g.
#                 python3 bench/head_of_line.py --reps 1 --cases throughput --open none
#
# Run as root on a quiet machine (it installs each build into the server's
# directories in turn, and the checkout's build again at the end).  The
# cluster has synchronous_commit = off, so that CPU cost shows rather than
# WAL flushes; worktrees and the cluster live under /tmp.
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$BENCH/../scripts/common.sh"

ROUNDS=3
if [ "${1:-}" = --rounds ]; then ROUNDS=$2; shift 2; fi
[ $# -ge 4 ] && [ "$3" = -- ] || { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
REVS=("$1" "$2")
shift 3
[ "$(id -u)" -eq 0 ] || { echo "ab.sh: run as root (it installs each build in turn)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/event_bus-ab.XXXXXX)
chmod 755 "$WORK"
eb_pick_user
cleanup() {
    if [ -f "$WORK/c/data/postmaster.pid" ]; then
        eb_as_user pg_ctl -D "$WORK/c/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    for i in 0 1; do
        [ -d "$WORK/b$i" ] && git -C "$REPO" worktree remove --force "$WORK/b$i" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
    make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Build both first, so a broken revision fails before anything is measured.
for i in 0 1; do
    if [ "${REVS[$i]}" = WORKTREE ]; then
        SRC[$i]=$REPO
    else
        git -C "$REPO" worktree add --detach "$WORK/b$i" "${REVS[$i]}" >/dev/null 2>&1
        SRC[$i]=$WORK/b$i
    fi
    make -C "${SRC[$i]}" -s PG_CONFIG="$PG_CONFIG" >/dev/null
    echo "ab.sh: built ${REVS[$i]} ($(git -C "${SRC[$i]}" rev-parse --short HEAD))" >&2
done

mkdir -p "$WORK/c"
chown "$EB_USER" "$WORK/c"
eb_start_cluster "$WORK/c" 5489 <<CONF
synchronous_commit = off
CONF
export PGHOST=$WORK/c PGPORT=5489 PGDATABASE=ab PGUSER=postgres
for r in $(seq 1 "$ROUNDS"); do
    for i in 0 1; do
        make -C "${SRC[$i]}" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
        eb_as_user pg_ctl -D "$WORK/c/data" -l "$WORK/c/server.log" -w restart >/dev/null
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS ab" -c "CREATE DATABASE ab"
        psql -X -q -c "CREATE EXTENSION event_bus"
        echo "== round $r: ${REVS[$i]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
        (cd "$REPO" && "$@")
    done
done
