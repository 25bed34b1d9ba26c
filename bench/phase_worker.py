"""Worker phase: the worker's CPU share and the LISTEN latency at several emit
rates, with one session LISTENing (every commit then wakes the worker) and
consumers keeping up."""
import threading
import time

from common import *  # noqa: F401,F403
from phase_latency import producer

# Probe events: a topic and subscription of their own, emitted at this rate
# by a separate process that records when each commit returned.
PROBE_RATE = 20


def worker_counters(db):
    r = q(db, "SELECT rounds, notifications FROM event_bus.worker_status WHERE datname = current_database()",
          one=True)
    return (int(r[0]), int(r[1])) if r else (0, 0)


def one_rate(db, rate, secs):
    import json
    import select
    wpid = worker_pid(db)
    crate = max(1, int(round(2.0 * rate / 100)))     # claim(100) calls per second: twice the need
    prod = write_script("worker_emit.sql",
                        "\\set k random(1, 100000)\n"
                        "SELECT event_bus.emit('w', 'OrderPlaced', '%s', key => (:k)::text);\n" % PAYLOAD)
    cons = write_script("worker_consume.sql",
                        "SELECT coalesce(array_agg(seq), '{}') AS seqs FROM event_bus.claim('w', 100) \\gset\n"
                        "SELECT event_bus.ack('w', :seqs);\n")
    out, notes, commit_times = {}, [], {}
    start_evt, stop = threading.Event(), threading.Event()

    def bench(name, script, clients, r):
        try:
            out[name] = pgbench(db, script, clients, secs, sync="off", rate=r)
        except Exception as e:
            out[name + "_error"] = str(e)

    tl = threading.Thread(target=listen_for_seqs, daemon=True,
                          args=(db, ["event_bus.w", "event_bus.probe"], "event_bus.probe", notes, start_evt, stop))
    tl.start()
    start_evt.wait(10)
    time.sleep(0.5)
    tp = threading.Thread(target=bench, args=("producers", prod, 4, rate))
    tc = threading.Thread(target=bench, args=("consumers", cons, 2, crate))
    probe_evt = threading.Event()
    probe_evt.set()
    tq = threading.Thread(target=producer, args=(db, "p", int(PROBE_RATE * (secs - 2)), PROBE_RATE,
                                                 commit_times, probe_evt))
    la = loadavg()
    r0, n0 = worker_counters(db)
    cpu0, t0 = proc_cpu(wpid), time.time()
    tp.start()
    tc.start()
    time.sleep(1)
    tq.start()
    tp.join()
    tc.join()
    cpu1, t1 = proc_cpu(wpid), time.time()
    r1, n1 = worker_counters(db)
    tq.join()
    time.sleep(0.5)
    stop.set()
    tl.join(5)
    for k in ("producers_error", "consumers_error"):
        if k in out:
            raise RuntimeError(out[k])
    notes.sort()
    lat = []
    # The probe topic has nothing else, so the first notification whose seq
    # reaches a probe's was sent after that probe committed; it can arrive
    # before the producer process noted the time its COMMIT returned (0 then).
    for s, t in sorted(commit_times.items()):
        for tn, top in notes:
            if top >= s:
                lat.append(max(0.0, tn - t) * 1000)
                break
    el = t1 - t0
    return dict(rate=rate, producers_tps=out["producers"][0], claim_rate=crate, consumers_tps=out["consumers"][0],
                seconds=el, worker_cpu=(cpu1 - cpu0) / el if (cpu0 is not None and cpu1 is not None) else None,
                rounds_per_s=(r1 - r0) / el, notifications_per_s=(n1 - n0) / el,
                probes=len(commit_times), lat_ms=lat, load=la, load_end=loadavg())


def run_worker_phase(results):
    db = "bench_worker"
    res = []
    for rate in [int(x) for x in ARGS.worker_rates.split(",") if x]:
        c, cur = create_bus_db(db)
        cur.execute("SELECT event_bus.create_topic('w', 8), event_bus.create_topic('p', 1)")
        cur.execute("SELECT event_bus.subscribe('w', ARRAY['w']), event_bus.subscribe('probe', ARRAY['p'])")
        cur.execute("SELECT * FROM event_bus.run_maintenance()")
        c.close()
        log("worker phase: %d ev/s for %d s, one LISTENing session, consumers keeping up ..."
            % (rate, ARGS.worker_seconds))
        d = one_rate(db, rate, ARGS.worker_seconds)
        log("  achieved %.0f ev/s; worker CPU %.1f%% of one CPU, %.0f rounds/s; LISTEN latency median %.2f ms, "
            "p99 %.2f ms (%d probes); load %.2f" % (d["producers_tps"], 100 * (d["worker_cpu"] or 0),
                                                   d["rounds_per_s"], pct(d["lat_ms"], 50), pct(d["lat_ms"], 99),
                                                   len(d["lat_ms"]), d["load"]))
        res.append(d)
        q("postgres", "DROP DATABASE %s" % db)
    results["worker"] = res
