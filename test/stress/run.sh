#!/usr/bin/env bash
# Stress checker for event_bus: starts a throwaway cluster under
# /tmp/eb-stress.XXXXXX, installs the extension, runs stress.py against it and
# stops the cluster again.
#
#   bash test/stress/run.sh [--short | --long] [--seconds N] [--seed N] [...]
#
# --short (default) takes 30-45 s (~10,000 events); --long produces for 10 minutes
# (or --seconds N).  Other options are passed to stress.py (see
# `/usr/bin/python3 test/stress/stress.py --help`).
#
# Run it as an unprivileged user (PostgreSQL refuses to run as root).  Nothing
# is written inside the repository: the cluster, its log and the checker's
# output live in the temporary directory, which is removed on success and
# kept (its path printed) on failure.  Exit status: stress.py's.
set -uo pipefail

export PATH="/usr/lib/postgresql/15/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "$(id -u)" -eq 0 ]; then
    echo "run.sh: PostgreSQL refuses to run as root; run this as an unprivileged user" >&2
    exit 2
fi

ARGS=()
for a in "$@"; do
    case "$a" in
        -h|--help)
            sed -n '2,14p' "${BASH_SOURCE[0]}"
            /usr/bin/python3 "$HERE/stress.py" --help
            exit 0 ;;
        *) ARGS+=("$a") ;;
    esac
done

TMP=$(mktemp -d /tmp/eb-stress.XXXXXX) || { echo "run.sh: mktemp failed" >&2; exit 2; }
chmod 700 "$TMP"
cd "$TMP"    # the caller's directory may not be readable by this user
DATA="$TMP/data"
LOG="$TMP/server.log"
STARTED=0
RC=1

cleanup() {
    local rc=$RC
    if [ "$STARTED" -eq 1 ]; then
        pg_ctl -D "$DATA" -m fast -t 60 -w stop >/dev/null 2>&1 ||
            pg_ctl -D "$DATA" -m immediate -t 30 -w stop >/dev/null 2>&1
    fi
    if [ "$rc" -eq 0 ]; then
        rm -rf "$TMP"
    else
        if [ -f "$LOG" ]; then
            echo "---- last lines of the server log ($LOG)"
            tail -n 40 "$LOG"
        fi
        echo "stress: FAILED (exit $rc); cluster, server log and output kept in $TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'RC=130; exit 130' INT TERM

echo "stress: cluster in $TMP"
if ! initdb -D "$DATA" -A trust -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1; then
    cat "$TMP/initdb.log"
    echo "run.sh: initdb failed" >&2
    RC=2; exit 2
fi

# partition_size 5000 makes the run cross log partitions, and retention 0 lets
# the retention job drop every partition all subscriptions have passed while
# consumers are still working (a lost event would show a premature drop).
# The socket lives in our private directory, so a port can only clash through
# the shared memory key; retry with another port if the start fails.
PORT=
for try in 1 2 3 4 5 6 7 8; do
    p=$((5600 + RANDOM % 2000))
    cat > "$DATA/postgresql.auto.conf" <<EOF
shared_preload_libraries = 'event_bus'
listen_addresses = ''
unix_socket_directories = '$TMP'
port = $p
max_connections = 50
event_bus.partition_size = 5000
event_bus.retention = 0
fsync = off
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF
    if pg_ctl -D "$DATA" -l "$LOG" -w -t 60 start >"$TMP/pg_ctl.log" 2>&1; then
        PORT=$p
        STARTED=1
        break
    fi
    # A start that timed out may still come up: make sure it is down.
    pg_ctl -D "$DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    echo "run.sh: could not start on port $p (try $try), retrying"
done
if [ -z "$PORT" ]; then
    cat "$TMP/pg_ctl.log"
    echo "run.sh: could not start the cluster" >&2
    RC=2; exit 2
fi

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT")
if ! "${PSQL[@]}" -d postgres -c "CREATE DATABASE stress" ||
   ! "${PSQL[@]}" -d stress -c "CREATE EXTENSION event_bus"; then
    echo "run.sh: could not create the database or the extension" >&2
    RC=2; exit 2
fi

/usr/bin/python3 "$HERE/stress.py" --host "$TMP" --port "$PORT" --dbname stress \
    ${ARGS[@]+"${ARGS[@]}"} 2>&1 | tee "$TMP/stress.out"
RC=${PIPESTATUS[0]}

# A backend that died (crash, assertion) is a failure even if the figures
# look right.
if grep -Eq 'PANIC|terminated by signal|was terminated by exception|server process .* exited with exit code [^0]' "$LOG"; then
    echo "stress: the server log reports a crashed backend:"
    grep -E 'PANIC|terminated by signal|was terminated by exception|exited with exit code' "$LOG" | head -20
    [ "$RC" -eq 0 ] && RC=3
fi
exit "$RC"
