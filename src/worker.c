/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The launcher and the per-database workers.
 *
 * With shared_preload_libraries = 'event_bus' the postmaster starts one
 * launcher (a static background worker connected to no database).  Every
 * second, or at once when CREATE EXTENSION event_bus commits somewhere, it
 * lists the databases that accept connections and starts a dynamic worker
 * for each one it does not yet watch.  A worker whose database has no
 * event_bus exits at once and says so in its shared slot; the launcher then
 * leaves that database alone until the next CREATE EXTENSION.  A worker that
 * exits for any other reason (crash, SIGTERM, error) is started again a
 * second later.
 *
 * A worker sleeps on its latch.  Emitting transactions set it when they end
 * (horizon.c) if a session of the database has LISTENed on an event_bus
 * channel (the utility hook notes it), so a round follows every burst of
 * commits while somebody may want its NOTIFYs; ack, fail and the like set it
 * when they change what the worker plans.  Otherwise it wakes after
 * event_bus.naptime, or sooner when a retry becomes due or a lease expires.
 * A round, in one transaction:
 *	- event_bus._dispatch(): one coalesced NOTIFY per subscription with new
 *	  claimable events (channel "event_bus.<subscription>"), one on
 *	  "event_bus.dead_letters" per subscription with new dead letters, and a
 *	  wake-up of claim(wait) sleepers when retries become due;
 *	- at most every naptime, event_bus.run_maintenance(): expired leases to
 *	  retries or dead letters, log partitions ahead;
 *	- every 10 seconds, event_bus._retention(): drop log partitions every
 *	  subscription has passed once event_bus.retention has elapsed.
 * An error in a round is logged and recorded in the worker's slot; the
 * worker goes on with the next round.
 *
 * DROP DATABASE (and CREATE DATABASE ... TEMPLATE, ALTER DATABASE RENAME or
 * SET TABLESPACE) cannot run while our worker is connected: a utility hook
 * stops the worker of that database first and keeps the launcher from
 * starting it again for a few seconds.
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
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "event_bus.h"

/* How long a stopped worker's database is left alone (DROP DATABASE etc.). */
#define EB_PAUSE_SECONDS		10
/* How often the worker looks for log partitions to drop. */
#define EB_RETENTION_EVERY_MS	10000

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Launcher-local view of one database. */
typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	bool		absent;			/* no event_bus there, as of its last worker */
	bool		seen;			/* still in pg_database */
	TimestampTz next_start;
} LauncherDb;

static void eb_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
							  bool readOnlyTree, ProcessUtilityContext context,
							  ParamListInfo params, QueryEnvironment *queryEnv,
							  DestReceiver *dest, QueryCompletion *qc);

/*
 * Register the launcher and the utility hook; called from _PG_init while
 * preloading.
 */
void
eb_worker_init(void)
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

	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = eb_ProcessUtility;
}

/* The worker slot of a database, or NULL.  Caller holds eb_shared->lock. */
EventBusWorker *
eb_find_worker(Oid dboid)
{
	int			i;

	for (i = 0; i < eb_shared->max_databases; i++)
		if (eb_shared->workers[i].state != EBW_FREE && eb_shared->workers[i].dboid == dboid)
			return &eb_shared->workers[i];
	return NULL;
}

/*
 * Is the worker recorded in a slot still running?  Its PGPROC still carries
 * its pid while it lives.  Caller holds eb_shared->lock.
 */
static bool
eb_worker_alive(EventBusWorker *w)
{
	return w->pid != 0 && w->procno >= 0 &&
		ProcGlobal->allProcs[w->procno].pid == w->pid;
}

/*
 * Wake who waits for claimable events in this database: the claim(wait)
 * sleepers whose subscriptions read one of the given topics (bits from
 * eb_topic_bit; all ones for everybody), and the database's worker - if
 * 'worker' says it has work to plan (a retry, a lease), or if a session of
 * the database has LISTENed on an event_bus channel and may want a NOTIFY.
 * Otherwise the worker's timers do: nobody needs a round per commit.  The
 * generation is bumped first: a sleeper that publishes its topics after
 * the scan below sees the new generation and does not sleep.
 */
void
eb_wake_database(EventBusDb *db, uint64 topics, bool worker)
{
	uint32		procno = pg_atomic_read_u32(&db->worker_procno);
	int			i;

	if (worker)
		pg_atomic_write_u32(&db->replan, 1);
	pg_atomic_fetch_add_u64(&db->wake_gen, 1);
	pg_memory_barrier();
	for (i = 0; i < eb_shared->nslots; i++)
	{
		EventBusSlot *slot = &eb_shared->slots[i];

		if (slot->dboid != db->dboid)
			continue;
		if ((pg_atomic_read_u64(&slot->wait_mask) & topics) != 0)
			SetLatch(&ProcGlobal->allProcs[i].procLatch);
		if (pg_atomic_read_u32(&slot->listening) != 0)
			worker = true;
	}
	if (worker && procno != 0 && (MyProc == NULL || (int) procno - 1 != MyProc->pgprocno))
		SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
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
static void
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

/* Whether the current user owns a database, or may use it as a template. */
static bool
eb_may_copy_database(Oid dboid)
{
	HeapTuple	tup;
	bool		istemplate;

	if (pg_database_ownercheck(dboid, GetUserId()))
		return true;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tup))
		return false;
	istemplate = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
	ReleaseSysCache(tup);
	return istemplate;
}

/*
 * The database a utility statement needs for itself, if any: DROP
 * DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME and
 * ... SET TABLESPACE refuse to run while another session (our worker) is
 * connected to it.  Only statements that would pass Postgres's own checks
 * count - the caller owns the database (or may copy it), has CREATEDB where
 * the command needs it, and runs it where a transaction block is not
 * refused - so that nobody can stop a worker with a command that is going
 * to fail anyway.
 */
static Oid
eb_database_needing_exclusivity(Node *parsetree, ProcessUtilityContext context)
{
	bool		may_run = (context == PROCESS_UTILITY_TOPLEVEL && !IsTransactionBlock());
	ListCell   *lc;
	Oid			dboid;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			dboid = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);
			if (may_run && OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
				return dboid;
			return InvalidOid;
		case T_CreatedbStmt:
			if (!may_run || !have_createdb_privilege())
				return InvalidOid;
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "template") == 0 && def->arg != NULL)
				{
					dboid = get_database_oid(defGetString(def), true);
					if (OidIsValid(dboid) && eb_may_copy_database(dboid))
						return dboid;
				}
			}
			return InvalidOid;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType != OBJECT_DATABASE || !have_createdb_privilege())
				return InvalidOid;
			dboid = get_database_oid(((RenameStmt *) parsetree)->subname, true);
			if (OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
				return dboid;
			return InvalidOid;
		case T_AlterDatabaseStmt:
			if (!may_run)
				return InvalidOid;
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "tablespace") == 0)
				{
					dboid = get_database_oid(((AlterDatabaseStmt *) parsetree)->dbname, true);
					if (OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
						return dboid;
				}
			}
			return InvalidOid;
		default:
			return InvalidOid;
	}
}

/*
 * Stop a database's worker for as long as a command that needs the
 * database to itself runs (at most EB_PAUSE_SECONDS, should this backend
 * die meanwhile).
 */
static void
eb_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				  bool readOnlyTree, ProcessUtilityContext context,
				  ParamListInfo params, QueryEnvironment *queryEnv,
				  DestReceiver *dest, QueryCompletion *qc)
{
	Oid			dboid = InvalidOid;

	if (eb_shared != NULL)
		dboid = eb_database_needing_exclusivity(pstmt->utilityStmt, context);
	if (OidIsValid(dboid))
		eb_pause_worker(dboid, EB_PAUSE_SECONDS);

	/* A LISTEN for our NOTIFYs: emitting commits must wake the worker. */
	if (eb_shared != NULL && IsA(pstmt->utilityStmt, ListenStmt) &&
		strncmp(((ListenStmt *) pstmt->utilityStmt)->conditionname, "event_bus.", 10) == 0)
		eb_note_listen();

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (OidIsValid(dboid))
			eb_resume_worker(dboid);
	}
	PG_END_TRY();
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

/* Start a worker for a database; false if no background worker slot. */
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
	if (w == NULL)
	{
		LWLockRelease(eb_shared->lock);
		ereport(WARNING,
				(errmsg("event_bus: no worker slot for database %u", ldb->dboid),
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

/*
 * Have the launcher look again at every database: called at commit of a
 * transaction that ran CREATE EXTENSION event_bus (horizon.c).
 */
void
eb_wake_launcher(void)
{
	int			procno;

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	eb_shared->rescan = true;
	procno = eb_shared->launcher_procno;
	LWLockRelease(eb_shared->lock);
	if (procno >= 0)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
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

/*---------------------------------------------------------------------------
 * Worker
 *---------------------------------------------------------------------------
 */

static EventBusWorker *my_worker = NULL;
static EventBusDb *my_worker_db = NULL;

static void
eb_worker_exit(int code, Datum arg)
{
	if (my_worker_db != NULL)
		pg_atomic_write_u32(&my_worker_db->worker_procno, 0);
	if (my_worker != NULL)
	{
		LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
		if (my_worker->pid == MyProcPid)
		{
			my_worker->pid = 0;
			if (my_worker->state == EBW_RUNNING || my_worker->state == EBW_STARTING)
				my_worker->state = EBW_STOPPED;
		}
		LWLockRelease(eb_shared->lock);
	}
}

static void
eb_worker_set_state(EventBusWorkerState state)
{
	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	my_worker->state = state;
	LWLockRelease(eb_shared->lock);
}

/* Is event_bus installed in this database?  Inside a transaction. */
static bool
eb_extension_present(void)
{
	Oid			nsp = get_namespace_oid(EB_SCHEMA, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid(EB_SEQUENCE, nsp));
}

/* The parts of a round; each runs in its own transaction. */
typedef enum WorkerPart
{
	PART_DISPATCH = 0,
	PART_MAINTENANCE,
	PART_RETENTION,
	NUM_PARTS
} WorkerPart;

static const char *const part_names[NUM_PARTS] = {"dispatch", "maintenance", "retention"};

/* Longest back-off after repeated failures of a part. */
#define EB_MAX_BACKOFF_MS	60000

/* Worker state carried from round to round. */
typedef struct WorkerRound
{
	int64		horizon;		/* highest seq already dispatched, -1: none yet */
	Datum		state;			/* jsonb state of _dispatch, or 0 */
	TimestampTz next_maintenance;
	TimestampTz next_retention;
	TimestampTz next_due;		/* earliest retry due / lease expiry, or 0 */
	TimestampTz last_round_start;
	int			failures[NUM_PARTS];	/* consecutive failures of each part */
	TimestampTz retry_at[NUM_PARTS];	/* a failed part waits until then */
	bool		gone;			/* the extension was dropped */
	BackgroundWorkerHandle *retention_handle;	/* the last retention process */
	uint64		notified;		/* notifications sent this round */
} WorkerRound;

static Datum
eb_spi_value(int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, isnull);
}

/* When the worker must look again: the next retry due or lease expiry. */
static void
eb_read_next_due(WorkerRound *r)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT event_bus._next_due()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: _next_due() failed");
	d = eb_spi_value(1, &isnull);
	r->next_due = isnull ? 0 : DatumGetTimestampTz(d);
}

/* Dispatch: notify listeners and wake waiters; also learn the next due time. */
static void
eb_part_dispatch(WorkerRound *r, MemoryContext keep)
{
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	Oid			argtypes[2] = {INT8OID, JSONBOID};
	bool		isnull;

	args[0] = Int64GetDatum(r->horizon);
	nulls[0] = r->horizon < 0 ? 'n' : ' ';
	args[1] = r->state;
	nulls[1] = r->state == (Datum) 0 ? 'n' : ' ';
	if (SPI_execute_with_args("SELECT horizon, state, notified FROM event_bus._dispatch($1, $2)",
							  2, argtypes, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: _dispatch() failed");
	r->horizon = DatumGetInt64(eb_spi_value(1, &isnull));
	{
		Datum		st = eb_spi_value(2, &isnull);
		MemoryContext old = MemoryContextSwitchTo(keep);

		if (r->state != (Datum) 0)
			pfree(DatumGetPointer(r->state));
		r->state = isnull ? (Datum) 0 : datumCopy(st, false, -1);
		MemoryContextSwitchTo(old);
	}
	r->notified = (uint64) DatumGetInt32(eb_spi_value(3, &isnull));

	/*
	 * The next due time changes when retries or leases do.  Commits that
	 * change them through fail, ack, expiry and the like set replan; leases
	 * that claims take are seen by the next maintenance round.  Listeners
	 * make rounds frequent: reading it every round was a tenth of their cost.
	 */
	if (pg_atomic_exchange_u32(&my_worker_db->replan, 0) != 0)
		eb_read_next_due(r);
}

static void
eb_part_maintenance(WorkerRound *r, MemoryContext keep)
{
	if (SPI_execute("SELECT * FROM event_bus.run_maintenance()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: run_maintenance() failed");
	eb_read_next_due(r);
}

/*
 * Retention: if a log partition may go, start the retention process
 * (retention.c), which detaches and drops it without stalling anybody.
 */
static void
eb_part_retention(WorkerRound *r, MemoryContext keep)
{
	bool		isnull;

	/* A database still on the 1.0 install script has the 1.0 job only. */
	if (SPI_execute("SELECT pg_catalog.to_regprocedure('event_bus._retention_candidates(boolean)') IS NULL",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: could not look up the retention job");
	if (DatumGetBool(eb_spi_value(1, &isnull)))
	{
		if (SPI_execute("SELECT event_bus._retention()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "event_bus: _retention() failed");
		return;
	}
	if (SPI_execute("SELECT EXISTS (SELECT FROM event_bus._retention_candidates(false))", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "event_bus: _retention_candidates() failed");
	if (DatumGetBool(eb_spi_value(1, &isnull)))
		eb_start_retention(MyDatabaseId, &r->retention_handle);
}

/*
 * Run one part of a round in a transaction of its own, so that one failing
 * part rolls back neither the others' work nor their notifications.  A
 * failure is logged and recorded in worker_status, and the part waits
 * before it runs again: 100 ms after the first failure, doubling up to a
 * minute, so a persistent error costs a bounded number of log lines.
 * Returns whether the part ran and succeeded.
 */
static bool
eb_run_part(WorkerRound *r, WorkerPart part, MemoryContext keep,
			void (*fn) (WorkerRound *, MemoryContext))
{
	MemoryContext round_cxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();
	bool		ok = true;

	if (r->failures[part] > 0 && now < r->retry_at[part])
		return false;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, psprintf("event_bus: %s", part_names[part]));
		if (!eb_extension_present())
			r->gone = true;
		else
		{
			if (my_worker_db == NULL)
			{
				my_worker_db = eb_db_state();
				pg_atomic_write_u32(&my_worker_db->worker_procno, MyProc->pgprocno + 1);
				pg_atomic_write_u32(&my_worker_db->replan, 1);	/* first round */
			}
			fn(r, keep);
		}
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			backoff;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(round_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);

		r->failures[part]++;
		backoff = EB_MAX_BACKOFF_MS;
		if (r->failures[part] <= 10)
			backoff = Min(100 << (r->failures[part] - 1), EB_MAX_BACKOFF_MS);
		r->retry_at[part] = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff);
		ereport(LOG,
				(errmsg("event_bus worker: %s failed: %s", part_names[part], edata->message),
				 errdetail("Failure %d in a row; the next attempt in %d ms.", r->failures[part], backoff)));

		LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
		snprintf(my_worker->last_error, sizeof(my_worker->last_error), "%s: %s",
				 part_names[part], edata->message ? edata->message : "unknown error");
		my_worker->last_error_at = GetCurrentTimestamp();
		LWLockRelease(eb_shared->lock);

		if (part == PART_DISPATCH)
		{
			/* Start over: the next dispatch notifies what is pending. */
			r->horizon = -1;
			r->state = (Datum) 0;	/* freed with the keep context's reset below */
		}
		RESUME_INTERRUPTS();
		ok = false;
	}
	PG_END_TRY();

	if (ok)
		r->failures[part] = 0;
	return ok;
}

/*
 * One round: dispatch, then maintenance and retention when due.  The round's
 * allocations live in round_cxt, reset by the caller.
 */
static void
eb_worker_round(WorkerRound *r, MemoryContext keep)
{
	TimestampTz now = GetCurrentTimestamp();

	r->notified = 0;
	(void) eb_run_part(r, PART_DISPATCH, keep, eb_part_dispatch);
	if (!r->gone && (now >= r->next_maintenance || (r->next_due != 0 && now >= r->next_due)))
	{
		if (eb_run_part(r, PART_MAINTENANCE, keep, eb_part_maintenance))
			r->next_maintenance = TimestampTzPlusMilliseconds(now, eb_naptime);
	}
	if (!r->gone && now >= r->next_retention)
	{
		if (eb_run_part(r, PART_RETENTION, keep, eb_part_retention))
			r->next_retention = TimestampTzPlusMilliseconds(now, EB_RETENTION_EVERY_MS);
	}
	pgstat_report_stat(false);
	eb_warn_long_emitters();

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	my_worker->last_round = now;
	my_worker->rounds++;
	my_worker->notifications += r->notified;
	LWLockRelease(eb_shared->lock);
}

/*
 * How long the worker may sleep: until the next due retry or lease expiry,
 * a failed part's next attempt, or naptime.
 */
static long
eb_worker_timeout(WorkerRound *r)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until = TimestampTzPlusMilliseconds(now, eb_naptime);
	long		secs;
	int			usecs;
	int			i;

	if (r->next_due != 0 && r->next_due < until)
		until = r->next_due;
	for (i = 0; i < NUM_PARTS; i++)
		if (r->failures[i] > 0 && r->retry_at[i] < until)
			until = r->retry_at[i];
	TimestampDifference(now, until, &secs, &usecs);
	return Max(secs * 1000 + usecs / 1000 + 1, 1);
}

void
eb_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	MemoryContext keep;
	MemoryContext round_cxt;
	WorkerRound r;
	bool		present;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	my_worker = eb_find_worker(dboid);
	if (my_worker != NULL && eb_worker_alive(my_worker))
	{
		/* Another worker serves this database (a restarted launcher). */
		LWLockRelease(eb_shared->lock);
		proc_exit(0);
	}
	if (my_worker == NULL || GetCurrentTimestamp() < my_worker->pause_until)
	{
		if (my_worker != NULL)
			my_worker->state = EBW_STOPPED;
		LWLockRelease(eb_shared->lock);
		proc_exit(0);
	}
	my_worker->pid = MyProcPid;
	my_worker->procno = MyProc->pgprocno;
	my_worker->started_at = GetCurrentTimestamp();
	my_worker->last_round = 0;
	my_worker->rounds = 0;
	my_worker->notifications = 0;
	my_worker->last_error[0] = '\0';
	my_worker->last_error_at = 0;
	LWLockRelease(eb_shared->lock);
	before_shmem_exit(eb_worker_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("event_bus worker");
	/* Our queries are small; compiling them would cost more than it saves. */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	StartTransactionCommand();
	present = eb_extension_present();
	CommitTransactionCommand();
	if (!present)
	{
		eb_worker_set_state(EBW_NO_EXTENSION);
		proc_exit(0);
	}
	eb_worker_set_state(EBW_RUNNING);

	keep = AllocSetContextCreate(TopMemoryContext, "event_bus worker", ALLOCSET_SMALL_SIZES);
	round_cxt = AllocSetContextCreate(TopMemoryContext, "event_bus worker round", ALLOCSET_DEFAULT_SIZES);
	memset(&r, 0, sizeof(r));
	r.horizon = -1;

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * Coalesce bursts of commits: at most one round per
		 * event_bus.dispatch_interval.  pg_usleep, not a latch wait, so that
		 * the commits meanwhile do not wake us again and again.
		 */
		if (r.last_round_start != 0 && eb_dispatch_interval > 0)
		{
			long		secs;
			int			usecs;

			TimestampDifference(r.last_round_start, GetCurrentTimestamp(), &secs, &usecs);
			if (secs == 0 && usecs < eb_dispatch_interval * 1000)
				pg_usleep(eb_dispatch_interval * 1000L - usecs);
			CHECK_FOR_INTERRUPTS();
		}
		r.last_round_start = GetCurrentTimestamp();

		MemoryContextSwitchTo(round_cxt);
		eb_worker_round(&r, keep);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_cxt);
		if (r.state == (Datum) 0 && r.horizon < 0)
			MemoryContextReset(keep);	/* dispatch starts over */
		if (r.gone)
		{
			eb_worker_set_state(EBW_NO_EXTENSION);
			proc_exit(0);
		}

		/* Sleep until the next commit, due retry, lease expiry or naptime. */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 eb_worker_timeout(&r), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*---------------------------------------------------------------------------
 * SQL-callable
 *---------------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(eb_worker_status);

/* event_bus._worker_status(): one row per watched database. */
Datum
eb_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;
	static const char *const names[] = {"free", "starting", "running", "no extension", "stopped"};

	eb_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	for (i = 0; i < eb_shared->max_databases; i++)
	{
		EventBusWorker w;
		Datum		values[9];
		bool		nulls[9];
		char	   *datname;

		LWLockAcquire(eb_shared->lock, LW_SHARED);
		w = eb_shared->workers[i];
		LWLockRelease(eb_shared->lock);
		if (w.state == EBW_FREE)
			continue;

		memset(nulls, 0, sizeof(nulls));
		datname = get_database_name(w.dboid);
		values[0] = ObjectIdGetDatum(w.dboid);
		if (datname)
			values[1] = CStringGetTextDatum(datname);
		else
			nulls[1] = true;
		values[2] = Int32GetDatum((int32) w.pid);
		nulls[2] = (w.pid == 0);
		values[3] = CStringGetTextDatum(names[w.state]);
		values[4] = TimestampTzGetDatum(w.started_at);
		nulls[4] = (w.started_at == 0);
		values[5] = TimestampTzGetDatum(w.last_round);
		nulls[5] = (w.last_round == 0);
		values[6] = Int64GetDatum((int64) w.rounds);
		values[7] = Int64GetDatum((int64) w.notifications);
		values[8] = CStringGetTextDatum(w.last_error);
		nulls[8] = (w.last_error[0] == '\0');
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(eb_wake_gen);
PG_FUNCTION_INFO_V1(eb_wait);
PG_FUNCTION_INFO_V1(eb_wait_topics);
PG_FUNCTION_INFO_V1(eb_wake);

/* event_bus._wake_gen(): the database's wake-up generation. */
Datum
eb_wake_gen(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) pg_atomic_read_u64(&eb_db_state()->wake_gen));
}

/* The wait mask of a list of topics: their bits, or all ones for none. */
static uint64
eb_topics_mask(ArrayType *topics)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	uint64		mask = 0;

	deconstruct_array(topics, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
		if (!nulls[i])
			mask |= eb_topic_bit(VARDATA_ANY(DatumGetTextPP(elems[i])),
								 VARSIZE_ANY_EXHDR(DatumGetTextPP(elems[i])));
	return mask == 0 ? ~UINT64CONST(0) : mask;
}

/*
 * Sleep until the database's wake-up generation differs from gen or the
 * timeout passes, woken only by commits that concern the topics in mask;
 * returns the generation.  Query cancel and statement_timeout end the
 * sleep with an error, as for any query; postmaster death ends the process.
 */
static int64
eb_wait_internal(uint64 gen, int32 timeout_ms, uint64 mask)
{
	EventBusDb *db = eb_db_state();
	EventBusSlot *slot = eb_my_slot();
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	pg_atomic_write_u64(&slot->wait_mask, mask);
	pg_memory_barrier();
	PG_TRY();
	{
		while (pg_atomic_read_u64(&db->wake_gen) == gen)
		{
			long		secs;
			int			usecs;
			long		left;
			int			rc;

			TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
			left = secs * 1000 + usecs / 1000;
			if (left <= 0 && usecs <= 0)
				break;
			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   Max(left, 1), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			if (rc & WL_TIMEOUT)
				break;
		}
	}
	PG_FINALLY();
	{
		pg_atomic_write_u64(&slot->wait_mask, 0);
	}
	PG_END_TRY();

	/*
	 * The claim looks again in this same transaction, holding its locks, so
	 * nothing would make it process invalidations: a log partition attached
	 * meanwhile (the first emits into a new database, the worker creating
	 * partitions ahead) would stay invisible to its cached plans until the
	 * wait ends.
	 */
	AcceptInvalidationMessages();
	return (int64) pg_atomic_read_u64(&db->wake_gen);
}

/*
 * event_bus._wait(gen bigint, timeout_ms int) (the 1.0 definition): woken
 * by commits on any topic.
 */
Datum
eb_wait(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(eb_wait_internal((uint64) PG_GETARG_INT64(0), PG_GETARG_INT32(1), ~UINT64CONST(0)));
}

/*
 * event_bus._wait_topics(gen bigint, timeout_ms int, topics text[]): woken
 * only by commits that concern one of the topics (a subscription's), so
 * that a busy topic does not keep waking the waiters of a quiet one.
 */
Datum
eb_wait_topics(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(eb_wait_internal((uint64) PG_GETARG_INT64(0), PG_GETARG_INT32(1),
									 eb_topics_mask(PG_GETARG_ARRAYTYPE_P(2))));
}

PG_FUNCTION_INFO_V1(eb_wait_proc);

/*
 * CALL event_bus.wait(subscription text, timeout interval, OUT ready boolean):
 * return as soon as the subscription has something a claim would take
 * (ready), or when the timeout passes (not ready).  Called outside a
 * transaction block, it commits before each sleep: while it sleeps it holds
 * no snapshot and no transaction, so it holds back no VACUUM - unlike
 * claim(wait => ...), whose query keeps its snapshot.  Inside a transaction
 * block it sleeps like claim(wait) does.
 */
Datum
eb_wait_proc(PG_FUNCTION_ARGS)
{
	bool		nonatomic = fcinfo->context != NULL && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
	Oid			caller = GetUserId();
	Datum		sub;
	TimestampTz deadline;
	bool		ready = false;
	TupleDesc	tupdesc;

	eb_check_writable();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("subscription must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be null"),
				 errhint("Pass an interval between 0 and 1 hour.")));
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(1);
		int64		us = iv->time + (int64) iv->day * USECS_PER_DAY +
			(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;

		if (us < 0 || us > USECS_PER_HOUR)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must be between 0 and 1 hour, not %s",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv))))));
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), us / 1000);
	}
	/* In the procedure's own memory: it outlives the commits below. */
	sub = PointerGetDatum(PG_GETARG_TEXT_P_COPY(0));

	for (;;)
	{
		uint64		gen = pg_atomic_read_u64(&eb_db_state()->wake_gen);
		uint64		mask;
		Oid			argtypes[1] = {TEXTOID};
		bool		isnull;
		long		secs;
		int			usecs;
		int			ret;
		EventBusAsOwner owner;

		/*
		 * The check runs as the extension's owner (the caller may not call
		 * internal functions), with the caller recorded for its permission
		 * check, as the API functions do.
		 */
		SPI_connect_ext(nonatomic ? SPI_OPT_NONATOMIC : 0);
		eb_as_owner_begin(&owner, true);
		eb_push_caller(caller);
		PG_TRY();
		{
			ret = SPI_execute_with_args("SELECT topics, ready FROM event_bus._wait_check($1)",
										1, argtypes, &sub, NULL, false, 1);
		}
		PG_FINALLY();
		{
			eb_pop_caller();
		}
		PG_END_TRY();
		eb_as_owner_end(&owner);
		if (ret != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "event_bus: _wait_check() failed");
		ready = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		mask = eb_topics_mask(DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0],
																SPI_tuptable->tupdesc, 1, &isnull)));
		TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
		if (ready || (secs == 0 && usecs == 0))
		{
			SPI_finish();
			break;
		}
		/* End the transaction: no snapshot, no xmin while we sleep. */
		if (nonatomic)
			SPI_commit();
		SPI_finish();
		(void) eb_wait_internal(gen, (int32) Min(secs * 1000 + usecs / 1000 + 1, PG_INT32_MAX), mask);
	}

	if (get_call_result_type(fcinfo, NULL, &tupdesc) == TYPEFUNC_COMPOSITE)
	{
		Datum		values[1] = {BoolGetDatum(ready)};
		bool		nulls[1] = {false};

		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
	}
	PG_RETURN_BOOL(ready);
}

/* event_bus._wake(): wake claimers of this database when this transaction commits. */
Datum
eb_wake(PG_FUNCTION_ARGS)
{
	eb_wake_at_commit();
	PG_RETURN_VOID();
}
