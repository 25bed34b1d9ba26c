/*-------------------------------------------------------------------------
 *
 * emit.c
 *	  event_bus.emit() and event_bus.emit_many(): publish events.
 *
 * An emit is one INSERT into the partitioned, append-only log, in the
 * caller's transaction.  Fan-out to subscriptions happens by reading, so the
 * cost of an emit does not depend on how many subscriptions read the topic.
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

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "event_bus.h"

PG_FUNCTION_INFO_V1(eb_emit);
PG_FUNCTION_INFO_V1(eb_emit_many);

/* [0]: the 1.0 install script's table; [1]: since 1.1, with txid. */
static SPIPlanPtr emit_plan[2] = {NULL, NULL};
static SPIPlanPtr emit_many_plan[2] = {NULL, NULL};

/*
 * Column expressions shared by both INSERTs: $1 topic, $2 type, $3 payload,
 * $4 key, $5 headers, $6 version.  The lane is hash(key) mod lanes, or
 * seq mod lanes for events without a key.
 */
#define EB_LANE_EXPR(keyexpr) \
	"CASE WHEN " keyexpr " IS NULL " \
	"THEN (s.seq OPERATOR(pg_catalog.%) t.lanes)::pg_catalog.int2 " \
	"ELSE ((pg_catalog.hashtext(" keyexpr ") OPERATOR(pg_catalog.&) 2147483647) " \
	"OPERATOR(pg_catalog.%) t.lanes)::pg_catalog.int2 END"

/*
 * Since 1.1 every row also carries its transaction's top-level xid (txid):
 * claims compare it with the open emitters they step over (_claim_once).
 */
#define EB_TXID_COL ", txid"
#define EB_EMIT_SQL(txcol, txval) \
	"INSERT INTO event_bus.events " \
	"(seq, id, topic, type, version, key, lane, payload, headers, emitted_at" txcol ") " \
	"VALUES ($7, $8, $1, $2, $6, $4, $9, $3, $5, $10" txval ")"
#define EB_EMIT_MANY_SQL(txcol, txval) \
	"INSERT INTO event_bus.events " \
	"(seq, id, topic, type, version, key, lane, payload, headers, emitted_at" txcol ") " \
	"SELECT s.seq, pg_catalog.gen_random_uuid(), t.topic, $2, $6, s.k, " \
	EB_LANE_EXPR("s.k") ", s.p, $5, pg_catalog.clock_timestamp()" txval " " \
	"FROM event_bus.topics t, " \
	"     ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($7)) AS s(p, k, seq) " \
	"WHERE t.topic OPERATOR(pg_catalog.=) $1"

static const char *emit_sql[2] = {EB_EMIT_SQL("", ""), EB_EMIT_SQL(EB_TXID_COL, ", $11")};
static const char *emit_many_sql[2] = {EB_EMIT_MANY_SQL("", ""), EB_EMIT_MANY_SQL(EB_TXID_COL, ", $8")};

static Oid	emit_argtypes[11] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID, JSONBOID, INT4OID,
	INT8OID, UUIDOID, INT2OID, TIMESTAMPTZOID, XID8OID};
static Oid	emit_many_argtypes[8] = {TEXTOID, TEXTOID, JSONBARRAYOID, TEXTARRAYOID, JSONBOID, INT4OID,
	INT8ARRAYOID, XID8OID};

static SPIPlanPtr
eb_prepare(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	if (*cache == NULL)
	{
		/*
		 * Always the generic plan: a custom plan would fold the parameters
		 * in as constants, copying emit_many's whole arrays while planning.
		 */
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "event_bus: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*cache = plan;
	}
	return *cache;
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
 * may produce to it (always true for InvalidOid).  Must be called inside
 * SPI, as the extension's owner.
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
		return 0;				/* not cached: it may be created soon */
	lanes = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*allowed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
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
 * Since 1.1 emit and emit_many run as their caller: the caller's produce
 * grant is checked, then the insert runs as the extension's owner (the
 * caller has no rights on the log).  The 1.0 definitions are SECURITY
 * DEFINER functions, and there the caller is the owner already.
 */
typedef struct EmitUser
{
	Oid			caller;			/* InvalidOid: 1.0, check no grant */
	Oid			save_userid;
	int			save_sec;
} EmitUser;

static void
eb_emit_as_owner(EmitUser *u, bool check_grants)
{
	GetUserIdAndSecContext(&u->save_userid, &u->save_sec);
	u->caller = check_grants ? u->save_userid : InvalidOid;
	if (check_grants)
		SetUserIdAndSecContext(eb_extension_owner(), u->save_sec | SECURITY_LOCAL_USERID_CHANGE);
}

static void
eb_emit_as_caller(EmitUser *u)
{
	SetUserIdAndSecContext(u->save_userid, u->save_sec);
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
 * The parameters both INSERTs share: $1 topic, $2 type, $3 payload(s),
 * $4 key(s) (0 for NULL), $5 headers (NULL means {}), $6 version.
 */
static void
eb_common_params(Datum *values, char *nulls, text *topic, text *type, Datum payload,
				 Datum key, Jsonb *headers, int32 version)
{
	values[0] = PointerGetDatum(topic);
	values[1] = PointerGetDatum(type);
	values[2] = payload;
	values[3] = key;
	nulls[3] = key ? ' ' : 'n';
	values[4] = headers ? PointerGetDatum(headers) : DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	values[5] = Int32GetDatum(version);
}

/*
 * Validate the arguments common to both forms.  Returns the size of the
 * headers, which counts against event_bus.max_payload_size.
 */
static Size
eb_check_common(FunctionCallInfo fcinfo, text **topic, text **type,
				Jsonb **headers, int32 *version)
{
	Size		hsize = 0;
	int			typelen;

	eb_check_writable();
	*topic = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	eb_check_name("topic", *topic);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event type must not be null")));
	*type = PG_GETARG_TEXT_PP(1);
	typelen = VARSIZE_ANY_EXHDR(*type);
	if (typelen == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type must not be empty")));
	if (typelen > EB_TYPE_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type is too long"),
				 errdetail("Event types are at most %d bytes long.", EB_TYPE_MAXLEN)));

	*headers = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	if (*headers != NULL)
	{
		if (!JB_ROOT_IS_OBJECT(*headers) || JB_ROOT_IS_SCALAR(*headers))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event headers must be a JSON object")));
		hsize = VARSIZE(*headers);
	}

	*version = PG_ARGISNULL(5) ? 1 : PG_GETARG_INT32(5);
	if (*version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event version must be at least 1, not %d", *version)));
	return hsize;
}

static void
eb_check_payload(const char *topic, Jsonb *payload, Size hsize)
{
	Size		size = VARSIZE(payload) + hsize;

	if (size > (Size) eb_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event for topic \"%s\" is too large", topic),
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
 * Must be called inside SPI.
 */
static void
eb_ensure_coverage(EventBusDb *db, int64 maxseq)
{
	uint64		next = (uint64) maxseq;
	uint64		want = next + eb_partition_size / 2;
	Datum		args[2];
	Oid			argtypes[2] = {INT8OID, INT8OID};
	int			ret;

	if (want < eb_known_coverage(db))
		return;

	args[0] = Int64GetDatum((int64) want);
	args[1] = Int64GetDatum((int64) next);
	ret = SPI_execute_with_args("SELECT event_bus._ensure_partitions($1, $2)",
								2, argtypes, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event_bus: could not extend the event log");
}

/*
 * emit(topic text, type text, payload jsonb, key text, headers jsonb,
 *		version int) returns bigint: the new event's seq.
 */
static Datum
eb_emit_internal(FunctionCallInfo fcinfo, bool check_grants)
{
	EmitUser	user;
	text	   *topic;
	text	   *type;
	Jsonb	   *payload;
	text	   *key;
	Jsonb	   *headers;
	int32		version;
	Size		hsize;
	EventBusDb *db;
	Datum		values[11];
	char		nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			ret;
	int32		lanes;
	int64		seq;
	int			v = check_grants ? 1 : 0;	/* 1.1 or later: with txid */

	hsize = eb_check_common(fcinfo, &topic, &type, &headers, &version);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event payload must not be null"),
				 errhint("Use '{}'::jsonb or 'null'::jsonb for an event without data.")));
	payload = PG_GETARG_JSONB_P(2);
	eb_check_payload(text_to_cstring(topic), payload, hsize);
	key = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	eb_check_key(key);

	db = eb_db_state();

	eb_emit_as_owner(&user, check_grants);
	SPI_connect();
	lanes = eb_producible_topic(topic, user.caller);

	eb_begin_emit(db);
	eb_note_emit_topic(topic);
	eb_ensure_coverage(db, pg_atomic_read_u64(&db->max_seq) + 1);
	seq = nextval_internal(db->seqoid, false);
	eb_ensure_coverage(db, seq);

	eb_common_params(values, nulls, topic, type, PointerGetDatum(payload),
					 key ? PointerGetDatum(key) : (Datum) 0, headers, version);
	values[6] = Int64GetDatum(seq);
	values[7] = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	values[8] = Int16GetDatum(eb_lane(key, seq, lanes));
	values[9] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[10] = FullTransactionIdGetDatum(GetTopFullTransactionId());

	ret = SPI_execute_plan(eb_prepare(&emit_plan[v], emit_sql[v], 10 + v, emit_argtypes),
						   values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "event_bus: emit failed: %s", SPI_result_code_string(ret));
	SPI_finish();
	eb_emit_as_caller(&user);

	eb_note_seq(db, (uint64) seq);
	PG_RETURN_INT64(seq);
}

/*
 * emit_many(topic text, type text, payloads jsonb[], keys text[],
 *			 headers jsonb, version int) returns bigint[]: the seqs of the new
 * events, in the order of 'payloads'.  One INSERT for the whole set.
 */
static Datum
eb_emit_many_internal(FunctionCallInfo fcinfo, bool check_grants)
{
	EmitUser	user;
	text	   *topic;
	text	   *type;
	Jsonb	   *headers;
	int32		version;
	Size		hsize;
	ArrayType  *payloads;
	ArrayType  *keys = NULL;
	Datum	   *elems;
	bool	   *elnulls;
	int			n;
	int			i;
	EventBusDb *db;
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			ret;
	int			v = check_grants ? 1 : 0;	/* 1.1 or later: with txid */
	Datum	   *seqs;
	int64		maxseq = 0;
	ArrayType  *result;

	hsize = eb_check_common(fcinfo, &topic, &type, &headers, &version);
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
		eb_check_payload(text_to_cstring(topic), DatumGetJsonbP(elems[i]), hsize);
	}

	if (!PG_ARGISNULL(3))
	{
		Datum	   *kelems;
		bool	   *knulls;
		int			nk;

		keys = PG_GETARG_ARRAYTYPE_P(3);
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

	eb_emit_as_owner(&user, check_grants);
	if (check_grants || n > 0)
	{
		SPI_connect();
		(void) eb_producible_topic(topic, user.caller);
		SPI_finish();
	}
	if (n == 0)
	{
		eb_emit_as_caller(&user);
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));
	}

	db = eb_db_state();
	eb_begin_emit(db);
	eb_note_emit_topic(topic);

	eb_common_params(values, nulls, topic, type, PointerGetDatum(payloads),
					 keys ? PointerGetDatum(keys) : (Datum) 0, headers, version);

	/* The seqs first, then partitions for them, then the rows. */
	SPI_connect();
	eb_ensure_coverage(db, pg_atomic_read_u64(&db->max_seq) + n);
	SPI_finish();
	seqs = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
	{
		int64		s = nextval_internal(db->seqoid, false);

		seqs[i] = Int64GetDatum(s);
		if (s > maxseq)
			maxseq = s;
	}
	result = construct_array(seqs, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[6] = PointerGetDatum(result);
	values[7] = FullTransactionIdGetDatum(GetTopFullTransactionId());

	SPI_connect();
	eb_ensure_coverage(db, maxseq);
	ret = SPI_execute_plan(eb_prepare(&emit_many_plan[v], emit_many_sql[v], 7 + v, emit_many_argtypes),
						   values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "event_bus: emit_many failed: %s", SPI_result_code_string(ret));
	if (SPI_processed != (uint64) n)
		elog(ERROR, "event_bus: emit_many inserted " UINT64_FORMAT " of %d events", SPI_processed, n);
	SPI_finish();
	eb_emit_as_caller(&user);

	eb_note_seq(db, (uint64) maxseq);
	PG_RETURN_ARRAYTYPE_P(result);
}

PG_FUNCTION_INFO_V1(eb_emit_1_1);
PG_FUNCTION_INFO_V1(eb_emit_many_1_1);

/* The entry points of the 1.0 install script: SECURITY DEFINER, no grants. */
Datum
eb_emit(PG_FUNCTION_ARGS)
{
	return eb_emit_internal(fcinfo, false);
}

Datum
eb_emit_many(PG_FUNCTION_ARGS)
{
	return eb_emit_many_internal(fcinfo, false);
}

/* Since 1.1: run as the caller, who needs a produce grant on the topic. */
Datum
eb_emit_1_1(PG_FUNCTION_ARGS)
{
	return eb_emit_internal(fcinfo, true);
}

Datum
eb_emit_many_1_1(PG_FUNCTION_ARGS)
{
	return eb_emit_many_internal(fcinfo, true);
}
