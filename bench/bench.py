#!/usr/bin/python3
"""event_bus benchmark (issue #5): the measuring half of bench/run.sh.

run.sh installs what is missing, starts a throwaway cluster (Unix socket
only) and runs this script as the unprivileged cluster user.  Everything is
measured side by side on that one cluster, with the same ~300-byte JSON
payload:

  emit     pgbench -M prepared, one event per transaction, 1 and 8 clients,
           synchronous_commit off and on: event_bus.emit() vs a plain INSERT
           into a bigserial table vs PgQ's pgq.insert_event(); bulk
           emit_many(1000) vs INSERT ... SELECT FROM unnest() vs PgQ.
  fan-out  emit with 1, 10 and 50 subscriptions on the topic.
  consume  1,000,000 events pre-loaded, drained with claim() + ack() by 1, 4
           and 8 consumers (batch 100) and 1 consumer (batch 500); PgQ drained
           with next_batch / get_batch_events / finish_batch.
  latency  emit commit -> woken claim(wait) return, and emit commit -> LISTEN
           notification from the worker, at a moderate rate.
  soak     steady emit + consume at a fixed rate with small log partitions
           and retention 0, sampling the size of every event_bus table.

Each emit-side measurement is repeated (--reps) with the order shuffled in
every round, and the median is reported.  The report goes to
<out>/report.md; plots (gnuplot) to <out>/*.png; raw data to <out>/raw/.
Progress goes to stderr.
"""
import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import select
import statistics
import subprocess
import sys
import threading
import time

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from common import ARGS, T_START, log, loadavg, other_postgres_processes, q
from phase_capture import run_capture_phase
from phase_consume import run_consume_phase
from phase_emit import run_emit_phase
from phase_latency import run_latency_phase
from phase_soak import run_soak_phase
from phase_status import run_status_phase
from phase_worker import run_worker_phase
from phase_memory import run_memory_phase
from phase_profile import run_profile_phase
from report import build_report, make_plots


def machine_info():
    info = {}
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["nproc"] = os.cpu_count()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = cpu
    with open("/proc/meminfo") as f:
        kbm = int(f.readline().split()[1])
    info["mem"] = "%.1f GiB" % (kbm / 1024 / 1024)
    info["kernel"] = platform.release()
    r = q("postgres", "SELECT version(), current_setting('shared_buffers'), current_setting('max_wal_size')", one=True)
    info["pg"], info["shared_buffers"], info["max_wal_size"] = r[0].split(" on ")[0], r[1], r[2]
    r = q("postgres", "SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'pgq'), "
          "(SELECT default_version FROM pg_available_extensions WHERE name = 'event_bus')", one=True)
    info["pgq"] = "pgq %s (Debian postgresql-15-pgq3)" % r[0]
    info["eb_version"] = r[1]
    info["commit"] = ARGS.commit or "?"
    info["dirty"] = ", with uncommitted changes" if ARGS.dirty else ""
    info["installed"] = ARGS.installed
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report-only", metavar="DIR",
                    help="rebuild report.md and the plots in DIR from DIR/raw/results.json and info.json")
    ap.add_argument("--host")
    ap.add_argument("--port")
    ap.add_argument("--datadir")
    ap.add_argument("--out")
    ap.add_argument("--work")
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bulk-clients", type=int, default=8)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--latency-samples", type=int, default=1000)
    ap.add_argument("--latency-rate", type=int, default=200)
    ap.add_argument("--latency-consumers", type=int, default=1)
    ap.add_argument("--soak-minutes", type=float, default=2)
    ap.add_argument("--soak-rate", type=int, default=2000)
    ap.add_argument("--soak-partition-size", type=int, default=50000)
    ap.add_argument("--soak-sample", type=int, default=10)
    ap.add_argument("--phases", default="emit,consume,capture,latency,worker,soak,status")
    ap.add_argument("--capture-rows", type=int, default=100000)
    ap.add_argument("--worker-rates", default="200,2000,10000")
    ap.add_argument("--worker-seconds", type=int, default=30)
    ap.add_argument("--memory-minutes", type=float, default=10)
    ap.add_argument("--memory-sample", type=int, default=30)
    ap.add_argument("--status-events", type=int, default=10000000)
    ap.add_argument("--argv", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--dirty", action="store_true")
    ap.add_argument("--installed", default="")
    vars(ARGS).update(vars(ap.parse_args()))
    if ARGS.report_only:
        out = ARGS.report_only
        with open(os.path.join(out, "raw", "info.json")) as f:
            info = json.load(f)
        with open(os.path.join(out, "raw", "results.json")) as f:
            results = json.load(f)
        for k, v in info.pop("args").items():
            setattr(ARGS, k, v)
        ARGS.out = out
        write_report(results, info)
        return
    if not all((ARGS.host, ARGS.port, ARGS.datadir, ARGS.out, ARGS.work)):
        ap.error("--host, --port, --datadir, --out and --work are required")
    ARGS.events = max(1000, ARGS.events // 1000 * 1000)
    os.makedirs(os.path.join(ARGS.out, "raw"), exist_ok=True)
    phases = ARGS.phases.split(",")

    info = machine_info()
    info["argv"] = ARGS.argv
    info["load_start"] = loadavg()
    info["others_start"] = other_postgres_processes()
    log("%s, %s CPUs, %s; load average %.2f, %d other postgres processes on the machine"
        % (info["pg"], info["nproc"], info["mem"], info["load_start"], info["others_start"]))
    results = {}
    loads = [info["load_start"]]
    stop = threading.Event()

    def watch_load():
        while not stop.wait(5):
            loads.append(loadavg())
    threading.Thread(target=watch_load, daemon=True).start()

    try:
        if "emit" in phases:
            run_emit_phase(results)
        if "consume" in phases:
            run_consume_phase(results)
        if "capture" in phases:
            run_capture_phase(results)
        if "latency" in phases:
            run_latency_phase(results)
        if "worker" in phases:
            run_worker_phase(results)
        if "soak" in phases:
            run_soak_phase(results)
        if "status" in phases:
            run_status_phase(results)
        if "memory" in phases:
            run_memory_phase(results)
        if "profile" in phases:
            run_profile_phase(results)
    finally:
        stop.set()
        with open(os.path.join(ARGS.out, "raw", "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    info["load_end"] = loadavg()
    info["load_max"] = max(loads + [info["load_end"]])
    info["others_end"] = other_postgres_processes()
    info["args"] = {k: v for k, v in vars(ARGS).items() if k not in ("report_only",)}
    with open(os.path.join(ARGS.out, "raw", "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    write_report(results, info)
    log("done in %.1f min" % ((time.time() - T_START) / 60))


def write_report(results, info):
    make_plots(results)
    report, summary = build_report(results, info)
    with open(os.path.join(ARGS.out, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(ARGS.out, "raw", "summary.md"), "w") as f:
        f.write("\n".join(summary[2:]) + "\n")


if __name__ == "__main__":
    main()
