# Sourced by the pgbench scripts for bench/ab.sh (ab_bulk.sh, emit_dedupe.sh,
# emit_floor.sh) as  source ab_scratch.sh "$@",  with AB_NAME and the
# defaults of CASES, CLIENTS, SECS and (if the script repeats its cases)
# RUNS set: reads the options --cases, --clients, --seconds and --runs into
# them, and sets pgbench and psql (on the PATH, else Debian's PostgreSQL 15),
# their ~300-byte payload, and a scratch directory $DIR that pgbench's user
# may read, removed on exit.
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --runs) [ -n "${RUNS:-}" ] || { echo "$AB_NAME.sh: unknown argument $1" >&2; exit 2; }
                RUNS=$2; shift 2 ;;
        *) echo "$AB_NAME.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
PSQL=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
PAYLOAD='{"order_id": 12345, "customer": "c-000042", "items": [{"sku": "sku-0", "qty": 1, "price": 9.99}, {"sku": "sku-1", "qty": 2, "price": 9.99}, {"sku": "sku-2", "qty": 3, "price": 9.99}], "note": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'
DIR=$(mktemp -d "/tmp/$AB_NAME.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
# ab_tps SCRIPT CLIENTS: transactions a second of pgbench -M prepared running
# SCRIPT with CLIENTS clients for $SECS s, synchronous_commit off (empty if
# pgbench failed).
ab_tps() {
    PGOPTIONS="-c synchronous_commit=off" "$PGBENCH" -n -M prepared -c "$2" -j "$2" -T "$SECS" -f "$1" 2>&1 |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}
