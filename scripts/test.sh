#!/usr/bin/env bash
# The whole test suite: build (warnings are errors), install, then run, each
# against throwaway clusters it starts itself (Unix sockets under /tmp):
#   - pg_regress files in sql/ + expected/
#   - isolation specs in test/isolation/
#   - TAP tests in test/t/ (PostgreSQL::Test::Cluster)
#   - the stress checker in test/stress/ (short run; --long for a long one)
# Ends with a line "N passed, N failed".  Exit status 0 only if all passed.
set -uo pipefail
source "$(dirname "$0")/common.sh"

STRESS_ARGS=(--short)
for a in "$@"; do
    case "$a" in
        --long) STRESS_ARGS=(--long) ;;
        *) echo "usage: $0 [--long]" >&2; exit 2 ;;
    esac
done

set -e
eb_build_install
eb_pick_user
set +e

# Stage a copy of the sources the test user can read, outside the checkout
# (which may sit under /root).
STAGE=$(mktemp -d /tmp/event_bus-test.XXXXXX)
tar -C "$REPO" --exclude=.git --exclude=tmp_check --exclude=results -cf - . | tar -C "$STAGE" -xf -
# The examples' TAP test (test/t/170_examples.pl) runs examples/node with the
# packages pinned in its lock file: install them into the copy before it is
# handed to the test user.
(cd "$STAGE/examples/node" && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "npm ci in examples/node failed: test/t/170_examples.pl will fail" >&2
chown -R "$EB_USER" "$STAGE" 2>/dev/null || true
LOG="$STAGE/test-output.log"
passed=0
failed=0

count_regress() {
    local out=$1 p f
    p=$(grep -Ec '\.\.\. ok' "$out")
    f=$(grep -Ec '\.\.\. FAILED|\.\.\. failed' "$out")
    passed=$((passed + p)); failed=$((failed + f))
}

for suite in regress isolation; do
    echo "== $suite tests"
    if [ $suite = regress ]; then only=(ISOLATION= TAP_TESTS=); else only=(REGRESS= TAP_TESTS=); fi
    eb_as_user make -C "$STAGE" -s PG_CONFIG="$PG_CONFIG" "${only[@]}" installcheck \
        > "$STAGE/$suite.out" 2>&1
    rc=$?
    cat "$STAGE/$suite.out"
    count_regress "$STAGE/$suite.out"
    if [ $rc -ne 0 ]; then
        for d in "$STAGE/regression.diffs" "$STAGE/output_iso/regression.diffs"; do
            [ -f "$d" ] && { echo "-- $d"; head -c 20000 "$d"; }
        done
        # A crash or a set-up error leaves no per-test line: count it.
        grep -Eq '\.\.\. (FAILED|failed)' "$STAGE/$suite.out" || failed=$((failed + 1))
    fi
done

echo "== C module layering"
if bash "$REPO/scripts/check-layering.sh"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "== TAP tests"
eb_as_user make -C "$STAGE" -s PG_CONFIG="$PG_CONFIG" REGRESS= ISOLATION= PROVE_FLAGS=-v installcheck \
    > "$STAGE/tap.out" 2>&1
rc=$?
cat "$STAGE/tap.out"
p=$(grep -Ec '^(\s*)ok [0-9]+' "$STAGE/tap.out")
f=$(grep -Ec '^(\s*)not ok [0-9]+' "$STAGE/tap.out")
passed=$((passed + p)); failed=$((failed + f))
[ $rc -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1))

echo "== stress checker"
eb_as_user bash "$STAGE/test/stress/run.sh" "${STRESS_ARGS[@]}" > "$STAGE/stress.out" 2>&1
rc=$?
cat "$STAGE/stress.out"
if [ $rc -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "(test files and logs: $STAGE)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
