/*-------------------------------------------------------------------------
 *
 * horizon.c
 *	  The visibility horizon: which event seqs a claimer may hand out.
 *
 * A seq is taken from event_bus.event_seq when an event is inserted, but the
 * event becomes visible only when its transaction commits.  A consumer that
 * simply followed "seq > cursor" would skip, for ever, an event whose
 * transaction commits after a later-numbered event became visible.
 *
 * We avoid that with a horizon kept in shared memory:
 *
 *	- Before a transaction takes its first seq, its backend publishes in its
 *	  slot a floor: a value no larger than any seq the transaction will get.
 *	  We use (highest seq known to be allocated) + 1, which is tight.
 *	- After every nextval the emitter raises the database's max_seq.
 *	- At commit or abort the slot is cleared.  Transaction callbacks run
 *	  after the commit is visible in the proc array, so a claimer that sees
 *	  the slot cleared will see the events in its next snapshot.
 *	- A claimer reads max_seq, then (after a barrier) every slot of its
 *	  database; the horizon is min(max_seq, min(floor) - 1).  Every event
 *	  with seq <= horizon belongs to a transaction that has already ended,
 *	  so a snapshot taken afterwards shows it if and only if it committed.
 *
 * Why the order matters: if an emitter's seq s is <= the max_seq value M a
 * claimer read, the nextval that produced s happened before the one that
 * produced M, hence before the claimer's read of M; the emitter's floor was
 * written before its nextval, so the claimer's later read of the slots sees
 * it (or sees it already cleared, meaning the transaction ended).
 *
 * Only transactions that emitted hold the horizon back; long transactions
 * that did not emit do not.  A savepoint rolled back over every emit of its
 * transaction releases the floor at once: the floor was set at the first
 * emit, so when the subtransaction that made that emit (or the one it was
 * merged into by RELEASE) aborts, every row the transaction inserted is gone.  The claimer must take its snapshot after
 * computing the horizon, which is why claims require READ COMMITTED.
 *
 * Locking: slots and the per-database counters are lock-free atomics; the
 * shared LWLock only guards assignment of EventBusDb entries to databases.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/twophase.h"
#include "access/xlog.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "common/hashfn.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/xid8.h"

#include "event_bus.h"
#include "dispatch.h"
#include "horizon.h"
#include "worker.h"


/* Backend-local state. */
static bool xact_emitted = false;
static SubTransactionId emitted_subxid = InvalidSubTransactionId;
static SubTransactionId coverage_subxid = InvalidSubTransactionId;
static bool xact_wake = false;
static TimestampTz xact_wake_due = 0;	/* eb_wake_due_at_commit: the earliest, */
static bool xact_wake_due_set = false;	/* if any */
static TimestampTz wake_due = 0;	/* to compare with the worker's plan once */
static bool wake_due_pending = false;	/* the commit is complete */
static uint64 xact_wake_topics = 0;	/* claimers to wake, not the worker */
static bool xact_wake_launcher = false;
static bool wake_pending = false;	/* wake claimers once the commit is complete */
static uint64 wake_topics = 0;	/* which: bits of the topics concerned */
static bool wake_worker = false;	/* and the worker, listeners or not */
static uint64 xact_topics = 0;	/* bits of the topics this transaction emitted to */
static uint64 xact_coverage = 0;
static bool xact_log_written = false;	/* wrote to the log other than by emit */
static uint64 coverage_pending = 0; /* to publish once the commit is complete */

/*
 * Clear this backend's slot however the transaction ends; log coverage it
 * created is published by eb_release_callback once the commit is complete.
 */
static void
eb_xact_callback(XactEvent event, void *arg)
{
	bool		committed;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (xact_emitted)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has emitted events"),
						 errdetail("Events emitted by a prepared transaction would hold back every consumer of the database until it is committed or rolled back."),
						 errhint("Emit events in a transaction that commits directly.")));
			if (xact_log_written)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has written to event_bus.events"),
						 errhint("Write to the log in a transaction that commits directly.")));
			break;
		case XACT_EVENT_PREPARE:
			eb_dispatch_xact_end(NULL, false);	/* nothing emitted (see above) */
			xact_wake_topics = 0;
			xact_wake_due_set = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			coverage_pending = xact_coverage;	/* see eb_release_callback */

			/*
			 * Rows that entered the log without emit are visible now: every
			 * lane's base is read again (shmem.c).
			 */
			if (xact_log_written && eb_current_db != NULL)
				eb_lane_heads_forget(eb_current_db);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* Report the events to the worker before the floor goes. */
			eb_dispatch_xact_end(eb_current_db, event == XACT_EVENT_COMMIT ||
								 event == XACT_EVENT_PARALLEL_COMMIT);
			if (xact_emitted && eb_current_slot != NULL)
				pg_atomic_write_u64(&eb_current_slot->floor, 0);

			/*
			 * The horizon may have moved (commit or abort alike), or the
			 * transaction changed what is claimable: wake the claimers waiting
			 * in this database and its worker.
			 */
			committed = event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT;
			if ((xact_emitted || ((xact_wake || xact_wake_topics != 0) && committed)) &&
				eb_current_db != NULL)
			{
				wake_pending = true;	/* see eb_release_callback */
				wake_worker = xact_wake && committed;
				wake_topics = wake_worker ? ~UINT64CONST(0) :
					xact_topics | (committed ? xact_wake_topics : 0);
			}
			/* Something falls due later: the worker may already plan to look. */
			if (xact_wake_due_set && committed && !xact_wake && eb_current_db != NULL)
			{
				wake_due_pending = true;	/* see eb_release_callback */
				wake_due = xact_wake_due;
			}
			xact_wake_due_set = false;
			xact_topics = 0;
			xact_wake_topics = 0;
			if (xact_wake_launcher && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
				eb_wake_launcher();
			xact_emitted = false;
			xact_wake = false;
			xact_wake_launcher = false;
			xact_coverage = 0;
			xact_log_written = false;
			break;
		default:
			break;
	}
}

/*
 * Follow the subtransaction that took the first seq (and the one that
 * created log partitions) through RELEASE and ROLLBACK TO.
 */
static void
eb_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			if (xact_emitted && emitted_subxid == mySubid)
				emitted_subxid = parentSubid;
			if (xact_coverage != 0 && coverage_subxid == mySubid)
				coverage_subxid = parentSubid;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			if (xact_emitted && emitted_subxid == mySubid)
			{
				/* Every event of this transaction was rolled back. */
				if (eb_current_slot != NULL)
					pg_atomic_write_u64(&eb_current_slot->floor, 0);
				xact_emitted = false;
				if (eb_current_db != NULL)
					eb_wake_database(eb_current_db, xact_topics, false);
			}
			if (xact_coverage != 0 && coverage_subxid == mySubid)
				xact_coverage = 0;	/* its partitions are gone; look again */
			break;
		default:
			break;
	}
}

/*
 * Wake claimers of this database at the very end of a transaction that
 * changed what they may claim.  Not from the transaction callback: that runs
 * before the transaction's invalidation messages are sent, and a claimer
 * woken then would look again with plans that do not know the log
 * partitions the transaction attached, and sleep on.
 */
static void
eb_release_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	/*
	 * Log partitions this transaction created: published only now, once its
	 * invalidation messages are out.  An emitter that believed them there
	 * earlier could open the log with a partition list that lacks them.
	 */
	if (phase == RESOURCE_RELEASE_AFTER_LOCKS && isTopLevel && coverage_pending != 0)
	{
		if (isCommit && eb_current_db != NULL)
			eb_atomic_max_u64(&eb_current_db->covered, coverage_pending);
		coverage_pending = 0;
	}
	/*
	 * A retry or scheduled event that falls due no earlier than the worker
	 * already plans to look needs no round now: a consumer failing every
	 * event made the worker run one per fail.  The commit is visible by now
	 * (ProcArrayEndTransaction), and the worker clears its plan before it
	 * reads the next due time with a new snapshot (worker.c): either that
	 * read sees this commit or this reads 0 or the plan it made without it.
	 * Otherwise it is the wake-up of every claimer and the worker, joined to
	 * the transaction's own.
	 */
	if (phase == RESOURCE_RELEASE_AFTER_LOCKS && isTopLevel && wake_due_pending)
	{
		wake_due_pending = false;
		if (eb_current_db != NULL)
		{
			TimestampTz planned;

			pg_memory_barrier();
			planned = (TimestampTz) pg_atomic_read_u64(&eb_current_db->planned);
			if (planned <= 0 || wake_due < planned)
			{
				wake_pending = true;
				wake_topics = ~UINT64CONST(0);
				wake_worker = true;
			}
		}
	}
	if (phase == RESOURCE_RELEASE_AFTER_LOCKS && isTopLevel && wake_pending)
	{
		wake_pending = false;
		if (eb_current_db != NULL)
			eb_wake_database(eb_current_db, wake_topics, wake_worker);
	}
}


void
eb_horizon_init(void)
{
	RegisterXactCallback(eb_xact_callback, NULL);
	RegisterSubXactCallback(eb_subxact_callback, NULL);
	RegisterResourceReleaseCallback(eb_release_callback, NULL);
}

/* Raise db->max_seq to at least seq. */
static void
eb_raise_max_seq(EventBusDb *db, uint64 seq)
{
	eb_atomic_max_u64(&db->max_seq, seq);
}

/*
 * Raise max_seq to the sequence's last value.  The sequence can move without
 * an emit (setval, pg_restore of a dump), so claimers read it every time;
 * reading it under the sequence's buffer lock orders it after every nextval
 * that returned a value up to it, as the horizon needs.
 */
static void
eb_read_seq(EventBusDb *db)
{
	Datum		d;
	LOCAL_FCINFO(fcinfo, 1);

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(db->seqoid);
	fcinfo->args[0].isnull = false;
	d = pg_sequence_last_value(fcinfo);
	if (!fcinfo->isnull)
	{
		uint64		last = (uint64) DatumGetInt64(d);

		eb_raise_max_seq(db, last);

		/*
		 * The first read in this life (or of this extension) counts what is
		 * in the log by then as the lanes' bases; after it, seqs no emitter
		 * has noted (yet) were taken by setval or a restore - or by an
		 * emitter between its nextval and eb_note_seq.  Events may have
		 * entered the log some other way: the lanes' bases are read again
		 * (shmem.c).
		 */
		if (pg_atomic_read_u32(&db->seq_loaded) == 0)
		{
			eb_atomic_max_u64(&db->emit_seq, last);
			eb_lane_heads_forget(db);
		}
		else if (last > pg_atomic_read_u64(&db->emit_seq))
			eb_lane_heads_forget(db);
	}
	pg_atomic_write_u32(&db->seq_loaded, 1);
}

/*
 * Emitters only need max_seq as a tight floor; after a restart (or a new
 * extension) read it from the sequence once.  Until then it is 0, which is
 * always safe (too low).
 */
static void
eb_load_max_seq(EventBusDb *db)
{
	if (pg_atomic_read_u32(&db->seq_loaded) == 0)
		eb_read_seq(db);
}


/*
 * This session ran LISTEN on an event_bus channel: emitting commits in its
 * database wake the worker from now on, to notify it.  Not undone by
 * UNLISTEN (which may yet roll back); the slot forgets it when the session
 * ends.
 */
void
eb_note_listen(void)
{
	if (pg_atomic_read_u32(&eb_my_slot()->listening) == 0)
	{
		pg_atomic_write_u32(&eb_current_slot->listening, 1);
		pg_atomic_fetch_add_u32(&eb_shared->nlistening, 1);
	}
}


/*
 * Remember that this transaction emits to a topic: its waiters are woken at
 * commit, and claimers of the topic see the transaction among its open
 * emitters.  Called after eb_begin_emit and before the seq is taken: the
 * fetch-or is a full barrier, so a claimer that read max_seq at or above
 * that seq sees the bit (the same argument as for the floor).
 */
void
eb_note_emit_topic(text *topic)
{
	uint64		bit = eb_topic_bit(VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));

	xact_topics |= bit;
	if ((pg_atomic_read_u64(&eb_current_slot->topics) & bit) == 0)
		(void) pg_atomic_fetch_or_u64(&eb_current_slot->topics, bit);
}

/*
 * Publish this transaction's floor before it takes its first seq.  Its
 * xid, start time and (empty) topic set are written first: a reader that
 * sees the floor sees them (eb_emitters reads them in the opposite order).
 */
void
eb_begin_emit(EventBusDb *db)
{
	if (xact_emitted)
		return;

	(void) eb_my_slot();
	eb_load_max_seq(db);
	xact_emitted = true;
	emitted_subxid = GetCurrentSubTransactionId();
	pg_atomic_write_u64(&eb_current_slot->xid, U64FromFullTransactionId(GetTopFullTransactionId()));
	pg_atomic_write_u64(&eb_current_slot->topics, 0);
	pg_atomic_write_u64(&eb_current_slot->since, (uint64) GetCurrentTimestamp());
	pg_write_barrier();
	pg_atomic_write_u64(&eb_current_slot->floor, pg_atomic_read_u64(&db->max_seq) + 1);
	pg_memory_barrier();
}

/*
 * This transaction wrote a row into the log other than by emit (the log's
 * trigger, event_bus._log_written, says so; emit's writes do not fire it).
 */
void
eb_note_log_written(void)
{
	(void) eb_db_state();
	xact_log_written = true;
}

/* Record a seq this backend was just given (by nextval). */
void
eb_note_seq(EventBusDb *db, uint64 seq)
{
	eb_raise_max_seq(db, seq);
	eb_atomic_max_u64(&db->emit_seq, seq);
}

/*
 * The horizon: every event at or below it belongs to a transaction that has
 * already committed or aborted (max_seq, or below the lowest floor of an
 * open emitter).  The caller must take its snapshot after this returns.
 */
uint64
eb_horizon(EventBusDb *db)
{
	uint64		h;
	EventBusEmitter *em;
	int			n = eb_emitters(db, &h, &em);
	int			i;

	for (i = 0; i < n; i++)
		if (em[i].floor - 1 < h)
			h = em[i].floor - 1;
	if (em != NULL)
		pfree(em);
	return h;
}

/*
 * Read one slot's open emitting transaction consistently: the xid is read
 * before and after the other fields, and a slot whose xid changed meanwhile
 * (its transaction ended and a new one began) is read again.  False if no
 * emitting transaction of this database is open in it.
 */
static bool
eb_read_emitter(int i, EventBusEmitter *e)
{
	EventBusSlot *slot = &eb_shared->slots[i];

	for (;;)
	{
		uint64		x1 = pg_atomic_read_u64(&slot->xid);
		uint64		x2;

		pg_read_barrier();
		e->floor = pg_atomic_read_u64(&slot->floor);
		if (e->floor == 0 || slot->dboid != MyDatabaseId)
			return false;
		e->topics = pg_atomic_read_u64(&slot->topics);
		e->since = (TimestampTz) pg_atomic_read_u64(&slot->since);
		pg_read_barrier();
		x2 = pg_atomic_read_u64(&slot->xid);
		if (x1 == x2)
		{
			e->xid = x1;
			e->procno = i;
			return true;
		}
	}
}

/*
 * The open emitting transactions of this database, and the max_seq read
 * before them: every seq at or below *max_seq belongs to a transaction that
 * has ended or is among them, with the seq's topic among its topic bits.
 * Returns how many; *out is palloc'd.  The caller must take its snapshot
 * after this returns.
 */
int
eb_emitters(EventBusDb *db, uint64 *max_seq, EventBusEmitter **out)
{
	eb_read_seq(db);
	return eb_emitters_known(db, max_seq, out);
}

/*
 * The same, without reading the sequence: the max_seq that emits have
 * raised, for a reader that need not see seqs taken otherwise (setval, a
 * restored dump).
 */
int
eb_emitters_known(EventBusDb *db, uint64 *max_seq, EventBusEmitter **out)
{
	int			n = 0;
	int			i;
	EventBusEmitter *e = NULL;

	eb_load_max_seq(db);
	*max_seq = pg_atomic_read_u64(&db->max_seq);
	pg_memory_barrier();
	for (i = 0; i < eb_shared->nslots; i++)
	{
		EventBusEmitter one;

		if (pg_atomic_read_u64(&eb_shared->slots[i].floor) == 0 || !eb_read_emitter(i, &one))
			continue;
		if (e == NULL)
			e = palloc(sizeof(EventBusEmitter) * 4);
		else if (n >= 4 && (n & (n - 1)) == 0)
			e = repalloc(e, sizeof(EventBusEmitter) * n * 2);
		e[n++] = one;
	}
	*out = e;
	return n;
}

/*
 * The open emitters of the topics names[0..nnames-1] (of every topic when
 * nnames is 0), as eb_emitters gives them: one entry per emitter and topic
 * of it, with the topic's name (*topics; NULL, *tnulls true, when nnames is
 * 0), its xid as an xid8 and its floor as a bigint.  Returns how many; the
 * arrays are palloc'd.
 */
int
eb_emitters_of(Datum *names, bool *nnulls, int nnames, uint64 *max_seq,
			   Datum **topics, bool **tnulls, Datum **xids, Datum **floors)
{
	uint64	   *bits = palloc(sizeof(uint64) * Max(nnames, 1));
	EventBusEmitter *em;
	int			nem;
	int			i,
				j,
				n = 0,
				cap;

	for (i = 0; i < nnames; i++)
		bits[i] = nnulls[i] ? 0 : eb_topic_bit(VARDATA_ANY(DatumGetTextPP(names[i])),
											  VARSIZE_ANY_EXHDR(DatumGetTextPP(names[i])));
	nem = eb_emitters(eb_db_state(), max_seq, &em);
	cap = Max(nem * Max(nnames, 1), 1);
	*topics = palloc(sizeof(Datum) * cap);
	*tnulls = palloc(sizeof(bool) * cap);
	*xids = palloc(sizeof(Datum) * cap);
	*floors = palloc(sizeof(Datum) * cap);
	for (i = 0; i < nem; i++)
		for (j = 0; j < Max(nnames, 1); j++)
			if (nnames == 0 || (em[i].topics & bits[j]))
			{
				(*topics)[n] = nnames == 0 ? (Datum) 0 : names[j];
				(*tnulls)[n] = nnames == 0;
				(*xids)[n] = FullTransactionIdGetDatum(FullTransactionIdFromU64(em[i].xid));
				(*floors)[n] = Int64GetDatum((int64) em[i].floor);
				n++;
			}
	pfree(bits);
	return n;
}

/*
 * Worker: warn once about each transaction of this database that has been
 * open longer than event_bus.long_emit_warning since its first emit.
 */
void
eb_warn_long_emitters(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	if (eb_long_emit_warning <= 0)
		return;
	for (i = 0; i < eb_shared->nslots; i++)
	{
		EventBusEmitter e;

		if (pg_atomic_read_u64(&eb_shared->slots[i].floor) == 0 || !eb_read_emitter(i, &e))
			continue;
		if (pg_atomic_read_u64(&eb_shared->slots[i].warned) == e.xid ||
			!TimestampDifferenceExceeds(e.since, now, eb_long_emit_warning))
			continue;
		pg_atomic_write_u64(&eb_shared->slots[i].warned, e.xid);
		ereport(WARNING,
				(errmsg("event_bus: transaction " UINT64_FORMAT " of process %d has been open for %ld s since its first emit",
						e.xid, ProcGlobal->allProcs[i].pid,
						(long) ((now - e.since) / USECS_PER_SEC)),
				 errdetail("Log partitions holding seqs from " UINT64_FORMAT " on cannot be dropped while it is open; its own events are delivered only once it commits.",
						   e.floor),
				 errhint("event_bus.open_emitters shows it; end it, or raise event_bus.long_emit_warning if it is expected.")));
	}
}

/*
 * Log partitions created by this transaction reach below 'covered'; publish
 * that at commit.  Within the transaction it is already true for us.
 */
void
eb_note_coverage(uint64 covered)
{
	if (covered > xact_coverage)
	{
		/* Forgotten (all of it) if this subtransaction aborts. */
		coverage_subxid = GetCurrentSubTransactionId();
		xact_coverage = covered;
	}
}

uint64
eb_known_coverage(EventBusDb *db)
{
	uint64		c = pg_atomic_read_u64(&db->covered);

	return Max(c, xact_coverage);
}

/*
 * Ask for claimers of this database to be woken when the current transaction
 * commits (it made events claimable: an ack freed an ordered lane, a retry
 * became due, ...).
 */
void
eb_wake_at_commit(void)
{
	(void) eb_db_state();
	xact_wake = true;
}

/*
 * The same for something that falls due at 'due' (a retry, a scheduled
 * event): at commit, the worker and the claimers are woken only if the
 * worker does not already plan to look by then.
 */
void
eb_wake_due_at_commit(TimestampTz due)
{
	(void) eb_db_state();
	if (!xact_wake_due_set || due < xact_wake_due)
		xact_wake_due = due;
	xact_wake_due_set = true;
}

/*
 * Ask for the claimers waiting on these topics (bits from eb_topic_bit) to
 * be woken when the current transaction commits, without the worker: a
 * claim that filled its batch may have left events behind in lanes it held
 * locked, an ack may have freed an ordered lane.  Neither changes what the
 * worker plans (a lease taken expires no sooner than maintenance looks).
 */
void
eb_wake_claimers_at_commit(uint64 topics)
{
	(void) eb_db_state();
	xact_wake_topics |= topics;
}

/* Wake the launcher when the current transaction commits. */
void
eb_wake_launcher_at_commit(void)
{
	xact_wake_launcher = true;
}
