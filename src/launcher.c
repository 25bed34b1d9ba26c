/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one per-database worker for each database that has
 *	  event_bus.
 *
 * With shared_preload_libraries = 'event_bus' the postmaster starts one
 * launcher (a static background worker connected to no database).  Every
 * second, or at once when CREATE EXTENSION event_bus commits somewhere, it
 * lists the databases that accept connections and starts a dynamic worker
 * (worker.c) for each one it does not yet watch.  A worker whose database
 * has no event_bus exits at once and says so in its shared slot; the
 * launcher then leaves that database alone until the next CREATE
 * EXTENSION.  A worker that exits for any other reason (crash, SIGTERM,
 * error) is started again a second later.  A launcher that restarts adopts
 * the workers still running: never two workers for one database.
 *
 * eb_pause_worker() stops a database's worker for a while, for commands
 * that need the database to themselves (hook.c).
 *
 * Locking: EventBusShared.lock protects the workers[] slots.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_bus.h"
#include "horizon.h"
#include "shmem.h"
#include "worker.h"

/* Launcher-local view of one database. */
typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	bool		absent;			/* no event_bus there, as of its last worker */
	bool		seen;			/* still in pg_database */
	TimestampTz next_start;
} LauncherDb;

/* Register the launcher; called from _PG_init while preloading. */
void
eb_launcher_init(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "event_bus");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "eb_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "event_bus launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "event_bus launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * Stop the worker of a database and keep it stopped for 'seconds', so that
 * a command needing the database to itself can run.  Waits up to 5 seconds
 * for the worker to exit.
 */
void
eb_pause_worker(Oid dboid, int seconds)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);

	for (;;)
	{
		EventBusWorker *w;
		pid_t		pid = 0;
		pid_t		retention_pid = 0;
		bool		active = false;

		LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
		w = eb_find_worker(dboid);
		if (w != NULL)
		{
			w->pause_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), seconds * 1000);
			pid = w->pid;
			retention_pid = w->retention_pid;
			active = (w->state == EBW_STARTING || w->state == EBW_RUNNING || retention_pid != 0);
		}
		LWLockRelease(eb_shared->lock);

		if (!active || GetCurrentTimestamp() >= deadline)
			break;
		if (pid != 0)
			kill(pid, SIGTERM);
		if (retention_pid != 0)
			kill(retention_pid, SIGTERM);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Let the worker of a database paused by eb_pause_worker() start again at
 * once (the command that needed the database to itself has ended).
 */
void
eb_resume_worker(Oid dboid)
{
	EventBusWorker *w;
	int			procno;

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	w = eb_find_worker(dboid);
	if (w != NULL)
		w->pause_until = 0;
	procno = eb_shared->launcher_procno;
	LWLockRelease(eb_shared->lock);
	if (procno >= 0)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/*---------------------------------------------------------------------------
 * Launcher
 *---------------------------------------------------------------------------
 */

static void
eb_launcher_exit(int code, Datum arg)
{
	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	eb_shared->launcher_pid = 0;
	eb_shared->launcher_procno = -1;
	LWLockRelease(eb_shared->lock);
}

/*
 * Register a dynamic background process of ours that connects to a
 * database, runs 'function' and is not restarted; this process is told when
 * it stops.  The handle is allocated in the current memory context.
 */
bool
eb_register_database_process(const char *function, const char *type, Oid dboid,
							 BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "event_bus");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s for database %u", type, dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * Give back the worker slots of databases that were dropped (no longer in
 * 'current'), once nothing of theirs runs: slots are otherwise kept for
 * good, and a server that saw event_bus.max_databases databases come and go
 * would start no worker for the next one.
 */
static void
eb_free_dropped_slots(List *current)
{
	int			i;

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < eb_shared->max_databases; i++)
	{
		EventBusWorker *w = &eb_shared->workers[i];

		if (w->state != EBW_FREE && w->state != EBW_STARTING && !eb_worker_alive(w) &&
			w->retention_pid == 0 && !list_member_oid(current, w->dboid))
			memset(w, 0, sizeof(EventBusWorker));
	}
	LWLockRelease(eb_shared->lock);
}

/*
 * Start a worker for a database; false if no background worker slot.  True
 * (with the next attempt a second away) when every slot is taken only for a
 * moment.
 */
static bool
eb_start_worker(LauncherDb *ldb)
{
	EventBusWorker *w;
	int			i;

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	w = eb_find_worker(ldb->dboid);
	for (i = 0; w == NULL && i < eb_shared->max_databases; i++)
		if (eb_shared->workers[i].state == EBW_FREE)
			w = &eb_shared->workers[i];
	/* None free: the slot of a database found without event_bus will do. */
	for (i = 0; w == NULL && i < eb_shared->max_databases; i++)
		if (eb_shared->workers[i].state == EBW_NO_EXTENSION && !eb_worker_alive(&eb_shared->workers[i]))
			w = &eb_shared->workers[i];
	if (w == NULL)
	{
		bool		all_running = true;

		/*
		 * Every slot serves a database that uses event_bus: too many of them.
		 * Otherwise a slot frees up soon (a worker finding no event_bus
		 * exits at once): try again in a second.
		 */
		for (i = 0; i < eb_shared->max_databases; i++)
			if (eb_shared->workers[i].state != EBW_RUNNING)
				all_running = false;
		LWLockRelease(eb_shared->lock);
		if (!all_running)
		{
			ldb->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
			return true;
		}
		ereport(WARNING,
				(errmsg("event_bus: no worker slot for database %u", ldb->dboid),
				 errdetail("All %d worker slots serve databases that use event_bus.", eb_shared->max_databases),
				 errhint("Raise event_bus.max_databases and restart the server.")));
		return false;
	}
	if (w->dboid == ldb->dboid && eb_worker_alive(w))
	{
		/* Started by a previous launcher and still running: adopt it. */
		LWLockRelease(eb_shared->lock);
		return true;
	}
	if (w->dboid != ldb->dboid)
	{
		memset(w, 0, sizeof(EventBusWorker));
		w->dboid = ldb->dboid;
	}
	w->state = EBW_STARTING;
	w->pid = 0;
	LWLockRelease(eb_shared->lock);

	if (!eb_register_database_process("eb_worker_main", "event_bus worker", ldb->dboid, &ldb->handle))
	{
		ldb->handle = NULL;
		LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
		w->state = EBW_STOPPED;
		LWLockRelease(eb_shared->lock);
		ereport(WARNING,
				(errmsg("event_bus: could not start a worker for database %u", ldb->dboid),
				 errhint("Raise max_worker_processes: event_bus needs one per database using it, plus its launcher.")));
		return false;
	}
	return true;
}

/*
 * Stop a worker started by a previous launcher (no handle to terminate it
 * with): SIGTERM, as TerminateBackgroundWorker would send.
 */
static void
eb_stop_adopted(Oid dboid)
{
	EventBusWorker *w;
	pid_t		pid = 0;

	LWLockAcquire(eb_shared->lock, LW_SHARED);
	w = eb_find_worker(dboid);
	if (w != NULL && eb_worker_alive(w))
		pid = w->pid;
	LWLockRelease(eb_shared->lock);
	if (pid != 0)
		kill(pid, SIGTERM);
}

/* The OIDs of the databases that accept connections, in the caller's context. */
static List *
eb_list_databases(void)
{
	List	   *result = NIL;
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database pgdb = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!pgdb->datallowconn || pgdb->datistemplate)
			continue;
		old = MemoryContextSwitchTo(caller);
		result = lappend_oid(result, pgdb->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return result;
}

/*
 * One pass of the launcher: start workers where needed, notice workers that
 * stopped, forget dropped databases.  Returns how long to sleep (ms).
 */
static long
eb_launcher_pass(List **dbs)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = 1000;
	List	   *current;
	ListCell   *lc;
	bool		rescan;

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	rescan = eb_shared->rescan;
	eb_shared->rescan = false;
	LWLockRelease(eb_shared->lock);

	foreach(lc, *dbs)
	{
		LauncherDb *ldb = lfirst(lc);

		ldb->seen = false;
		if (rescan)
			ldb->absent = false;
	}

	current = eb_list_databases();
	eb_free_dropped_slots(current);
	foreach(lc, current)
	{
		Oid			dboid = lfirst_oid(lc);
		LauncherDb *ldb = NULL;
		ListCell   *lc2;
		TimestampTz pause_until = 0;
		EventBusWorker *w;
		bool		adopted;

		foreach(lc2, *dbs)
		{
			if (((LauncherDb *) lfirst(lc2))->dboid == dboid)
			{
				ldb = lfirst(lc2);
				break;
			}
		}
		if (ldb == NULL)
		{
			ldb = palloc0(sizeof(LauncherDb));
			ldb->dboid = dboid;
			*dbs = lappend(*dbs, ldb);
		}
		ldb->seen = true;

		if (ldb->handle != NULL)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(ldb->handle, &pid) != BGWH_STOPPED)
				continue;
			pfree(ldb->handle);
			ldb->handle = NULL;
			LWLockAcquire(eb_shared->lock, LW_SHARED);
			w = eb_find_worker(dboid);
			ldb->absent = (w != NULL && w->state == EBW_NO_EXTENSION);
			LWLockRelease(eb_shared->lock);
			/* A worker that stopped for another reason comes back in a second. */
			ldb->next_start = TimestampTzPlusMilliseconds(now, 1000);
		}

		LWLockAcquire(eb_shared->lock, LW_SHARED);
		w = eb_find_worker(dboid);
		if (w != NULL)
			pause_until = w->pause_until;
		adopted = (ldb->handle == NULL && w != NULL && eb_worker_alive(w));
		LWLockRelease(eb_shared->lock);

		/*
		 * A worker a previous launcher started (this launcher was restarted)
		 * runs on: there is never more than one per database.
		 */
		if (adopted)
		{
			if (!eb_worker_enabled)
				eb_stop_adopted(dboid);
			continue;
		}
		if (ldb->absent || !eb_worker_enabled)
			continue;
		if (now < ldb->next_start || now < pause_until)
			continue;
		if (!eb_start_worker(ldb))
			ldb->next_start = TimestampTzPlusMilliseconds(now, 10000);
	}
	list_free(current);

	/* Databases that are gone, and workers to stop when disabled. */
	foreach(lc, *dbs)
	{
		LauncherDb *ldb = lfirst(lc);

		if (ldb->handle != NULL && (!ldb->seen || !eb_worker_enabled))
			TerminateBackgroundWorker(ldb->handle);
		else if (ldb->handle == NULL && !ldb->seen)
			eb_stop_adopted(ldb->dboid);
		if (!ldb->seen && ldb->handle == NULL)
		{
			EventBusWorker *w;

			LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
			w = eb_find_worker(ldb->dboid);
			if (w != NULL && w->pid == 0)
				memset(w, 0, sizeof(EventBusWorker));
			LWLockRelease(eb_shared->lock);
			*dbs = foreach_delete_current(*dbs, lc);
			pfree(ldb);
		}
	}
	return sleep_ms;
}

void
eb_launcher_main(Datum arg)
{
	List	   *dbs = NIL;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	eb_shared->launcher_pid = MyProcPid;
	eb_shared->launcher_procno = MyProc->pgprocno;
	LWLockRelease(eb_shared->lock);
	before_shmem_exit(eb_launcher_exit, (Datum) 0);

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		sleep_ms = eb_launcher_pass(&dbs);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}


PG_FUNCTION_INFO_V1(eb_launcher_rescan);

/*
 * event_bus._launcher_rescan(): once this transaction commits, have the
 * launcher look again at every database (called by CREATE EXTENSION).
 */
Datum
eb_launcher_rescan(PG_FUNCTION_ARGS)
{
	eb_require_preload();
	eb_wake_launcher_at_commit();
	PG_RETURN_VOID();
}
