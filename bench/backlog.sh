# Sourced by bench scripts run as the COMMAND of bench/ab.sh: a backlog
# loaded the way the benchmark loads its drains.
#   eb_bench_backlog TOPIC N   emits N events (a multiple of 1,000) of type
#                              OrderPlaced with the benchmark's payload to
#                              TOPIC, by emit_many of 1,000 keyed
#                              customer-1..1000, one transaction per call,
#                              synchronous_commit off
# PAYLOAD is set to the benchmark's payload (bench/common.py).
BENCH=${BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
PAYLOAD=$(/usr/bin/python3 -c "import sys; sys.path.insert(0, '$BENCH'); from common import PAYLOAD; print(PAYLOAD)")

eb_bench_backlog() {
	psql -X -q -v ON_ERROR_STOP=1 \
		-c "SET synchronous_commit = off" \
		-c "DO \$\$ DECLARE p jsonb[] := (SELECT array_agg('$PAYLOAD'::jsonb) FROM generate_series(1, 1000));
		    BEGIN FOR i IN 1..$(($2 / 1000)) LOOP
		        PERFORM event_bus.emit_many('$1', 'OrderPlaced', p,
		            (SELECT array_agg('customer-' || g) FROM generate_series(1, 1000) g));
		        COMMIT;
		    END LOOP; END \$\$" >/dev/null
}
