"""Memory phase: the shared memory event_bus allocates (pg_shmem_allocations)
and the resident memory of its workers, with 32 databases using the
extension and 100 client connections emitting and consuming, sampled over a
soak (issue 10: flat over 10 minutes)."""
import random
import threading
import time

from common import *  # noqa: F401,F403
from phase_soak import levels_off

N_DATABASES = 32
N_CONNECTIONS = 100


def proc_mem(pid):
    """(VmRSS, RssAnon) of a process in bytes, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            v = dict(line.split(":", 1) for line in f if ":" in line)
        kb = lambda k: int(v[k].split()[0]) * 1024 if k in v else None  # noqa: E731
        return kb("VmRSS"), kb("RssAnon")
    except (OSError, ValueError):
        return None


def run_memory_phase(results):
    secs = int(ARGS.memory_minutes * 60)
    if secs <= 0:
        return
    dbs = ["bench_mem_%02d" % i for i in range(N_DATABASES)]
    for db in dbs:
        c, cur = create_bus_db(db)
        cur.execute("SELECT event_bus.create_topic('mem', 4)")
        cur.execute("SELECT event_bus.subscribe('mem', ARRAY['mem'])")
        cur.execute("SELECT * FROM event_bus.run_maintenance()")
        c.close()
    # Every database's worker runs.
    workers = {}
    for _ in range(100):
        rows = q(dbs[0], "SELECT datname, pid FROM event_bus.worker_status WHERE state = 'running' "
                         "AND datname LIKE 'bench_mem_%'", all_=True)
        workers = {d: p for d, p in rows}
        if len(workers) == N_DATABASES:
            break
        time.sleep(0.2)
    log("memory phase: %d databases (%d workers running), %d connections emitting and consuming, %d s"
        % (N_DATABASES, len(workers), N_CONNECTIONS, secs))

    stop = threading.Event()
    ops = [0] * N_CONNECTIONS
    errors = []

    def client(i):
        db = dbs[i % N_DATABASES]
        rnd = random.Random(i)
        try:
            c = connect(db)
            cur = c.cursor()
            while not stop.is_set():
                cur.execute("SELECT event_bus.emit('mem', 'Tick', %s, key => %s)", (PAYLOAD, "k%d" % rnd.randint(1, 50)))
                if i % 2 == 0:
                    cur.execute("SELECT coalesce(array_agg(seq), '{}') FROM event_bus.claim('mem', 20)")
                    seqs = cur.fetchone()[0]
                    if seqs:
                        cur.execute("SELECT event_bus.ack('mem', %s::bigint[])", (seqs,))
                ops[i] += 1
                stop.wait(0.1)       # about 10 emits a second per connection
            c.close()
        except Exception as e:
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(N_CONNECTIONS)]
    for t in threads:
        t.start()
    samples = []
    t0 = time.time()
    while True:
        el = time.time() - t0
        r = q("postgres", "SELECT coalesce(sum(size), 0), coalesce(sum(allocated_size), 0), count(*) "
                          "FROM pg_shmem_allocations WHERE name LIKE 'event_bus%%'", one=True)
        mem = [proc_mem(p) for p in workers.values()]
        mem = [m for m in mem if m]
        nconn = q("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'bench_mem_%%' "
                              "AND backend_type = 'client backend'", one=True)[0]
        d = dict(t=el, shmem=int(r[0]), shmem_allocated=int(r[1]), shmem_entries=int(r[2]),
                 worker_rss_max=max(m[0] for m in mem) if mem else None,
                 worker_rss_sum=sum(m[0] for m in mem) if mem else None,
                 worker_anon_max=max(m[1] for m in mem) if mem else None,
                 worker_anon_sum=sum(m[1] for m in mem) if mem else None,
                 workers=len(mem), connections=int(nconn), ops=sum(ops), load=loadavg())
        samples.append(d)
        log("  t=%4.0f s  event_bus shared memory %d kB in %d allocations; %d workers: RSS max %d kB, "
            "private (RssAnon) max %d kB, sum %d kB; %d client connections, %d operations"
            % (el, d["shmem"] // 1024, d["shmem_entries"], d["workers"], (d["worker_rss_max"] or 0) // 1024,
               (d["worker_anon_max"] or 0) // 1024, (d["worker_anon_sum"] or 0) // 1024, d["connections"],
               d["ops"]))
        if el >= secs:
            break
        time.sleep(min(ARGS.memory_sample, max(0.0, secs - el)))
    stop.set()
    for t in threads:
        t.join(10)
    if errors:
        raise RuntimeError("memory phase client: %s" % errors[0])
    results["memory"] = dict(samples=samples, seconds=secs, databases=N_DATABASES, connections=N_CONNECTIONS,
                             flat_anon=levels_off([s["worker_anon_max"] for s in samples]),
                             flat_anon_sum=levels_off([s["worker_anon_sum"] for s in samples]),
                             flat_shmem=levels_off([s["shmem"] for s in samples]))
    for db in dbs:
        q("postgres", "DROP DATABASE %s WITH (FORCE)" % db)
