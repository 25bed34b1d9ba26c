/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Dropping consumed log partitions without stalling emits and claims.
 *
 * A plain DROP TABLE of a partition takes ACCESS EXCLUSIVE on the log
 * itself; while it waits for that lock, every emit and claim queues behind
 * it, and under steady claimers (or a claim waiting for events, which holds
 * its lock on the log for its whole wait) it may never get it.  So the
 * worker hands retention to a short-lived background process of its own,
 * which for each partition event_bus._retention_candidates() names:
 *
 *	1. marks it in event_bus.log_partitions (detaching_at), so that a run
 *	   that is interrupted is finished by the next one, and so that late acks
 *	   of its events are not mistaken for acks of events that never existed;
 *	2. runs ALTER TABLE event_bus.events DETACH PARTITION ... CONCURRENTLY
 *	   as a top-level command (it commits in the middle, so it cannot run
 *	   inside a function): only SHARE UPDATE EXCLUSIVE on the log, which
 *	   conflicts with neither emits nor claims, then a wait - holding no
 *	   lock on the log - for every transaction that may still use the
 *	   partition (after an interruption: DETACH ... FINALIZE);
 *	3. drops the table, which is no longer part of the log, and takes it
 *	   out of the registry.
 *
 * The wait in step 2 may last as long as the longest transaction using the
 * log; it happens in this process, so the worker goes on dispatching.  The
 * database's worker slot records the process's pid so that DROP DATABASE
 * can stop it too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"

#include "event_bus.h"
#include "shmem.h"
#include "worker.h"

/* The candidates of one run; state: 'attached', 'pending', 'detached', 'gone'. */
typedef struct RetentionCandidate
{
	char	   *relname;
	char	   *state;
} RetentionCandidate;

static EventBusWorker *my_slot = NULL;

/*
 * Run one SQL command as a top-level statement of its own transaction, as
 * the server does for a client's simple query (commands that commit in the
 * middle, such as DETACH PARTITION CONCURRENTLY, need that).  Its parse and
 * plan trees live in 'cxt', which must survive commits.
 */
static void
eb_exec_toplevel(const char *sql, MemoryContext cxt)
{
	MemoryContext old;
	RawStmt    *parsetree;
	List	   *querytrees;
	List	   *plantrees;
	Portal		portal;
	DestReceiver *receiver;
	QueryCompletion qc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	old = MemoryContextSwitchTo(cxt);
	parsetree = linitial_node(RawStmt, pg_parse_query(sql));
	querytrees = pg_analyze_and_rewrite_fixedparams(parsetree, sql, NULL, 0, NULL);
	plantrees = pg_plan_queries(querytrees, sql, CURSOR_OPT_PARALLEL_OK, NULL);
	portal = CreatePortal("", true, true);
	portal->visible = false;
	PortalDefineQuery(portal, NULL, sql, CreateCommandTag(parsetree->stmt), plantrees, NULL);
	PortalStart(portal, NULL, 0, InvalidSnapshot);
	receiver = CreateDestReceiver(DestNone);
	pgstat_report_activity(STATE_RUNNING, sql);
	(void) PortalRun(portal, FETCH_ALL, true, true, receiver, receiver, &qc);
	receiver->rDestroy(receiver);
	PortalDrop(portal, false);
	MemoryContextSwitchTo(old);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Run one SQL query in a transaction of its own through SPI; with collect,
 * return its (relname, state) rows as RetentionCandidates.
 */
static List *
eb_retention_query(const char *sql, int nargs, Oid *argtypes, Datum *args, bool collect)
{
	List	   *result = NIL;
	MemoryContext caller = CurrentMemoryContext;
	uint64		i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, sql);
	if (SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: %s failed", sql);
	for (i = 0; collect && i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);
		RetentionCandidate *c = palloc(sizeof(RetentionCandidate));

		c->relname = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		c->state = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		result = lappend(result, c);
		MemoryContextSwitchTo(old);
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

static void
eb_retention_exit(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	if (my_slot->retention_pid == MyProcPid)
		my_slot->retention_pid = 0;
	LWLockRelease(eb_shared->lock);
}

/* Entry point of the retention process of a database. */
void
eb_retention_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	MemoryContext cxt;
	List	   *todo = NIL;
	ListCell   *lc;
	bool		present;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	my_slot = eb_find_worker(dboid);
	if (my_slot == NULL || (my_slot->retention_pid != 0 && kill(my_slot->retention_pid, 0) == 0))
	{
		/* Another run is still going on. */
		LWLockRelease(eb_shared->lock);
		proc_exit(0);
	}
	my_slot->retention_pid = MyProcPid;
	my_slot->retention_runs++;
	LWLockRelease(eb_shared->lock);
	before_shmem_exit(eb_retention_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("event_bus retention");
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	cxt = AllocSetContextCreate(TopMemoryContext, "event_bus retention", ALLOCSET_DEFAULT_SIZES);

	StartTransactionCommand();
	present = OidIsValid(get_namespace_oid(EB_SCHEMA, true));
	CommitTransactionCommand();
	if (!present)
		proc_exit(0);

	PG_TRY();
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		todo = eb_retention_query("SELECT relname, state FROM event_bus._retention_candidates(true)",
								  0, NULL, NULL, true);
		foreach(lc, todo)
		{
			RetentionCandidate *c = lfirst(lc);
			const char *rel = quote_identifier(c->relname);
			Oid			argtype = TEXTOID;
			Datum		relarg = CStringGetTextDatum(c->relname);

			if (strcmp(c->state, "attached") == 0)
				eb_exec_toplevel(psprintf("ALTER TABLE event_bus.events DETACH PARTITION event_bus.%s CONCURRENTLY", rel), cxt);
			else if (strcmp(c->state, "pending") == 0)
				eb_exec_toplevel(psprintf("ALTER TABLE event_bus.events DETACH PARTITION event_bus.%s FINALIZE", rel), cxt);
			(void) eb_retention_query("SELECT event_bus._retention_drop($1)", 1, &argtype, &relarg, false);
			LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
			my_slot->partitions_dropped++;
			LWLockRelease(eb_shared->lock);
			ereport(DEBUG1, (errmsg("event_bus retention: dropped log partition %s", c->relname)));
			MemoryContextSwitchTo(cxt);
		}
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("event_bus retention: %s", edata->message),
				 errdetail("The next run (in about 10 seconds) takes up where this one stopped.")));
		LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
		snprintf(my_slot->last_error, sizeof(my_slot->last_error), "retention: %s",
				 edata->message ? edata->message : "unknown error");
		my_slot->last_error_at = GetCurrentTimestamp();
		my_slot->retention_failures++;
		LWLockRelease(eb_shared->lock);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	my_slot->last_retention = GetCurrentTimestamp();
	LWLockRelease(eb_shared->lock);
	proc_exit(0);
}

/*
 * Start the retention process of this database (called by its worker)
 * unless the previous one still runs.  *handle is the worker's handle of
 * the last one started.
 */
void
eb_start_retention(Oid dboid, BackgroundWorkerHandle **handle)
{
	pid_t		pid;

	if (*handle != NULL)
	{
		if (GetBackgroundWorkerPid(*handle, &pid) != BGWH_STOPPED)
			return;
		pfree(*handle);
		*handle = NULL;
	}
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (!eb_register_database_process("eb_retention_main", "event_bus retention", dboid, handle))
		{
			EventBusWorker *w;

			*handle = NULL;
			LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
			w = eb_find_worker(dboid);
			if (w != NULL)
			{
				w->retention_failures++;
				snprintf(w->last_error, sizeof(w->last_error),
						 "retention: could not start the retention process (max_worker_processes)");
				w->last_error_at = GetCurrentTimestamp();
			}
			LWLockRelease(eb_shared->lock);
			ereport(LOG,
					(errmsg("event_bus: could not start the retention process of database %u", dboid),
					 errhint("Raise max_worker_processes: event_bus needs one per database using it, plus its launcher, plus one for retention now and then.")));
		}
		MemoryContextSwitchTo(old);
	}
}
