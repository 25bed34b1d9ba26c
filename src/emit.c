/*-------------------------------------------------------------------------
 *
 * emit.c
 *	  event_bus.emit() and event_bus.emit_many(): publish events.
 *
 * An emit writes one row into the partitioned, append-only log, in the
 * caller's transaction: straight into the partition that covers its seq
 * (log.c), not through an INSERT statement.  Fan-out to subscriptions
 * happens by reading, so the cost of an emit does not depend on how many
 * subscriptions read the topic.
 *
 * Before the first seq of a transaction is taken, the backend publishes its
 * horizon floor (horizon.c); afterwards it raises the database's max_seq.
 * If the log's partitions might not reach the seqs about to be taken (the
 * worker normally creates them well ahead), the emitter creates them itself,
 * so an emit never fails for lack of a partition.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "access/xloginsert.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_sequence.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "event_bus.h"
#include "dispatch.h"
#include "horizon.h"
#include "log.h"
#include "shmem.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(eb_emit);
PG_FUNCTION_INFO_V1(eb_emit_many);

/*
 * The fallback INSERT, for a log partition eb_log_insert() cannot write
 * itself (see log.c).  [0]: the 1.0 install script's table; [1]: since 1.1,
 * with txid (claims compare it with the open emitters they step over) and
 * topic_hash (the topic's key in the log's index).
 */
static SPIPlanPtr emit_plan[2] = {NULL, NULL};

#define EB_EMIT_SQL(txcol, txval) \
	"INSERT INTO event_bus.events " \
	"(seq, id, topic, type, version, key, lane, payload, headers, emitted_at" txcol ") " \
	"VALUES ($7, $8, $1, $2, $6, $4, $9, $3, $5, $10" txval ")"

static const char *emit_sql[2] = {
	EB_EMIT_SQL("", ""),
	EB_EMIT_SQL(", txid, topic_hash", ", $11, event_bus._topic_hash($1)")
};

static Oid	emit_argtypes[11] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID, JSONBOID, INT4OID,
	INT8OID, UUIDOID, INT2OID, TIMESTAMPTZOID, XID8OID};

/*
 * Since 1.1 emit and emit_many run as their caller: they check the caller's
 * produce grant and write the log's rows themselves (log.c).  What they do
 * through SPI (a topic lookup, extending the log, the fallback INSERT) runs
 * as the extension's owner with search_path pinned (eb_as_owner_begin).  The
 * 1.0 definitions are SECURITY DEFINER functions, and there the caller is the
 * owner already.
 */
static void
eb_spi_begin(EventBusAsOwner *u, bool as_owner)
{
	eb_as_owner_begin(u, as_owner);
	SPI_connect();
}

static void
eb_spi_end(EventBusAsOwner *u)
{
	SPI_finish();
	eb_as_owner_end(u);
}

/*
 * Backend-local cache of topic lane counts and of who may produce to them.
 * A topic's lane count never changes, but a topic can be dropped and created
 * again, and grants change: create_topic(), drop_topic(), grant_topic() and
 * revoke_topic() send a relcache invalidation for event_bus.topics, which
 * empties the cache in every backend (at commit of the change); so do
 * changes of role membership and role attributes.
 *
 * Entries are per topic and role.  The 1.0 entry points check no grants
 * (1.0 had none) and use InvalidOid as the role.
 */
typedef struct TopicCacheKey
{
	Oid			role;
	char		name[EB_NAME_MAXLEN + 1];
} TopicCacheKey;

typedef struct TopicCacheEntry
{
	TopicCacheKey key;
	int32		lanes;
	bool		allowed;
} TopicCacheEntry;

static HTAB *topic_cache = NULL;
static Oid	topic_cache_relid = InvalidOid;

static void
eb_topic_cache_reset(void)
{
	if (topic_cache != NULL)
	{
		hash_destroy(topic_cache);
		topic_cache = NULL;
	}
}

static void
eb_topic_cache_inval(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == topic_cache_relid)
		eb_topic_cache_reset();
}

static void
eb_topic_cache_role_inval(Datum arg, int cacheid, uint32 hashvalue)
{
	eb_topic_cache_reset();
}

/*
 * Lanes of a topic, or 0 if it does not exist; *allowed says whether 'role'
 * may produce to it (always true for InvalidOid).  A cache miss looks the
 * topic up through SPI, as the extension's owner.
 */
static int32
eb_topic_lanes(text *topic, Oid role, bool *allowed)
{
	static bool callback_registered = false;
	TopicCacheKey key;
	TopicCacheEntry *entry;
	bool		found;
	Datum		args[2];
	Oid			argtypes[2] = {TEXTOID, OIDOID};
	int			ret;
	int32		lanes = 0;
	bool		isnull;
	EventBusAsOwner user;

	/* eb_check_name() bounded the length */
	memset(&key, 0, sizeof(key));
	key.role = role;
	memcpy(key.name, VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));

	if (topic_cache == NULL)
	{
		HASHCTL		ctl;

		if (!callback_registered)
		{
			CacheRegisterRelcacheCallback(eb_topic_cache_inval, (Datum) 0);
			CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, eb_topic_cache_role_inval, (Datum) 0);
			CacheRegisterSyscacheCallback(AUTHOID, eb_topic_cache_role_inval, (Datum) 0);
			callback_registered = true;
		}
		ctl.keysize = sizeof(TopicCacheKey);
		ctl.entrysize = sizeof(TopicCacheEntry);
		ctl.hcxt = TopMemoryContext;
		topic_cache = hash_create("event_bus topics", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		topic_cache_relid = get_relname_relid("topics", get_namespace_oid(EB_SCHEMA, false));
	}

	entry = hash_search(topic_cache, &key, HASH_FIND, NULL);
	if (entry != NULL)
	{
		*allowed = entry->allowed;
		return entry->lanes;
	}

	eb_spi_begin(&user, OidIsValid(role));
	args[0] = PointerGetDatum(topic);
	args[1] = ObjectIdGetDatum(role);
	if (OidIsValid(role))
		ret = SPI_execute_with_args("SELECT t.lanes, event_bus._topic_allowed(t.topic, 'produce', $2) "
									"FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) $1",
									2, argtypes, args, NULL, true, 1);
	else
		ret = SPI_execute_with_args("SELECT lanes, true FROM event_bus.topics WHERE topic OPERATOR(pg_catalog.=) $1",
									1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "event_bus: topic lookup failed: %s", SPI_result_code_string(ret));
	*allowed = false;
	if (SPI_processed == 0)
	{
		eb_spi_end(&user);
		return 0;				/* not cached: it may be created soon */
	}
	lanes = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*allowed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	eb_spi_end(&user);
	/* The lookup may have processed an invalidation that dropped the cache. */
	if (topic_cache != NULL)
	{
		entry = hash_search(topic_cache, &key, HASH_ENTER, &found);
		entry->lanes = lanes;
		entry->allowed = *allowed;
	}
	return lanes;
}

/*
 * The lanes of a topic the caller may produce to; errors for an unknown
 * topic or a missing grant.  Shared by both forms.
 */
static int32
eb_producible_topic(text *topic, Oid role)
{
	bool		allowed;
	int32		lanes = eb_topic_lanes(topic, role, &allowed);

	if (lanes <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("topic \"%s\" does not exist", text_to_cstring(topic)),
				 errhint("Create it with event_bus.create_topic('%s').", text_to_cstring(topic))));
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to produce to topic \"%s\"", text_to_cstring(topic)),
				 errdetail("Role \"%s\" has no produce grant on topic \"%s\".",
						   GetUserNameFromId(role, false), text_to_cstring(topic)),
				 errhint("An event_bus_admin can grant it with event_bus.grant_topic('%s', '%s', 'produce').",
						 text_to_cstring(topic), GetUserNameFromId(role, false))));
	return lanes;
}

/*
 * The lane of an event: hash of its key (the same hash as SQL's hashtext(),
 * which emit_many uses), or its seq for events without a key.
 */
static int16
eb_lane(text *key, int64 seq, int32 lanes)
{
	uint32		h;

	if (key == NULL)
		return (int16) (seq % lanes);
	h = (uint32) DatumGetInt32(DirectFunctionCall1Coll(hashtext, DEFAULT_COLLATION_OID,
													   PointerGetDatum(key)));
	return (int16) ((h & 0x7fffffff) % lanes);
}

/*
 * Headers must be an object (or NULL: none).  Returns their size, which
 * counts against event_bus.max_payload_size.
 */
static Size
eb_check_headers(Jsonb *headers)
{
	if (headers == NULL)
		return 0;
	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event headers must be a JSON object")));
	return VARSIZE(headers);
}

/*
 * Validate what every event of a call shares: topic, type, headers and
 * version.  Returns the size of the headers (eb_check_headers).
 */
static Size
eb_check_event(text *topic, text *type, Jsonb *headers, int32 version)
{
	Size		hsize;
	int			typelen;

	eb_check_writable();
	eb_check_name("topic", topic);

	if (type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event type must not be null")));
	typelen = VARSIZE_ANY_EXHDR(type);
	if (typelen == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type must not be empty")));
	if (typelen > EB_TYPE_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type is too long"),
				 errdetail("Event types are at most %d bytes long.", EB_TYPE_MAXLEN)));

	hsize = eb_check_headers(headers);
	if (version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event version must be at least 1, not %d", version)));
	return hsize;
}

/* The arguments emit and emit_many share, checked. */
static Size
eb_check_common(FunctionCallInfo fcinfo, text **topic, text **type,
				Jsonb **headers, int32 *version)
{
	*topic = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	*type = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	*headers = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	*version = PG_ARGISNULL(5) ? 1 : PG_GETARG_INT32(5);
	return eb_check_event(*topic, *type, *headers, *version);
}

static void
eb_check_payload(text *topic, Jsonb *payload, Size hsize)
{
	Size		size = VARSIZE(payload) + hsize;

	if (size > (Size) eb_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event for topic \"%s\" is too large", text_to_cstring(topic)),
				 errdetail("Payload and headers take %zu bytes; event_bus.max_payload_size is %d bytes.",
						   size, eb_max_payload_size),
				 errhint("Store large documents in a table and emit a reference to them.")));
}

static void
eb_check_key(text *key)
{
	if (key != NULL && VARSIZE_ANY_EXHDR(key) > EB_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event key is too long"),
				 errdetail("Event keys are at most %d bytes long.", EB_KEY_MAXLEN)));
}

static void
eb_check_dedupe_key(text *dkey)
{
	if (VARSIZE_ANY_EXHDR(dkey) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dedupe key must not be empty"),
				 errhint("Pass NULL for an event without a dedupe key.")));
	if (VARSIZE_ANY_EXHDR(dkey) > EB_DEDUPE_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dedupe key is too long"),
				 errdetail("Dedupe keys are at most %d bytes long.", EB_DEDUPE_KEY_MAXLEN),
				 errhint("Use a hash of a longer identifier.")));
}

/*
 * Dedupe keys (event_bus.dedupe_keys).  Taking a key inserts its row, or
 * takes over the row of an expired holder; the primary key makes a
 * concurrent emit of the same key wait for the first one's transaction,
 * then find its row (committed) or insert its own (rolled back).
 */
static SPIPlanPtr dedupe_take_plan = NULL;
static SPIPlanPtr dedupe_find_plan = NULL;

static const char *dedupe_take_sql =
"INSERT INTO event_bus.dedupe_keys AS d (topic, dedupe_key, seq, expires_at) "
"SELECT $1, $2, $3, pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) "
"       coalesce(t.dedupe_window, pg_catalog.make_interval(secs => $4::pg_catalog.float8)) "
"  FROM event_bus.topics t WHERE t.topic OPERATOR(pg_catalog.=) $1 "
"ON CONFLICT (topic, dedupe_key) DO UPDATE SET seq = excluded.seq, expires_at = excluded.expires_at "
" WHERE d.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() "
"RETURNING d.seq";

static const char *dedupe_find_sql =
"SELECT d.seq FROM event_bus.dedupe_keys d "
" WHERE d.topic OPERATOR(pg_catalog.=) $1 AND d.dedupe_key OPERATOR(pg_catalog.=) $2";

static Oid	dedupe_argtypes[4] = {TEXTOID, TEXTOID, INT8OID, INT4OID};

/*
 * Let the event with 'seq' hold (topic, dedupe key).  Returns 0 if it does
 * now, or the seq of the event of this topic that holds the key within its
 * dedupe window (and then nothing was written).
 */
static int64
eb_dedupe(text *topic, text *dkey, int64 seq, bool as_owner)
{
	Datum		values[4];
	EventBusAsOwner user;
	int64		held = -1;
	int			attempt;
	bool		isnull;

	values[0] = PointerGetDatum(topic);
	values[1] = PointerGetDatum(dkey);
	values[2] = Int64GetDatum(seq);
	values[3] = Int32GetDatum(eb_dedupe_window);
	eb_spi_begin(&user, as_owner);
	/* Again if the holder's row went between the two statements (expired). */
	for (attempt = 0; attempt < 3 && held < 0; attempt++)
	{
		if (SPI_execute_plan(eb_kept_plan(&dedupe_take_plan, dedupe_take_sql, 4, dedupe_argtypes, 0),
							 values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "event_bus: could not record a dedupe key");
		if (SPI_processed == 1)
			held = 0;
		else if (SPI_execute_plan(eb_kept_plan(&dedupe_find_plan, dedupe_find_sql, 2, dedupe_argtypes, 0),
								  values, NULL, false, 1) == SPI_OK_SELECT && SPI_processed == 1)
			held = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (held < 0)
		elog(ERROR, "event_bus: could not record dedupe key \"%s\"", text_to_cstring(dkey));
	eb_spi_end(&user);
	return held;
}

/*
 * emit_many's seqs: n consecutive values of the log's sequence taken in one
 * step, as n calls of nextval() with nothing between them would take them,
 * under one lock of the sequence's page and with one WAL record (nextval
 * writes one every 32 values, and looks the sequence up and locks its page
 * on every call: 6-8% of a bulk emit or a captured statement).  The page is
 * changed as nextval changes it: the WAL record holds the value 32 past the
 * last one taken, so that a crash never hands out a value twice, and
 * log_cnt says how many of those the next nextval() may still use unlogged.
 * A reader of the sequence (the horizon reads it under the page's lock)
 * sees the whole block taken or none of it.
 *
 * Only for a sequence as the install script makes it: increment 1, no
 * cycle, no cache (cached values of another backend would sit below the
 * block, as they would with nextval).  Otherwise, or when the block would
 * come near the sequence's maximum, nothing is taken and false returned:
 * the caller calls nextval() n times, which raises what it raises.
 */
#define EB_SEQ_MAGIC	0x1717	/* the special space of a sequence's page */
#define EB_SEQ_LOG_VALS 32		/* values a WAL record logs ahead */

static bool
eb_take_seqs(Oid seqoid, int n, int64 *first)
{
	HeapTuple	pgs;
	Form_pg_sequence form;
	int64		maxv;
	bool		plain;
	Relation	rel;
	Buffer		buf;
	Page		page;
	ItemId		lp;
	HeapTupleHeader td;
	Form_pg_sequence_data seq;
	int64		lo;
	int64		hi;
	bool		wal;

	pgs = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seqoid));
	if (!HeapTupleIsValid(pgs))
		return false;
	form = (Form_pg_sequence) GETSTRUCT(pgs);
	plain = form->seqincrement == 1 && !form->seqcycle && form->seqcache == 1;
	maxv = form->seqmax;
	ReleaseSysCache(pgs);
	if (!plain || n < 1)
		return false;

	PreventCommandIfReadOnly("nextval()");
	rel = relation_open(seqoid, RowExclusiveLock);
	if (rel->rd_rel->relkind != RELKIND_SEQUENCE)
	{
		relation_close(rel, NoLock);
		return false;
	}
	buf = ReadBuffer(rel, 0);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buf);
	lp = PageGetItemId(page, FirstOffsetNumber);
	td = ItemIdIsNormal(lp) ? (HeapTupleHeader) PageGetItem(page, lp) : NULL;
	if (*(uint32 *) PageGetSpecialPointer(page) != EB_SEQ_MAGIC || td == NULL ||
		HeapTupleHeaderGetRawXmax(td) != InvalidTransactionId)
	{
		/* not a page nextval would use as it is: let it deal with it */
		UnlockReleaseBuffer(buf);
		relation_close(rel, NoLock);
		return false;
	}
	seq = (Form_pg_sequence_data) ((char *) td + td->t_hoff);
	lo = seq->is_called ? seq->last_value + 1 : seq->last_value;
	if (seq->last_value > maxv - (int64) n - EB_SEQ_LOG_VALS - 1)
	{
		UnlockReleaseBuffer(buf);
		relation_close(rel, NoLock);
		return false;
	}
	hi = lo + n - 1;

	/* An xid, so that the commit flushes the WAL record (as nextval does). */
	wal = RelationNeedsWAL(rel);
	if (wal)
		(void) GetTopTransactionId();

	START_CRIT_SECTION();
	MarkBufferDirty(buf);
	if (wal)
	{
		xl_seq_rec	xlrec;
		XLogRecPtr	recptr;

		XLogBeginInsert();
		XLogRegisterBuffer(0, buf, REGBUF_WILL_INIT);
		seq->last_value = hi + EB_SEQ_LOG_VALS;
		seq->is_called = true;
		seq->log_cnt = 0;
		xlrec.node = rel->rd_node;
		XLogRegisterData((char *) &xlrec, sizeof(xl_seq_rec));
		XLogRegisterData((char *) td, ItemIdGetLength(lp));
		recptr = XLogInsert(RM_SEQ_ID, XLOG_SEQ_LOG);
		PageSetLSN(page, recptr);
	}
	seq->last_value = hi;
	seq->is_called = true;
	seq->log_cnt = wal ? EB_SEQ_LOG_VALS : 0;
	END_CRIT_SECTION();

	UnlockReleaseBuffer(buf);
	relation_close(rel, NoLock);
	*first = lo;
	return true;
}

/*
 * Make sure log partitions reach past 'maxseq'.  Emits call it twice: with
 * the seqs they are about to take (so that the 1.0 install script's
 * _ensure_partitions, which starts the first partition at the sequence's
 * position, never starts it past them), and with the highest seq they were
 * given (so that concurrent emitters, which take seqs in between, cannot
 * leave any of them without a partition).
 * Extending starts half a partition ahead (normally maintenance keeps two
 * partitions of room and this never runs); the caller only waits for another
 * extending transaction when its own seqs would otherwise have no partition.
 */
static bool
eb_coverage_short(EventBusDb *db, int64 maxseq)
{
	return (uint64) maxseq + eb_partition_size / 2 >= eb_known_coverage(db);
}

static void
eb_ensure_coverage(EventBusDb *db, int64 maxseq, bool as_owner)
{
	uint64		next = (uint64) maxseq;
	uint64		want = next + eb_partition_size / 2;
	Datum		args[2];
	Oid			argtypes[2] = {INT8OID, INT8OID};
	int			ret;
	EventBusAsOwner user;

	if (!eb_coverage_short(db, maxseq))
		return;

	eb_spi_begin(&user, as_owner);
	args[0] = Int64GetDatum((int64) want);
	args[1] = Int64GetDatum((int64) next);
	ret = SPI_execute_with_args("SELECT event_bus._ensure_partitions($1, $2)",
								2, argtypes, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: could not extend the event log");
	eb_spi_end(&user);
}

/* '{}', the headers of an event emitted without them. */
static Jsonb *
eb_empty_headers(void)
{
	static Jsonb *empty = NULL;

	if (empty == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		empty = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		MemoryContextSwitchTo(old);
	}
	return empty;
}

/*
 * Write one event row: straight into its log partition, or - if that
 * partition is not a plain one (see log.c) - with an INSERT through SPI.
 */
static void
eb_write_event(EventBusLog *log, const EventBusRow *row, bool as_owner)
{
	Datum		values[11];
	char		nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			v = row->with_txid ? 1 : 0;
	int			ret;
	EventBusAsOwner user;

	if (eb_log_insert(log, row))
		return;

	values[0] = PointerGetDatum(row->topic);
	values[1] = PointerGetDatum(row->type);
	values[2] = PointerGetDatum(row->payload);
	values[3] = PointerGetDatum(row->key);
	nulls[3] = row->key ? ' ' : 'n';
	values[4] = PointerGetDatum(row->headers);
	values[5] = Int32GetDatum(row->version);
	values[6] = Int64GetDatum(row->seq);
	values[7] = UUIDPGetDatum(row->id);
	values[8] = Int16GetDatum(row->lane);
	values[9] = TimestampTzGetDatum(row->emitted_at);
	values[10] = FullTransactionIdGetDatum(row->txid);

	eb_spi_begin(&user, as_owner);
	ret = SPI_execute_plan(eb_kept_plan(&emit_plan[v], emit_sql[v], 10 + v, emit_argtypes, 0),
						   values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "event_bus: emit failed: %s", SPI_result_code_string(ret));
	eb_spi_end(&user);
}

/* How an entry point emits. */
typedef struct EmitHow
{
	bool		v11;			/* a 1.1 entry point: rows with txid, SPI as
								 * the extension's owner */
	Oid			role;			/* whose produce grant to check, or InvalidOid */
	bool		options;		/* arguments 6 and 7: dedupe key(s) and
								 * deliver_at */
	bool		given_id;		/* argument 6 is the event's id: a scheduled
								 * event entering the log */
} EmitHow;

/* deliver_at of a 1.1 emit, or 0 when it has none. */
static TimestampTz
eb_deliver_at(FunctionCallInfo fcinfo, const EmitHow *how, bool dedupe)
{
	TimestampTz t;

	if (!how->options || PG_NARGS() < 8 || PG_ARGISNULL(7))
		return 0;
	t = PG_GETARG_TIMESTAMPTZ(7);
	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deliver_at must be a finite time")));
	if (t < GetCurrentStatementStartTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deliver_at %s is in the past", timestamptz_to_str(t)),
				 errhint("Omit deliver_at to publish the event now.")));
	if (dedupe)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("an event cannot have both a dedupe key and deliver_at"),
				 errhint("Cancel a scheduled event with event_bus.cancel_scheduled() before scheduling it again.")));
	return t;
}

static SPIPlanPtr schedule_plan = NULL;

/*
 * Keep an event emitted with deliver_at in event_bus.scheduled_events until
 * it is due (_release_scheduled() moves it into the log then), and have the
 * worker plan for it once this transaction commits.
 */
static void
eb_schedule(const EventBusRow *row, TimestampTz deliver_at, bool as_owner)
{
	static Oid	argtypes[10] = {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, JSONBOID, JSONBOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, REGROLEOID};
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	EventBusAsOwner user;

	values[0] = UUIDPGetDatum(row->id);
	values[1] = PointerGetDatum(row->topic);
	values[2] = PointerGetDatum(row->type);
	values[3] = Int32GetDatum(row->version);
	values[4] = PointerGetDatum(row->key);
	nulls[4] = row->key ? ' ' : 'n';
	values[5] = PointerGetDatum(row->payload);
	values[6] = PointerGetDatum(row->headers);
	values[7] = TimestampTzGetDatum(deliver_at);
	values[8] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[9] = ObjectIdGetDatum(GetUserId());
	eb_spi_begin(&user, as_owner);
	if (SPI_execute_plan(eb_kept_plan(&schedule_plan,
									  "INSERT INTO event_bus.scheduled_events "
									  "(id, topic, type, version, key, payload, headers, deliver_at, "
									  " scheduled_at, scheduled_by) "
									  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
									  10, argtypes, 0),
						 values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "event_bus: could not schedule an event");
	eb_spi_end(&user);
	eb_wake_due_at_commit(deliver_at);
}

/*
 * emit(topic text, type text, payload jsonb, key text, headers jsonb,
 *		version int[, dedupe_key text, deliver_at timestamptz]) returns bigint:
 * the new event's seq (NULL for a scheduled one); and _emit_scheduled(...,
 * id uuid).
 */
static Datum
eb_emit_internal(FunctionCallInfo fcinfo, const EmitHow *how)
{
	EventBusRow row;
	EventBusLog log;
	pg_uuid_t	id;
	Jsonb	   *headers;
	Size		hsize;
	EventBusDb *db;
	int32		lanes;
	text	   *dkey;
	TimestampTz deliver_at;

	hsize = eb_check_common(fcinfo, &row.topic, &row.type, &headers, &row.version);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event payload must not be null"),
				 errhint("Use '{}'::jsonb or 'null'::jsonb for an event without data.")));
	row.payload = PG_GETARG_JSONB_P(2);
	eb_check_payload(row.topic, row.payload, hsize);
	row.key = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	eb_check_key(row.key);
	dkey = how->options && !PG_ARGISNULL(6) ? PG_GETARG_TEXT_PP(6) : NULL;
	if (dkey != NULL)
		eb_check_dedupe_key(dkey);
	deliver_at = eb_deliver_at(fcinfo, how, dkey != NULL);
	row.headers = headers ? headers : eb_empty_headers();

	db = eb_db_state();
	lanes = eb_producible_topic(row.topic, how->role);

	if (how->given_id)
		id = *PG_GETARG_UUID_P(6);
	else
		eb_uuid_v7(&id, GetCurrentTimestamp());
	row.id = &id;
	if (deliver_at != 0)
	{
		eb_schedule(&row, deliver_at, how->v11);
		PG_RETURN_NULL();
	}

	eb_begin_emit(db);
	eb_note_emit_topic(row.topic);
	eb_ensure_coverage(db, pg_atomic_read_u64(&db->max_seq) + 1, how->v11);
	row.seq = nextval_internal(db->seqoid, false);
	eb_ensure_coverage(db, row.seq, how->v11);
	eb_note_seq(db, (uint64) row.seq);
	if (dkey != NULL)
	{
		int64		held = eb_dedupe(row.topic, dkey, row.seq, how->v11);

		if (held > 0)
			PG_RETURN_INT64(held);	/* the seq taken stays unused */
	}

	row.lane = eb_lane(row.key, row.seq, lanes);
	row.emitted_at = GetCurrentTimestamp();
	row.with_txid = how->v11;	/* 1.1 or later: with txid */
	row.txid = how->v11 ? GetTopFullTransactionId() : InvalidFullTransactionId;

	eb_log_open(&log);
	eb_write_event(&log, &row, how->v11);
	eb_log_close(&log);
	eb_lane_head_raise(db, eb_topic_hash(VARDATA_ANY(row.topic), VARSIZE_ANY_EXHDR(row.topic)),
					   row.lane, (uint64) row.seq);

	eb_stat_count('t', VARDATA_ANY(row.topic), VARSIZE_ANY_EXHDR(row.topic), EB_EMITTED, 1);
	eb_dispatch_note(row.topic, row.type, 1, row.seq);
	PG_RETURN_INT64(row.seq);
}

/*
 * After a call's events went into the log: raise the heads of the lanes
 * they went to (heads[lane] is the highest seq written there, 0 for none),
 * count them in the topic's statistics and note them for dispatch.
 */
static void
eb_emitted(EventBusDb *db, text *topic, text *type, const int64 *heads, int32 lanes,
		   int64 written, int64 newest)
{
	int32		topic_hash = eb_topic_hash(VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));
	int			i;

	for (i = 0; i < lanes; i++)
		if (heads[i] > 0)
			eb_lane_head_raise(db, topic_hash, (int16) i, (uint64) heads[i]);
	eb_stat_count('t', VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic), EB_EMITTED, written);
	if (written > 0)
		eb_dispatch_note(topic, type, written, newest);
}

/*
 * emit_many(topic text, type text, payloads jsonb[], keys text[],
 *			 headers jsonb, version int) returns bigint[]: the seqs of the new
 * events, in the order of 'payloads'.  All seqs are taken first, then the
 * log is made to cover them, then the rows are written.
 */
static Datum
eb_emit_many_internal(FunctionCallInfo fcinfo, const EmitHow *how)
{
	EventBusRow row;
	EventBusLog log;
	pg_uuid_t	id;
	Jsonb	   *headers;
	Size		hsize;
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *elnulls;
	Datum	   *kelems = NULL;
	bool	   *knulls = NULL;
	int			n;
	int			i;
	EventBusDb *db;
	int32		lanes = 0;
	Datum	   *seqs;
	int64		maxseq = 0;
	Datum	   *delems = NULL;
	bool	   *dnulls = NULL;
	bool	   *held;
	int64		written = 0;
	int64		newest = 0;
	int64	   *heads;
	TimestampTz deliver_at;

	hsize = eb_check_common(fcinfo, &row.topic, &row.type, &headers, &row.version);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payloads must not be null")));
	payloads = PG_GETARG_ARRAYTYPE_P(2);
	if (ARR_NDIM(payloads) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("payloads must be a one-dimensional array")));
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT, &elems, &elnulls, &n);
	for (i = 0; i < n; i++)
	{
		if (elnulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payload %d of %d is null", i + 1, n),
					 errhint("Use '{}'::jsonb or 'null'::jsonb for an event without data.")));
		eb_check_payload(row.topic, DatumGetJsonbP(elems[i]), hsize);
	}

	if (!PG_ARGISNULL(3))
	{
		ArrayType  *keys = PG_GETARG_ARRAYTYPE_P(3);
		int			nk;

		if (ARR_NDIM(keys) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("keys must be a one-dimensional array")));
		deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT, &kelems, &knulls, &nk);
		if (nk != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("keys has %d elements but payloads has %d", nk, n),
					 errhint("Pass one key per payload, or NULL for no keys.")));
		for (i = 0; i < nk; i++)
			if (!knulls[i])
				eb_check_key(DatumGetTextPP(kelems[i]));
	}
	if (how->options && !PG_ARGISNULL(6))
	{
		ArrayType  *dkeys = PG_GETARG_ARRAYTYPE_P(6);
		int			nd;

		if (ARR_NDIM(dkeys) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("dedupe_keys must be a one-dimensional array")));
		deconstruct_array(dkeys, TEXTOID, -1, false, TYPALIGN_INT, &delems, &dnulls, &nd);
		if (nd != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("dedupe_keys has %d elements but payloads has %d", nd, n),
					 errhint("Pass one dedupe key (or NULL) per payload, or NULL for none.")));
		for (i = 0; i < nd; i++)
			if (!dnulls[i])
				eb_check_dedupe_key(DatumGetTextPP(delems[i]));
	}
	deliver_at = eb_deliver_at(fcinfo, how, delems != NULL);
	row.headers = headers ? headers : eb_empty_headers();

	if (how->v11 || n > 0)
		lanes = eb_producible_topic(row.topic, how->role);
	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));
	if (deliver_at != 0)
	{
		int			dims[1] = {n};
		int			lbs[1] = {1};

		bool	   *no_seq = palloc(sizeof(bool) * n);

		row.id = &id;
		for (i = 0; i < n; i++)
		{
			row.payload = DatumGetJsonbP(elems[i]);
			row.key = kelems == NULL || knulls[i] ? NULL : DatumGetTextPP(kelems[i]);
			eb_uuid_v7(&id, GetCurrentTimestamp());
			eb_schedule(&row, deliver_at, how->v11);
			no_seq[i] = true;	/* NULL: no seq until it enters the log */
		}
		PG_RETURN_ARRAYTYPE_P(construct_md_array(palloc0(sizeof(Datum) * n), no_seq, 1, dims, lbs,
												 INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	}

	db = eb_db_state();
	eb_begin_emit(db);
	eb_note_emit_topic(row.topic);

	/* The seqs first, then partitions for them, then the rows. */
	eb_ensure_coverage(db, pg_atomic_read_u64(&db->max_seq) + n, how->v11);
	seqs = palloc(sizeof(Datum) * n);
	if (eb_take_seqs(db->seqoid, n, &maxseq))
	{
		for (i = 0; i < n; i++)
			seqs[i] = Int64GetDatum(maxseq + i);
		maxseq += n - 1;
	}
	else
		for (i = 0; i < n; i++)
		{
			int64		s = nextval_internal(db->seqoid, false);

			seqs[i] = Int64GetDatum(s);
			if (s > maxseq)
				maxseq = s;
		}
	eb_ensure_coverage(db, maxseq, how->v11);
	eb_note_seq(db, (uint64) maxseq);

	/* Payloads whose dedupe key an event holds are not written. */
	held = palloc0(sizeof(bool) * n);
	for (i = 0; delems != NULL && i < n; i++)
	{
		int64		h;

		if (dnulls[i])
			continue;
		h = eb_dedupe(row.topic, DatumGetTextPP(delems[i]), DatumGetInt64(seqs[i]), how->v11);
		if (h > 0)
		{
			seqs[i] = Int64GetDatum(h);
			held[i] = true;
		}
	}

	row.with_txid = how->v11;	/* 1.1 or later: with txid */
	row.txid = how->v11 ? GetTopFullTransactionId() : InvalidFullTransactionId;
	row.id = &id;
	heads = palloc0(sizeof(int64) * lanes);
	eb_log_open(&log);
	for (i = 0; i < n; i++)
	{
		if (held[i])
			continue;
		row.seq = DatumGetInt64(seqs[i]);
		newest = Max(newest, row.seq);
		written++;
		row.payload = DatumGetJsonbP(elems[i]);
		row.key = kelems == NULL || knulls[i] ? NULL : DatumGetTextPP(kelems[i]);
		row.lane = eb_lane(row.key, row.seq, lanes);
		heads[row.lane] = Max(heads[row.lane], row.seq);
		row.emitted_at = GetCurrentTimestamp();
		eb_uuid_v7(&id, row.emitted_at);
		eb_write_event(&log, &row, how->v11);
	}
	eb_log_close(&log);
	eb_emitted(db, row.topic, row.type, heads, lanes, written, newest);
	PG_RETURN_ARRAYTYPE_P(construct_array(seqs, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

PG_FUNCTION_INFO_V1(eb_emit_1_1);
PG_FUNCTION_INFO_V1(eb_emit_many_1_1);
PG_FUNCTION_INFO_V1(eb_emit_scheduled);

/* The entry points of the 1.0 install script: SECURITY DEFINER, no grants. */
static const EmitHow how_1_0 = {false, InvalidOid, false, false};

Datum
eb_emit(PG_FUNCTION_ARGS)
{
	return eb_emit_internal(fcinfo, &how_1_0);
}

Datum
eb_emit_many(PG_FUNCTION_ARGS)
{
	return eb_emit_many_internal(fcinfo, &how_1_0);
}

/*
 * Since 1.1: run as the caller, who needs a produce grant on the topic;
 * dedupe keys and deliver_at.
 */
Datum
eb_emit_1_1(PG_FUNCTION_ARGS)
{
	EmitHow		how = {true, GetUserId(), true, false};

	return eb_emit_internal(fcinfo, &how);
}

Datum
eb_emit_many_1_1(PG_FUNCTION_ARGS)
{
	EmitHow		how = {true, GetUserId(), true, false};

	return eb_emit_many_internal(fcinfo, &how);
}

/*
 * event_bus._emit_scheduled(topic, type, payload, key, headers, version,
 * id): a scheduled event that is due enters the log with its id.  Its
 * producer's grant was checked when it was scheduled.
 */
Datum
eb_emit_scheduled(PG_FUNCTION_ARGS)
{
	static const EmitHow how = {true, InvalidOid, false, true};

	if (PG_ARGISNULL(6))
		elog(ERROR, "event_bus: a scheduled event needs its id");
	return eb_emit_internal(fcinfo, &how);
}

/*
 * event_bus._emit_rows(topic, type, payload, key, headers): an aggregate
 * that emits one event per row it is given, in the order the rows come, and
 * returns how many it emitted.  Capture triggers run it over a statement's
 * transition table: each event is written as its row comes, where
 * emit_many needs the statement's rows gathered into arrays first (copied
 * twice, and limited to 1 GB: a statement whose rows made more JSON than
 * that failed).  The same checks as emit_many's: the caller needs EXECUTE on
 * emit_many and the produce grant of the topic; topic and type are the same
 * for every row.
 *
 * Seqs are taken in blocks as rows come: 1, 1, 2, 4, ... up to 1,000 at a
 * time, so a statement of n rows leaves at most min(n, 1,000) - 1 seqs
 * unused (a statement of one row none): partitions fill about as densely as
 * with emit_many, which takes exactly n.
 */
typedef struct EmitRows
{
	text	   *topic;			/* the first row's (in the aggregate's context) */
	text	   *type;
	int32		lanes;
	EventBusDb *db;
	int64		next;			/* seqs taken and not used: [next, end) */
	int64		end;
	int64		taken;
	int64		written;
	int64		newest;
	int64	   *heads;			/* per lane, the highest seq written */
	FullTransactionId txid;
	bool		closed;
	MemoryContext aggcxt;
	MemoryContext rowcxt;		/* rows being formed; reset once inserted */
	bool		log_open;
	EventBusLog log;
} EmitRows;

/*
 * The caller may execute emit_many, as emitting without this aggregate
 * would need.  (Looked up without the caller's rights on the schema: a
 * capture trigger's plan, once made, does not need them either.)
 */
static void
eb_emit_rows_check_acl(void)
{
	Oid			argtypes[8] = {TEXTOID, TEXTOID, JSONBARRAYOID, TEXTARRAYOID, JSONBOID, INT4OID,
							   TEXTARRAYOID, TIMESTAMPTZOID};
	Oid			nsp = get_namespace_oid(EB_SCHEMA, false);
	Oid			fn;

	fn = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid, CStringGetDatum("emit_many"),
						 PointerGetDatum(buildoidvector(argtypes, lengthof(argtypes))),
						 ObjectIdGetDatum(nsp));
	if (!OidIsValid(fn))
		elog(ERROR, "event_bus: function event_bus.emit_many does not exist");
	if (pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function emit_many"),
				 errdetail("The events of a captured table are emitted as the role that writes to it.")));
}

static EmitRows *
eb_emit_rows_start(MemoryContext aggcxt, text *topic, text *type)
{
	MemoryContext old = MemoryContextSwitchTo(aggcxt);
	EmitRows   *st = palloc0(sizeof(EmitRows));

	eb_emit_rows_check_acl();
	st->topic = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(topic));
	st->type = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(type));
	st->lanes = eb_producible_topic(st->topic, GetUserId());
	st->heads = palloc0(sizeof(int64) * st->lanes);
	st->db = eb_db_state();
	eb_begin_emit(st->db);
	eb_note_emit_topic(st->topic);
	st->txid = GetTopFullTransactionId();
	st->aggcxt = aggcxt;
	st->rowcxt = AllocSetContextCreate(aggcxt, "event_bus _emit_rows", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(old);
	return st;
}

/* Insert the rows formed and close the log (for good, or for a while). */
static void
eb_emit_rows_close_log(EmitRows *st)
{
	MemoryContext old;

	if (!st->log_open)
		return;
	old = MemoryContextSwitchTo(st->rowcxt);
	eb_log_close(&st->log);
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->rowcxt);
	st->log_open = false;
}

/*
 * The next block of seqs (see above), with partitions for them.  Making a
 * partition alters the log, which may not be open meanwhile: the log is
 * closed first (its rows inserted) when one may be needed.
 */
static void
eb_emit_rows_take(EmitRows *st)
{
	int			n = (int) Min(Max(st->taken, 1), EB_LOG_BATCH);
	int64		upto = (int64) pg_atomic_read_u64(&st->db->max_seq) + n;
	int64		first;

	if (eb_coverage_short(st->db, upto))
	{
		eb_emit_rows_close_log(st);
		eb_ensure_coverage(st->db, upto, true);
	}
	if (!eb_take_seqs(st->db->seqoid, n, &first))
	{
		n = 1;
		first = nextval_internal(st->db->seqoid, false);
	}
	st->next = first;
	st->end = first + n;
	st->taken += n;
	if (eb_coverage_short(st->db, st->end - 1))
	{
		eb_emit_rows_close_log(st);
		eb_ensure_coverage(st->db, st->end - 1, true);
	}
	eb_note_seq(st->db, (uint64) (st->end - 1));
	if (!st->log_open)
	{
		MemoryContext old = MemoryContextSwitchTo(st->aggcxt);

		eb_log_open(&st->log);
		MemoryContextSwitchTo(old);
		st->log_open = true;
	}
}

PG_FUNCTION_INFO_V1(eb_emit_rows_step);
PG_FUNCTION_INFO_V1(eb_emit_rows_final);

Datum
eb_emit_rows_step(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	MemoryContext old;
	EmitRows   *st;
	EventBusRow row;
	pg_uuid_t	id;
	Size		hsize;
	text	   *topic;
	text	   *type;
	Jsonb	   *headers;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "event_bus._emit_rows_step called in non-aggregate context");
	topic = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	type = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	headers = PG_ARGISNULL(5) ? NULL : PG_GETARG_JSONB_P(5);
	if (PG_ARGISNULL(0))
	{
		hsize = eb_check_event(topic, type, headers, 1);
		st = NULL;
	}
	else
	{
		/*
		 * The first row's topic and type were checked: a row with the same
		 * needs only its headers checked.
		 */
		st = (EmitRows *) PG_GETARG_POINTER(0);
		if (topic == NULL || type == NULL || !eb_text_eq(topic, st->topic) || !eb_text_eq(type, st->type))
		{
			(void) eb_check_event(topic, type, headers, 1);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event_bus._emit_rows takes one topic and one type"),
					 errdetail("Rows of topic \"%s\" and type \"%s\" came after rows of topic \"%s\" and type \"%s\".",
							   text_to_cstring(topic), text_to_cstring(type),
							   text_to_cstring(st->topic), text_to_cstring(st->type))));
		}
		hsize = eb_check_headers(headers);
	}
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event payload must not be null"),
				 errhint("Use '{}'::jsonb or 'null'::jsonb for an event without data.")));
	if (st == NULL)
		st = eb_emit_rows_start(aggcxt, topic, type);
	if (st->closed)
		elog(ERROR, "event_bus._emit_rows: rows after the end");

	row.topic = st->topic;
	row.type = st->type;
	row.version = 1;
	row.payload = PG_GETARG_JSONB_P(3);
	eb_check_payload(row.topic, row.payload, hsize);
	row.key = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);
	eb_check_key(row.key);
	row.headers = headers ? headers : eb_empty_headers();
	if (st->next == st->end)
		eb_emit_rows_take(st);
	row.seq = st->next++;
	row.lane = eb_lane(row.key, row.seq, st->lanes);
	row.emitted_at = GetCurrentTimestamp();
	eb_uuid_v7(&id, row.emitted_at);
	row.id = &id;
	row.with_txid = true;
	row.txid = st->txid;

	old = MemoryContextSwitchTo(st->rowcxt);
	eb_write_event(&st->log, &row, true);
	MemoryContextSwitchTo(old);
	if (st->log.nbuffered == 0)
		MemoryContextReset(st->rowcxt);

	st->heads[row.lane] = Max(st->heads[row.lane], row.seq);
	st->newest = Max(st->newest, row.seq);
	st->written++;
	PG_RETURN_POINTER(st);
}

Datum
eb_emit_rows_final(PG_FUNCTION_ARGS)
{
	EmitRows   *st;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "event_bus._emit_rows_final called in non-aggregate context");
	if (PG_ARGISNULL(0))
		PG_RETURN_INT64(0);
	st = (EmitRows *) PG_GETARG_POINTER(0);
	if (st->closed)
		PG_RETURN_INT64(st->written);
	st->closed = true;
	eb_emit_rows_close_log(st);
	eb_emitted(st->db, st->topic, st->type, st->heads, st->lanes, st->written, st->newest);
	PG_RETURN_INT64(st->written);
}
