#!/usr/bin/env bash
# The event_bus benchmark (issue #5): one command, side by side on one
# throwaway cluster, with the same ~300-byte JSON payload everywhere:
#   emit vs a plain INSERT vs PgQ (1 and 8 clients, synchronous_commit off
#   and on, and bulk), fan-out (1/10/50 subscriptions), consumption (1, 4, 8
#   consumers vs PgQ), latency (claim(wait) and LISTEN) and a soak that
#   watches every event_bus table's size.
#
# Usage: bash bench/run.sh [--soak-minutes N] [--quick] [options]
#   --soak-minutes N   length of the soak (default 2; 0 skips it)
#   --quick            a smoke run: short runs, 100k events, 30 s soak;
#                      writes to bench/results/quick/ unless --out is given
#   --seconds S        length of each pgbench run (default 12)
#   --reps R           interleaved rounds per emit measurement (default 3)
#   --events N         events pre-loaded for the consume phase (default 1000000)
#   --soak-rate R      events/s emitted during the soak (default 2000)
#   --phases LIST      comma-separated subset of emit,consume,capture,latency,worker,soak,status
#   --latency-rate N   events/s of the latency phase (default 200)
#   --latency-consumers N  consumers claiming in the latency phase (default 1)
#   --capture-rows N   rows of the capture phase's INSERT ... SELECT (default 100000)
#   --worker-rates L   emit rates of the worker phase (default 200,2000,10000)
#   --worker-seconds N seconds per rate in the worker phase (default 30)
#   --memory-minutes N the memory phase (not run unless --phases names it):
#                      32 databases, 100 connections, N minutes (default 10)
#   --status-events N  pending events for the status phase (default 10000000)
#                      (--phases profile, not run by default: perf profiles of emit,
#                      emit_many and claim; needs linux-perf, which run.sh installs)
#   --out DIR          where report.md, the plots and raw/ go (default bench/results)
#   --build            rebuild and reinstall the extension from this checkout first
#                      (done anyway when it is not installed)
#
# Run as root on Debian 12: installs what is missing (PostgreSQL 15, pgbench,
# postgresql-15-pgq3, gnuplot, python3-psycopg2), runs the cluster as the
# unprivileged user of scripts/common.sh, data and socket under /tmp.  Prints
# the Markdown report on stdout; progress goes to stderr.
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$BENCH/../scripts/common.sh"

SOAK_MINUTES=2
SOAK_SET=0
QUICK=0
BUILD=0
OUT=""
PY_ARGS=()
PHASES=""
ARGV="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --soak-minutes) SOAK_MINUTES=$2; SOAK_SET=1; shift 2 ;;
        --soak-minutes=*) SOAK_MINUTES=${1#*=}; SOAK_SET=1; shift ;;
        --quick) QUICK=1; shift ;;
        --build) BUILD=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --phases) PHASES=$2; PY_ARGS+=("$1" "$2"); shift 2 ;;
        --seconds|--reps|--events|--soak-rate|--latency-samples|--soak-partition-size|--bulk-clients|--lanes|--status-events|--worker-rates|--worker-seconds|--memory-minutes|--memory-sample|--latency-rate|--latency-consumers|--capture-rows)
            PY_ARGS+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    # Later arguments win in argparse: explicit options still apply.
    PY_ARGS=(--seconds 3 --reps 1 --events 100000 --latency-samples 300 --soak-partition-size 10000 --status-events 200000
             --worker-seconds 8 --soak-sample 5 "${PY_ARGS[@]}")
    [ "$SOAK_SET" = 1 ] || SOAK_MINUTES=0.5
    OUT=${OUT:-$BENCH/results/quick}
fi
OUT=${OUT:-$BENCH/results}

# --- What the benchmark needs ------------------------------------------------
need_pkgs=()
for p in postgresql-15 postgresql-client-15 postgresql-15-pgq3 python3 python3-psycopg2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
command -v gnuplot >/dev/null 2>&1 || need_pkgs+=(gnuplot-nox)
case ",$PHASES," in *,profile,*) command -v perf >/dev/null 2>&1 || need_pkgs+=(linux-perf) ;; esac
PGLIB=$("$PG_CONFIG" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
if [ "$BUILD" = 1 ] || [ ! -f "$PGLIB/event_bus.so" ]; then
    BUILD=1
fi
if [ ${#need_pkgs[@]} -gt 0 ] || [ "$BUILD" = 1 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        [ ${#need_pkgs[@]} -gt 0 ] && echo "run.sh: missing packages: ${need_pkgs[*]} (run as root to install them)" >&2
        [ "$BUILD" = 1 ] && echo "run.sh: event_bus must be built and installed (run as root, or make install)" >&2
        exit 1
    fi
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "run.sh: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Debian's server package would create and start a cluster of its own.
    if [ ! -e /etc/postgresql-common/createcluster.d/50-event-bus.conf ]; then
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/50-event-bus.conf
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
if [ "$BUILD" = 1 ]; then
    echo "run.sh: building and installing event_bus from $REPO" >&2
    bash "$REPO/scripts/install-deps.sh"
    make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" >/dev/null
    make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
fi
PY=/usr/bin/python3
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "")
DIRTY=()
if [ -n "$COMMIT" ] && [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- src include event_bus--1.0.sql event_bus.control Makefile 2>/dev/null)" ]; then
    DIRTY=(--dirty)
fi
INSTALLED="event_bus.so of $(date -u -r "$PGLIB/event_bus.so" '+%Y-%m-%d %H:%M UTC'), md5 $(md5sum < "$PGLIB/event_bus.so" | cut -c1-12)"
if [ -f "$REPO/event_bus.so" ] && ! cmp -s "$REPO/event_bus.so" "$PGLIB/event_bus.so"; then
    echo "run.sh: note: the installed event_bus.so differs from $REPO/event_bus.so (--build reinstalls)" >&2
    INSTALLED="$INSTALLED (differs from the checkout's build)"
elif [ -f "$REPO/event_bus.so" ]; then
    INSTALLED="$INSTALLED (the checkout's build)"
fi

# --- A throwaway cluster -------------------------------------------------------
eb_pick_user
DIR=$(mktemp -d /tmp/event_bus-bench.XXXXXX)
chmod 755 "$DIR"
mkdir -p "$DIR/out" "$DIR/work"
chown -R "$EB_USER" "$DIR" 2>/dev/null || true
PORT=5488
PID_PY=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PID_PY" ] && kill -0 "$PID_PY" 2>/dev/null; then
        # bench.py runs in a session of its own: end it and its pgbench runs.
        kill -TERM -- "-$PID_PY" 2>/dev/null || true
        wait "$PID_PY" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -f "$DIR/server.log" ]; then
        echo "run.sh: failed; the end of the server log:" >&2
        tail -n 20 "$DIR/server.log" >&2 || true
    fi
    if [ -f "$DIR/data/postmaster.pid" ]; then
        eb_as_user pg_ctl -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run.sh: cluster in $DIR (user $EB_USER)" >&2
eb_start_cluster "$DIR" $PORT <<CONF
max_connections = 140
max_worker_processes = 48
event_bus.max_databases = 40
shared_buffers = 2GB
max_wal_size = 16GB
min_wal_size = 1GB
checkpoint_timeout = 30min
log_min_messages = warning
CONF

# --- Measure (as the cluster user) -------------------------------------------
# In a session of its own (cleanup ends it with its pgbench runs); called with &.
as_user_setsid() {
    if [ "$(id -u)" -eq 0 ]; then
        cd /tmp && exec setsid -w runuser -u "$EB_USER" -- env PATH="$PATH" "$@"
    else
        exec setsid -w "$@"
    fi
}
as_user_setsid "$PY" "$BENCH/bench.py" --host "$DIR" --port "$PORT" --datadir "$DIR/data" \
    --out "$DIR/out" --work "$DIR/work" --soak-minutes "$SOAK_MINUTES" \
    --argv="$ARGV" --installed="$INSTALLED" --commit "$COMMIT" "${DIRTY[@]}" "${PY_ARGS[@]}" &
PID_PY=$!
wait "$PID_PY"
PID_PY=""
eb_as_user pg_ctl -D "$DIR/data" -m fast -w stop >/dev/null

# --- Results -----------------------------------------------------------------
mkdir -p "$OUT/raw"
# The plots this run drew replace theirs; the others (phases not run, earlier
# runs' plots that the README links) stay.
rm -f "$OUT/raw"/*
cp "$DIR/out/report.md" "$OUT/"
cp "$DIR"/out/*.png "$OUT/" 2>/dev/null || true
cp "$DIR"/out/raw/* "$OUT/raw/"
grep -E "ERROR|FATAL|PANIC" "$DIR/server.log" | grep -v "terminating background worker" > "$OUT/raw/server-errors.log" || true
mkdir -p "$BENCH/results"
[ -f "$BENCH/results/.gitignore" ] || printf 'raw/\nquick/\n' > "$BENCH/results/.gitignore"
cat "$OUT/report.md"
echo "run.sh: report and plots in $OUT" >&2
