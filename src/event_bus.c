/*-------------------------------------------------------------------------
 *
 * event_bus.c
 *	  Module entry point: GUCs, shared memory hooks and small SQL helpers.
 *
 * The extension must be loaded through shared_preload_libraries: the
 * visibility horizon lives in shared memory.  Loaded any other way, the
 * library still defines its GUCs (so postgresql.conf settings are accepted)
 * but every function that needs the shared state fails with a clear error,
 * and CREATE EXTENSION refuses to run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/array.h"
#include "utils/xid8.h"

#include "event_bus.h"

PG_MODULE_MAGIC;

int			eb_max_payload_size = 1024 * 1024;
int			eb_partition_size = 1000000;
int			eb_max_databases = 32;
bool		eb_worker_enabled = true;
int			eb_naptime = 1000;
int			eb_retention = 7 * 24 * 3600;
int			eb_expire_batch_size = 1000;
int			eb_dispatch_interval = 2;
int			eb_long_emit_warning = 60 * 1000;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
eb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(eb_shmem_size());
	RequestNamedLWLockTranche("event_bus", 1);
}

static void
eb_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	eb_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	DefineCustomIntVariable("event_bus.max_payload_size",
							"Largest payload plus headers an event may carry.",
							NULL,
							&eb_max_payload_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.partition_size",
							"Number of seqs covered by each partition of the event log.",
							"Applies to partitions created from now on.",
							&eb_partition_size,
							1000000, 1000, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("event_bus.worker",
							 "Run the event_bus worker in each database that has the extension.",
							 NULL,
							 &eb_worker_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.naptime",
							"Longest time the worker sleeps between rounds.",
							"Commits of emitting transactions wake it at once; this bounds how late lease expiry and maintenance run.",
							&eb_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.retention",
							"How long consumed events stay in the log before their partition may be dropped.",
							NULL,
							&eb_retention,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.dispatch_interval",
							"Shortest time between two rounds of a worker.",
							"Bursts of commits within it are dispatched together, which bounds the worker's CPU use under heavy load.",
							&eb_dispatch_interval,
							2, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.long_emit_warning",
							"Warn in the server log about a transaction that has been open this long since its first emit.",
							"Such a transaction holds back log retention; event_bus.open_emitters shows it. 0 disables the warning.",
							&eb_long_emit_warning,
							60 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.expire_batch_size",
							"Most expired leases one run_maintenance() call turns into retries.",
							"The rest wait for the next round, which keeps rounds short.",
							&eb_expire_batch_size,
							1000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	/* PGC_POSTMASTER settings can only be defined while preloading. */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("event_bus.max_databases",
								"Largest number of databases that can use event_bus at once.",
								NULL,
								&eb_max_databases,
								32, 1, 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	MarkGUCPrefixReserved("event_bus");

	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = eb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = eb_shmem_startup;

	eb_horizon_init();
	eb_worker_init();
}

/*
 * Fail clearly when the library was not preloaded: without the shared
 * horizon, consumers could skip events for ever.
 */
void
eb_require_preload(void)
{
	if (eb_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("event_bus must be loaded via shared_preload_libraries"),
				 errhint("Add event_bus to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Validate a topic or subscription name: [a-z0-9][a-z0-9._-]*, at most
 * EB_NAME_MAXLEN bytes.  'kind' is "topic" or "subscription".
 */
void
eb_check_name(const char *kind, text *name)
{
	const char *s;
	int			len;
	int			i;

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s name must not be null", kind)));
	s = VARDATA_ANY(name);
	len = VARSIZE_ANY_EXHDR(name);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s name must not be empty", kind)));
	if (len > EB_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s name \"%.*s...\" is too long", kind, 20, s),
				 errdetail("Names are at most %d bytes long.", EB_NAME_MAXLEN)));
	for (i = 0; i < len; i++)
	{
		char		c = s[i];
		bool		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			(i > 0 && (c == '.' || c == '_' || c == '-'));

		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name \"%.*s\"", kind, len, s),
					 errdetail("Names start with a lower-case letter or digit and contain only lower-case letters, digits, \".\", \"_\" and \"-\".")));
	}
}

PG_FUNCTION_INFO_V1(eb_check_preloaded);
PG_FUNCTION_INFO_V1(eb_check_name_sql);
PG_FUNCTION_INFO_V1(eb_horizon_sql);
PG_FUNCTION_INFO_V1(eb_note_coverage_sql);
PG_FUNCTION_INFO_V1(eb_topics_changed);
PG_FUNCTION_INFO_V1(eb_life_started);
PG_FUNCTION_INFO_V1(eb_emitters_sql);
PG_FUNCTION_INFO_V1(eb_open_emitters);
PG_FUNCTION_INFO_V1(eb_topic_bit_sql);
PG_FUNCTION_INFO_V1(eb_lane_next);

/* event_bus._check_preloaded(): error unless the library was preloaded. */
Datum
eb_check_preloaded(PG_FUNCTION_ARGS)
{
	eb_require_preload();
	PG_RETURN_VOID();
}

/* event_bus._check_name(kind text, name text): validate a name. */
Datum
eb_check_name_sql(PG_FUNCTION_ARGS)
{
	char	   *kind = PG_ARGISNULL(0) ? "object" : text_to_cstring(PG_GETARG_TEXT_PP(0));

	eb_check_name(kind, PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1));
	PG_RETURN_VOID();
}

/* event_bus._horizon(): the highest seq that may be claimed now. */
Datum
eb_horizon_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) eb_horizon(eb_db_state()));
}

/*
 * event_bus._emitters(topics text[], OUT max_seq bigint, OUT topics text[],
 * OUT xids xid8[], OUT floors bigint[]): the database's max_seq, then the
 * open transactions that emitted to any of the given topics, one entry per
 * topic and transaction (parallel arrays); with no topics, every open
 * emitting transaction once, with a NULL topic.  Every seq of those topics
 * at or below max_seq belongs to an ended transaction or to one listed with
 * its topic.  Claims call it before the statement whose snapshot they
 * compare with it (see _claim_once).
 */
Datum
eb_emitters_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *names;
	bool	   *nnulls;
	int			nnames;
	uint64	   *bits;
	uint64		max_seq;
	EventBusEmitter *em;
	int			nem;
	int			i,
				j,
				n = 0,
				cap;
	Datum	   *tv,
			   *xv,
			   *fv;
	bool	   *tnulls;
	int			dims[1];
	int			lbs[1];
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "event_bus: _emitters() must return a record");
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &names, &nnulls, &nnames);
	bits = palloc(sizeof(uint64) * Max(nnames, 1));
	for (i = 0; i < nnames; i++)
		bits[i] = nnulls[i] ? 0 : eb_topic_bit(VARDATA_ANY(DatumGetTextPP(names[i])),
											  VARSIZE_ANY_EXHDR(DatumGetTextPP(names[i])));

	nem = eb_emitters(eb_db_state(), &max_seq, &em);

	cap = Max(nem * Max(nnames, 1), 1);
	tv = palloc(sizeof(Datum) * cap);
	tnulls = palloc(sizeof(bool) * cap);
	xv = palloc(sizeof(Datum) * cap);
	fv = palloc(sizeof(Datum) * cap);
	for (i = 0; i < nem; i++)
		for (j = 0; j < Max(nnames, 1); j++)
			if (nnames == 0 || (em[i].topics & bits[j]))
			{
				tv[n] = nnames == 0 ? (Datum) 0 : names[j];
				tnulls[n] = nnames == 0;
				xv[n] = FullTransactionIdGetDatum(FullTransactionIdFromU64(em[i].xid));
				fv[n] = Int64GetDatum((int64) em[i].floor);
				n++;
			}
	dims[0] = n;
	lbs[0] = 1;
	values[0] = Int64GetDatum((int64) max_seq);
	values[1] = n == 0 ? PointerGetDatum(construct_empty_array(TEXTOID)) :
		PointerGetDatum(construct_md_array(tv, tnulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(xv, n, XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = PointerGetDatum(construct_array(fv, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * event_bus._open_emitters(OUT pid integer, OUT xid xid8, OUT lowest_seq
 * bigint, OUT emitting_since timestamptz, OUT topic_bits bigint): the open
 * transactions of this database that have emitted.
 */
Datum
eb_open_emitters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		max_seq;
	EventBusEmitter *em;
	int			nem;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	nem = eb_emitters(eb_db_state(), &max_seq, &em);
	for (i = 0; i < nem; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		values[0] = Int32GetDatum(ProcGlobal->allProcs[em[i].procno].pid);
		values[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(em[i].xid));
		values[2] = Int64GetDatum((int64) em[i].floor);
		values[3] = TimestampTzGetDatum(em[i].since);
		values[4] = Int64GetDatum((int64) em[i].topics);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* event_bus._topic_bit(topic text): the topic's bit in emitter topic sets. */
Datum
eb_topic_bit_sql(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_INT64((int64) eb_topic_bit(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

/*
 * event_bus._lane_next(position, high, xids xid8[], afters bigint[],
 *						max_seq, emitters xid8[], floors bigint[],
 *						full boolean, last bigint, snap pg_snapshot,
 *						pending_read boolean)
 * returns (position, high, xids, afters): a lane cursor's next state after a
 * claim read the lane with snapshot snap (see _claim_once, and the
 * architecture notes).  A cursor means: every event of the lane up to
 * position was handed out; so was every one up to high, except those of the
 * transactions in xids above their entry in afters; nothing above high was.
 * The read took, in seq order, the events above position and up to max_seq
 * that were not handed out yet; last is the highest it took (NULL: none),
 * full says it stopped at its limit; pending_read false says it did not
 * look below high, nor at any event of the transactions in xids (every one
 * was still open just before, but may have ended since): they stay as they
 * are.  emitters and floors are the open
 * emitting transactions of the lane's topic as _emitters() saw them before
 * the read took its snapshot.
 */
Datum
eb_lane_next(PG_FUNCTION_ARGS)
{
	int64		pos = PG_GETARG_INT64(0);
	int64		high = PG_GETARG_INT64(1);
	ArrayType  *wxa = PG_GETARG_ARRAYTYPE_P(2);
	ArrayType  *wfa = PG_GETARG_ARRAYTYPE_P(3);
	int64		max_seq = PG_GETARG_INT64(4);
	ArrayType  *exa = PG_GETARG_ARRAYTYPE_P(5);
	ArrayType  *efa = PG_GETARG_ARRAYTYPE_P(6);
	bool		full = PG_GETARG_BOOL(7);
	bool		has_last = !PG_ARGISNULL(8);
	int64		last = has_last ? PG_GETARG_INT64(8) : 0;
	Datum		snap = PG_GETARG_DATUM(9);
	bool		pending_read = PG_GETARG_BOOL(10);
	FullTransactionId next_fxid = ReadNextFullTransactionId();
	Datum	   *wx,
			   *wf,
			   *ex,
			   *ef;
	int			nw,
				nwf,
				ne,
				nef;
	Datum	   *ox,
			   *of;
	int			n = 0;
	int64		read_to;
	int64		new_high;
	int64		new_pos;
	int			i,
				j;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "event_bus: _lane_next() must return a record");
	deconstruct_array(wxa, XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &wx, NULL, &nw);
	deconstruct_array(wfa, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &wf, NULL, &nwf);
	deconstruct_array(exa, XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ex, NULL, &ne);
	deconstruct_array(efa, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ef, NULL, &nef);
	if (nw != nwf || ne != nef)
		elog(ERROR, "event_bus: _lane_next() needs arrays of equal length");

	/*
	 * The read covered the events up to read_to: all of them that it saw are
	 * handed out now.  read_to may be below high: the read stopped at its
	 * limit, or a competing claim moved the cursor on with a newer max_seq
	 * while this one waited for the row.
	 */
	read_to = full && has_last ? last : max_seq;
	new_high = Max(high, read_to);
	ox = palloc(sizeof(Datum) * Max(nw + ne, 1));
	of = palloc(sizeof(Datum) * Max(nw + ne, 1));

/*
 * Was transaction x still open when the read took its snapshot?  An xid
 * this cluster has not assigned yet comes from another one (a cursor
 * restored from a dump): nothing of it is left to deliver.
 */
#define EB_OPEN_AT_READ(x) \
	(FullTransactionIdPrecedes(DatumGetFullTransactionId(x), next_fxid) && \
	 !DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot, (x), snap)))

	for (i = 0; i < nw; i++)
	{
		int64		after = DatumGetInt64(wf[i]);

		if (!pending_read || EB_OPEN_AT_READ(wx[i]))
		{
			/* Nothing of it was read: all of it is still to come. */
			ox[n] = wx[i];
			of[n++] = wf[i];
		}
		else if (read_to < new_high && after < new_high)
		{
			/* It ended; its events above read_to were not read yet. */
			ox[n] = wx[i];
			of[n++] = Int64GetDatum(Max(after, read_to));
		}
		/* else: ended, and the read took every event of it that was left */
	}
	for (i = 0; i < ne; i++)
	{
		int64		floor = DatumGetInt64(ef[i]);
		bool		known = false;

		for (j = 0; j < nw && !known; j++)
			known = DatumGetFullTransactionId(wx[j]).value == DatumGetFullTransactionId(ex[i]).value;
		/* Its events are all above high (else it would be known already). */
		if (known || floor > new_high || !EB_OPEN_AT_READ(ex[i]))
			continue;
		ox[n] = ex[i];
		of[n++] = Int64GetDatum(Max(high, floor - 1));
	}
#undef EB_OPEN_AT_READ

	new_pos = new_high;
	for (i = 0; i < n; i++)
		new_pos = Min(new_pos, DatumGetInt64(of[i]));
	new_pos = Max(new_pos, pos);

	values[0] = Int64GetDatum(new_pos);
	values[1] = Int64GetDatum(new_high);
	values[2] = PointerGetDatum(construct_array(ox, n, XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = PointerGetDatum(construct_array(of, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* event_bus._note_coverage(bigint): partitions now cover seqs below it. */
Datum
eb_note_coverage_sql(PG_FUNCTION_ARGS)
{
	eb_db_state();
	eb_note_coverage((uint64) PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/*
 * event_bus._topics_changed(): make every backend forget its cached topic
 * lane counts once this transaction commits.
 */
Datum
eb_topics_changed(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid(EB_SCHEMA, false);

	CacheInvalidateRelcacheByRelid(get_relname_relid("topics", nsp));
	PG_RETURN_VOID();
}

/*
 * event_bus._life_started(): when this server life began - shared memory
 * is initialised anew at every start and after every crash, when every
 * backend died.  A lease claimed before it belongs to a dead session.
 */
Datum
eb_life_started(PG_FUNCTION_ARGS)
{
	eb_require_preload();
	PG_RETURN_TIMESTAMPTZ(eb_shared->life_started);
}
