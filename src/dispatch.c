/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  What emitting commits tell the worker, and the NOTIFYs it sends.
 *
 * A worker round used to find new events by querying the log: a PL/pgSQL
 * function with half a dozen statements over the log's partitions, hundreds
 * of times a second while somebody LISTENs - most of the worker's CPU.
 * Instead, an emitting transaction counts its events per topic and type
 * (hashes of the names) in backend-local memory, savepoints included, and
 * when it commits appends one report per topic and type to a ring in its
 * database's shared state.  The worker drains the ring each round and sends
 * one NOTIFY per subscription whose topics and types the reports match,
 * without a query; it reads event_bus.subscriptions again only when a
 * statement trigger has said that it changed.
 *
 * The report is appended in the commit callback after the transaction is
 * visible to new snapshots, and before its horizon floor is cleared
 * (horizon.c): the worker reads the open emitters before it drains the
 * ring, so an event that is neither drained nor counted later belongs to a
 * transaction it saw open, or is above the max_seq it read.  That is what
 * lets the worker fall back to counting from the log (event_bus._dispatch)
 * from its last read when the ring overflowed (a round that came too late),
 * and never miss an event: reports lost with the overflow are counted
 * there, at worst twice.
 *
 * Locking: a spinlock per database guards the ring; appenders hold it for a
 * few stores per commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "event_bus.h"
#include "dispatch.h"

/*---------------------------------------------------------------------------
 * Emitting backends
 *---------------------------------------------------------------------------
 */

/* This transaction's events per topic and type, not yet reported. */
typedef struct PendingReport
{
	int			nest_level;		/* of the (sub)transaction that emitted */
	EventBusCommit c;
} PendingReport;

static EventBusXactList pending = EB_XACT_LIST(PendingReport);
static bool subs_changed = false;	/* the trigger ran in this transaction */

static uint64
eb_name_hash(text *t)
{
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), 0);
}

/* Count n events of a topic and type, the newest with seq 'newest'. */
void
eb_dispatch_note(text *topic, text *type, int64 n, int64 newest)
{
	uint64		th = eb_name_hash(topic);
	uint64		yh = eb_name_hash(type);
	PendingReport *items = (PendingReport *) pending.items;
	PendingReport *p;
	int			level = GetCurrentTransactionNestLevel();
	int			i;

	for (i = pending.n - 1; i >= 0; i--)
	{
		p = &items[i];
		if (p->c.topic == th && p->c.type == yh && p->nest_level == level)
		{
			p->c.n += n;
			p->c.newest = Max(p->c.newest, newest);
			return;
		}
	}
	p = eb_xact_list_add(&pending);
	p->c.topic = th;
	p->c.type = yh;
	p->c.n = n;
	p->c.newest = newest;
}

/*
 * The transaction ends: at commit, report its events to the worker and say
 * whether the subscriptions changed.  Called from the transaction callback
 * of horizon.c before the horizon floor is cleared (see above).
 */
void
eb_dispatch_xact_end(EventBusDb *db, bool commit)
{
	if (commit && db != NULL && pending.n > 0)
	{
		PendingReport *items = (PendingReport *) pending.items;
		uint64		head;
		int			i;

		SpinLockAcquire(&db->ring_lock);
		head = pg_atomic_read_u64(&db->ring_head);
		for (i = 0; i < pending.n; i++)
			db->ring[(head + i) % EB_COMMIT_RING] = items[i].c;
		pg_atomic_write_u64(&db->ring_head, head + pending.n);
		SpinLockRelease(&db->ring_lock);
	}
	if (commit && db != NULL && subs_changed)
		pg_atomic_fetch_add_u64(&db->subs_gen, 1);
	pending.n = 0;
	subs_changed = false;
}

/* A rolled-back savepoint takes its events with it. */
static void
eb_dispatch_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	eb_xact_list_subxact(&pending, event);
}

/* From _PG_init while preloading. */
void
eb_dispatch_init(void)
{
	RegisterSubXactCallback(eb_dispatch_subxact_callback, NULL);
}

PG_FUNCTION_INFO_V1(eb_subscriptions_changed);

/*
 * event_bus._subscriptions_changed(): statement trigger on
 * event_bus.subscriptions; the worker reads them again once this
 * transaction commits.
 */
Datum
eb_subscriptions_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("event_bus._subscriptions_changed() must be called as a trigger")));
	(void) eb_db_state();
	subs_changed = true;
	return PointerGetDatum(NULL);
}

/*---------------------------------------------------------------------------
 * The worker
 *---------------------------------------------------------------------------
 */

/* Are there reports the worker has not drained? */
bool
eb_dispatch_waiting(EventBusDb *db, uint64 tail)
{
	return pg_atomic_read_u64(&db->ring_head) != tail;
}

/*
 * Take the reports appended since *tail (moved to the head).  Returns how
 * many, in *out (valid until the next call); *lost says that some were
 * overwritten before this call, and then none are returned.
 */
int
eb_dispatch_drain(EventBusDb *db, uint64 *tail, EventBusCommit **out, bool *lost)
{
	static EventBusCommit *buf = NULL;
	uint64		head;
	int			n = 0;
	int			i;

	if (buf == NULL)
		buf = MemoryContextAlloc(TopMemoryContext, sizeof(EventBusCommit) * EB_COMMIT_RING);
	SpinLockAcquire(&db->ring_lock);
	head = pg_atomic_read_u64(&db->ring_head);
	*lost = head - *tail > EB_COMMIT_RING;
	if (!*lost)
	{
		n = (int) (head - *tail);
		for (i = 0; i < n; i++)
			buf[i] = db->ring[(*tail + i) % EB_COMMIT_RING];
	}
	*tail = head;
	SpinLockRelease(&db->ring_lock);
	*out = buf;
	return n;
}

/* The worker's copy of event_bus.subscriptions, as hashes of the names. */
typedef struct DispatchSub
{
	char	   *name;
	int			ntopics;
	uint64	   *topics;
	int			ntypes;			/* -1: every type */
	uint64	   *types;
} DispatchSub;

static MemoryContext subs_cxt = NULL;
static DispatchSub *subs = NULL;
static int	nsubs = 0;
static bool subs_loaded = false;
static uint64 subs_gen_seen = 0;

static int
eb_hash_array(Datum d, uint64 **out)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*out = palloc(sizeof(uint64) * Max(n, 1));
	for (i = 0; i < n; i++)
		(*out)[i] = nulls[i] ? 0 : eb_name_hash(DatumGetTextPP(elems[i]));
	return n;
}

/*
 * Read the subscriptions that are not paused, if they changed since the
 * last read.  Inside a transaction, with SPI connected.
 */
static void
eb_load_subscriptions(EventBusDb *db)
{
	uint64		gen = pg_atomic_read_u64(&db->subs_gen);
	MemoryContext old;
	uint64		i;

	if (subs_loaded && gen == subs_gen_seen)
		return;
	if (subs_cxt == NULL)
		subs_cxt = AllocSetContextCreate(TopMemoryContext, "event_bus dispatch subscriptions",
										 ALLOCSET_SMALL_SIZES);
	subs_loaded = false;
	MemoryContextReset(subs_cxt);
	if (SPI_execute("SELECT subscription, topics, types FROM event_bus.subscriptions "
					"WHERE NOT paused ORDER BY subscription", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: could not read the subscriptions");
	old = MemoryContextSwitchTo(subs_cxt);
	nsubs = (int) SPI_processed;
	subs = palloc0(sizeof(DispatchSub) * Max(nsubs, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		subs[i].name = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		subs[i].ntopics = eb_hash_array(SPI_getbinval(tup, desc, 2, &isnull), &subs[i].topics);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		subs[i].ntypes = isnull ? -1 : eb_hash_array(d, &subs[i].types);
	}
	MemoryContextSwitchTo(old);
	subs_gen_seen = gen;
	subs_loaded = true;
}

static bool
eb_hash_in(uint64 h, const uint64 *set, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (set[i] == h)
			return true;
	return false;
}

/*
 * Send one NOTIFY "event_bus.<subscription>" per subscription (not paused)
 * that the reports concern, with the same payload as _dispatch():
 * {"subscription" : ..., "seq" : <newest>, "events" : <n>, "retries" : 0}.
 * Inside a transaction, with SPI connected.  Returns how many it sent.
 */
uint64
eb_dispatch_notify(EventBusDb *db, EventBusCommit *commits, int n)
{
	uint64		sent = 0;
	StringInfoData channel;
	StringInfoData payload;
	int			s;
	int			i;
	int			m = 0;

	if (n == 0)
		return 0;

	/* Merge reports of the same topic and type. */
	for (i = 0; i < n; i++)
	{
		int			j;

		for (j = 0; j < m; j++)
			if (commits[j].topic == commits[i].topic && commits[j].type == commits[i].type)
				break;
		if (j == m)
			commits[m++] = commits[i];
		else
		{
			commits[j].n += commits[i].n;
			commits[j].newest = Max(commits[j].newest, commits[i].newest);
		}
	}

	eb_load_subscriptions(db);
	initStringInfo(&channel);
	initStringInfo(&payload);
	for (s = 0; s < nsubs; s++)
	{
		DispatchSub *sub = &subs[s];
		int64		events = 0;
		int64		newest = 0;

		for (i = 0; i < m; i++)
		{
			if (!eb_hash_in(commits[i].topic, sub->topics, sub->ntopics))
				continue;
			if (sub->ntypes >= 0 && !eb_hash_in(commits[i].type, sub->types, sub->ntypes))
				continue;
			events += commits[i].n;
			newest = Max(newest, commits[i].newest);
		}
		if (events == 0)
			continue;
		resetStringInfo(&channel);
		appendStringInfo(&channel, "event_bus.%s", sub->name);
		resetStringInfo(&payload);
		appendStringInfoString(&payload, "{\"subscription\" : ");
		escape_json(&payload, sub->name);
		appendStringInfo(&payload, ", \"seq\" : " INT64_FORMAT ", \"events\" : " INT64_FORMAT
						 ", \"retries\" : 0}", newest, events);
		Async_Notify(channel.data, payload.data);
		sent++;
	}
	pfree(channel.data);
	pfree(payload.data);
	return sent;
}

/* The subscriptions may have changed without the trigger seeing it. */
void
eb_dispatch_forget_subscriptions(void)
{
	subs_loaded = false;
}
