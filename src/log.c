/*-------------------------------------------------------------------------
 *
 * log.c
 *	  Write event rows into the log without the executor.
 *
 * An emit used to be one INSERT through SPI: a plan-cache check, executor
 * start-up, partition routing set up from scratch, the row built by
 * expressions, executor shutdown - for one row.  Here the row goes straight
 * into the log partition that covers its seq, the way COPY writes: the
 * partition is found in the parent's partition descriptor, the tuple is
 * formed in the partition's own column layout and inserted through the table
 * AM, then into each index of the partition.  Rows of one call (emit_many,
 * and through it capture) are buffered and inserted EB_LOG_BATCH at a time
 * with table_multi_insert, as COPY does: one WAL record and one buffer lock
 * per heap page instead of per row.  A batch goes in lane by lane, so that a
 * claim, which reads a lane in seq order, finds its events side by side.  A
 * row is in the log once eb_log_close() (or a change of partition) has
 * flushed it; nothing reads the log in between.
 *
 * Only the plain case is taken: a heap partition without triggers (but the
 * log's own, which marks writes other than these), CHECK
 * constraints, generated columns or columns this file does not know, whose
 * indexes are plain column indexes (no expressions, predicates, exclusion or
 * deferred uniqueness).  The log's partitions are created that way by
 * _ensure_partitions; for anything else (somebody added a trigger or an
 * odd index) eb_log_insert() returns false and the caller inserts through
 * SPI, so such additions keep working as they would with an INSERT.
 *
 * Privileges are the caller's business: emit has checked the produce grant
 * (or, for the 1.0 entry points, runs as the owner already).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/partcache.h"
#include "utils/plancache.h"
#include "utils/relcache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "event_bus.h"
#include "log.h"

/* The log's columns, by name; an index into EventBusRow's fields. */
typedef enum
{
	COL_SEQ, COL_ID, COL_TOPIC, COL_TYPE, COL_VERSION, COL_KEY, COL_LANE,
	COL_PAYLOAD, COL_HEADERS, COL_EMITTED_AT, COL_TXID, COL_TOPIC_HASH, COL_UNKNOWN
} LogColumn;

static LogColumn
eb_log_column(const char *name)
{
	static const char *const names[] = {"seq", "id", "topic", "type", "version", "key", "lane",
	"payload", "headers", "emitted_at", "txid", "topic_hash"};
	int			i;

	for (i = 0; i < COL_UNKNOWN; i++)
		if (strcmp(name, names[i]) == 0)
			return (LogColumn) i;
	return COL_UNKNOWN;
}

/*
 * The key of a topic in the log's index (events.topic_hash): 32-bit FNV-1a
 * of the topic's bytes, as a signed integer.  The index holds it instead of
 * the topic's text, so its keys are fixed-width and compare as integers.
 * Stored in every row, it must never change: it is this file's own function
 * rather than the server's hash_bytes(), which a new major version may
 * change.  Two topics may share a key; every query on the log compares the
 * topic itself as well.
 */
int32
eb_topic_hash(const char *name, int len)
{
	uint32		h = 2166136261u;
	int			i;

	for (i = 0; i < len; i++)
	{
		h ^= (unsigned char) name[i];
		h *= 16777619u;
	}
	return (int32) h;
}

/*
 * A time-ordered UUID (version 7, RFC 9562): 48 bits of Unix milliseconds
 * (of ts), then 74 random bits.  The random bytes come from a per-backend pool
 * refilled from pg_strong_random() a kilobyte at a time, rather than one
 * call per event.  Backends fill their pool only after the fork, so no two
 * processes share one.  Ids of one backend within one millisecond are not
 * ordered among themselves; seq is what orders events.
 */
void
eb_uuid_v7(pg_uuid_t *uuid, TimestampTz ts)
{
	static uint8 pool[1024];
	static int	used = sizeof(pool);
	uint64		ms;
	int			i;

	if (used + 10 > (int) sizeof(pool))
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
		used = 0;
	}
	ms = (uint64) (ts / 1000) +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	for (i = 0; i < 6; i++)
		uuid->data[i] = (uint8) (ms >> (8 * (5 - i)));
	memcpy(&uuid->data[6], &pool[used], 10);
	used += 10;
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x70;	/* version 7 */
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;	/* RFC 9562 variant */
}

/* Open the log (the partitioned table) for inserting. */
void
eb_log_open(EventBusLog *log)
{
	Oid			relid = eb_extension_relid(EB_REL_EVENTS);

	if (!OidIsValid(relid))
		elog(ERROR, "event_bus: relation event_bus.events does not exist");
	log->cxt = CurrentMemoryContext;
	log->parent = table_open(relid, RowExclusiveLock);
	log->part = NULL;
	log->lo = log->hi = 0;
	log->nindexes = 0;
	log->plain = false;
	log->nbuffered = 0;
	log->buffered_bytes = 0;
	log->nslots = 0;
	log->slotdesc = NULL;
	log->hashed_topic = NULL;
}

/*
 * The order in which buffered rows go in: lane by lane, each lane's rows in
 * the order they came (a call's rows come in seq order).  A counting sort:
 * lanes are below 256 (a topic has at most 256).
 */
static void
eb_log_order(const EventBusLog *log, int *order)
{
	int			start[256 + 1];
	int			n = log->nbuffered;
	int			j;

	memset(start, 0, sizeof(start));
	for (j = 0; j < n; j++)
	{
		if (log->lanes[j] < 0 || log->lanes[j] > 255)
			elog(ERROR, "event_bus: lane %d out of range", log->lanes[j]);
		start[log->lanes[j] + 1]++;
	}
	for (j = 1; j <= 256; j++)
		start[j] += start[j - 1];
	for (j = 0; j < n; j++)
		order[start[log->lanes[j]]++] = j;
}

/*
 * Insert the buffered rows into the open partition, then their index
 * entries.
 */
static void
eb_log_flush(EventBusLog *log)
{
	CommandId	cid;
	int			n = log->nbuffered;
	int			i;
	int			j;
	int			order[EB_LOG_BATCH];

	if (n == 0)
		return;
	cid = GetCurrentCommandId(true);

	/*
	 * Rows go in lane by lane (the rows of one call are in seq order, so
	 * they stay in seq order within their lane): a lane's events of one
	 * emit_many or captured statement then sit side by side in the heap,
	 * where a claim, which reads one lane in seq order, finds many on each
	 * page it visits rather than about one; and their index entries go in
	 * one after the other onto the same leaf page of the (topic_hash, lane,
	 * seq) index, still in cache.
	 */
	if (n > 1)
	{
		TupleTableSlot *sorted[EB_LOG_BATCH];

		eb_log_order(log, order);
		for (j = 0; j < n; j++)
			sorted[j] = log->slots[order[j]];
		table_multi_insert(log->part, sorted, n, cid, 0, NULL);
	}
	else
	{
		order[0] = 0;
		table_tuple_insert(log->part, log->slots[0], cid, 0, NULL);
	}

	for (j = 0; j < n; j++)
	{
		int			r = order[j];
		TupleTableSlot *slot = log->slots[r];

		for (i = 0; i < log->nindexes; i++)
		{
			Datum		ivalues[INDEX_MAX_KEYS];
			bool		inulls[INDEX_MAX_KEYS];
			Relation	irel = log->indexes[i];
			IndexInfo  *ii = log->indexinfo[i];
			int			k;

			if (!ii->ii_ReadyForInserts)
				continue;
			/*
			 * The log's index keys on columns whose values the row had
			 * before it was formed: taking them from there spares deforming
			 * the tuple up to its last column, topic_hash.
			 */
			if (log->direct[i][0] >= 0)
			{
				for (k = 0; k < ii->ii_NumIndexAttrs; k++)
				{
					inulls[k] = false;
					switch ((LogColumn) log->direct[i][k])
					{
						case COL_SEQ:
							ivalues[k] = Int64GetDatum(log->seqs[r]);
							break;
						case COL_LANE:
							ivalues[k] = Int16GetDatum(log->lanes[r]);
							break;
						default:	/* COL_TOPIC_HASH (see eb_log_plain) */
							ivalues[k] = Int32GetDatum(log->hashes[r]);
							break;
					}
				}
			}
			else
				FormIndexDatum(ii, slot, NULL, ivalues, inulls);
			index_insert(irel, ivalues, inulls, &slot->tts_tid, log->part,
						 ii->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, ii);
		}
	}
	for (j = 0; j < n; j++)
		ExecClearTuple(log->slots[j]);
	log->nbuffered = 0;
	log->buffered_bytes = 0;
}

/* Close the partition open now, if any, with its indexes. */
static void
eb_log_close_part(EventBusLog *log)
{
	int			i;

	if (log->part != NULL && log->plain)
		eb_log_flush(log);
	for (i = 0; i < log->nslots; i++)
		ExecDropSingleTupleTableSlot(log->slots[i]);
	log->nslots = 0;
	if (log->slotdesc != NULL)
		FreeTupleDesc(log->slotdesc);
	log->slotdesc = NULL;
	/*
	 * The locks stay until the transaction ends, as the executor keeps them
	 * on a table it inserted into: no DDL may act on the partition or its
	 * indexes while its new rows are uncommitted.  Another emit of the same
	 * transaction then finds them in the local lock table.
	 */
	if (log->part != NULL)
	{
		for (i = 0; i < log->nindexes; i++)
			index_close(log->indexes[i], NoLock);
		table_close(log->part, NoLock);
	}
	log->part = NULL;
	log->nindexes = 0;
	log->plain = false;
}

void
eb_log_close(EventBusLog *log)
{
	eb_log_close_part(log);
	table_close(log->parent, NoLock);
}

/*
 * Kept per backend, until a relcache invalidation names the relation (DROP,
 * ALTER TABLE, a new install) or resets the cache: the OIDs of the relations
 * every emit needs, looked up by name (two catalog lookups each), and the
 * column map of the partition last written (matching the columns' names).
 * Together they were a few per cent of an emit.  One callback serves both:
 * a backend has only ten.
 */
static struct
{
	const char *name;
	Oid			relid;
}			eb_relids[] = {
	[EB_REL_EVENTS] = {"events", InvalidOid},
	[EB_REL_SEQUENCE] = {EB_SEQUENCE, InvalidOid},
};
static Oid	eb_colmap_relid = InvalidOid;
static Oid	eb_log_written_fn = InvalidOid;	/* event_bus._log_written() */
static int	eb_colmap_natts;
static int	eb_colmap[EB_LOG_MAX_COLUMNS];
static bool eb_log_callback = false;

static void
eb_log_inval(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < lengthof(eb_relids); i++)
		if (!OidIsValid(relid) || eb_relids[i].relid == relid)
			eb_relids[i].relid = InvalidOid;
	if (!OidIsValid(relid) || relid == eb_relids[EB_REL_EVENTS].relid)
		eb_log_written_fn = InvalidOid;
	if (!OidIsValid(relid) || relid == eb_colmap_relid)
		eb_colmap_relid = InvalidOid;
}

static void
eb_log_register_inval(void)
{
	if (!eb_log_callback)
	{
		CacheRegisterRelcacheCallback(eb_log_inval, (Datum) 0);
		eb_log_callback = true;
	}
}

/* The OID of the extension's relation 'which' (EB_REL_*), or InvalidOid. */
Oid
eb_extension_relid(int which)
{
	eb_log_register_inval();
	if (!OidIsValid(eb_relids[which].relid))
	{
		Oid			nsp = get_namespace_oid(EB_SCHEMA, true);

		if (OidIsValid(nsp))
			eb_relids[which].relid = get_relname_relid(eb_relids[which].name, nsp);
	}
	return eb_relids[which].relid;
}

/*
 * Are all of these triggers the log's own?  event_bus._log_written() marks
 * writes to the log other than emit's (a restore's COPY, an INSERT); emit's
 * own writes need not fire it.
 */
static bool
eb_log_own_triggers(TriggerDesc *td)
{
	int			i;

	if (td == NULL)
		return true;
	if (!OidIsValid(eb_log_written_fn))
	{
		Oid			nsp = get_namespace_oid(EB_SCHEMA, true);

		if (OidIsValid(nsp))
			eb_log_written_fn = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
												CStringGetDatum("_log_written"),
												PointerGetDatum(buildoidvector(NULL, 0)),
												ObjectIdGetDatum(nsp));
	}
	for (i = 0; i < td->numtriggers; i++)
		if (!OidIsValid(eb_log_written_fn) || td->triggers[i].tgfoid != eb_log_written_fn)
			return false;
	return true;
}

/*
 * Can rows go into this partition without the executor?  Fills the column
 * map and opens the indexes if so.
 */
static bool
eb_log_plain(EventBusLog *log)
{
	Relation	rel = log->part;
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes;
	ListCell   *lc;
	int			i;

	log->nindexes = 0;
	if (rel->rd_rel->relkind != RELKIND_RELATION || !eb_log_own_triggers(rel->trigdesc) ||
		!eb_log_own_triggers(log->parent->trigdesc) ||
		(desc->constr != NULL && (desc->constr->num_check > 0 || desc->constr->has_generated_stored)))
		return false;
	if (desc->natts > EB_LOG_MAX_COLUMNS)
		return false;
	eb_log_register_inval();
	if (RelationGetRelid(rel) == eb_colmap_relid && desc->natts == eb_colmap_natts)
		memcpy(log->colmap, eb_colmap, sizeof(int) * desc->natts);
	else
	{
		eb_colmap_relid = InvalidOid;
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped)
			{
				log->colmap[i] = COL_UNKNOWN;
				continue;
			}
			log->colmap[i] = eb_log_column(NameStr(att->attname));
			if (log->colmap[i] == COL_UNKNOWN)
				return false;	/* a column somebody added: let INSERT fill it */
		}
		memcpy(eb_colmap, log->colmap, sizeof(int) * desc->natts);
		eb_colmap_natts = desc->natts;
		eb_colmap_relid = RelationGetRelid(rel);
	}

	indexes = RelationGetIndexList(rel);
	if (list_length(indexes) > EB_LOG_MAX_INDEXES)
		return false;
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *ii;
		int			k;
		int		   *direct = log->direct[log->nindexes];

		log->indexes[log->nindexes] = irel;
		ii = log->indexinfo[log->nindexes] = BuildIndexInfo(irel);
		log->nindexes++;
		if (ii->ii_Expressions != NIL || ii->ii_Predicate != NIL || ii->ii_ExclusionOps != NULL ||
			(ii->ii_Unique && !irel->rd_index->indimmediate))
			return false;
		/* Can eb_log_flush() fill its keys without deforming the row? */
		direct[0] = -1;
		for (k = 0; k < ii->ii_NumIndexAttrs; k++)
		{
			AttrNumber	attno = ii->ii_IndexAttrNumbers[k];
			LogColumn	col = attno > 0 ? log->colmap[attno - 1] : COL_UNKNOWN;

			if (col != COL_SEQ && col != COL_LANE && col != COL_TOPIC_HASH)
			{
				direct[0] = -1;
				break;
			}
			direct[k] = col;
		}
	}
	list_free(indexes);
	return true;
}

/*
 * Partitions the log has that this backend's partition descriptor lacks.
 *
 * A backend reads the partitions of the log into its relcache entry, and
 * reads them again when an invalidation message names the log: mostly when
 * it first locks a relation in a transaction.  Two ways leave it without a
 * partition that its transaction can see:
 *  - a creator's commit is visible (its log_partitions rows, which emitters
 *    check) before it sends its invalidation messages, and ATTACH's lock
 *    does not keep anybody out of the log meanwhile;
 *  - a descriptor can stay stale with no message pending (seen: an emitter
 *    found no partition 20 ms after its creator's message had been read,
 *    while pg_inherits listed it and a rebuild found it; likely the message
 *    arrived while the descriptor was being built, whose catalog reads take
 *    locks that read messages, and the build, begun with an older catalog
 *    snapshot, stored it after).
 * Callers look when a partition they expect is not there (an emitter's seq
 * that it made sure of, a claim's max_seq): if pg_inherits lists partitions
 * the descriptor does not have, build it again and forget the plans made
 * from the old one (a claim's kept plans would not read the new partition).
 * Partitions are only ever added above the others, so a count tells.
 */
static bool
eb_log_refresh(Relation parent)
{
	PartitionDesc pd = RelationGetPartitionDesc(parent, true);

	if (list_length(find_inheritance_children(RelationGetRelid(parent), NoLock)) == pd->nparts)
		return false;
	RelationCacheInvalidateEntry(RelationGetRelid(parent));
	ResetPlanCache();
	return true;
}

/*
 * The index in the log's partition descriptor of the partition that covers
 * seq, or -1; its bound's offset in *off.
 */
static int
eb_log_find(EventBusLog *log, int64 seq, PartitionDesc *pdp, int *off)
{
	PartitionKey key = RelationGetPartitionKey(log->parent);
	PartitionDesc pd = RelationGetPartitionDesc(log->parent, true);
	Datum		value = Int64GetDatum(seq);
	bool		equal;

	*pdp = pd;
	if (pd->nparts == 0 || key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1)
		return -1;
	*off = partition_range_datum_bsearch(key->partsupfunc, key->partcollation, pd->boundinfo,
										 1, &value, &equal);
	return pd->boundinfo->indexes[*off + 1];
}

/* The exclusive upper bound of the log's partitions (0: none, or unbounded). */
static int64
eb_log_top(Relation rel)
{
	PartitionKey key = RelationGetPartitionKey(rel);
	PartitionBoundInfo b = RelationGetPartitionDesc(rel, true)->boundinfo;

	if (key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1)
		return PG_INT64_MAX;	/* not the log's own layout: no bound */
	if (b == NULL)
		return 0;				/* no partition */
	if (partition_bound_has_default(b))
		return PG_INT64_MAX;
	if (b->ndatums == 0)
		return 0;
	if (b->kind[b->ndatums - 1][0] != PARTITION_RANGE_DATUM_VALUE)
		return PG_INT64_MAX;	/* up to MAXVALUE */
	return DatumGetInt64(b->datums[b->ndatums - 1][0]);
}

/*
 * The highest seq at or below max_seq that a read of the log by this backend
 * finds, whatever partition holds it.
 *
 * A consumer that locked the log before a partition was attached, and reads
 * again in the same transaction, reads with the partitions (and the plans)
 * it had, unless something made it read invalidation messages; and its
 * descriptor may lack a partition for the reasons eb_log_refresh gives.  A
 * claim would then move its cursor past the rows of the missing partition,
 * never to deliver them.  So read the messages now, after max_seq was read;
 * if the partitions known do not reach max_seq, make sure none is missing;
 * and never report a seq past the last one known.  Partitions are only ever
 * added above the others, so a descriptor that reaches a seq holds every
 * partition below it.  Rows left out are those of transactions that wrote
 * them into a partition committed after this look, so they commit after it
 * too, and their commits wake claimers.
 */
uint64
eb_log_readable(uint64 max_seq)
{
	Oid			relid = eb_extension_relid(EB_REL_EVENTS);
	Relation	rel;
	int64		top;

	if (!OidIsValid(relid) || max_seq == 0)
		return max_seq;

	/*
	 * Not behind DDL that waits for the log (DROP EXTENSION, which locks the
	 * functions it drops before the tables, so that a caller holding the
	 * log's lock and calling one of them next deadlocks with it): then the
	 * reads that follow take the lock afresh, and read the messages there.
	 */
	if (!ConditionalLockRelationOid(relid, AccessShareLock))
		return max_seq;
	rel = table_open(relid, NoLock);
	AcceptInvalidationMessages();
	top = eb_log_top(rel);
	if (top <= (int64) max_seq && eb_log_refresh(rel))
		top = eb_log_top(rel);
	table_close(rel, NoLock);
	if (top <= 0)
		return 0;
	return Min(max_seq, (uint64) top - 1);
}

/*
 * The log's partitions as this backend sees them, in seq order: OIDs and
 * bounds [lo, hi), copied into the current memory context.  Returns false
 * (and nothing) when the log is not laid out as _ensure_partitions lays it
 * out (range partitions on seq, no default partition): the caller reads
 * through the parent then.
 *
 * A statement on the parent plans every partition; its generic plan locks
 * each one on every execution and, when its seq bounds span many of them,
 * sets up a scan of each: a claim with 120 partitions cost five times what
 * it cost with one.  Claims read the partitions a range covers instead.
 * The parent is locked (as a read of it would lock it) and the messages
 * read, so that the list holds every partition attached before: partitions
 * are only ever added above the others, and eb_log_readable bounds what a
 * claim reads by the partitions known.
 */
bool
eb_log_parts(EventBusParts *parts)
{
	Oid			relid = eb_extension_relid(EB_REL_EVENTS);
	Relation	rel;
	PartitionKey key;
	PartitionDesc pd;
	PartitionBoundInfo b;
	int			i;
	bool		ok = true;

	parts->n = 0;
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	AcceptInvalidationMessages();
	key = RelationGetPartitionKey(rel);
	pd = RelationGetPartitionDesc(rel, true);
	b = pd->boundinfo;
	if (key == NULL || key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1 ||
		key->parttypid[0] != INT8OID || (b != NULL && partition_bound_has_default(b)))
		ok = false;
	parts->oids = palloc(sizeof(Oid) * Max(pd->nparts, 1));
	parts->lo = palloc(sizeof(int64) * Max(pd->nparts, 1));
	parts->hi = palloc(sizeof(int64) * Max(pd->nparts, 1));
	for (i = 0; ok && b != NULL && i < b->ndatums; i++)
	{
		int			idx = b->indexes[i + 1];

		if (idx < 0)
			continue;			/* a gap between partitions */
		if (b->kind[i][0] != PARTITION_RANGE_DATUM_VALUE || i + 1 >= b->ndatums ||
			b->kind[i + 1][0] != PARTITION_RANGE_DATUM_VALUE)
		{
			ok = false;			/* MINVALUE or MAXVALUE: not the log's own */
			break;
		}
		parts->oids[parts->n] = pd->oids[idx];
		parts->lo[parts->n] = DatumGetInt64(b->datums[i][0]);
		parts->hi[parts->n] = DatumGetInt64(b->datums[i + 1][0]);
		parts->n++;
	}
	table_close(rel, NoLock);
	if (!ok)
		parts->n = 0;
	return ok;
}

/*
 * The position in parts of the first partition that holds a seq above
 * 'after' (parts->n if none does).
 */
int
eb_log_parts_above(const EventBusParts *parts, int64 after)
{
	int			lo = 0,
				hi = parts->n;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (parts->hi[mid] - 1 > after)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Open the partition that covers seq (NULL if none does). */
static void
eb_log_route(EventBusLog *log, int64 seq)
{
	PartitionDesc pd;
	int			off;
	int			idx;
	MemoryContext old;

	eb_log_close_part(log);
	idx = eb_log_find(log, seq, &pd, &off);
	/* Emit made sure that a partition covers seq: this backend may lack it. */
	if (idx < 0 && eb_log_refresh(log->parent))
		idx = eb_log_find(log, seq, &pd, &off);
	if (idx < 0)
		return;					/* the INSERT reports it */
	/*
	 * The bound at off is at or below seq, the next one above it: they are
	 * the partition's lower and upper bounds (see get_partition_for_tuple).
	 */
	log->lo = off >= 0 && pd->boundinfo->kind[off][0] == PARTITION_RANGE_DATUM_VALUE ?
		DatumGetInt64(pd->boundinfo->datums[off][0]) : PG_INT64_MIN;
	log->hi = off + 1 < pd->boundinfo->ndatums &&
		pd->boundinfo->kind[off + 1][0] == PARTITION_RANGE_DATUM_VALUE ?
		DatumGetInt64(pd->boundinfo->datums[off + 1][0]) : PG_INT64_MAX;
	log->part = table_open(pd->oids[idx], RowExclusiveLock);
	old = MemoryContextSwitchTo(log->cxt);
	log->plain = eb_log_plain(log);
	MemoryContextSwitchTo(old);
}

/*
 * Insert one event (buffered: see above).  False, having written nothing, if
 * its partition is not a plain one (or there is none): the caller inserts it
 * through SPI.
 */
bool
eb_log_insert(EventBusLog *log, const EventBusRow *row)
{
	TupleDesc	desc;
	Datum		values[EB_LOG_MAX_COLUMNS];
	bool		nulls[EB_LOG_MAX_COLUMNS];
	HeapTuple	tuple;
	int			i;
	int32		topic_hash;

	if (log->part == NULL || row->seq < log->lo || row->seq >= log->hi)
		eb_log_route(log, row->seq);
	if (!log->plain)
		return false;

	/*
	 * The rows of one call share their topic: hash it once.  (The topic a
	 * row points to stays in memory while the log is open: emit's argument.)
	 */
	if (log->hashed_topic == NULL || !eb_text_eq(log->hashed_topic, row->topic))
	{
		log->topic_hash = eb_topic_hash(VARDATA_ANY(row->topic), VARSIZE_ANY_EXHDR(row->topic));
		log->hashed_topic = row->topic;
	}
	topic_hash = log->topic_hash;

	desc = RelationGetDescr(log->part);
	for (i = 0; i < desc->natts; i++)
	{
		nulls[i] = false;
		switch ((LogColumn) log->colmap[i])
		{
			case COL_SEQ:
				values[i] = Int64GetDatum(row->seq);
				break;
			case COL_ID:
				values[i] = UUIDPGetDatum(row->id);
				break;
			case COL_TOPIC:
				values[i] = PointerGetDatum(row->topic);
				break;
			case COL_TYPE:
				values[i] = PointerGetDatum(row->type);
				break;
			case COL_VERSION:
				values[i] = Int32GetDatum(row->version);
				break;
			case COL_KEY:
				values[i] = PointerGetDatum(row->key);
				nulls[i] = row->key == NULL;
				break;
			case COL_LANE:
				values[i] = Int16GetDatum(row->lane);
				break;
			case COL_PAYLOAD:
				values[i] = PointerGetDatum(row->payload);
				break;
			case COL_HEADERS:
				values[i] = PointerGetDatum(row->headers);
				break;
			case COL_EMITTED_AT:
				values[i] = TimestampTzGetDatum(row->emitted_at);
				break;
			case COL_TXID:
				values[i] = FullTransactionIdGetDatum(row->txid);
				nulls[i] = !row->with_txid;
				break;
			case COL_TOPIC_HASH:
				values[i] = Int32GetDatum(topic_hash);
				break;
			case COL_UNKNOWN:	/* a dropped column */
				values[i] = (Datum) 0;
				nulls[i] = true;
				break;
		}
	}
	/* The slot owns the tuple and frees it once flushed. */
	tuple = heap_form_tuple(desc, values, nulls);
	if (log->nbuffered == log->nslots)
	{
		/*
		 * A slot pins a reference-counted descriptor in the resource owner,
		 * whose forgetting searches its list: quadratic in a batch's slots,
		 * and a tenth of an emit_many of 1,000.  One emit's slot takes the
		 * partition's own; the others share an unpinned copy.
		 */
		TupleDesc	sd = desc;
		MemoryContext old = MemoryContextSwitchTo(log->cxt);

		if (log->nslots > 0)
		{
			if (log->slotdesc == NULL)
				log->slotdesc = CreateTupleDescCopy(desc);
			sd = log->slotdesc;
		}
		log->slots[log->nslots++] = MakeSingleTupleTableSlot(sd, &TTSOpsHeapTuple);
		MemoryContextSwitchTo(old);
	}
	log->seqs[log->nbuffered] = row->seq;
	log->lanes[log->nbuffered] = row->lane;
	log->hashes[log->nbuffered] = topic_hash;
	ExecStoreHeapTuple(tuple, log->slots[log->nbuffered++], true);
	log->buffered_bytes += tuple->t_len;
	if (log->nbuffered == EB_LOG_BATCH || log->buffered_bytes >= EB_LOG_BATCH_BYTES)
		eb_log_flush(log);
	return true;
}
