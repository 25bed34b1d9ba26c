/*-------------------------------------------------------------------------
 *
 * sql_helpers.c
 *	  Small SQL-callable helpers of the install script's functions: checks,
 *	  the horizon and the open emitters as the claim path reads them, the
 *	  cursor arithmetic of a lane read (_lane_next), and wake-ups at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/array.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "event_bus.h"
#include "horizon.h"
#include "log.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(eb_check_preloaded);
PG_FUNCTION_INFO_V1(eb_check_name_sql);
PG_FUNCTION_INFO_V1(eb_horizon_sql);
PG_FUNCTION_INFO_V1(eb_note_coverage_sql);
PG_FUNCTION_INFO_V1(eb_topics_changed);
PG_FUNCTION_INFO_V1(eb_life_started);
PG_FUNCTION_INFO_V1(eb_emitters_sql);
PG_FUNCTION_INFO_V1(eb_open_emitters);
PG_FUNCTION_INFO_V1(eb_topic_bit_sql);
PG_FUNCTION_INFO_V1(eb_topic_hash_sql);
PG_FUNCTION_INFO_V1(eb_lane_next);
PG_FUNCTION_INFO_V1(eb_wake);
PG_FUNCTION_INFO_V1(eb_wake_at);
PG_FUNCTION_INFO_V1(eb_log_written);

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
 * compare with it (see _claim_once).  max_seq is lowered, if need be, to
 * what this backend's partitions of the log can show (eb_log_readable):
 * every read after it in this transaction finds every row up to it.
 */
Datum
eb_emitters_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *names;
	bool	   *nnulls;
	int			nnames;
	uint64		max_seq;
	int			n;
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
	n = eb_emitters_of(names, nnulls, nnames, &max_seq, &tv, &tnulls, &xv, &fv);
	max_seq = eb_log_readable(max_seq);
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

/* event_bus._topic_hash(topic text): the topic's key in the log's index. */
Datum
eb_topic_hash_sql(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_INT32(eb_topic_hash(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
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
	EventBusLaneNext next;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "event_bus: _lane_next() must return a record");
	eb_lane_next_state(PG_GETARG_INT64(0), PG_GETARG_INT64(1), PG_GETARG_DATUM(2), PG_GETARG_DATUM(3),
					   PG_GETARG_INT64(4), PG_GETARG_DATUM(5), PG_GETARG_DATUM(6), PG_GETARG_BOOL(7),
					   !PG_ARGISNULL(8), PG_ARGISNULL(8) ? 0 : PG_GETARG_INT64(8), PG_GETARG_DATUM(9),
					   PG_GETARG_BOOL(10), &next);
	values[0] = Int64GetDatum(next.position);
	values[1] = Int64GetDatum(next.high);
	values[2] = next.xids;
	values[3] = next.afters;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * The work of _lane_next(), for it and for claims: the cursor's xids and
 * afters (xid8[], bigint[]), the topic's open emitters and floors (the
 * same); the next state's arrays are of the same types.
 */
void
eb_lane_next_state(int64 pos, int64 high, Datum xids, Datum afters, int64 max_seq,
				   Datum emitters, Datum floors, bool full, bool has_last, int64 last,
				   Datum snap, bool pending_read, EventBusLaneNext *next)
{
	FullTransactionId next_fxid = ReadNextFullTransactionId();
	Datum	   *ox,
			   *of;
	int			n = 0;
	int64		read_to;
	int64		new_high;
	int64		new_pos;
	int			i,
				j;
	Datum	   *wx,
			   *wf,
			   *ex,
			   *ef;
	int			nw,
				nwf,
				ne,
				nef;

	deconstruct_array(DatumGetArrayTypeP(xids), XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &wx, NULL, &nw);
	deconstruct_array(DatumGetArrayTypeP(afters), INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &wf, NULL, &nwf);
	deconstruct_array(DatumGetArrayTypeP(emitters), XID8OID, sizeof(uint64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ex, NULL, &ne);
	deconstruct_array(DatumGetArrayTypeP(floors), INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &ef, NULL, &nef);
	if (nw != nwf || ne != nef)
		elog(ERROR, "event_bus: a lane cursor's xids and afters (or emitters and floors) differ in length");

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

	next->position = new_pos;
	next->high = new_high;
	next->xids = PointerGetDatum(construct_array(ox, n, XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	next->afters = PointerGetDatum(construct_array(of, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
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

/* event_bus._wake(): wake claimers of this database when this transaction commits. */
Datum
eb_wake(PG_FUNCTION_ARGS)
{
	eb_wake_at_commit();
	PG_RETURN_VOID();
}

/*
 * event_bus._wake_at(due timestamptz): the same for something that falls due
 * then (fail's retry): nobody is woken if the worker already plans to look
 * by then (horizon.c).  NULL wakes as _wake() does.
 */
Datum
eb_wake_at(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		eb_wake_at_commit();
	else
		eb_wake_due_at_commit(PG_GETARG_TIMESTAMPTZ(0));
	PG_RETURN_VOID();
}

/*
 * event_bus._log_written(): the log's BEFORE INSERT row trigger.  emit
 * writes without the executor and does not fire it; a row that comes
 * another way (a restore's COPY, an INSERT) makes every lane's head be read
 * from the log again when its transaction commits (shmem.c).
 */
Datum
eb_log_written(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("event_bus._log_written() must be fired as a BEFORE INSERT trigger FOR EACH ROW")));
	eb_note_log_written();
	return PointerGetDatum(td->tg_trigtuple);
}
