#!/usr/bin/env bash
# Superseded by bench/run.sh (issue #5); kept so old instructions still work.
# A smoke run of the whole benchmark: short pgbench runs, 100k events to
# drain, a 30-second soak.  Report and plots go to bench/results/quick/.
# Usage: bash bench/quick.sh [more options of run.sh]
exec bash "$(dirname "$0")/run.sh" --quick "$@"
