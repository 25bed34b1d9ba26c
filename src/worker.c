/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker.
 *
 * The launcher (launcher.c) starts one per database that has event_bus.  A
 * worker sleeps on its latch.  Emitting transactions set it when they end
 * (horizon.c, wait.c) if a session of the database has LISTENed on an
 * event_bus channel (the utility hook notes it), so a round follows every
 * burst of commits while somebody may want its NOTIFYs; ack, fail and the
 * like set it when they change what the worker plans.  Otherwise it wakes
 * after event_bus.naptime, or sooner when a retry becomes due or a lease
 * expires.  A round, each part in its own transaction:
 *	- dispatch: one coalesced NOTIFY per subscription with new claimable
 *	  events (channel "event_bus.<subscription>"), counted from what the
 *	  emitting commits reported (dispatch.c) - or from the log with
 *	  event_bus._dispatch() in the first round, after lost reports, and for
 *	  a schema still on 1.0; and with event_bus._dispatch_due(), when
 *	  retries or leases changed or one became due, one NOTIFY per
 *	  subscription with retries that became due, one on
 *	  "event_bus.dead_letters" per subscription with new dead letters, and a
 *	  wake-up of claim(wait) sleepers.  A round with none of this to do
 *	  starts no transaction;
 *	- at most every naptime, event_bus.run_maintenance(): expired leases to
 *	  retries or dead letters, log partitions ahead;
 *	- every 10 seconds, event_bus._retention_candidates(): when there are
 *	  partitions to drop, a short-lived retention process (retention.c)
 *	  drops them.
 * A part that fails is logged and recorded in the worker's slot, and
 * retried with back-off while the other parts go on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_bus.h"
#include "dispatch.h"
#include "horizon.h"
#include "shmem.h"
#include "worker.h"

/* How often the worker looks for log partitions to drop. */
#define EB_RETENTION_EVERY_MS	10000

/*
 * Retries falling due one after another (a consumer failing every event
 * with a short backoff) wake the worker by its timer at most this often: a
 * round per retry was a third of a CPU at 3,000 fails a second.  Commits
 * that wake it are not held back.
 */
#define EB_DUE_EVERY_MS			20

/*---------------------------------------------------------------------------
 * Worker
 *---------------------------------------------------------------------------
 */

static EventBusWorker *my_worker = NULL;
static EventBusDb *my_worker_db = NULL;
static Oid	my_worker_seqoid = InvalidOid;

static void
eb_worker_exit(int code, Datum arg)
{
	if (my_worker_db != NULL)
	{
		pg_atomic_write_u32(&my_worker_db->worker_procno, 0);
		pg_atomic_write_u64(&my_worker_db->planned, 0);	/* nobody plans */
	}
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
	bool		fast;			/* the schema has _dispatch_due (1.1): new
								 * events are dispatched from the commit
								 * reports (dispatch.c) */
	uint64		tail;			/* commit reports drained so far */
	int64		top;			/* max_seq read before the last drain */
	StringInfoData open;		/* the emitters then open, as xid8[] text */
	TimestampTz next_maintenance;
	TimestampTz next_retention;
	TimestampTz next_due;		/* earliest retry due / lease expiry /
								 * scheduled event, or 0 */
	TimestampTz next_expiry;	/* earliest lease expiry, or 0 */
	TimestampTz last_round_start;
	TimestampTz last_due_round; /* last round that found something due */
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

/*
 * When the worker must look again: the next retry due, lease expiry or
 * scheduled event; and when maintenance must, for the next lease expiry.
 */
static void
eb_read_next_due(WorkerRound *r)
{
	bool		isnull;
	Datum		d;

	/*
	 * Committers of retries and scheduled events that fall due no earlier
	 * than the plan do not wake the worker (horizon.c): the plan is cleared
	 * first, and the statement (not read-only) reads with a new snapshot.
	 */
	pg_atomic_write_u64(&my_worker_db->planned, 0);
	pg_memory_barrier();
	if (SPI_execute("SELECT event_bus._next_due(), (SELECT pg_catalog.min(l.expires_at) FROM event_bus.leases l)",
					false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: _next_due() failed");
	d = eb_spi_value(1, &isnull);
	r->next_due = isnull ? 0 : DatumGetTimestampTz(d);
	d = eb_spi_value(2, &isnull);
	r->next_expiry = isnull ? 0 : DatumGetTimestampTz(d);
	pg_atomic_write_u64(&my_worker_db->planned, (uint64) Max(r->next_due, 0));
}

/* Has a retry become due, a lease expired or a scheduled event come due? */
static bool
eb_due(WorkerRound *r, TimestampTz now)
{
	return r->next_due != 0 && now >= r->next_due;
}

/*
 * Has a lease expired?  Only that needs maintenance before naptime: due
 * retries need a NOTIFY (dispatch), scheduled events their release
 * (dispatch too).  A consumer that fails every event makes retries fall due
 * all the time, and running the whole of maintenance for each was a fifth
 * of the worker's work then.
 */
static bool
eb_expired(WorkerRound *r, TimestampTz now)
{
	return r->next_expiry != 0 && now >= r->next_expiry;
}

/* Keep a jsonb state returned by SQL in the keep context. */
static void
eb_keep_state(WorkerRound *r, MemoryContext keep, int col)
{
	bool		isnull;
	Datum		st = eb_spi_value(col, &isnull);
	MemoryContext old = MemoryContextSwitchTo(keep);

	if (r->state != (Datum) 0)
		pfree(DatumGetPointer(r->state));
	r->state = isnull ? (Datum) 0 : datumCopy(st, false, -1);
	MemoryContextSwitchTo(old);
}

/*
 * Dispatch from the log with event_bus._dispatch(): every round of a
 * database whose schema predates the commit reports, and otherwise the
 * first round and one after reports were lost.  In the latter case the
 * state passed in says what the worker read before its last drain.
 */
static void
eb_dispatch_sql(WorkerRound *r, MemoryContext keep)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			argtypes[4] = {INT8OID, JSONBOID, INT8OID, TEXTOID};
	bool		isnull;
	int			ret;

	args[0] = Int64GetDatum(r->horizon);
	nulls[0] = r->horizon < 0 ? 'n' : ' ';
	args[1] = r->state;
	nulls[1] = r->state == (Datum) 0 ? 'n' : ' ';
	if (r->fast)
	{
		args[2] = Int64GetDatum(r->top);
		args[3] = CStringGetTextDatum(r->open.data);
		nulls[2] = nulls[3] = nulls[0];
		ret = SPI_execute_with_args("SELECT horizon, state, notified FROM event_bus._dispatch($1, "
									"coalesce($2, '{}') OPERATOR(pg_catalog.||) "
									"pg_catalog.jsonb_build_object('max_seq', $3, 'open', $4))",
									4, argtypes, args, nulls, false, 1);
	}
	else
		ret = SPI_execute_with_args("SELECT horizon, state, notified FROM event_bus._dispatch($1, $2)",
									2, argtypes, args, nulls, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: _dispatch() failed");
	r->horizon = DatumGetInt64(eb_spi_value(1, &isnull));
	eb_keep_state(r, keep, 2);
	r->notified = (uint64) DatumGetInt32(eb_spi_value(3, &isnull));
}

/*
 * Dispatch from the commit reports (dispatch.c): read the open emitters,
 * then drain the reports and notify the subscriptions they concern; count
 * from the log instead (from what the previous round read) if reports were
 * lost.  Retries and dead letters (_dispatch_due) only when retries or
 * leases changed or one became due.
 */
static void
eb_dispatch_fast(WorkerRound *r, MemoryContext keep, bool replan)
{
	EventBusEmitter *em;
	EventBusCommit *commits;
	uint64		top;
	uint64		horizon;
	int			nem;
	int			n;
	int			i;
	bool		lost;

	nem = eb_emitters_known(my_worker_db, &top, &em);
	horizon = top;
	for (i = 0; i < nem; i++)
		horizon = Min(horizon, em[i].floor - 1);
	n = eb_dispatch_drain(my_worker_db, &r->tail, &commits, &lost);

	/*
	 * Reports lost (the ring overflowed: without listeners, nothing wakes
	 * the worker for a commit) matter only to listeners.  Counting from the
	 * log is as costly as the emits were many, so without a listener the
	 * round only forgets what it could not count: a session that LISTENs is
	 * owed notifications for what commits after it.
	 */
	if (lost && r->horizon >= 0 && !eb_database_listened(my_worker_db))
	{
		lost = false;
		n = 0;
	}
	if (r->horizon < 0 || lost)
		eb_dispatch_sql(r, keep);
	else
	{
		bool		due = eb_due(r, GetCurrentTimestamp());

		r->notified = eb_dispatch_notify(my_worker_db, commits, n);

		/*
		 * Scheduled events that became due enter the log now, not after the
		 * rest of the round; their commit reports are dispatched in the next
		 * round, which follows at once.
		 */
		if (due)
		{
			bool		isnull;

			if (SPI_execute("SELECT event_bus._release_scheduled()", false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "event_bus: _release_scheduled() failed");
			if (DatumGetInt32(eb_spi_value(1, &isnull)) > 0)
				SetLatch(MyLatch);
		}
		if (replan || r->state == (Datum) 0 || due)
		{
			Datum		args[2];
			char		nulls[2] = {' ', ' '};
			Oid			argtypes[2] = {JSONBOID, INT8OID};
			bool		isnull;

			args[0] = r->state;
			nulls[0] = r->state == (Datum) 0 ? 'n' : ' ';
			args[1] = Int64GetDatum((int64) horizon);
			if (SPI_execute_with_args("SELECT state, notified FROM event_bus._dispatch_due($1, $2)",
									  2, argtypes, args, nulls, false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "event_bus: _dispatch_due() failed");
			eb_keep_state(r, keep, 1);
			r->notified += (uint64) DatumGetInt32(eb_spi_value(2, &isnull));
		}
	}

	/* What the next round counts from if reports are lost. */
	r->horizon = (int64) horizon;
	r->top = (int64) top;
	resetStringInfo(&r->open);
	appendStringInfoChar(&r->open, '{');
	for (i = 0; i < nem; i++)
		appendStringInfo(&r->open, "%s" UINT64_FORMAT, i > 0 ? "," : "", em[i].xid);
	appendStringInfoChar(&r->open, '}');
}

/* Dispatch: notify listeners and wake waiters; also learn the next due time. */
static void
eb_part_dispatch(WorkerRound *r, MemoryContext keep)
{
	bool		replan = pg_atomic_exchange_u32(&my_worker_db->replan, 0) != 0;
	TimestampTz now = GetCurrentTimestamp();
	bool		due = eb_due(r, now);

	if (due)
		r->last_due_round = now;
	if (r->fast)
		eb_dispatch_fast(r, keep, replan);
	else
		eb_dispatch_sql(r, keep);

	/*
	 * The next due time changes when retries or leases do.  Commits that
	 * change them through fail, ack, expiry and the like set replan; leases
	 * that claims take are seen by the next maintenance round.  Listeners
	 * make rounds frequent: reading it every round was a tenth of their cost.
	 * Once what was due has been dispatched, the next due time is read too.
	 */
	if (replan || due)
		eb_read_next_due(r);
}

/*
 * Does this database's schema have what the commit reports need (1.1)?  An
 * ALTER EXTENSION UPDATE while the worker runs is seen at the next
 * maintenance.
 */
static void
eb_check_fast(WorkerRound *r)
{
	bool		isnull;
	bool		fast;

	if (SPI_execute("SELECT pg_catalog.to_regprocedure('event_bus._dispatch_due(jsonb,bigint)') IS NOT NULL",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: could not look up the dispatch functions");
	fast = DatumGetBool(eb_spi_value(1, &isnull));
	if (fast && !r->fast)
		r->horizon = -1;		/* start with a round from the log */
	r->fast = fast;
}

static void
eb_part_maintenance(WorkerRound *r, MemoryContext keep)
{
	if (SPI_execute("SELECT * FROM event_bus.run_maintenance()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: run_maintenance() failed");
	eb_read_next_due(r);
	eb_check_fast(r);
	/* In case the subscriptions changed unseen (a prepared transaction). */
	eb_dispatch_forget_subscriptions();
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
			EventBusDb *db = eb_db_state();

			if (db != my_worker_db || db->seqoid != my_worker_seqoid)
			{
				/* The first round, or the extension was created anew. */
				my_worker_db = db;
				my_worker_seqoid = db->seqoid;
				pg_atomic_write_u32(&db->worker_procno, MyProc->pgprocno + 1);
				pg_atomic_write_u32(&db->replan, 1);
				r->horizon = -1;
				r->state = (Datum) 0;	/* freed with the keep context */
				eb_check_fast(r);
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
			if (my_worker_db != NULL)
				pg_atomic_write_u32(&my_worker_db->replan, 1);
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
 * Has dispatch anything to do?  With commit reports, a round with none, no
 * change to retries or leases and nothing due needs no transaction at all.
 */
static bool
eb_dispatch_needed(WorkerRound *r, TimestampTz now)
{
	if (!r->fast || r->horizon < 0 || my_worker_db == NULL)
		return true;
	return eb_dispatch_waiting(my_worker_db, r->tail) ||
		pg_atomic_read_u32(&my_worker_db->replan) != 0 ||
		eb_due(r, now);
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
	if (eb_dispatch_needed(r, now))
		(void) eb_run_part(r, PART_DISPATCH, keep, eb_part_dispatch);
	if (!r->gone && (now >= r->next_maintenance || eb_expired(r, now)))
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
 * How long the worker may sleep: until the next due retry or lease expiry
 * (but no sooner than EB_DUE_EVERY_MS after the last round that found one
 * due), a failed part's next attempt, or naptime.
 */
static long
eb_worker_timeout(WorkerRound *r)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz nap = TimestampTzPlusMilliseconds(now, eb_naptime);
	TimestampTz until = nap;
	long		secs;
	int			usecs;
	int			i;

	if (r->next_due != 0 && r->next_due < until)
	{
		until = r->next_due;
		if (r->last_due_round != 0)
			until = Min(nap, Max(until, TimestampTzPlusMilliseconds(r->last_due_round, EB_DUE_EVERY_MS)));
	}
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

	/*
	 * Nothing the worker commits needs to wait for the WAL flush: a NOTIFY
	 * goes with its listeners in a crash, and maintenance that a crash
	 * undoes (a lease expired, a lane marked) is done again.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * In a deadlock with a user's statement, be the one that gives way: the
	 * process that checks first aborts, and a part that fails runs again
	 * shortly.  (DROP EXTENSION, which locks the functions it drops before
	 * the tables, deadlocked with a round that had a table locked and called
	 * one of them; the DROP failed.)
	 */
	SetConfigOption("deadlock_timeout", "100ms", PGC_SUSET, PGC_S_OVERRIDE);

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
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&r.open);
		MemoryContextSwitchTo(old);
	}

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

PG_FUNCTION_INFO_V1(eb_retention_counts);

/*
 * event_bus._retention_counts(): per watched database, how many retention
 * processes ran, how many failed (or could not start), how many partitions
 * they dropped, and when the last one ended - the evidence worker_status
 * shows for retention.
 */
Datum
eb_retention_counts(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	eb_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < eb_shared->max_databases; i++)
	{
		EventBusWorker w;
		Datum		values[5];
		bool		nulls[5] = {0};

		LWLockAcquire(eb_shared->lock, LW_SHARED);
		w = eb_shared->workers[i];
		LWLockRelease(eb_shared->lock);
		if (w.state == EBW_FREE)
			continue;
		values[0] = ObjectIdGetDatum(w.dboid);
		values[1] = Int64GetDatum((int64) w.retention_runs);
		values[2] = Int64GetDatum((int64) w.retention_failures);
		values[3] = Int64GetDatum((int64) w.partitions_dropped);
		values[4] = TimestampTzGetDatum(w.last_retention);
		nulls[4] = (w.last_retention == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
