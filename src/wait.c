/*-------------------------------------------------------------------------
 *
 * wait.c
 *	  Waits and wake-ups: claim(wait) and CALL wait() sleeping on their
 *	  latch, and the wake-ups that end them and rouse the worker and the
 *	  launcher.
 *
 * A waiting backend publishes in its slot the topic bits of its
 * subscription (wait_mask); a commit that emitted to one of them, or that
 * made events claimable otherwise (an ack freeing an ordered lane, a retry
 * becoming due), bumps the database's wake generation and sets the latch
 * of every such sleeper (eb_wake_database, called from horizon.c's
 * transaction callbacks).  Sleepers compare generations before sleeping, so
 * no wake-up is lost between their check and their sleep.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_bus.h"
#include "shmem.h"
#include "worker.h"

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

	/*
	 * Without a sleeper in the database and a listener anywhere, there is
	 * nobody to find in the slots: most commits skip the scan.  The fetch-add
	 * above and a sleeper's (eb_slot_wait_publish) are full barriers, so either
	 * this reads its count or it reads the new generation and does not sleep.
	 */
	if (pg_atomic_read_u32(&db->nwaiting) != 0 || pg_atomic_read_u32(&eb_shared->nlistening) != 0)
	{
		pg_read_barrier();
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
	}
	if (worker && procno != 0 && (MyProc == NULL || (int) procno - 1 != MyProc->pgprocno))
		SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
}

/*
 * Has a session of the database LISTENed on an event_bus channel (and not
 * ended since)?  Without one, nobody needs the worker's NOTIFYs.
 */
bool
eb_database_listened(EventBusDb *db)
{
	int			i;

	for (i = 0; i < eb_shared->nslots; i++)
		if (eb_shared->slots[i].dboid == db->dboid &&
			pg_atomic_read_u32(&eb_shared->slots[i].listening) != 0)
			return true;
	return false;
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

PG_FUNCTION_INFO_V1(eb_wake_gen);
PG_FUNCTION_INFO_V1(eb_wait);
PG_FUNCTION_INFO_V1(eb_wait_topics);

/* event_bus._wake_gen(): the database's wake-up generation. */
Datum
eb_wake_gen(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) pg_atomic_read_u64(&eb_db_state()->wake_gen));
}

/* The wait mask of a list of topics: their bits, or all ones for none. */
uint64
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
int64
eb_wait_internal(uint64 gen, int32 timeout_ms, uint64 mask)
{
	EventBusDb *db = eb_db_state();
	EventBusSlot *slot = eb_my_slot();
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	eb_slot_wait_publish(db, slot, mask);
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
		eb_slot_wait_unpublish();
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
