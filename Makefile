# event_bus: PGXS build.  See README.md for the set-up and test commands.
MODULE_big = event_bus
OBJS = src/event_bus.o src/settings.o src/shmem.o src/horizon.o src/dispatch.o src/wait.o src/launcher.o src/worker.o src/hook.o src/stats.o src/retention.o src/log.o src/emit.o src/store.o src/claim.o src/capture.o src/api.o src/sql_helpers.o
EXTENSION = event_bus
EXTVERSION = 1.1
# The current version's install script is built from src/sql/*.sql (one file
# per concern); older install scripts and the upgrade steps are kept as
# released.  event_bus--1.0.sql is frozen: users have it installed.
DATA_built = event_bus--$(EXTVERSION).sql
DATA = event_bus--1.0.sql event_bus--1.0--1.1.sql
PGFILEDESC = "event_bus - an event bus inside PostgreSQL"

REGRESS = init topics emit subscribe claim_ack fail_retry dead_letters admin stats privileges dedupe scheduled capture errors
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check
ISOLATION = horizon competing_claims aborted_events lanes_no_stall savepoint_release ordered_fail replay lease_token head_of_line dedupe scheduled
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation --outputdir=output_iso \
	--temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check_iso \
	--load-extension=event_bus

# make installcheck runs the regression, isolation and TAP suites.
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CPPFLAGS = -I$(srcdir)/include
# No LLVM bitcode: it would need clang on every machine that builds us.
override with_llvm := no

# Debian's PostgreSQL 15 pg_config when it is installed (what the set-up
# scripts install), else pg_config on the PATH; override with PG_CONFIG=...
PG_CONFIG ?= $(shell test -x /usr/lib/postgresql/15/bin/pg_config && echo /usr/lib/postgresql/15/bin/pg_config || echo pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

event_bus--$(EXTVERSION).sql: $(sort $(wildcard $(srcdir)/src/sql/*.sql))
	cat $^ > $@

# Every object depends on every header (PGXS tracks no header dependencies).
$(OBJS): $(wildcard $(srcdir)/include/*.h)
