#!/usr/bin/env bash
# Check that the C modules depend on each other in one direction only: for
# every pair of object files, not both use a symbol the other defines.
# Prints the module graph; exits 1 if it has a cycle.  Run after `make`.
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/env python3 - src/*.o <<'PY'
import subprocess, sys
objs = sys.argv[1:]
defs, uses = {}, {}
for o in objs:
    m = o.split('/')[-1][:-2]
    out = subprocess.run(['nm', o], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in 'TDBR' and parts[2].startswith('eb_'):
            defs[parts[2]] = m
        elif len(parts) == 2 and parts[0] == 'U' and parts[1].startswith('eb_'):
            uses.setdefault(m, set()).add(parts[1])
graph = {m: sorted({defs[s] for s in uses.get(m, ()) if s in defs} - {m})
         for m in sorted(o.split('/')[-1][:-2] for o in objs)}
for m, deps in graph.items():
    print(f"{m:12} -> {' '.join(deps) or '-'}")
state = {}
def visit(m, path):
    if state.get(m) == 1:
        print('cycle: ' + ' -> '.join(path[path.index(m):] + [m]))
        sys.exit(1)
    if state.get(m) == 2:
        return
    state[m] = 1
    for d in graph[m]:
        visit(d, path + [m])
    state[m] = 2
for m in graph:
    visit(m, [])
print('no cycles')
PY
