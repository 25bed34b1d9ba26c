# Sourced by the pgbench scripts for bench/ab.sh (ab_bulk.sh, emit_dedupe.sh)
# after their options, with AB_NAME set: pgbench and psql (on the PATH, else
# Debian's PostgreSQL 15), their ~300-byte payload, and a scratch directory
# $DIR that pgbench's user may read, removed on exit.
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
PSQL=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
PAYLOAD='{"order_id": 12345, "customer": "c-000042", "items": [{"sku": "sku-0", "qty": 1, "price": 9.99}, {"sku": "sku-1", "qty": 2, "price": 9.99}, {"sku": "sku-2", "qty": 3, "price": 9.99}], "note": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'
DIR=$(mktemp -d "/tmp/$AB_NAME.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
