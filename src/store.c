/*-------------------------------------------------------------------------
 *
 * store.c
 *	  The extension's bookkeeping tables read and written through the table
 *	  access method, without the executor.
 *
 * A claim and an ack of a batch used to run a dozen small SPI statements on
 * subscriptions, cursors, leases and retries: starting each statement's
 * executor, opening its relations and building its scan keys cost more than
 * the row each touched.  Here they read a subscription's rows through the
 * index led by its name, lock a row as SELECT ... FOR UPDATE does in READ
 * COMMITTED (the newest version of the row, waiting or skipping), and
 * insert, update and delete rows with their index entries, as
 * CatalogTupleInsert does for catalogs.
 *
 * Only while a table is as the install script made it: the columns it
 * names (by name and type), a heap, no row security, no rules, no triggers
 * but its foreign keys' own, no index on an expression or with a
 * predicate.  A table changed otherwise is written by the SQL statements,
 * which run whatever was added (the callers keep them).  What the foreign
 * keys' triggers would check, the callers do themselves: a lease locks its
 * subscription's row FOR KEY SHARE before it is written, as the check
 * does; the other writes leave the keys alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "event_bus.h"
#include "store.h"

typedef struct StoreShape
{
	const char *name;
	int			ncols;
	int			keycol;			/* the subscription's column */
	bool		whole;			/* the columns are all the table has */
	const char *cols[EB_STORE_MAXCOLS];
	Oid			types[EB_STORE_MAXCOLS];
} StoreShape;

static const StoreShape shapes[] = {
	{"subscriptions", 7, EB_SUB_NAME, false,
		{"subscription", "topics", "types", "ordered", "paused", "lease", "owner"},
	{TEXTOID, TEXTARRAYOID, TEXTARRAYOID, BOOLOID, BOOLOID, INTERVALOID, REGROLEOID}},
	{"cursors", 7, EB_CUR_SUBSCRIPTION, true,
		{"subscription", "topic", "lane", "position", "high", "pending_xids", "pending_after"},
	{TEXTOID, TEXTOID, INT2OID, INT8OID, INT8OID, XID8ARRAYOID, INT8ARRAYOID}},
	{"leases", 9, EB_LEASE_SUBSCRIPTION, true,
		{"lease_id", "subscription", "topic", "lane", "seqs", "claimed_at", "expires_at", "claimed_by", "token"},
	{INT8OID, TEXTOID, TEXTOID, INT2OID, BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, UUIDOID}},
	{"retries", 1, 0, false, {"subscription"}, {TEXTOID}}
};

/* What was found about each table, until its relcache entry is invalidated. */
typedef struct StoreLook
{
	bool		looked;
	Oid			relid;
	bool		readable;		/* the columns and an index to find them by */
	bool		writable;		/* and nothing the executor would have to run */
	AttrNumber	att[EB_STORE_MAXCOLS];
	Oid			scan_index;
} StoreLook;

static StoreLook looks[lengthof(shapes)];
static bool store_callback;

static void
store_inval(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < lengthof(looks); i++)
		if (!OidIsValid(relid) || looks[i].relid == relid || looks[i].scan_index == relid)
			looks[i].looked = false;
}

/* Is irel a plain btree on column att with text's default operator class, in collation "C"? */
static bool
store_index_on(Relation irel, AttrNumber att)
{
	Form_pg_index ix = irel->rd_index;

	return irel->rd_rel->relam == BTREE_AM_OID && ix->indisvalid && ix->indisready &&
		ix->indnkeyatts >= 1 && ix->indkey.values[0] == att &&
		RelationGetIndexExpressions(irel) == NIL && RelationGetIndexPredicate(irel) == NIL &&
		irel->rd_opcintype[0] == TEXTOID && irel->rd_indcollation[0] == C_COLLATION_OID &&
		irel->rd_opfamily[0] == get_opclass_family(GetDefaultOpClass(TEXTOID, BTREE_AM_OID));
}

static void
store_look(int which, Relation rel)
{
	const StoreShape *sh = &shapes[which];
	StoreLook  *lk = &looks[which];
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *td = rel->trigdesc;
	List	   *indexes;
	ListCell   *lc;
	int			live = 0;
	int			i,
				c;

	lk->readable = lk->writable = false;
	lk->scan_index = InvalidOid;
	for (c = 0; c < sh->ncols; c++)
		lk->att[c] = InvalidAttrNumber;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		live++;
		for (c = 0; c < sh->ncols; c++)
			if (strcmp(NameStr(att->attname), sh->cols[c]) == 0 && att->atttypid == sh->types[c])
				lk->att[c] = att->attnum;
	}
	lk->readable = true;
	for (c = 0; c < sh->ncols; c++)
		lk->readable &= lk->att[c] != InvalidAttrNumber;

	lk->writable = lk->readable && sh->whole && live == sh->ncols &&
		rel->rd_rel->relkind == RELKIND_RELATION && rel->rd_rel->relam == HEAP_TABLE_AM_OID &&
		!rel->rd_rel->relrowsecurity && rel->rd_rules == NULL &&
		(desc->constr == NULL || (!desc->constr->has_generated_stored && desc->constr->num_check == 0));
	for (i = 0; lk->writable && td != NULL && i < td->numtriggers; i++)
		lk->writable = td->triggers[i].tgisinternal &&
			RI_FKey_trigger_type(td->triggers[i].tgfoid) != RI_TRIGGER_NONE;

	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);

		if (RelationGetIndexExpressions(irel) != NIL || RelationGetIndexPredicate(irel) != NIL ||
			irel->rd_index->indisexclusion)
			lk->writable = false;
		if (lk->readable && !OidIsValid(lk->scan_index) && store_index_on(irel, lk->att[sh->keycol]))
			lk->scan_index = lfirst_oid(lc);
		index_close(irel, AccessShareLock);
	}
	list_free(indexes);
	if (!OidIsValid(lk->scan_index))
		lk->readable = lk->writable = false;
	lk->looked = true;
}

/*
 * Open table 'which' (EB_T_*) for reading, or for writing too, unless it is
 * not as the install script made it (see above): then false, and the
 * caller runs its statements instead.
 */
bool
eb_store_open(EventBusStore *st, int which, bool write)
{
	StoreLook  *lk = &looks[which];
	Oid			relid;

	if (!store_callback)
	{
		CacheRegisterRelcacheCallback(store_inval, (Datum) 0);
		store_callback = true;
	}
	memset(st, 0, sizeof(*st));

	/*
	 * The OID found last, until an invalidation of the table (dropped with
	 * the extension, say) says to look it up again.
	 */
	relid = lk->looked ? lk->relid : get_relname_relid(shapes[which].name, get_namespace_oid(EB_SCHEMA, false));
	if (!OidIsValid(relid))
		return false;
	st->which = which;
	st->rel = table_open(relid, write ? RowExclusiveLock : AccessShareLock);
	if (!lk->looked || lk->relid != relid)
	{
		lk->relid = relid;
		store_look(which, st->rel);
	}
	if (!lk->readable || (write && !lk->writable))
	{
		table_close(st->rel, NoLock);
		st->rel = NULL;
		return false;
	}
	memcpy(st->att, lk->att, sizeof(st->att));
	st->scan_index = lk->scan_index;
	st->slot = table_slot_create(st->rel, NULL);
	return true;
}

/*
 * The table's indexes, opened when a row first needs entries in them (an
 * insert, an update that is not HOT): a delete, a lock and a HOT update
 * need none.  The table's lock keeps the set as it is meanwhile.
 */
static void
store_open_indexes(EventBusStore *st)
{
	List	   *indexes;
	ListCell   *lc;

	if (st->indexes_open)
		return;
	indexes = RelationGetIndexList(st->rel);
	if (list_length(indexes) > EB_STORE_MAXINDEXES)
		elog(ERROR, "event_bus: table \"%s\" has too many indexes", shapes[st->which].name);
	foreach(lc, indexes)
	{
		int			i = st->nindexes++;

		st->indexes[i] = index_open(lfirst_oid(lc), RowExclusiveLock);
		st->indexinfo[i] = BuildIndexInfo(st->indexes[i]);
	}
	list_free(indexes);
	st->indexes_open = true;
}

/* Close what eb_store_open opened; the locks stay until the transaction ends. */
void
eb_store_close(EventBusStore *st)
{
	int			i;

	if (st->rel == NULL)
		return;
	if (st->scan != NULL)
	{
		index_endscan(st->scan);
		index_close(st->scan_irel, NoLock);
	}
	for (i = 0; i < st->nindexes; i++)
		index_close(st->indexes[i], NoLock);
	ExecDropSingleTupleTableSlot(st->slot);
	table_close(st->rel, NoLock);
	st->rel = NULL;
}

/*
 * A snapshot as the next SQL statement of this function would take: the
 * transaction's writes so far included, other transactions' as of now
 * (claims and acks run in READ COMMITTED).  Registered: unregister it.
 */
Snapshot
eb_store_snapshot(void)
{
	CommandCounterIncrement();
	return RegisterSnapshot(GetTransactionSnapshot());
}

/* Begin reading the rows of a subscription that snap sees. */
void
eb_store_scan(EventBusStore *st, Datum subscription, Snapshot snap)
{
	ScanKeyData key;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, subscription);
	if (st->scan == NULL)
	{
		st->scan_irel = index_open(st->scan_index, AccessShareLock);
		st->scan = index_beginscan(st->rel, st->scan_irel, snap, 1, 0);
	}
	index_rescan(st->scan, &key, 1, NULL, 0);
}

/* The next row of the scan, into st->slot; false when there is none. */
bool
eb_store_next(EventBusStore *st)
{
	return index_getnext_slot(st->scan, ForwardScanDirection, st->slot);
}

/* Column col (EB_*_) of the row in st->slot. */
Datum
eb_store_get(EventBusStore *st, int col, bool *isnull)
{
	return slot_getattr(st->slot, st->att[col], isnull);
}

/* The same, copied into cxt. */
Datum
eb_store_copy(EventBusStore *st, int col, bool *isnull, MemoryContext cxt)
{
	Datum		d = slot_getattr(st->slot, st->att[col], isnull);
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(st->rel), st->att[col] - 1);

	return eb_datum_copy(d, *isnull, att->attbyval, att->attlen, cxt);
}

/*
 * Lock the row at tid as SELECT ... FOR UPDATE (mode) does in READ
 * COMMITTED: its newest version, which lands in st->slot (its TID in
 * st->slot->tts_tid).  TM_Ok, or TM_Deleted when the row is gone, or
 * TM_WouldBlock when wait is LockWaitSkip and another transaction holds a
 * lock on it.
 */
TM_Result
eb_store_lock(EventBusStore *st, ItemPointer tid, Snapshot snap, LockTupleMode mode, LockWaitPolicy wait)
{
	TM_FailureData tmfd;
	ItemPointerData at = *tid;
	TM_Result	r;

	r = table_tuple_lock(st->rel, &at, snap, st->slot, GetCurrentCommandId(true), mode, wait,
						 TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
	switch (r)
	{
		case TM_Ok:
		case TM_Deleted:
		case TM_WouldBlock:
			return r;
		case TM_SelfModified:
			elog(ERROR, "event_bus: a row of \"%s\" was changed again by this command", shapes[st->which].name);
			break;
		default:
			elog(ERROR, "event_bus: unexpected result %d locking a row of \"%s\"", (int) r, shapes[st->which].name);
	}
	return r;
}

/* A tuple of the table from column values in EB_*_ order. */
static HeapTuple
store_form(EventBusStore *st, Datum *values, bool *nulls, TupleTableSlot **vslot)
{
	TupleDesc	desc = RelationGetDescr(st->rel);
	Datum	   *v = palloc0(sizeof(Datum) * desc->natts);
	bool	   *n = palloc(sizeof(bool) * desc->natts);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	int			c;

	memset(n, true, sizeof(bool) * desc->natts);
	for (c = 0; c < shapes[st->which].ncols; c++)
	{
		v[st->att[c] - 1] = values[c];
		n[st->att[c] - 1] = nulls != NULL && nulls[c];
	}
	memcpy(slot->tts_values, v, sizeof(Datum) * desc->natts);
	memcpy(slot->tts_isnull, n, sizeof(bool) * desc->natts);
	ExecStoreVirtualTuple(slot);
	*vslot = slot;
	return heap_form_tuple(desc, v, n);
}

/* Index entries for tup, whose values are in vslot. */
static void
store_index(EventBusStore *st, HeapTuple tup, TupleTableSlot *vslot)
{
	int			i;

	store_open_indexes(st);
	for (i = 0; i < st->nindexes; i++)
	{
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];
		IndexInfo  *ii = st->indexinfo[i];

		if (!ii->ii_ReadyForInserts)
			continue;
		FormIndexDatum(ii, vslot, NULL, values, isnull);
		index_insert(st->indexes[i], values, isnull, &tup->t_self, st->rel,
					 ii->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, ii);
	}
	ExecDropSingleTupleTableSlot(vslot);
}

/* Insert a row (opened for writing). */
void
eb_store_insert(EventBusStore *st, Datum *values, bool *nulls)
{
	TupleTableSlot *vslot;
	HeapTuple	tup = store_form(st, values, nulls, &vslot);

	simple_heap_insert(st->rel, tup);
	store_index(st, tup, vslot);
	heap_freetuple(tup);
}

/*
 * Replace the row at tid, which this transaction has locked (eb_store_lock):
 * no other can have changed it since.  A HOT update needs no index entries.
 */
void
eb_store_update(EventBusStore *st, ItemPointer tid, Datum *values, bool *nulls)
{
	TupleTableSlot *vslot;
	HeapTuple	tup = store_form(st, values, nulls, &vslot);

	simple_heap_update(st->rel, tid, tup);
	if (!HeapTupleIsHeapOnly(tup))
		store_index(st, tup, vslot);
	else
		ExecDropSingleTupleTableSlot(vslot);
	heap_freetuple(tup);
}

/* Delete the row at tid, which this transaction has locked. */
void
eb_store_delete(EventBusStore *st, ItemPointer tid)
{
	simple_heap_delete(st->rel, tid);
}
