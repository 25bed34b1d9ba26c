# event_bus: PGXS build.  See README.md for the set-up and test commands.
MODULE_big = event_bus
OBJS = src/event_bus.o src/horizon.o src/emit.o src/worker.o src/capture.o
EXTENSION = event_bus
DATA = event_bus--1.0.sql
PGFILEDESC = "event_bus - an event bus inside PostgreSQL"

REGRESS = init topics emit subscribe claim_ack fail_retry dead_letters admin capture errors
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check
ISOLATION = horizon competing_claims aborted_events lanes_no_stall
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation --outputdir=output_iso \
	--temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check_iso \
	--load-extension=event_bus

PG_CPPFLAGS = -I$(srcdir)/include
# No LLVM bitcode: it would need clang on every machine that builds us.
override with_llvm := no

PG_CONFIG ?= $(shell test -x /usr/lib/postgresql/15/bin/pg_config && echo /usr/lib/postgresql/15/bin/pg_config || echo pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
