/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Cumulative statistics: events emitted per topic; claimed, acked,
 *	  failed, retried, dead-lettered and expired per subscription.
 *
 * The counters live in shared memory, one entry per topic or subscription
 * of a database (event_bus.max_stats_entries of them), so counting costs no
 * write to any table.  Like pg_stat's, they are lost at a restart or crash
 * and say since when they count.
 *
 * A transaction's counts are kept in backend-local memory and added to the
 * shared counters when it commits: a claim, ack or emit that rolls back
 * (with its transaction or its savepoint) is not counted.  The shared entry
 * of a name is looked up once per backend and then cached: entries are
 * never freed, only reused once their database is gone, and stats_reset()
 * zeroes them in place.
 *
 * Locking: the stats' own LWLock guards the assignment of entries; the
 * counters are atomics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "event_bus.h"
#include "stats.h"

/* The kind of the entry holding a database's last stats_reset(). */
#define EB_KIND_DATABASE	'd'

typedef struct EventBusStats
{
	LWLock	   *lock;
	TimestampTz started;		/* when shared memory was set up: counters
								 * are lost at a restart or crash */
	int			max_entries;
	EventBusStatEntry entries[FLEXIBLE_ARRAY_MEMBER];
} EventBusStats;

static EventBusStats *eb_stats = NULL;

/* Backend-local: name -> shared entry (NULL: the table was full). */
typedef struct StatKey
{
	char		kind;
	char		name[EB_NAME_MAXLEN + 1];
} StatKey;

typedef struct StatCacheEntry
{
	StatKey		key;
	EventBusStatEntry *entry;
} StatCacheEntry;

static HTAB *stat_cache = NULL;

/* Counts of the current transaction, not yet in shared memory. */
typedef struct PendingCount
{
	int			nest_level;		/* of the (sub)transaction that counted */
	EventBusStatEntry *entry;
	int			counter;		/* an EventBusCounter, or -1: reset the entry */
	int64		n;
} PendingCount;

static EventBusXactList pending = EB_XACT_LIST(PendingCount);
static bool warned_full = false;

static const char *const counter_names[EB_NUM_COUNTERS] = {
	"emitted", "claimed", "acked", "failed", "retried", "dead_lettered", "expired"
};

Size
eb_stats_shmem_size(void)
{
	return add_size(offsetof(EventBusStats, entries),
					mul_size(eb_max_stats_entries, sizeof(EventBusStatEntry)));
}

/* Called from the shmem_startup_hook with AddinShmemInitLock held. */
void
eb_stats_shmem_init(void)
{
	bool		found;
	int			i;

	eb_stats = ShmemInitStruct("event_bus stats", eb_stats_shmem_size(), &found);
	if (found)
		return;
	eb_stats->lock = &(GetNamedLWLockTranche("event_bus stats"))->lock;
	eb_stats->started = GetCurrentTimestamp();
	eb_stats->max_entries = eb_max_stats_entries;
	for (i = 0; i < eb_stats->max_entries; i++)
	{
		EventBusStatEntry *e = &eb_stats->entries[i];
		int			c;

		e->dboid = InvalidOid;
		pg_atomic_init_u64(&e->since, 0);
		for (c = 0; c < EB_NUM_COUNTERS; c++)
			pg_atomic_init_u64(&e->counters[c], 0);
	}
}

static void
eb_entry_reset(EventBusStatEntry *e, TimestampTz since)
{
	int			c;

	for (c = 0; c < EB_NUM_COUNTERS; c++)
		pg_atomic_write_u64(&e->counters[c], 0);
	pg_atomic_write_u64(&e->since, (uint64) since);
}

/*
 * Since when the counters of this database count: its last stats_reset()
 * (kept in an entry of its own), or else the setting up of shared memory.
 * Caller holds the lock.
 */
static TimestampTz
eb_database_since(void)
{
	int			i;

	for (i = 0; i < eb_stats->max_entries; i++)
	{
		EventBusStatEntry *e = &eb_stats->entries[i];

		if (e->dboid == MyDatabaseId && e->kind == EB_KIND_DATABASE)
			return (TimestampTz) pg_atomic_read_u64(&e->since);
	}
	return eb_stats->started;
}

/*
 * The shared entry of a name in this database, created if needed and asked
 * for; NULL when there is none, or every entry is taken (warned once per
 * backend).  Inside a transaction: reusing the entry of a dropped database
 * looks it up.
 */
static EventBusStatEntry *
eb_stat_entry(char kind, const char *name, int len, bool create)
{
	StatKey		key;
	StatCacheEntry *ce;
	bool		found;
	EventBusStatEntry *e = NULL;
	int			i;

	if (eb_stats == NULL)
		return NULL;
	if (stat_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(StatKey);
		ctl.entrysize = sizeof(StatCacheEntry);
		ctl.hcxt = TopMemoryContext;
		stat_cache = hash_create("event_bus stats cache", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.kind = kind;
	len = Min(len, EB_NAME_MAXLEN);
	memcpy(key.name, name, len);
	ce = hash_search(stat_cache, &key, HASH_FIND, &found);
	if (found)
		return ce->entry;		/* NULL: the table was full */

	LWLockAcquire(eb_stats->lock, LW_SHARED);
	for (i = 0; i < eb_stats->max_entries && e == NULL; i++)
	{
		EventBusStatEntry *x = &eb_stats->entries[i];

		if (x->dboid == MyDatabaseId && x->kind == kind && strcmp(x->name, key.name) == 0)
			e = x;
	}
	LWLockRelease(eb_stats->lock);

	if (e == NULL && create)
	{
		EventBusStatEntry *free_entry = NULL;

		LWLockAcquire(eb_stats->lock, LW_EXCLUSIVE);
		for (i = 0; i < eb_stats->max_entries && e == NULL; i++)
		{
			EventBusStatEntry *x = &eb_stats->entries[i];

			if (x->dboid == MyDatabaseId && x->kind == kind && strcmp(x->name, key.name) == 0)
				e = x;
			else if (free_entry == NULL && !OidIsValid(x->dboid))
				free_entry = x;
		}
		/* None free: take one of a database that is gone. */
		for (i = 0; i < eb_stats->max_entries && e == NULL && free_entry == NULL; i++)
		{
			EventBusStatEntry *x = &eb_stats->entries[i];

			if (!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(x->dboid)))
				free_entry = x;
		}
		if (e == NULL && free_entry != NULL)
		{
			e = free_entry;
			eb_entry_reset(e, eb_database_since());
			e->kind = kind;
			strlcpy(e->name, key.name, sizeof(e->name));
			e->dboid = MyDatabaseId;
		}
		LWLockRelease(eb_stats->lock);
	}
	if (e == NULL && create && !warned_full)
	{
		warned_full = true;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("event_bus statistics are full: \"%s\" is not counted", key.name),
				 errhint("Raise event_bus.max_stats_entries (now %d) and restart the server.",
						 eb_stats->max_entries)));
	}
	if (e != NULL || create)
	{
		ce = hash_search(stat_cache, &key, HASH_ENTER, &found);
		ce->entry = e;
	}
	return e;
}

static void
eb_add_pending(EventBusStatEntry *e, int counter, int64 n)
{
	PendingCount *items = (PendingCount *) pending.items;
	PendingCount *p;
	int			level = GetCurrentTransactionNestLevel();
	int			i;

	/* Fold into the last count of the same kind: lists stay short. */
	for (i = pending.n - 1; i >= 0 && i >= pending.n - 8; i--)
	{
		p = &items[i];
		if (p->entry == e && p->counter == counter && p->nest_level == level)
		{
			p->n += n;
			return;
		}
	}
	p = eb_xact_list_add(&pending);
	p->entry = e;
	p->counter = counter;
	p->n = n;
}

/* Count n events for a topic ('t') or subscription ('s') at commit. */
void
eb_stat_count(char kind, const char *name, int len, EventBusCounter counter, int64 n)
{
	EventBusStatEntry *e;

	if (n == 0)
		return;
	e = eb_stat_entry(kind, name, len, true);
	if (e != NULL)
		eb_add_pending(e, (int) counter, n);
}

static void
eb_stats_xact_callback(XactEvent event, void *arg)
{
	PendingCount *items = (PendingCount *) pending.items;
	int			i;

	if (pending.n == 0)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			for (i = 0; i < pending.n; i++)
			{
				PendingCount *p = &items[i];

				if (p->counter < 0)
					eb_entry_reset(p->entry, GetCurrentTimestamp());
				else
					pg_atomic_fetch_add_u64(&p->entry->counters[p->counter], (uint64) p->n);
			}
			pending.n = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			pending.n = 0;
			break;
		default:
			break;
	}
}

/* A rolled-back savepoint takes its counts with it. */
static void
eb_stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	eb_xact_list_subxact(&pending, event);
}

/* Register the transaction callbacks; from _PG_init while preloading. */
void
eb_stats_init(void)
{
	RegisterXactCallback(eb_stats_xact_callback, NULL);
	RegisterSubXactCallback(eb_stats_subxact_callback, NULL);
}

static void
eb_require_stats(void)
{
	if (eb_stats == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("event_bus must be loaded via shared_preload_libraries"),
				 errhint("Add event_bus to shared_preload_libraries in postgresql.conf and restart the server.")));
}

static char
eb_stat_kind(FunctionCallInfo fcinfo)
{
	char		kind = PG_GETARG_CHAR(0);

	if (kind != 't' && kind != 's')
		elog(ERROR, "event_bus: unknown statistics kind \"%c\"", kind);
	return kind;
}

PG_FUNCTION_INFO_V1(eb_stat_add);
PG_FUNCTION_INFO_V1(eb_stat_new);
PG_FUNCTION_INFO_V1(eb_stat_sql);
PG_FUNCTION_INFO_V1(eb_stats_reset);

/*
 * event_bus._stat_add(kind "char", name text, counter text, n bigint):
 * count n events of a topic ('t') or subscription ('s') when this
 * transaction commits.
 */
Datum
eb_stat_add(PG_FUNCTION_ARGS)
{
	char		kind = eb_stat_kind(fcinfo);
	text	   *name = PG_GETARG_TEXT_PP(1);
	char	   *counter = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			c;

	eb_require_stats();
	for (c = 0; c < EB_NUM_COUNTERS; c++)
		if (strcmp(counter, counter_names[c]) == 0)
			break;
	if (c == EB_NUM_COUNTERS)
		elog(ERROR, "event_bus: unknown counter \"%s\"", counter);
	eb_stat_count(kind, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name), (EventBusCounter) c,
				  PG_GETARG_INT64(3));
	PG_RETURN_VOID();
}

/*
 * event_bus._stat_new(kind "char", name text): a topic or subscription of
 * that name was created; once this transaction commits, its counters start
 * from zero (a dropped namesake's counts are gone).
 */
Datum
eb_stat_new(PG_FUNCTION_ARGS)
{
	char		kind = eb_stat_kind(fcinfo);
	text	   *name = PG_GETARG_TEXT_PP(1);
	EventBusStatEntry *e;

	eb_require_stats();
	e = eb_stat_entry(kind, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name), true);
	if (e != NULL)
		eb_add_pending(e, -1, 0);
	PG_RETURN_VOID();
}

/*
 * May the current user see a subscription's statistics?  The same rule as
 * event_bus._visible(): members of its owner and admins.  The owner is read
 * as the extension's owner: the caller may not read the table.
 */
static bool
eb_may_see_subscription(text *name)
{
	Oid			me = GetUserId();
	Oid			admin = get_role_oid("event_bus_admin", true);
	Oid			owner = InvalidOid;
	EventBusAsOwner o;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {PointerGetDatum(name)};

	if (OidIsValid(admin) && has_privs_of_role(me, admin))
		return true;
	eb_as_owner_begin(&o, true);
	SPI_connect();
	if (SPI_execute_with_args("SELECT owner::oid FROM event_bus.subscriptions WHERE subscription = $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: could not look up subscription");
	if (SPI_processed == 1)
	{
		bool		isnull;

		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	eb_as_owner_end(&o);
	return OidIsValid(owner) && has_privs_of_role(me, owner);
}

/*
 * event_bus._stat(kind "char", name text): since when the counters of a
 * topic ('t') or subscription ('s') count, and their values; all NULL for
 * a subscription the caller may not see.
 */
Datum
eb_stat_sql(PG_FUNCTION_ARGS)
{
	char		kind = eb_stat_kind(fcinfo);
	text	   *name = PG_GETARG_TEXT_PP(1);
	TupleDesc	tupdesc;
	Datum		values[1 + EB_NUM_COUNTERS];
	bool		nulls[1 + EB_NUM_COUNTERS] = {0};
	EventBusStatEntry *e;
	int			c;

	eb_require_stats();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "event_bus: _stat() must return a record");
	if (kind == 's' && !eb_may_see_subscription(name))
	{
		for (c = 0; c < 1 + EB_NUM_COUNTERS; c++)
			nulls[c] = true;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
	}
	e = eb_stat_entry(kind, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name), false);
	LWLockAcquire(eb_stats->lock, LW_SHARED);
	values[0] = TimestampTzGetDatum(e != NULL ? (TimestampTz) pg_atomic_read_u64(&e->since)
									: eb_database_since());
	LWLockRelease(eb_stats->lock);
	for (c = 0; c < EB_NUM_COUNTERS; c++)
		values[1 + c] = Int64GetDatum(e != NULL ? (int64) pg_atomic_read_u64(&e->counters[c]) : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * event_bus.stats_reset(): set every counter of this database to zero, at
 * once (not at commit, as pg_stat_reset()); returns the time they count
 * from now.
 */
Datum
eb_stats_reset(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTimestamp();
	EventBusStatEntry *dbe;
	int			i;

	eb_require_stats();
	/* The database's own entry remembers the reset for entries made later. */
	dbe = eb_stat_entry(EB_KIND_DATABASE, "", 0, true);
	LWLockAcquire(eb_stats->lock, LW_SHARED);
	for (i = 0; i < eb_stats->max_entries; i++)
		if (eb_stats->entries[i].dboid == MyDatabaseId)
			eb_entry_reset(&eb_stats->entries[i], now);
	LWLockRelease(eb_stats->lock);
	if (dbe == NULL)
		ereport(WARNING,
				(errmsg("event_bus statistics are full: counters created from now on count from the server start")));
	PG_RETURN_TIMESTAMPTZ(now);
}
