/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  event_bus.claim(): lease a batch of a subscription's events.
 *
 * A claim used to be two PL/pgSQL functions (_claim_impl, _claim_once) and
 * a set-returning SQL function that looked at every lane first; then kept
 * SPI statements, a dozen per claim and ack, whose executor start-up cost
 * more than the rows they touched.  Now an unordered claim reads and writes
 * its bookkeeping through store.c and the log through its partitions'
 * indexes, and its rows go straight into the claim's result:
 *
 *	1. due retries first, when the subscription has any (_lease_retries
 *	   leases them, as before);
 *	2. the open emitting transactions of the subscription's topics, read
 *	   before any snapshot below is taken (eb_emitters_of, as _emitters());
 *	3. the lanes' cursors, in random order: a lane is looked at only if its
 *	   cursor names stepped-over transactions that have ended since, or its
 *	   head in shared memory says something was written above its high
 *	   (and, while a transaction of the topic is open, an index probe finds
 *	   an event this claim would see); its cursor row is locked as FOR
 *	   UPDATE SKIP LOCKED does (a busy lane is skipped), its events read by
 *	   an index scan with a snapshot of their own, and the lease and the
 *	   cursor's move written from what that read saw, the cursor with the
 *	   read's snapshot (see _lane_next).
 *
 * The statements remain for what store.c and the scans do not cover (a
 * table or partition not as the install script made it, retries), run as
 * kept generic plans; SPI is connected only when one runs (claim_spi_need).
 * An ordered subscription's claim (one lease per lane, retries inside their
 * lane) is _claim_once, the PL/pgSQL function, unchanged.  The cursor
 * protocol is described in docs/architecture.md; nothing of it moved.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "commands/sequence.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "utils/array.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/snapmgr.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "event_bus.h"
#include "horizon.h"
#include "log.h"
#include "shmem.h"
#include "stats.h"
#include "store.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(eb_claim);

/* The statements of a claim, prepared once per backend as generic plans. */
typedef struct ClaimStmt
{
	const char *sql;
	int			nargs;
	Oid			argtypes[17];
	SPIPlanPtr	plan;
} ClaimStmt;

/* The subscription (checked as _subscription() checks it, see below). */
static ClaimStmt subscription_stmt = {
	"SELECT s.subscription, s.topics, s.types, s.ordered, s.paused, s.lease, s.owner"
	"  FROM event_bus.subscriptions s WHERE s.subscription OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

/* Step 1: due retries of an unordered subscription, by lane. */
static ClaimStmt retries_stmt = {
	"WITH picked AS ("
	"    SELECT r.seq, r.topic, r.lane FROM event_bus.retries r"
	"     WHERE r.subscription OPERATOR(pg_catalog.=) $1"
	"       AND r.lease_id IS NULL AND r.due_at OPERATOR(pg_catalog.<=) $2"
	"     ORDER BY r.due_at, r.seq"
	"     LIMIT $3"
	"     FOR UPDATE SKIP LOCKED)"
	" SELECT p.topic, p.lane, pg_catalog.array_agg(p.seq ORDER BY p.seq)"
	"   FROM picked p GROUP BY p.topic, p.lane",
	3, {TEXTOID, TIMESTAMPTZOID, INT4OID}
};

static ClaimStmt lease_retries_stmt = {
	"SELECT r.* FROM event_bus.subscriptions s,"
	"       event_bus._lease_retries(s, $2, $3, $4, $5, $6, $7) r"
	" WHERE s.subscription OPERATOR(pg_catalog.=) $1",
	7, {TEXTOID, TEXTOID, INT2OID, INT8ARRAYOID, TIMESTAMPTZOID, INTERVALOID, UUIDOID}
};

/* An ordered subscription's claim. */
static ClaimStmt ordered_stmt = {
	"SELECT r.* FROM event_bus.subscriptions s,"
	"       event_bus._claim_once(s, $2, $3, $4) r"
	" WHERE s.subscription OPERATOR(pg_catalog.=) $1",
	4, {TEXTOID, INT4OID, INTERVALOID, UUIDOID}
};

/* Step 3: the lanes (read without a lock), a probe, the lock, the read. */
static ClaimStmt lanes_stmt = {
	"SELECT cu.topic, cu.lane, cu.high, cu.pending_xids FROM event_bus.cursors cu"
	" WHERE cu.subscription OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

/* The lock of a lane's cursor row; a lane locked by another claim is skipped. */
#define CLAIM_LOCK_CURSOR \
	"SELECT cu.position, cu.high, cu.pending_xids, cu.pending_after FROM event_bus.cursors cu" \
	" WHERE cu.subscription OPERATOR(pg_catalog.=) $1" \
	"   AND cu.topic OPERATOR(pg_catalog.=) $2 AND cu.lane OPERATOR(pg_catalog.=) $3"

static ClaimStmt lock_stmt = {
	CLAIM_LOCK_CURSOR
	"   FOR UPDATE OF cu SKIP LOCKED",
	3, {TEXTOID, TEXTOID, INT2OID}
};

/*
 * The highest seq of a lane (of every topic with its hash) above $3, a
 * cursor's high, for the lane's head in shared memory (claim_lane_done):
 * with nothing above it, that high bounds the lane.  The bound prunes the
 * partitions below it.
 */
#define CLAIM_LANE_MAX_SQL(log) \
	"SELECT pg_catalog.max(e.seq) FROM " log " e" \
	" WHERE e.topic_hash OPERATOR(pg_catalog.=) $1 AND e.lane OPERATOR(pg_catalog.=) $2" \
	"   AND e.seq OPERATOR(pg_catalog.>) $3"
#define CLAIM_LANE_MAX_ARGS 3, {INT4OID, INT2OID, INT8OID}

static ClaimStmt lane_max_stmt = {
	CLAIM_LANE_MAX_SQL("event_bus.events"), CLAIM_LANE_MAX_ARGS
};

/*
 * Events of the lane not handed out yet and visible now, from lo up to
 * max_seq, in seq order, as claim() returns them.  A read that does not
 * look below high ($8 rescan false) leaves the stepped-over transactions'
 * events above it alone too: one of them may have ended after the emitters
 * were read, and the cursor could not record which of its events this read
 * took.  The cursor then moves on with the read's own snapshot (see
 * claim_take_lane).
 *
 * $1 topic, $2 lane, $3 lo, $4 max_seq, $5 high, $6 pending_xids,
 * $7 pending_after, $8 rescan, $9 token, $10 types, $11 how many.
 */
#define CLAIM_READ_SQL(log) \
	"SELECT e.seq, e.id, e.topic::text, e.type, e.version, e.key, e.payload, e.headers," \
	"       e.emitted_at, 1, e.lane::integer, $9::uuid" \
	"  FROM " log " e" \
	" WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash($1)" \
	"   AND e.topic OPERATOR(pg_catalog.=) $1 AND e.lane OPERATOR(pg_catalog.=) $2" \
	"   AND e.seq OPERATOR(pg_catalog.>) $3 AND e.seq OPERATOR(pg_catalog.<=) $4" \
	"   AND NOT event_bus._handed_out(e.seq, e.txid, $5, $6, $7)" \
	"   AND ($8 OR pg_catalog.array_position($6, e.txid) IS NULL)" \
	"   AND ($10::text[] IS NULL OR e.type OPERATOR(pg_catalog.=) ANY ($10))" \
	" ORDER BY e.seq" \
	" LIMIT $11"
#define CLAIM_READ_ARGS 11, {TEXTOID, INT2OID, INT8OID, INT8OID, INT8OID, XID8ARRAYOID, INT8ARRAYOID, \
	BOOLOID, UUIDOID, TEXTARRAYOID, INT4OID}

static ClaimStmt read_stmt = {
	CLAIM_READ_SQL("event_bus.events"), CLAIM_READ_ARGS
};

/*
 * Statements on one partition of the log, kept per partition: the same as
 * the read, lane_max_stmt, lane_at_stmt and lane_probe_stmt (the probe of
 * a lane, which claim_part_probe does with an index scan: the statement is
 * for a partition without the index it needs).  A statement on the parent
 * locks every partition each time its generic plan runs, and sets up a
 * scan of every partition its seq bounds span (see eb_log_parts); these
 * touch the partitions a range covers.  The partition's name comes from
 * the catalog, never from a caller.
 */
#define CLAIM_PART_READ		0
#define CLAIM_PART_PROBE	1
#define CLAIM_PART_MAX		2
#define CLAIM_PART_AT		3
#define CLAIM_PART_NSTMTS	4
#define CLAIM_PARTS_KEPT	32	/* partitions whose plans stay without use */

#define CLAIM_PROBE_SQL(log) \
	"SELECT FROM " log " e" \
	" WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash($1)" \
	"   AND e.topic OPERATOR(pg_catalog.=) $1 AND e.lane OPERATOR(pg_catalog.=) $2" \
	"   AND e.seq OPERATOR(pg_catalog.>) $3 AND e.seq OPERATOR(pg_catalog.<=) $4" \
	" LIMIT 1"
#define CLAIM_PROBE_ARGS 4, {TEXTOID, INT2OID, INT8OID, INT8OID}

static ClaimStmt lane_probe_stmt = {
	CLAIM_PROBE_SQL("event_bus.events"), CLAIM_PROBE_ARGS
};

/* Events of a lane by seq (_lane_events, for _lease_retries). */
#define CLAIM_AT_SQL(log) \
	"SELECT e.seq, e.id, e.topic::text, e.type, e.version, e.key, e.payload, e.headers," \
	"       e.emitted_at, e.lane::integer" \
	"  FROM " log " e" \
	" WHERE e.topic_hash OPERATOR(pg_catalog.=) event_bus._topic_hash($1)" \
	"   AND e.topic OPERATOR(pg_catalog.=) $1 AND e.lane OPERATOR(pg_catalog.=) $2" \
	"   AND e.seq OPERATOR(pg_catalog.=) ANY ($3)"
#define CLAIM_AT_ARGS 3, {TEXTOID, INT2OID, INT8ARRAYOID}

static ClaimStmt lane_at_stmt = {
	CLAIM_AT_SQL("event_bus.events"), CLAIM_AT_ARGS
};

static const ClaimStmt claim_part_templates[CLAIM_PART_NSTMTS] = {
	{CLAIM_READ_SQL("%s"), CLAIM_READ_ARGS},
	{CLAIM_PROBE_SQL("%s"), CLAIM_PROBE_ARGS},
	{CLAIM_LANE_MAX_SQL("%s"), CLAIM_LANE_MAX_ARGS},
	{CLAIM_AT_SQL("%s"), CLAIM_AT_ARGS}
};

typedef struct ClaimPart
{
	Oid			relid;			/* hash key */
	char		relname[NAMEDATALEN];
	uint64		used;			/* claim_parts_tick when last used */
	ClaimStmt	st[CLAIM_PART_NSTMTS];
	bool		looked;			/* index, seq_att, topic_att and cols are known */
	Oid			index;			/* its (topic_hash, lane, seq) btree, or none */
	AttrNumber	seq_att;
	AttrNumber	topic_att;
	bool		readable;		/* every column of claim_read_cols is there */
	AttrNumber	cols[11];		/* their attnums */
} ClaimPart;

/*
 * The log's columns a claim's read takes (claim_part_read), and their
 * types: the first nine go into the result as they are (CLAIM_READ_SQL).
 */
#define CLAIM_COL_LANE	9
#define CLAIM_COL_TXID	10
static const struct
{
	const char *name;
	Oid			type;
}			claim_read_cols[11] = {
	{"seq", INT8OID}, {"id", UUIDOID}, {"topic", TEXTOID}, {"type", TEXTOID}, {"version", INT4OID},
	{"key", TEXTOID}, {"payload", JSONBOID}, {"headers", JSONBOID}, {"emitted_at", TIMESTAMPTZOID},
	{"lane", INT2OID}, {"txid", XID8OID}
};

static HTAB *claim_parts;
static uint64 claim_parts_tick;

static void
claim_part_forget(ClaimPart *p)
{
	int			i;

	for (i = 0; i < CLAIM_PART_NSTMTS; i++)
	{
		if (p->st[i].plan != NULL)
			SPI_freeplan(p->st[i].plan);
		if (p->st[i].sql != NULL)
			pfree((char *) p->st[i].sql);
	}
}

/* The kept plans (and index) of the log's partition relid. */
static ClaimPart *
claim_part(Oid relid)
{
	ClaimPart  *p;
	bool		found;
	char	   *name = get_rel_name(relid);
	int			i;

	if (name == NULL)
		elog(ERROR, "event_bus: partition %u of the log does not exist", relid);
	if (claim_parts == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(ClaimPart);
		ctl.hcxt = TopMemoryContext;
		claim_parts = hash_create("event_bus claim partitions", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	p = hash_search(claim_parts, &relid, HASH_FIND, NULL);
	if (p != NULL && strcmp(p->relname, name) != 0)
	{
		/* The OID of a dropped partition, now another one's. */
		claim_part_forget(p);
		hash_search(claim_parts, &relid, HASH_REMOVE, NULL);
		p = NULL;
	}
	if (p == NULL)
	{
		/* Forget the plans of partitions not used for a while. */
		if (hash_get_num_entries(claim_parts) >= CLAIM_PARTS_KEPT)
		{
			HASH_SEQ_STATUS hs;
			ClaimPart  *q;

			hash_seq_init(&hs, claim_parts);
			while ((q = hash_seq_search(&hs)) != NULL)
				if (q->used + 8 < claim_parts_tick)
				{
					claim_part_forget(q);
					hash_search(claim_parts, &q->relid, HASH_REMOVE, NULL);
				}
		}
		p = hash_search(claim_parts, &relid, HASH_ENTER, &found);
		strlcpy(p->relname, name, NAMEDATALEN);
		memcpy(p->st, claim_part_templates, sizeof(p->st));
		for (i = 0; i < CLAIM_PART_NSTMTS; i++)
		{
			p->st[i].sql = NULL;
			p->st[i].plan = NULL;
		}
		p->looked = false;
	}
	p->used = claim_parts_tick;
	return p;
}

/* Statement 'which' (CLAIM_PART_*) on the log's partition relid. */
static ClaimStmt *
claim_part_stmt(Oid relid, int which)
{
	ClaimPart  *p = claim_part(relid);

	if (p->st[which].sql == NULL)
		p->st[which].sql = MemoryContextStrdup(TopMemoryContext,
											   psprintf(claim_part_templates[which].sql,
														quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
																				   p->relname)));
	return &p->st[which];
}

/*
 * The log's partitions for one look at it, read when first needed
 * (eb_log_parts): an idle claim, or a lane whose head says it has nothing
 * new, does not read them.
 */
typedef struct ClaimLog
{
	bool		looked;
	bool		by_parts;		/* false: read through the parent */
	EventBusParts parts;
} ClaimLog;

static EventBusParts *
claim_log_parts(ClaimLog *log)
{
	if (!log->looked)
	{
		claim_parts_tick++;
		log->by_parts = eb_log_parts(&log->parts);
		log->looked = true;
	}
	return log->by_parts ? &log->parts : NULL;
}

/*
 * The partition's index on (topic_hash, lane, seq), as _ensure_partitions
 * makes it: a plain btree on those three columns with their default
 * operator classes.  Found once per partition (relcache invalidation of a
 * partition changes nothing here: its columns and index do not change
 * without a new OID, and a dropped index is found missing below).
 */
static void
claim_part_index(ClaimPart *p, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	want[3] = {InvalidAttrNumber, InvalidAttrNumber, InvalidAttrNumber};
	List	   *indexes;
	ListCell   *lc;
	int			i;

	p->looked = true;
	p->index = InvalidOid;
	p->seq_att = p->topic_att = InvalidAttrNumber;
	memset(p->cols, 0, sizeof(p->cols));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		int			c;

		if (att->attisdropped)
			continue;
		for (c = 0; c < lengthof(claim_read_cols); c++)
			if (strcmp(NameStr(att->attname), claim_read_cols[c].name) == 0 &&
				att->atttypid == claim_read_cols[c].type)
				p->cols[c] = att->attnum;
		if (strcmp(NameStr(att->attname), "topic_hash") == 0 && att->atttypid == INT4OID)
			want[0] = att->attnum;
		else if (strcmp(NameStr(att->attname), "lane") == 0 && att->atttypid == INT2OID)
			want[1] = att->attnum;
		else if (strcmp(NameStr(att->attname), "seq") == 0 && att->atttypid == INT8OID)
			want[2] = p->seq_att = att->attnum;
		else if (strcmp(NameStr(att->attname), "topic") == 0 && att->atttypid == TEXTOID)
			p->topic_att = att->attnum;
	}
	p->readable = true;
	for (i = 0; i < lengthof(claim_read_cols); i++)
		p->readable &= p->cols[i] != InvalidAttrNumber;
	if (p->topic_att == InvalidAttrNumber)
		return;
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index ix = irel->rd_index;
		bool		ok = irel->rd_rel->relam == BTREE_AM_OID && ix->indisvalid && ix->indisready &&
			ix->indnkeyatts == 3 && RelationGetIndexExpressions(irel) == NIL &&
			RelationGetIndexPredicate(irel) == NIL;

		for (i = 0; ok && i < 3; i++)
			ok = want[i] != InvalidAttrNumber && ix->indkey.values[i] == want[i] &&
				irel->rd_opcintype[i] == TupleDescAttr(desc, want[i] - 1)->atttypid &&
				irel->rd_opfamily[i] == get_opclass_family(GetDefaultOpClass(irel->rd_opcintype[i],
																			  BTREE_AM_OID));
		index_close(irel, NoLock);
		if (ok)
		{
			p->index = lfirst_oid(lc);
			break;
		}
	}
	list_free(indexes);
}

/* An index scan of a lane of a partition of the log, without the executor. */
typedef struct ClaimPartScan
{
	ClaimPart  *p;
	Relation	rel;
	Relation	irel;
	TupleTableSlot *slot;
	IndexScanDesc scan;
} ClaimPartScan;

/*
 * Begin reading the events of the lane above 'after' in partition relid,
 * in seq order, as snap sees them; false when the partition has no index
 * to do it with (then the caller runs a statement).
 */
static bool
claim_part_scan(ClaimPartScan *ps, Oid relid, text *topic, int16 lane, int64 after, Snapshot snap)
{
	ScanKeyData key[3];

	ps->p = claim_part(relid);
	ps->rel = table_open(relid, AccessShareLock);
	if (!ps->p->looked || (OidIsValid(ps->p->index) && !OidIsValid(get_rel_namespace(ps->p->index))))
		claim_part_index(ps->p, ps->rel);	/* first use, or its index went (REINDEX CONCURRENTLY) */
	if (!OidIsValid(ps->p->index))
	{
		table_close(ps->rel, NoLock);
		return false;
	}
	ps->irel = index_open(ps->p->index, AccessShareLock);
	ScanKeyInit(&key[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(eb_topic_hash(VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic))));
	ScanKeyInit(&key[1], 2, BTEqualStrategyNumber, F_INT2EQ, Int16GetDatum(lane));
	ScanKeyInit(&key[2], 3, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	ps->slot = table_slot_create(ps->rel, NULL);
	ps->scan = index_beginscan(ps->rel, ps->irel, snap, 3, 0);
	index_rescan(ps->scan, key, 3, NULL, 0);
	return true;
}

static void
claim_part_scan_end(ClaimPartScan *ps)
{
	index_endscan(ps->scan);
	ExecDropSingleTupleTableSlot(ps->slot);
	index_close(ps->irel, NoLock);
	table_close(ps->rel, NoLock);
}

/* Is the row in the scan's slot of this topic (not another with the same hash)? */
static bool
claim_part_topic_is(ClaimPartScan *ps, text *topic)
{
	bool		isnull;
	text	   *t = DatumGetTextPP(slot_getattr(ps->slot, ps->p->topic_att, &isnull));

	return !isnull && eb_text_eq(t, topic);
}

/*
 * Has partition relid an event of the lane in (after, upto] that snap
 * sees?  An index scan without the executor (the probe of a lane is most
 * of what a look at it costs); -1 when the partition has no index it can
 * use, and then the caller runs CLAIM_PART_PROBE.
 */
static int
claim_part_probe(Oid relid, text *topic, int16 lane, int64 after, int64 upto, Snapshot snap)
{
	ClaimPartScan ps;
	int			found = 0;
	bool		isnull;

	if (!claim_part_scan(&ps, relid, topic, lane, after, snap))
		return -1;
	while (index_getnext_slot(ps.scan, ForwardScanDirection, ps.slot))
	{
		if (DatumGetInt64(slot_getattr(ps.slot, ps.p->seq_att, &isnull)) > upto)
			break;
		if (claim_part_topic_is(&ps, topic))
		{
			found = 1;
			break;
		}
	}
	claim_part_scan_end(&ps);
	return found;
}

/* A lane's read (CLAIM_READ_SQL's parameters, the arrays taken apart). */
typedef struct ClaimRead
{
	text	   *topic;
	int16		lane;
	int64		lo;
	int64		max_seq;
	int64		high;
	int			npending;
	Datum	   *pxids;			/* xid8 */
	Datum	   *pafter;			/* bigint */
	bool		rescan;
	Datum		tok;
	int			ntypes;			/* -1: every type */
	Datum	   *types;
	bool	   *tnulls;
} ClaimRead;

static void
claim_read_params(ClaimRead *r, Datum *rv, const char *rn)
{
	int			na;

	r->topic = DatumGetTextPP(rv[0]);
	r->lane = DatumGetInt16(rv[1]);
	r->lo = DatumGetInt64(rv[2]);
	r->max_seq = DatumGetInt64(rv[3]);
	r->high = DatumGetInt64(rv[4]);
	deconstruct_array(DatumGetArrayTypeP(rv[5]), XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &r->pxids, NULL, &r->npending);
	deconstruct_array(DatumGetArrayTypeP(rv[6]), INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &r->pafter, NULL, &na);
	if (na != r->npending)
		elog(ERROR, "event_bus: a cursor's pending_xids and pending_after differ in length");
	r->rescan = DatumGetBool(rv[7]);
	r->tok = rv[8];
	r->ntypes = -1;
	if (rn[9] != 'n')
		deconstruct_array(DatumGetArrayTypeP(rv[9]), TEXTOID, -1, false, TYPALIGN_INT,
						  &r->types, &r->tnulls, &r->ntypes);
}

/*
 * Should the read take this event (seq, txid, type)?  CLAIM_READ_SQL's
 * filter: not handed out yet (_handed_out), of no stepped-over transaction
 * unless the read looks below high (rescan), of a type read.
 */
static bool
claim_read_wants(ClaimRead *r, int64 seq, Datum txid, bool txid_null, text *type)
{
	int			at = -1;
	int			i;

	for (i = 0; !txid_null && i < r->npending; i++)
		if (DatumGetFullTransactionId(r->pxids[i]).value == DatumGetFullTransactionId(txid).value)
		{
			at = i;				/* array_position: the first */
			break;
		}
	if (seq <= r->high && (at < 0 || seq <= DatumGetInt64(r->pafter[at])))
		return false;			/* handed out */
	if (!r->rescan && at >= 0)
		return false;
	if (r->ntypes < 0)
		return true;
	for (i = 0; i < r->ntypes; i++)
	{
		text	   *t = r->tnulls[i] ? NULL : DatumGetTextPP(r->types[i]);

		if (t != NULL && eb_text_eq(t, type))
			return true;
	}
	return false;
}

/*
 * The read of a lane (CLAIM_READ_SQL) in partition relid, without the
 * executor: up to 'left' events into the result, their seqs into seqs.
 * -1 when the partition has no index or columns to do it with (then the
 * caller runs the statement).
 */
static int
claim_part_read(Oid relid, ReturnSetInfo *rsinfo, ClaimRead *r, Snapshot snap, int64 *seqs, int left)
{
	ClaimPartScan ps;
	int			n = 0;

	if (rsinfo->setDesc->natts != 12)
		elog(ERROR, "event_bus: a claim's rows have 12 columns, not %d", rsinfo->setDesc->natts);
	if (!claim_part_scan(&ps, relid, r->topic, r->lane, r->lo, snap))
		return -1;
	if (!ps.p->readable)
	{
		claim_part_scan_end(&ps);
		return -1;
	}
	while (n < left && index_getnext_slot(ps.scan, ForwardScanDirection, ps.slot))
	{
		Datum		values[12];
		bool		nulls[12];
		int64		seq;
		int			c;

		slot_getallattrs(ps.slot);
		for (c = 0; c < 9; c++)
		{
			values[c] = ps.slot->tts_values[ps.p->cols[c] - 1];
			nulls[c] = ps.slot->tts_isnull[ps.p->cols[c] - 1];
		}
		seq = DatumGetInt64(values[0]);
		if (seq > r->max_seq)
			break;
		if (!claim_part_topic_is(&ps, r->topic) ||
			!claim_read_wants(r, seq, ps.slot->tts_values[ps.p->cols[CLAIM_COL_TXID] - 1],
							  ps.slot->tts_isnull[ps.p->cols[CLAIM_COL_TXID] - 1], DatumGetTextPP(values[3])))
			continue;
		values[9] = Int32GetDatum(1);
		nulls[9] = false;
		values[10] = Int32GetDatum((int32) DatumGetInt16(ps.slot->tts_values[ps.p->cols[CLAIM_COL_LANE] - 1]));
		nulls[10] = false;
		values[11] = r->tok;
		nulls[11] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		seqs[n++] = seq;
	}
	claim_part_scan_end(&ps);
	return n;
}

static ClaimStmt lease_stmt = {
	"INSERT INTO event_bus.leases (subscription, topic, lane, seqs, claimed_at, expires_at, claimed_by, token)"
	" VALUES ($1, $2, $3, $4, $5, $5 OPERATOR(pg_catalog.+) $6, pg_catalog.pg_backend_pid(), $7)",
	7, {TEXTOID, TEXTOID, INT2OID, BYTEAOID, TIMESTAMPTZOID, INTERVALOID, UUIDOID}
};

/*
 * $1 subscription, $2 topic, $3 lane, then _lane_next's arguments:
 * $4 position, $5 high, $6 pending_xids, $7 pending_after, $8 max_seq,
 * $9/$10 the topic's open emitters and floors, $11 full, $12 last seq read,
 * $13 the read's snapshot, $14 rescan.
 */
static ClaimStmt cursor_stmt = {
	"UPDATE event_bus.cursors cu"
	"   SET position = x.next_position, high = x.next_high, pending_xids = x.next_xids,"
	"       pending_after = x.next_afters"
	"  FROM event_bus._lane_next($4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) x"
	" WHERE cu.subscription OPERATOR(pg_catalog.=) $1"
	"   AND cu.topic OPERATOR(pg_catalog.=) $2 AND cu.lane OPERATOR(pg_catalog.=) $3",
	14, {TEXTOID, TEXTOID, INT2OID, INT8OID, INT8OID, XID8ARRAYOID, INT8ARRAYOID, INT8OID,
	XID8ARRAYOID, INT8ARRAYOID, BOOLOID, INT8OID, PG_SNAPSHOTOID, BOOLOID}
};

/* The subscription a claim works, copied out of SPI's memory. */
typedef struct ClaimSub
{
	Datum		name;			/* text */
	Datum		topics;			/* text[] */
	Datum		types;			/* text[], or 0 for all types */
	bool		ordered;
	bool		paused;
	Datum		lease;			/* interval */
	ItemPointerData tid;		/* its row as read (store.c), or invalid */
} ClaimSub;

/* One lane of the subscription as read before the look. */
typedef struct ClaimLane
{
	Datum		topic;
	Datum		lane;
	int64		high;
	Datum		pending;		/* xid8[] */
	ItemPointerData tid;		/* its cursor row as read (direct) */
} ClaimLane;

/*
 * The cursors and leases of a look, written through store.c when both are
 * as the install script made them (direct), else by the statements.
 */
typedef struct ClaimStores
{
	bool		direct;
	EventBusStore cursors;
	EventBusStore leases;
	Snapshot	snap;			/* the lanes' read */
	bool		sub_locked;		/* the subscription's row, FOR KEY SHARE */
} ClaimStores;

/* The open emitters of the subscription's topics (_emitters). */
typedef struct ClaimEmitters
{
	int64		max_seq;
	int			n;
	Datum	   *topics;
	Datum	   *xid;
	Datum	   *floor;
} ClaimEmitters;

/* See claim_spi_need. */
typedef struct ClaimLazy
{
	bool		connected;
	int			level;
	MemoryContext cxt;			/* current before it */
} ClaimLazy;

static ClaimLazy *claim_lazy;	/* the open one, or NULL */

static void claim_spi_need(void);

static SPIPlanPtr
claim_prepare(ClaimStmt *st)
{
	claim_spi_need();
	return eb_kept_plan(&st->plan, st->sql, st->nargs, st->argtypes, CURSOR_OPT_GENERIC_PLAN);
}

static int
claim_exec(ClaimStmt *st, Datum *values, const char *nulls, long count)
{
	SPIPlanPtr	plan = claim_prepare(st);
	ClaimLazy  *lazy = claim_lazy;
	int			rc;

	/* What the statement calls (_claim_once's readers) connects on its own. */
	claim_lazy = NULL;
	rc = SPI_execute_plan(plan, values, nulls, false, count);
	claim_lazy = lazy;
	return rc;
}

/*
 * SPI for a claim or an ack, with its statements planned for index scans
 * only.  Leases, cursors and retries churn: every batch leaves a dead lease
 * and a dead cursor version behind until VACUUM comes, while their
 * statistics say the tables are nearly empty.  Planned from those, the
 * generic plans read the whole bloated heap on every call (a sequential
 * scan over the dead leases was 41% of a claim + ack of 100), and a bitmap
 * scan visits every dead index entry too; only a plain index scan goes
 * straight to the live rows and marks dead entries so that the next call
 * skips them.  The settings hold while this call's SPI statements (and the
 * PL/pgSQL of ordered claims) are planned and run; returns the GUC nest
 * level to close with claim_spi_end().
 */
static int
claim_spi_open(void)
{
	int			level = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	return level;
}

/*
 * A claim's look and an ack mostly run no statement at all: store.c and
 * the index scans of the log do their work.  Their statements are for a
 * table or partition not as the install script made it, for retries, and
 * for acks of events no lease holds.  Within claim_lazy_begin/end, SPI is
 * connected (and the settings above made, with search_path pinned) when
 * the first statement is prepared; claim_spi_begin then only makes sure of
 * it.
 */
static void
claim_spi_need(void)
{
	if (claim_lazy != NULL && !claim_lazy->connected)
	{
		MemoryContext old = MemoryContextSwitchTo(claim_lazy->cxt);

		claim_lazy->level = claim_spi_open();
		claim_lazy->connected = true;
		MemoryContextSwitchTo(old);
	}
}

static void
claim_lazy_begin(ClaimLazy *lazy)
{
	Assert(claim_lazy == NULL);
	lazy->connected = false;
	lazy->cxt = CurrentMemoryContext;
	claim_lazy = lazy;
}

/* Close it (on an error, the abort does; PG_FINALLY resets claim_lazy). */
static void
claim_lazy_end(ClaimLazy *lazy)
{
	claim_lazy = NULL;
	if (lazy->connected)
	{
		SPI_finish();
		AtEOXact_GUC(true, lazy->level);
		MemoryContextSwitchTo(lazy->cxt);
	}
}

/* The settings above and SPI, for a scope of statements; -1 inside a lazy one. */
static int
claim_spi_begin(void)
{
	if (claim_lazy != NULL)
	{
		claim_spi_need();
		return -1;
	}
	return claim_spi_open();
}

static void
claim_spi_end(int level)
{
	if (level < 0)
		return;
	SPI_finish();
	AtEOXact_GUC(true, level);
}

/* Column 'col' of row 'row' of the last SPI result, copied to 'cxt'. */
static Datum
claim_col(int row, int col, bool *isnull, MemoryContext cxt)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
	Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, col - 1);

	return eb_datum_copy(d, *isnull, att->attbyval, att->attlen, cxt);
}

/*
 * Read the subscription a claim or an ack works, with the errors of
 * _subscription(): a bad name, no such subscription, a caller that is
 * neither a member of its owner nor of event_bus_admin.
 */
static void
claim_read_subscription(Datum name, bool isnull, Oid caller, ClaimSub *s, MemoryContext cxt)
{
	Oid			owner;

	EventBusStore st;
	bool		found;

	eb_check_name("subscription", isnull ? NULL : DatumGetTextPP(name));
	if (eb_store_open(&st, EB_T_SUBSCRIPTIONS, false))
	{
		Snapshot	snap = eb_store_snapshot();

		eb_store_scan(&st, name, snap);
		found = eb_store_next(&st);
		if (found)
		{
			s->name = eb_store_copy(&st, EB_SUB_NAME, &isnull, cxt);
			s->topics = eb_store_copy(&st, EB_SUB_TOPICS, &isnull, cxt);
			s->types = eb_store_copy(&st, EB_SUB_TYPES, &isnull, cxt);
			if (isnull)
				s->types = (Datum) 0;
			s->ordered = DatumGetBool(eb_store_get(&st, EB_SUB_ORDERED, &isnull));
			s->paused = DatumGetBool(eb_store_get(&st, EB_SUB_PAUSED, &isnull));
			s->lease = eb_store_copy(&st, EB_SUB_LEASE, &isnull, cxt);
			owner = DatumGetObjectId(eb_store_get(&st, EB_SUB_OWNER, &isnull));
			s->tid = st.slot->tts_tid;
		}
		eb_store_close(&st);
		UnregisterSnapshot(snap);
	}
	else
	{
		int			level = claim_spi_begin();

		ItemPointerSetInvalid(&s->tid);
		if (claim_exec(&subscription_stmt, &name, NULL, 0) != SPI_OK_SELECT)
			elog(ERROR, "event_bus: could not read the subscription");
		found = SPI_processed == 1;
		if (found)
		{
			s->name = claim_col(0, 1, &isnull, cxt);
			s->topics = claim_col(0, 2, &isnull, cxt);
			s->types = claim_col(0, 3, &isnull, cxt);
			if (isnull)
				s->types = (Datum) 0;
			s->ordered = DatumGetBool(claim_col(0, 4, &isnull, cxt));
			s->paused = DatumGetBool(claim_col(0, 5, &isnull, cxt));
			s->lease = claim_col(0, 6, &isnull, cxt);
			owner = DatumGetObjectId(claim_col(0, 7, &isnull, cxt));
		}
		claim_spi_end(level);
	}
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("subscription \"%s\" does not exist", TextDatumGetCString(name)),
				 errhint("Create it with event_bus.subscribe().")));
	if (!has_privs_of_role(caller, owner) &&
		!has_privs_of_role(caller, get_role_oid("event_bus_admin", false)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for subscription \"%s\"", TextDatumGetCString(name)),
				 errdetail("It belongs to role \"%s\"; role \"%s\" is not a member.",
						   DatumGetCString(DirectFunctionCall1(regroleout, ObjectIdGetDatum(owner))),
						   DatumGetCString(DirectFunctionCall1(regroleout, ObjectIdGetDatum(caller)))),
				 errhint("Members of the owning role and of event_bus_admin may work a subscription.")));
}

/*
 * The open emitters of the subscription's topics (what _emitters() returns,
 * without a statement), before any statement of the claim takes its
 * snapshot.
 */
static void
claim_read_emitters(ClaimSub *s, ClaimEmitters *em)
{
	Datum	   *names;
	bool	   *nnulls;
	bool	   *tnulls;
	int			nnames;
	uint64		max_seq;

	deconstruct_array(DatumGetArrayTypeP(s->topics), TEXTOID, -1, false, TYPALIGN_INT,
					  &names, &nnulls, &nnames);
	em->n = eb_emitters_of(names, nnulls, nnames, &max_seq, &em->topics, &tnulls, &em->xid, &em->floor);
	em->max_seq = (int64) eb_log_readable(max_seq);
}

/* Is every xid of the xid8[] 'pending' one of the open emitters? */
static bool
claim_pending_open(Datum pending, ClaimEmitters *em)
{
	Datum	   *x;
	int			n,
				i,
				j;

	deconstruct_array(DatumGetArrayTypeP(pending), XID8OID, sizeof(uint64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &x, NULL, &n);
	for (i = 0; i < n; i++)
	{
		for (j = 0; j < em->n; j++)
			if (DatumGetFullTransactionId(x[i]).value == DatumGetFullTransactionId(em->xid[j]).value)
				break;
		if (j == em->n)
			return false;
	}
	return true;
}

static bool
claim_array_empty(Datum a)
{
	return ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(a)), ARR_DIMS(DatumGetArrayTypeP(a))) == 0;
}

/* Is a transaction that emitted into this topic among the open emitters? */
static bool
claim_topic_open(ClaimEmitters *em, Datum topic)
{
	int			i;

	for (i = 0; i < em->n; i++)
		if (eb_text_eq(DatumGetTextPP(em->topics[i]), DatumGetTextPP(topic)))
			return true;
	return false;
}

/* The open emitters of one topic and their floors, as arrays. */
static void
claim_topic_emitters(ClaimEmitters *em, Datum topic, Datum *xids, Datum *floors)
{
	Datum	   *x = palloc(sizeof(Datum) * Max(em->n, 1));
	Datum	   *f = palloc(sizeof(Datum) * Max(em->n, 1));
	int			n = 0;
	int			i;

	for (i = 0; i < em->n; i++)
		if (eb_text_eq(DatumGetTextPP(em->topics[i]), DatumGetTextPP(topic)))
		{
			x[n] = em->xid[i];
			f[n] = em->floor[i];
			n++;
		}
	*xids = PointerGetDatum(construct_array(x, n, XID8OID, sizeof(uint64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	*floors = PointerGetDatum(construct_array(f, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * A random (version 4) lease token, from this backend's pool of strong
 * random bytes: one call to the generator fills the pool for 32 claims
 * (a call per claim was 0.2-0.4% of the backend's time in a drain of
 * batches of 100).
 */
static Datum
claim_token(void)
{
	static uint8 pool[UUID_LEN * 32];
	static int	pool_used = lengthof(pool);
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

	if (pool_used == lengthof(pool))
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
		pool_used = 0;
	}
	memcpy(u->data, pool + pool_used, UUID_LEN);
	memset(pool + pool_used, 0, UUID_LEN);	/* a token is drawn once */
	pool_used += UUID_LEN;
	u->data[6] = (u->data[6] & 0x0f) | 0x40;
	u->data[8] = (u->data[8] & 0x3f) | 0x80;
	return UUIDPGetDatum(u);
}

/* Sort n seqs and drop repeats; returns how many are left. */
static int
claim_sort_unique(int64 *v, int n)
{
	int			i,
				k = 0;

	qsort(v, n, sizeof(int64), eb_cmp_int64);
	for (i = 0; i < n; i++)
		if (k == 0 || v[k - 1] != v[i])
			v[k++] = v[i];
	return k;
}

static Datum
claim_int8_array(int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * A lease's seqs, packed (leases.seqs is bytea): 'b', the lowest seq, then a
 * bitmap of the span from it (bit i % 8 of byte i / 8 stands for the lowest
 * seq + i); or 'l' and the seqs themselves when the span is too sparse for
 * its bitmap to be the smaller.  Ascending, without repeats.  A lease of 100
 * events of one lane of a 16-lane topic takes about 200 bytes, not 800, and
 * a partial ack rewrites that much.
 */
#define CLAIM_SEQS_HDR (1 + sizeof(int64))
#define CLAIM_SEQS_MAX (1024 * 1024)	/* bytes: a lease packs into 80 kB at most */

static bytea *
claim_pack_seqs_from(const int64 *v, int n, int64 lo)
{
	bytea	   *p;
	char	   *d;
	uint64		span = n > 0 ? (uint64) v[n - 1] - (uint64) lo : 0;
	Size		bitmap = (Size) (span / 8 + 1);
	int			i;

	if (n > 0 && lo <= v[0] && span / 8 < (uint64) n * sizeof(int64) &&
		CLAIM_SEQS_HDR + bitmap <= CLAIM_SEQS_MAX)
	{
		p = palloc0(VARHDRSZ + CLAIM_SEQS_HDR + bitmap);
		SET_VARSIZE(p, VARHDRSZ + CLAIM_SEQS_HDR + bitmap);
		d = VARDATA(p);
		d[0] = 'b';
		memcpy(d + 1, &lo, sizeof(int64));
		for (i = 0; i < n; i++)
		{
			uint64		bit = (uint64) v[i] - (uint64) lo;

			d[CLAIM_SEQS_HDR + bit / 8] |= (char) (1 << (bit % 8));
		}
		return p;
	}
	if (1 + sizeof(int64) * (Size) n > CLAIM_SEQS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a lease cannot hold %d events", n)));
	p = palloc(VARHDRSZ + 1 + sizeof(int64) * n);
	SET_VARSIZE(p, VARHDRSZ + 1 + sizeof(int64) * n);
	d = VARDATA(p);
	d[0] = 'l';
	if (n > 0)
		memcpy(d + 1, v, sizeof(int64) * n);
	return p;
}

static bytea *
claim_pack_seqs(const int64 *v, int n)
{
	return claim_pack_seqs_from(v, n, n > 0 ? v[0] : 0);
}

/*
 * The bitmap's base of a packed lease, or 'fallback' for a list: what is
 * left of a lease after an ack is packed from the same base, so that acking
 * its lowest seq clears a bit instead of moving the whole bitmap (and WAL
 * logs the bytes around it, not the row).
 */
static int64
claim_seqs_base(bytea *p, int64 fallback)
{
	const char *d = VARDATA_ANY(p);
	int64		lo;

	if (VARSIZE_ANY_EXHDR(p) < CLAIM_SEQS_HDR || d[0] != 'b')
		return fallback;
	memcpy(&lo, d + 1, sizeof(int64));
	return lo;
}

static void
claim_bad_seqs(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid packed seqs of a lease")));
}

/* The seqs of a packed lease, palloc'd, ascending; *n says how many. */
static int64 *
claim_unpack_seqs(bytea *p, int *n)
{
	const char *d = VARDATA_ANY(p);
	Size		len = VARSIZE_ANY_EXHDR(p);
	int64	   *v;
	int64		lo;
	Size		i;
	int			k = 0;

	if (len < 1 || (d[0] != 'b' && d[0] != 'l'))
		claim_bad_seqs();
	if (d[0] == 'l')
	{
		if ((len - 1) % sizeof(int64) != 0 || len > CLAIM_SEQS_MAX)
			claim_bad_seqs();
		*n = (int) ((len - 1) / sizeof(int64));
		v = palloc(sizeof(int64) * Max(*n, 1));
		memcpy(v, d + 1, sizeof(int64) * *n);
		for (i = 1; i < (Size) *n; i++)
			if (v[i] <= v[i - 1])
				claim_bad_seqs();	/* ascending, as packed */
		return v;
	}
	if (len < CLAIM_SEQS_HDR || len > CLAIM_SEQS_MAX)
		claim_bad_seqs();
	memcpy(&lo, d + 1, sizeof(int64));
	for (i = CLAIM_SEQS_HDR; i < len; i++)
		k += pg_number_of_ones[(unsigned char) d[i]];
	v = palloc(sizeof(int64) * Max(k, 1));
	k = 0;
	for (i = CLAIM_SEQS_HDR; i < len; i++)
	{
		unsigned char b = (unsigned char) d[i];
		int			j;

		for (j = 0; b != 0; j++, b >>= 1)
			if (b & 1)
				v[k++] = (int64) ((uint64) lo + (uint64) (i - CLAIM_SEQS_HDR) * 8 + j);
	}
	*n = k;
	return v;
}

PG_FUNCTION_INFO_V1(eb_pack_seqs);
PG_FUNCTION_INFO_V1(eb_unpack_seqs);

/* event_bus._pack_seqs(seqs bigint[]) returns bytea */
Datum
eb_pack_seqs(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;
	int64	   *v;

	deconstruct_array(a, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);
	v = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("seqs must be an array of event seqs without NULLs")));
		v[i] = DatumGetInt64(elems[i]);
	}
	n = claim_sort_unique(v, n);
	PG_RETURN_BYTEA_P(claim_pack_seqs(v, n));
}

/* event_bus._unpack_seqs(packed bytea) returns bigint[] */
Datum
eb_unpack_seqs(PG_FUNCTION_ARGS)
{
	int			n;
	int64	   *v = claim_unpack_seqs(PG_GETARG_BYTEA_PP(0), &n);

	PG_RETURN_DATUM(claim_int8_array(v, n));
}

/* Is x one of the n sorted seqs in v? */
static bool
claim_has(int64 *v, int n, int64 x)
{
	return bsearch(&x, v, n, sizeof(int64), eb_cmp_int64) != NULL;
}

/*
 * The statements that find a claim's events send their rows here: straight
 * into the claim's result (one copy, where SPI's tuple table and then the
 * tuplestore made two), and their seqs (column 1) into an array when one is
 * given.
 */
typedef struct ClaimDest
{
	DestReceiver pub;
	Tuplestorestate *store;
	int64	   *seqs;
	int			max;
	uint64		n;
} ClaimDest;

static bool
claim_dest_receive(TupleTableSlot *slot, DestReceiver *self)
{
	ClaimDest  *d = (ClaimDest *) self;
	bool		isnull;

	if (d->seqs != NULL)
	{
		if (d->n >= (uint64) d->max)	/* the read's LIMIT is max */
			elog(ERROR, "event_bus: a lane's read returned more rows than asked for");
		d->seqs[d->n] = DatumGetInt64(slot_getattr(slot, 1, &isnull));
	}
	d->n++;
	tuplestore_puttupleslot(d->store, slot);
	return true;
}

static void
claim_dest_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
claim_dest_nothing(DestReceiver *self)
{
}

/*
 * Run a statement whose rows are claim() rows, into the claim's result;
 * returns how many.  With a snapshot, the (read-only) statement runs under
 * it; with seqs, the rows' seqs go there too (at most max of them).
 */
static uint64
claim_exec_into(ClaimStmt *st, Datum *values, const char *nulls, ReturnSetInfo *rsinfo,
				Snapshot snap, int64 *seqs, int max, const char *what)
{
	ParamListInfo params = makeParamList(st->nargs);
	SPIExecuteOptions opts;
	ClaimDest	dest;
	ClaimLazy  *lazy;
	int			i;

	for (i = 0; i < st->nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = nulls != NULL && nulls[i] == 'n';
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = st->argtypes[i];
	}
	memset(&dest, 0, sizeof(dest));
	dest.pub.receiveSlot = claim_dest_receive;
	dest.pub.rStartup = claim_dest_startup;
	dest.pub.rShutdown = claim_dest_nothing;
	dest.pub.rDestroy = claim_dest_nothing;
	dest.pub.mydest = DestTuplestore;
	dest.store = rsinfo->setResult;
	dest.seqs = seqs;
	dest.max = max;

	memset(&opts, 0, sizeof(opts));
	opts.params = params;
	opts.read_only = snap != NULL;	/* then it runs under snap, pushed here */
	opts.dest = &dest.pub;
	(void) claim_prepare(st);
	if (snap != NULL)
		PushActiveSnapshot(snap);
	lazy = claim_lazy;
	claim_lazy = NULL;			/* as in claim_exec */
	if (SPI_execute_plan_extended(st->plan, &opts) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: %s failed", what);
	claim_lazy = lazy;
	if (snap != NULL)
		PopActiveSnapshot();
	return dest.n;
}

/*
 * Read up to 'left' events of a lane under snap into the result (read_stmt's
 * parameters in rv and rn; rv[10] is set here), their seqs into seqs: the
 * partitions of (lo, max_seq] in seq order, or the parent when parts is
 * NULL.  Returns how many.
 */
static int
claim_read_lane(ReturnSetInfo *rsinfo, EventBusParts *parts, Datum *rv, const char *rn,
				Snapshot snap, int64 *seqs, int left)
{
	int64		max_seq = DatumGetInt64(rv[3]);
	int			n = 0;
	int			i;
	ClaimRead	r;

	if (parts == NULL)
	{
		rv[10] = Int32GetDatum(left);
		return (int) claim_exec_into(&read_stmt, rv, rn, rsinfo, snap, seqs, left, "the read of a lane");
	}
	claim_read_params(&r, rv, rn);
	for (i = eb_log_parts_above(parts, DatumGetInt64(rv[2]));
		 i < parts->n && parts->lo[i] <= max_seq && n < left; i++)
	{
		int			got = claim_part_read(parts->oids[i], rsinfo, &r, snap, seqs + n, left - n);

		if (got < 0)
		{
			rv[10] = Int32GetDatum(left - n);
			got = (int) claim_exec_into(claim_part_stmt(parts->oids[i], CLAIM_PART_READ), rv, rn, rsinfo,
										snap, seqs + n, left - n, "the read of a lane");
		}
		n += got;
	}
	return n;
}

/* Does a probe statement return a row under snap?  (SPI connected here.) */
static bool
claim_probe_stmt(ClaimStmt *st, Datum *v, Snapshot snap)
{
	int			level = claim_spi_begin();
	bool		found;

	if (SPI_execute_snapshot(claim_prepare(st), v, NULL, snap, InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: could not look at a lane");
	found = SPI_processed > 0;
	claim_spi_end(level);
	return found;
}

/*
 * Has the lane an event in (after, upto]?  The probes of the partitions
 * that range covers (or of the parent), under snap (NULL: a new snapshot).
 */
static bool
claim_lane_has(ClaimLog *log, Datum topic, Datum lane, int64 after, int64 upto, Snapshot snap)
{
	EventBusParts *parts = claim_log_parts(log);
	Snapshot	use = snap != NULL ? snap : RegisterSnapshot(GetTransactionSnapshot());
	Datum		v[4] = {topic, lane, Int64GetDatum(after), Int64GetDatum(upto)};
	bool		found = false;
	int			i;

	if (parts == NULL)
		found = claim_probe_stmt(&lane_probe_stmt, v, use);
	else
	{
		for (i = eb_log_parts_above(parts, after); !found && i < parts->n && parts->lo[i] <= upto; i++)
		{
			int			rc = claim_part_probe(parts->oids[i], DatumGetTextPP(topic), DatumGetInt16(lane),
											  after, upto, use);

			/* No index of the log's own kind: the statement. */
			found = rc < 0 ? claim_probe_stmt(claim_part_stmt(parts->oids[i], CLAIM_PART_PROBE), v, use) : rc > 0;
		}
	}
	if (snap == NULL)
		UnregisterSnapshot(use);
	return found;
}

/* The read's snapshot as a pg_snapshot, for _lane_next. */
static Datum
claim_snapshot_datum(Snapshot snap)
{
	static FmgrInfo flinfo;
	Datum		d;

	if (flinfo.fn_oid == InvalidOid)
		fmgr_info_cxt(F_PG_CURRENT_SNAPSHOT, &flinfo, TopMemoryContext);
	PushActiveSnapshot(snap);
	d = FunctionCall0Coll(&flinfo, InvalidOid);
	PopActiveSnapshot();
	return d;
}

/*
 * Open the cursors and leases for a look's direct writes; false (nothing
 * open) when either is not as the install script made it.
 */
static bool
claim_stores_open(ClaimStores *cs)
{
	memset(cs, 0, sizeof(*cs));
	if (!eb_store_open(&cs->cursors, EB_T_CURSORS, true))
		return false;
	if (!eb_store_open(&cs->leases, EB_T_LEASES, true))
	{
		eb_store_close(&cs->cursors);
		return false;
	}
	cs->direct = true;
	return true;
}

static void
claim_stores_close(ClaimStores *cs)
{
	if (!cs->direct)
		return;
	eb_store_close(&cs->cursors);
	eb_store_close(&cs->leases);
	if (cs->snap != NULL)
		UnregisterSnapshot(cs->snap);
	cs->direct = false;
}

/*
 * Write a lease as lease_stmt does.  First the subscription's row is locked
 * FOR KEY SHARE, as the foreign key's check does after an INSERT: an
 * unsubscribe that deleted it meanwhile waits for this transaction, or this
 * one fails, and no lease outlives its subscription.
 */
static void
claim_write_lease(ClaimStores *cs, ClaimSub *s, ClaimLane *c, Datum seqs, TimestampTz t, Datum len,
				  Datum tok)
{
	Datum		values[EB_STORE_MAXCOLS];
	Oid			seqrel;

	if (!cs->sub_locked)
	{
		EventBusStore st;
		Snapshot	snap = cs->snap;	/* the lanes' (a scan needs one; a lock finds the newest) */
		TM_Result	r = TM_Deleted;

		if (!eb_store_open(&st, EB_T_SUBSCRIPTIONS, false))
			elog(ERROR, "event_bus: cannot read event_bus.subscriptions");
		if (ItemPointerIsValid(&s->tid))
		{
			/* Its row as the claim read it: the lock finds its newest version. */
			ItemPointerData tid = s->tid;

			r = eb_store_lock(&st, &tid, snap, LockTupleKeyShare, LockWaitBlock);
		}
		else
		{
			eb_store_scan(&st, s->name, snap);
			if (eb_store_next(&st))
			{
				ItemPointerData tid = st.slot->tts_tid;

				r = eb_store_lock(&st, &tid, snap, LockTupleKeyShare, LockWaitBlock);
			}
		}
		eb_store_close(&st);
		if (r != TM_Ok)
			ereport(ERROR,
					(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
					 errmsg("subscription \"%s\" was dropped while it was being claimed",
							TextDatumGetCString(s->name))));
		cs->sub_locked = true;
	}
	seqrel = get_relname_relid("lease_id_seq", RelationGetNamespace(cs->leases.rel));
	if (!OidIsValid(seqrel))
		elog(ERROR, "event_bus: sequence event_bus.lease_id_seq is missing");
	values[EB_LEASE_ID] = Int64GetDatum(nextval_internal(seqrel, false));
	values[EB_LEASE_SUBSCRIPTION] = s->name;
	values[EB_LEASE_TOPIC] = c->topic;
	values[EB_LEASE_LANE] = c->lane;
	values[EB_LEASE_SEQS] = seqs;
	values[EB_LEASE_CLAIMED_AT] = TimestampTzGetDatum(t);
	values[EB_LEASE_EXPIRES_AT] = DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(t), len);
	values[EB_LEASE_CLAIMED_BY] = Int32GetDatum(MyProcPid);
	values[EB_LEASE_TOKEN] = tok;
	eb_store_insert(&cs->leases, values, NULL);
}

/* Move a locked cursor (its row at tid) on, as cursor_stmt does. */
static void
claim_move_cursor(ClaimStores *cs, ClaimSub *s, ClaimLane *c, ItemPointer tid, Datum position,
				  Datum high, Datum pxids, Datum pafter, int64 max_seq, Datum exs, Datum efl,
				  bool full, bool has_last, int64 last, Datum snapshot, bool rescan)
{
	EventBusLaneNext next;
	Datum		values[EB_STORE_MAXCOLS];

	eb_lane_next_state(DatumGetInt64(position), DatumGetInt64(high), pxids, pafter, max_seq, exs, efl,
					   full, has_last, last, snapshot, rescan, &next);
	values[EB_CUR_SUBSCRIPTION] = s->name;
	values[EB_CUR_TOPIC] = c->topic;
	values[EB_CUR_LANE] = c->lane;
	values[EB_CUR_POSITION] = Int64GetDatum(next.position);
	values[EB_CUR_HIGH] = Int64GetDatum(next.high);
	values[EB_CUR_XIDS] = next.xids;
	values[EB_CUR_AFTERS] = next.afters;
	eb_store_update(&cs->cursors, tid, values, NULL);
}

/*
 * Read a locked lane (claim_unordered) and lease what the read found: the
 * rows go into the claim's result, the lease is written, and the cursor
 * moves on with the read's snapshot, as if the three were one statement.
 * Sets *taken to the number of events leased.
 */
static uint64
claim_take_lane(ReturnSetInfo *rsinfo, ClaimSub *s, ClaimLane *c, ClaimEmitters *em,
				EventBusParts *parts, int left, TimestampTz t, Datum len, Datum tok,
				Datum position, Datum high, Datum pxids, Datum pafter, bool rescan, int *taken,
				ClaimStores *cs, ItemPointer locked)
{
	Snapshot	snap = RegisterSnapshot(GetTransactionSnapshot());
	Datum		rv[11];
	char		rn[11];
	Datum		snapshot;
	Datum		exs,
				efl;
	int64	   *seqs = palloc(sizeof(int64) * Max(left, 1));
	int			n;
	bool		move;

	memset(rn, ' ', sizeof(rn));
	rv[0] = c->topic;
	rv[1] = c->lane;
	rv[2] = rescan ? position : high;
	rv[3] = Int64GetDatum(em->max_seq);
	rv[4] = high;
	rv[5] = pxids;
	rv[6] = pafter;
	rv[7] = BoolGetDatum(rescan);
	rv[8] = tok;
	rv[9] = s->types;
	if (s->types == (Datum) 0)
		rn[9] = 'n';
	rv[10] = Int32GetDatum(left);
	n = claim_read_lane(rsinfo, parts, rv, rn, snap, seqs, left);

	snapshot = claim_snapshot_datum(snap);
	UnregisterSnapshot(snap);

	if (n > 0 && cs->direct)
		claim_write_lease(cs, s, c, PointerGetDatum(claim_pack_seqs(seqs, n)), t, len, tok);
	else if (n > 0)
	{
		Datum		lv[7] = {s->name, c->topic, c->lane, PointerGetDatum(claim_pack_seqs(seqs, n)),
		TimestampTzGetDatum(t), len, tok};

		if (claim_exec(&lease_stmt, lv, NULL, 0) != SPI_OK_INSERT)
			elog(ERROR, "event_bus: could not write a lease");
	}

	/*
	 * Nothing taken, nothing pending, no events of other types passed and
	 * high at max_seq already: leave the row alone (a competing claim
	 * emptied the lane).  Below max_seq, the read passed only rolled-back
	 * events (see claim_unordered): high moves past them, or every claim
	 * would lock the row and read them again.
	 */
	claim_topic_emitters(em, c->topic, &exs, &efl);
	move = n > 0 || s->types != (Datum) 0 || !claim_array_empty(pxids) || !claim_array_empty(exs) ||
		DatumGetInt64(high) < em->max_seq;
	if (move && cs->direct)
		claim_move_cursor(cs, s, c, locked, position, high, pxids, pafter, em->max_seq, exs, efl,
						  n >= left, n > 0, n > 0 ? seqs[n - 1] : 0, snapshot, rescan);
	else if (move)
	{
		Datum		uv[14] = {s->name, c->topic, c->lane, position, high, pxids, pafter,
			Int64GetDatum(em->max_seq), exs, efl, BoolGetDatum(n >= left),
			n > 0 ? Int64GetDatum(seqs[n - 1]) : (Datum) 0, snapshot, BoolGetDatum(rescan)};
		char		un[14];

		memset(un, ' ', sizeof(un));
		if (n == 0)
			un[11] = 'n';
		if (claim_exec(&cursor_stmt, uv, un, 0) != SPI_OK_UPDATE)
			elog(ERROR, "event_bus: could not move a cursor");
	}
	pfree(seqs);				/* the look's memory lasts the whole look */
	*taken = n;
	return (uint64) n;
}

/*
 * Has the lane no event above the cursor's high?  Its head in shared memory
 * says so without a probe of the log (see eb_lane_head_raise in shmem.c);
 * the first claim to need a lane's head after a restart counts the lane's
 * events from before with one read of its highest seq (SPI connected here).
 * False when the head cannot tell: the probe decides then.
 */
static bool
claim_lane_done(EventBusDb *db, ClaimLane *c, ClaimLog *log)
{
	int32		th = eb_topic_hash(VARDATA_ANY(DatumGetTextPP(c->topic)),
								   VARSIZE_ANY_EXHDR(DatumGetTextPP(c->topic)));
	int16		lane = DatumGetInt16(c->lane);
	uint64		head;
	uint64		epoch;
	EventBusHead known = eb_lane_head(db, th, lane, &head, &epoch);

	if (known == EB_HEAD_NO_BASE)
	{
		Datum		v[3] = {Int32GetDatum(th), Int16GetDatum(lane), Int64GetDatum(Max(c->high, 0))};
		bool		isnull = true;
		Datum		d = (Datum) 0;
		EventBusParts *parts = claim_log_parts(log);
		int			i = parts == NULL ? 0 : parts->n - 1;
		int			level = claim_spi_begin();

		/* Partitions from the newest down, until one has an event of the lane. */
		while (isnull && (parts == NULL ? i == 0 : i >= 0 && parts->hi[i] - 1 > Max(c->high, 0)))
		{
			if (claim_exec(parts == NULL ? &lane_max_stmt : claim_part_stmt(parts->oids[i], CLAIM_PART_MAX),
						   v, NULL, 0) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "event_bus: could not read the highest seq of a lane");
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			SPI_freetuptable(SPI_tuptable);
			i--;
		}
		claim_spi_end(level);
		eb_lane_head_base(db, th, lane, epoch, (uint64) (isnull ? Max(c->high, 0) : DatumGetInt64(d)));
		known = eb_lane_head(db, th, lane, &head, &epoch);
	}
	return known == EB_HEAD_KNOWN && c->high >= 0 && (uint64) c->high >= head;
}

/*
 * Has the subscription any retries, as a statement would see now?  (True
 * when the table cannot tell: the statement decides then.)  Most claims and
 * acks find none, and skip the statements on retries.
 */
static bool
claim_has_retries(Datum name)
{
	EventBusStore st;
	Snapshot	snap;
	bool		found;

	if (!eb_store_open(&st, EB_T_RETRIES, false))
		return true;
	snap = eb_store_snapshot();
	eb_store_scan(&st, name, snap);
	found = eb_store_next(&st);
	eb_store_close(&st);
	UnregisterSnapshot(snap);
	return found;
}

/*
 * One look for events of an unordered subscription: lease up to 'max' of
 * them (due retries first, then lane by lane) under token 'tok'; returns how
 * many went into the result.
 */
static uint64
claim_unordered(ReturnSetInfo *rsinfo, ClaimSub *s, int max, Datum len, Datum tok)
{
	MemoryContext cxt = CurrentMemoryContext;	/* the look's (eb_claim), reset after it */
	TimestampTz t = GetCurrentTimestamp();
	int			left = max;
	uint64		got = 0;
	ClaimEmitters em;
	ClaimLane  *lanes;
	int			nlanes;
	int			i;
	bool		isnull;
	EventBusDb *db = eb_db_state();
	ClaimLog	log;
	ClaimStores cs;

	memset(&log, 0, sizeof(log));

	/* 1. Due retries. */
	if (claim_has_retries(s->name))
	{
		Datum		v[3] = {s->name, TimestampTzGetDatum(t), Int32GetDatum(left)};
		int			ngroups;
		Datum	   *gtopic,
				   *glane,
				   *gseqs;

		if (claim_exec(&retries_stmt, v, NULL, 0) != SPI_OK_SELECT)
			elog(ERROR, "event_bus: could not read the retries");
		ngroups = (int) SPI_processed;
		gtopic = palloc(sizeof(Datum) * Max(ngroups, 1));
		glane = palloc(sizeof(Datum) * Max(ngroups, 1));
		gseqs = palloc(sizeof(Datum) * Max(ngroups, 1));
		for (i = 0; i < ngroups; i++)
		{
			gtopic[i] = claim_col(i, 1, &isnull, cxt);
			glane[i] = claim_col(i, 2, &isnull, cxt);
			gseqs[i] = claim_col(i, 3, &isnull, cxt);
		}
		SPI_freetuptable(SPI_tuptable);
		for (i = 0; i < ngroups; i++)
		{
			Datum		lv[7] = {s->name, gtopic[i], glane[i], gseqs[i], TimestampTzGetDatum(t), len, tok};
			ArrayType  *a = DatumGetArrayTypeP(gseqs[i]);

			got += claim_exec_into(&lease_retries_stmt, lv, NULL, rsinfo, NULL, NULL, 0, "_lease_retries()");
			left -= ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
		}
		if (left <= 0)
			return got;
	}

	/* 2. The open emitters, before any statement below takes its snapshot. */
	claim_read_emitters(s, &em);

	/* 3. The lanes, in random order. */
	if (claim_stores_open(&cs))
	{
		int			cap = 16;

		cs.snap = eb_store_snapshot();
		lanes = palloc(sizeof(ClaimLane) * cap);
		nlanes = 0;
		eb_store_scan(&cs.cursors, s->name, cs.snap);
		while (eb_store_next(&cs.cursors))
		{
			if (nlanes == cap)
			{
				cap *= 2;
				lanes = repalloc(lanes, sizeof(ClaimLane) * cap);
			}
			lanes[nlanes].topic = eb_store_copy(&cs.cursors, EB_CUR_TOPIC, &isnull, cxt);
			lanes[nlanes].lane = eb_store_get(&cs.cursors, EB_CUR_LANE, &isnull);
			lanes[nlanes].high = DatumGetInt64(eb_store_get(&cs.cursors, EB_CUR_HIGH, &isnull));
			lanes[nlanes].pending = eb_store_copy(&cs.cursors, EB_CUR_XIDS, &isnull, cxt);
			lanes[nlanes].tid = cs.cursors.slot->tts_tid;
			nlanes++;
		}
	}
	else
	{
		if (claim_exec(&lanes_stmt, &s->name, NULL, 0) != SPI_OK_SELECT)
			elog(ERROR, "event_bus: could not read the cursors");
		nlanes = (int) SPI_processed;
		lanes = palloc(sizeof(ClaimLane) * Max(nlanes, 1));
		for (i = 0; i < nlanes; i++)
		{
			lanes[i].topic = claim_col(i, 1, &isnull, cxt);
			lanes[i].lane = claim_col(i, 2, &isnull, cxt);
			lanes[i].high = DatumGetInt64(claim_col(i, 3, &isnull, cxt));
			lanes[i].pending = claim_col(i, 4, &isnull, cxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	for (i = nlanes - 1; i > 0; i--)
	{
		int			j = (int) pg_prng_uint64_range(&pg_global_prng_state, 0, i);
		ClaimLane	tmp = lanes[i];

		lanes[i] = lanes[j];
		lanes[j] = tmp;
	}

	for (i = 0; i < nlanes && left > 0; i++)
	{
		ClaimLane  *c = &lanes[i];
		Datum		lv[3] = {s->name, c->topic, c->lane};
		Datum		position,
					high,
					pxids,
					pafter;
		bool		rescan;
		int			taken;
		ItemPointerData locked;

		/*
		 * Anything to do here?  Stepped-over transactions that have ended
		 * since (their events are due, or, rolled back, to be forgotten), or
		 * new events of any type (the cursor of a type-filtered subscription
		 * moves past the others).  The lane is ours while its cursor row is
		 * locked; a busy one is skipped.
		 *
		 * Above high, the lane's head says whether anything was written.
		 * Whatever was is visible now or rolled back, unless a transaction
		 * of the topic is still open: only then is the log probed for an
		 * event this claim would see before the row is locked.  (A lane
		 * whose new events were all rolled back is read once, finds
		 * nothing, and its cursor moves past them: claim_take_lane.)
		 */
		if ((claim_array_empty(c->pending) || claim_pending_open(c->pending, &em)) &&
			(c->high >= em.max_seq || claim_lane_done(db, c, &log) ||
			 (claim_topic_open(&em, c->topic) &&
			  !claim_lane_has(&log, c->topic, c->lane, c->high, em.max_seq, NULL))))
			continue;
		if (cs.direct)
		{
			if (eb_store_lock(&cs.cursors, &c->tid, cs.snap, LockTupleExclusive, LockWaitSkip) != TM_Ok)
				continue;
			locked = cs.cursors.slot->tts_tid;
			position = eb_store_get(&cs.cursors, EB_CUR_POSITION, &isnull);
			high = eb_store_get(&cs.cursors, EB_CUR_HIGH, &isnull);
			pxids = eb_store_copy(&cs.cursors, EB_CUR_XIDS, &isnull, cxt);
			pafter = eb_store_copy(&cs.cursors, EB_CUR_AFTERS, &isnull, cxt);
		}
		else
		{
			if (claim_exec(&lock_stmt, lv, NULL, 0) != SPI_OK_SELECT)
				elog(ERROR, "event_bus: could not lock a cursor");
			if (SPI_processed == 0)
			{
				SPI_freetuptable(SPI_tuptable);
				continue;
			}
			position = claim_col(0, 1, &isnull, cxt);
			high = claim_col(0, 2, &isnull, cxt);
			pxids = claim_col(0, 3, &isnull, cxt);
			pafter = claim_col(0, 4, &isnull, cxt);
			SPI_freetuptable(SPI_tuptable);
		}

		/*
		 * Below high, only events of stepped-over transactions remain, and
		 * only those of transactions that have ended since can be visible:
		 * look there only then.
		 */
		rescan = !claim_array_empty(pxids) && !claim_pending_open(pxids, &em);

		got += claim_take_lane(rsinfo, s, c, &em, claim_log_parts(&log), left, t, len, tok, position,
							   high, pxids, pafter, rescan, &taken, &cs, &locked);
		left -= taken;
	}
	claim_stores_close(&cs);
	return got;
}

/*
 * The reads of an ordered claim (_claim_once, _claimable_lanes) and of the
 * leasing of retries (_lease_retries), which are PL/pgSQL and SQL: a
 * statement of theirs on the log's parent would lock every partition each
 * time (see claim_part_stmt).  These read under the calling statement's
 * snapshot, as the statements they replace did: _claim_once moves the
 * cursor with that snapshot (_lane_next).  Internal: only the extension's
 * owner may call them (14_privileges.sql).
 */
PG_FUNCTION_INFO_V1(eb_lane_read);
PG_FUNCTION_INFO_V1(eb_lane_has);

/*
 * event_bus._lane_read(topic text, lane smallint, lo bigint, max_seq bigint,
 *     high bigint, pending_xids xid8[], pending_after bigint[], rescan boolean,
 *     token uuid, types text[], n integer) returns setof (claim's columns)
 *
 * Up to n events of the lane above lo up to max_seq not handed out yet, in
 * seq order, as claim() returns them (read_stmt).
 */
Datum
eb_lane_read(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Snapshot	snap = GetActiveSnapshot();
	ClaimLog	log;
	Datum		rv[11];
	char		rn[11];
	int			n = PG_ARGISNULL(10) ? 0 : PG_GETARG_INT32(10);
	int			level;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < 11; i++)
	{
		if (PG_ARGISNULL(i) && i != 9)	/* types: NULL for all */
			return (Datum) 0;
		rv[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		rn[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	if (n <= 0)
		return (Datum) 0;
	memset(&log, 0, sizeof(log));
	level = claim_spi_begin();
	(void) claim_read_lane(rsinfo, claim_log_parts(&log), rv, rn, snap, palloc(sizeof(int64) * n), n);
	claim_spi_end(level);
	return (Datum) 0;
}

/*
 * event_bus._lane_events(p_topic text, p_lane smallint, p_seqs bigint[])
 * returns setof (seq, id, topic, type, version, key, payload, headers,
 * emitted_at, lane): the lane's events with these seqs, for
 * _lease_retries, partition by partition under the calling statement's
 * snapshot.
 */
PG_FUNCTION_INFO_V1(eb_lane_events);

Datum
eb_lane_events(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Snapshot	snap = GetActiveSnapshot();
	ClaimLog	log;
	EventBusParts *parts;
	Datum	   *elems;
	bool	   *nulls;
	int64	   *seqs;
	int			n,
				k = 0,
				i,
				level;

	InitMaterializedSRF(fcinfo, 0);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	seqs = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			seqs[k++] = DatumGetInt64(elems[i]);
	n = claim_sort_unique(seqs, k);
	if (n == 0)
		return (Datum) 0;
	memset(&log, 0, sizeof(log));
	level = claim_spi_begin();
	parts = claim_log_parts(&log);
	if (parts == NULL)
	{
		Datum		v[3] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), claim_int8_array(seqs, n)};

		(void) claim_exec_into(&lane_at_stmt, v, NULL, rsinfo, snap, NULL, 0, "the read of events");
	}
	else
	{
		/* The seqs of each partition, in partition order. */
		k = 0;
		for (i = eb_log_parts_above(parts, seqs[0] - 1); i < parts->n && k < n; i++)
		{
			int			j;

			while (k < n && seqs[k] < parts->lo[i])
				k++;			/* in no partition */
			j = k;
			while (k < n && seqs[k] < parts->hi[i])
				k++;
			if (k > j)
			{
				Datum		v[3] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), claim_int8_array(seqs + j, k - j)};

				(void) claim_exec_into(claim_part_stmt(parts->oids[i], CLAIM_PART_AT), v, NULL, rsinfo, snap,
									   NULL, 0, "the read of events");
			}
		}
	}
	claim_spi_end(level);
	return (Datum) 0;
}

/*
 * event_bus._lane_has(topic text, lane smallint, after bigint, upto bigint)
 * returns boolean: has the lane an event above after up to upto?
 */
Datum
eb_lane_has(PG_FUNCTION_ARGS)
{
	ClaimLane	c;
	ClaimLog	log;

	memset(&log, 0, sizeof(log));
	c.topic = PG_GETARG_DATUM(0);
	c.lane = PG_GETARG_DATUM(1);
	c.high = PG_GETARG_INT64(2);
	PG_RETURN_BOOL(c.high < PG_GETARG_INT64(3) && !claim_lane_done(eb_db_state(), &c, &log) &&
				   claim_lane_has(&log, c.topic, c.lane, c.high, PG_GETARG_INT64(3), GetActiveSnapshot()));
}

static uint64
claim_ordered(ReturnSetInfo *rsinfo, ClaimSub *s, int max, Datum len, Datum tok)
{
	Datum		v[4] = {s->name, Int32GetDatum(max), len, tok};

	return claim_exec_into(&ordered_stmt, v, NULL, rsinfo, NULL, NULL, 0, "_claim_once()");
}

static void
claim_check_interval(const char *what, Interval *v, const char *lo, const char *hi)
{
	Datum		lod = DirectFunctionCall3(interval_in, CStringGetDatum(lo), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	Datum		hid = DirectFunctionCall3(interval_in, CStringGetDatum(hi), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	Datum		vd = IntervalPGetDatum(v);

	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, vd, lod)) < 0 ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, vd, hid)) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between %s and %s, not %s", what,
						DatumGetCString(DirectFunctionCall1(interval_out, lod)),
						DatumGetCString(DirectFunctionCall1(interval_out, hid)),
						DatumGetCString(DirectFunctionCall1(interval_out, vd)))));
}

static bool
claim_interval_positive(Interval *v, bool strictly)
{
	Interval	zero;
	int			c;

	memset(&zero, 0, sizeof(zero));
	c = DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(v), IntervalPGetDatum(&zero)));
	return strictly ? c > 0 : c >= 0;
}

/*
 * event_bus.claim(subscription text, max_events int DEFAULT 100,
 *				   lease interval DEFAULT NULL, wait interval DEFAULT NULL)
 */
Datum
eb_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		subname = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	bool		max_null = PG_ARGISNULL(1);
	int32		max_events = max_null ? 0 : PG_GETARG_INT32(1);
	Interval   *lease = PG_ARGISNULL(2) ? NULL : PG_GETARG_INTERVAL_P(2);
	Interval   *wait = PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3);
	MemoryContext sub_cxt;
	MemoryContext look_cxt;
	EventBusAsOwner owner;
	Oid			caller = GetUserId();

	eb_check_writable();
	InitMaterializedSRF(fcinfo, 0);

	if (XactIsoLevel != XACT_READ_COMMITTED)
	{
		char	   *level = pstrdup(GetConfigOption("transaction_isolation", false, false));
		char	   *p;

		for (p = level; *p; p++)
			*p = pg_toupper((unsigned char) *p);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("event_bus.claim() requires READ COMMITTED isolation"),
				 errdetail("The current transaction is %s.", level),
				 errhint("A claim must see events committed after the transaction began; run it in a READ COMMITTED transaction.")));
	}

	/* The subscription as last read; each look uses look_cxt. */
	sub_cxt = AllocSetContextCreate(CurrentMemoryContext, "event_bus claim", ALLOCSET_SMALL_SIZES);
	look_cxt = AllocSetContextCreate(CurrentMemoryContext, "event_bus claim look", ALLOCSET_DEFAULT_SIZES);
	eb_as_owner_user(&owner);	/* search_path: claim_spi_open */
	eb_push_caller(caller);
	PG_TRY();
	{
		ClaimSub	s;
		TimestampTz deadline;

		claim_read_subscription(subname, PG_ARGISNULL(0), caller, &s, sub_cxt);
		if (max_null || max_events < 1 || max_events > 10000)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_events must be between 1 and 10000, not %s",
							max_null ? "NULL" : psprintf("%d", max_events))));
		if (lease != NULL && !claim_interval_positive(lease, true))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lease must be a positive interval, not %s",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(lease))))));
		if (wait != NULL && !claim_interval_positive(wait, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("wait must not be negative, not %s",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(wait))))));
		if (lease != NULL)
			claim_check_interval("lease", lease, "1 millisecond", "1 day");
		if (wait != NULL)
			claim_check_interval("wait", wait, "0", "1 hour");

		deadline = wait == NULL ? GetCurrentTimestamp() :
			DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													TimestampTzGetDatum(GetCurrentTimestamp()),
													IntervalPGetDatum(wait)));
		for (;;)
		{
			/*
			 * Read the wake-up generation before looking: an event that
			 * becomes claimable after the look bumps it, so the wait below
			 * returns at once.
			 */
			uint64		gen = pg_atomic_read_u64(&eb_db_state()->wake_gen);
			long		secs;
			int			usecs;
			int64		ms;

			if (!s.paused)
			{
				Datum		len = lease != NULL ? IntervalPGetDatum(lease) : s.lease;
				uint64		n;
				ClaimLazy	lazy;
				MemoryContext old = MemoryContextSwitchTo(look_cxt);

				claim_lazy_begin(&lazy);
				n = s.ordered ? claim_ordered(rsinfo, &s, max_events, len, claim_token()) :
					claim_unordered(rsinfo, &s, max_events, len, claim_token());
				claim_lazy_end(&lazy);
				MemoryContextSwitchTo(old);
				MemoryContextReset(look_cxt);
				if (n > 0)
				{
					eb_stat_count('s', VARDATA_ANY(DatumGetTextPP(s.name)),
								  VARSIZE_ANY_EXHDR(DatumGetTextPP(s.name)), EB_CLAIMED, (int64) n);

					/*
					 * A full batch may have left events behind in lanes this
					 * claim held locked, which waiting claimers skipped: wake
					 * them when this transaction ends and frees the lanes.
					 */
					if (n >= (uint64) max_events)
						eb_wake_claimers_at_commit(eb_topics_mask(DatumGetArrayTypeP(s.topics)));
					break;
				}
			}
			TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
			ms = (int64) secs * 1000 + (usecs + 999) / 1000;
			if (ms <= 0)
				break;
			(void) eb_wait_internal(gen, (int32) Min(ms, PG_INT32_MAX),
									eb_topics_mask(DatumGetArrayTypeP(s.topics)));
			/* The subscription may have been paused, resumed or dropped meanwhile. */
			MemoryContextReset(sub_cxt);
			claim_read_subscription(subname, PG_ARGISNULL(0), caller, &s, sub_cxt);
		}
	}
	PG_FINALLY();
	{
		claim_lazy = NULL;
		eb_pop_caller();
	}
	PG_END_TRY();
	eb_as_owner_end(&owner);
	MemoryContextDelete(look_cxt);
	MemoryContextDelete(sub_cxt);
	return (Datum) 0;
}

/*
 * ack(): the leases of a subscription that hold any of the seqs (under the
 * token, when given), locked; the seqs they hold come off them, and a lease
 * left empty goes.  Linear in the batch: one pass over sorted seqs per
 * lease, where the SQL version compared every seq with every other.
 */
PG_FUNCTION_INFO_V1(eb_ack);

/*
 * The subscription's leases (under the token); those that hold one of the
 * seqs are then locked and read again.  (An array overlap test in the
 * query compared every seq of a lease with every seq acked.)  Planned for
 * a plain index scan (claim_spi_begin).
 */
static ClaimStmt ack_find_stmt = {
	"SELECT x.lease_id, x.seqs FROM event_bus.leases x"
	" WHERE x.subscription OPERATOR(pg_catalog.=) $1"
	"   AND ($2::uuid IS NULL OR x.token OPERATOR(pg_catalog.=) $2)",
	2, {TEXTOID, UUIDOID}
};

static ClaimStmt ack_leases_stmt = {
	"SELECT x.lease_id, x.seqs FROM event_bus.leases x"
	" WHERE x.lease_id OPERATOR(pg_catalog.=) ANY ($1)"
	"   FOR UPDATE",
	1, {INT8ARRAYOID}
};

static ClaimStmt ack_delete_stmt = {
	"DELETE FROM event_bus.leases x WHERE x.lease_id OPERATOR(pg_catalog.=) $1",
	1, {INT8OID}
};

static ClaimStmt ack_keep_stmt = {
	"UPDATE event_bus.leases x SET seqs = $2 WHERE x.lease_id OPERATOR(pg_catalog.=) $1",
	2, {INT8OID, BYTEAOID}
};

static ClaimStmt ack_retries_stmt = {
	"DELETE FROM event_bus.retries x"
	" WHERE x.subscription OPERATOR(pg_catalog.=) $1 AND x.seq OPERATOR(pg_catalog.=) ANY ($2)"
	"   AND EXISTS (SELECT FROM event_bus.retries y WHERE y.subscription OPERATOR(pg_catalog.=) $1)",
	2, {TEXTOID, INT8ARRAYOID}
};

static ClaimStmt ack_check_stmt = {
	"SELECT event_bus._check_delivered(s, $2) FROM event_bus.subscriptions s"
	" WHERE s.subscription OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, INT8ARRAYOID}
};

/*
 * Split a lease's seqs ls (ascending) into those to keep and those acked
 * now (appended to acked, up to nwant in all); returns how many to keep.
 */
static int
ack_split(int64 *ls, int nls, int64 *want, int nwant, int64 *keep, int64 *acked, int *nacked)
{
	int			nkeep = 0;
	int			j;

	for (j = 0; j < nls; j++)
	{
		if (!claim_has(want, nwant, ls[j]))
			keep[nkeep++] = ls[j];
		else if (*nacked < nwant)
			acked[(*nacked)++] = ls[j];
	}
	return nkeep;
}

/*
 * ack's work on the leases, as ack_find_stmt, ack_leases_stmt and the
 * deletes and updates after them do it, through store.c: the leases of the
 * subscription (under the token) that hold one of the wanted seqs, each
 * locked (its newest version, waiting for a competing ack or expiry), the
 * seqs it still holds taken off it, and gone when none is left.  Adds the
 * seqs taken off to acked.  False when leases cannot be written so.
 */
static bool
ack_leases_direct(ClaimSub *s, Datum token, int64 *want, int nwant, int64 *acked, int *nacked)
{
	EventBusStore st;
	Snapshot	snap;
	ItemPointerData *tids;
	int			ntids = 0,
				cap = 8,
				i;
	bool		isnull;

	if (!eb_store_open(&st, EB_T_LEASES, true))
		return false;
	snap = eb_store_snapshot();
	tids = palloc(sizeof(ItemPointerData) * cap);
	eb_store_scan(&st, s->name, snap);
	while (eb_store_next(&st))
	{
		int64	   *ls;
		int			nls,
					j;

		if (token != (Datum) 0 &&
			memcmp(DatumGetUUIDP(eb_store_get(&st, EB_LEASE_TOKEN, &isnull))->data,
				   DatumGetUUIDP(token)->data, UUID_LEN) != 0)
			continue;
		ls = claim_unpack_seqs(DatumGetByteaPP(eb_store_get(&st, EB_LEASE_SEQS, &isnull)), &nls);
		for (j = 0; j < nls; j++)
			if (claim_has(want, nwant, ls[j]))
				break;
		if (j < nls)
		{
			if (ntids == cap)
			{
				cap *= 2;
				tids = repalloc(tids, sizeof(ItemPointerData) * cap);
			}
			tids[ntids++] = st.slot->tts_tid;
		}
		pfree(ls);
	}

	for (i = 0; i < ntids; i++)
	{
		int64	   *ls;
		int			nls,
					nkeep;
		int64	   *keep;
		bytea	   *packed;

		if (eb_store_lock(&st, &tids[i], snap, LockTupleExclusive, LockWaitBlock) != TM_Ok)
			continue;			/* gone meanwhile: acked, or expired */
		packed = DatumGetByteaPP(eb_store_get(&st, EB_LEASE_SEQS, &isnull));
		ls = claim_unpack_seqs(packed, &nls);
		keep = palloc(sizeof(int64) * Max(nls, 1));
		nkeep = ack_split(ls, nls, want, nwant, keep, acked, nacked);
		if (nkeep == 0)
			eb_store_delete(&st, &st.slot->tts_tid);
		else if (nkeep < nls)
		{
			Datum		values[EB_STORE_MAXCOLS];
			bool		nulls[EB_STORE_MAXCOLS];
			int			c;

			for (c = 0; c <= EB_LEASE_TOKEN; c++)
				values[c] = eb_store_get(&st, c, &nulls[c]);
			/* What is left of the lease (in seq order, as it was). */
			values[EB_LEASE_SEQS] = PointerGetDatum(claim_pack_seqs_from(keep, nkeep,
																		 claim_seqs_base(packed, keep[0])));
			eb_store_update(&st, &st.slot->tts_tid, values, nulls);
		}
		pfree(ls);
		pfree(keep);
	}
	eb_store_close(&st);
	UnregisterSnapshot(snap);
	return true;
}

/* The same through SPI: ack_find_stmt, ack_leases_stmt, then each lease. */
static void
ack_leases_spi(Datum *v, char *n, int64 *want, int nwant, int64 *acked, int *nacked, MemoryContext cxt)
{
	int64	   *lease_ids;
	Datum	   *lease_seqs;
	int			nleases,
				i;
	bool		isnull;

	if (claim_exec(&ack_find_stmt, v, n, 0) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: could not read the leases");
	lease_ids = palloc(sizeof(int64) * Max(SPI_processed, 1));
	nleases = 0;
	for (i = 0; i < (int) SPI_processed; i++)
	{
		int64	   *ls;
		int			nls,
					j;

		ls = claim_unpack_seqs(DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
															 2, &isnull)), &nls);
		for (j = 0; j < nls; j++)
			if (claim_has(want, nwant, ls[j]))
				break;
		if (j < nls)
			lease_ids[nleases++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull));
		pfree(ls);
	}
	SPI_freetuptable(SPI_tuptable);
	v[0] = claim_int8_array(lease_ids, nleases);
	if (nleases > 0 && claim_exec(&ack_leases_stmt, v, NULL, 0) != SPI_OK_SELECT)
		elog(ERROR, "event_bus: could not lock the leases");
	nleases = nleases > 0 ? (int) SPI_processed : 0;
	lease_seqs = palloc(sizeof(Datum) * Max(nleases, 1));
	for (i = 0; i < nleases; i++)
	{
		lease_ids[i] = DatumGetInt64(claim_col(i, 1, &isnull, cxt));
		lease_seqs[i] = claim_col(i, 2, &isnull, cxt);
	}
	SPI_freetuptable(SPI_tuptable);

	for (i = 0; i < nleases; i++)
	{
		int64	   *ls;
		int			nls,
					nkeep;
		int64	   *keep;
		Datum		kv[2];

		ls = claim_unpack_seqs(DatumGetByteaPP(lease_seqs[i]), &nls);
		keep = palloc(sizeof(int64) * Max(nls, 1));
		nkeep = ack_split(ls, nls, want, nwant, keep, acked, nacked);
		kv[0] = Int64GetDatum(lease_ids[i]);
		if (nkeep == 0)
		{
			if (claim_exec(&ack_delete_stmt, kv, NULL, 0) != SPI_OK_DELETE)
				elog(ERROR, "event_bus: could not delete a lease");
		}
		else if (nkeep < nls)
		{
			/* What is left of the lease (in seq order, as it was). */
			kv[1] = PointerGetDatum(claim_pack_seqs_from(keep, nkeep,
														 claim_seqs_base(DatumGetByteaPP(lease_seqs[i]),
																		 keep[0])));
			if (claim_exec(&ack_keep_stmt, kv, NULL, 0) != SPI_OK_UPDATE)
				elog(ERROR, "event_bus: could not update a lease");
		}
	}
}

/* event_bus.ack(subscription text, seqs bigint[], token uuid DEFAULT NULL) */
Datum
eb_ack(PG_FUNCTION_ARGS)
{
	Datum		subname = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	EventBusAsOwner owner;
	Oid			caller = GetUserId();
	int			nacked = 0;

	eb_check_writable();
	eb_as_owner_user(&owner);	/* search_path: claim_spi_open */
	eb_push_caller(caller);
	PG_TRY();
	{
		ClaimLazy	lazy;
		MemoryContext cxt = CurrentMemoryContext;
		ClaimSub	s;
		ArrayType  *in;
		Datum	   *elems;
		bool	   *nulls;
		int			nin,
					nwant,
					i;
		int64	   *want,
				   *acked;
		Datum		v[3];
		char		n[3] = {' ', ' ', ' '};

		claim_lazy_begin(&lazy);
		claim_read_subscription(subname, PG_ARGISNULL(0), caller, &s, cxt);
		if (PG_ARGISNULL(1))
			nin = -1;
		else
		{
			in = PG_GETARG_ARRAYTYPE_P(1);
			deconstruct_array(in, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &nin);
			for (i = 0; i < nin; i++)
				if (nulls[i])
					nin = -1;
		}
		if (nin < 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("seqs must be an array of event seqs without NULLs")));
		want = palloc(sizeof(int64) * Max(nin, 1));
		for (i = 0; i < nin; i++)
			want[i] = DatumGetInt64(elems[i]);
		nwant = claim_sort_unique(want, nin);
		acked = palloc(sizeof(int64) * Max(nwant, 1));

		v[0] = s.name;
		v[1] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
		n[1] = PG_ARGISNULL(2) ? 'n' : ' ';
		if (!ack_leases_direct(&s, v[1], want, nwant, acked, &nacked))
			ack_leases_spi(v, n, want, nwant, acked, &nacked, cxt);
		nacked = claim_sort_unique(acked, nacked);

		if (nacked > 0)
		{
			Datum		rv[2] = {s.name, claim_int8_array(acked, nacked)};

			if (claim_has_retries(s.name) && claim_exec(&ack_retries_stmt, rv, NULL, 0) != SPI_OK_DELETE)
				elog(ERROR, "event_bus: could not delete retries");
			if (s.ordered)		/* a lane may be free again */
				eb_wake_claimers_at_commit(eb_topics_mask(DatumGetArrayTypeP(s.topics)));
		}

		/*
		 * Acking again is fine (so is a stale ack under an expired lease's
		 * token: it leaves the newer delivery alone); acking what was never
		 * delivered is not.
		 */
		if (nacked < nwant)
		{
			int64	   *rest = palloc(sizeof(int64) * nwant);
			int			nrest = 0;
			Datum		cv[2];

			for (i = 0; i < nwant; i++)
				if (!claim_has(acked, nacked, want[i]))
					rest[nrest++] = want[i];
			cv[0] = s.name;
			cv[1] = claim_int8_array(rest, nrest);
			if (claim_exec(&ack_check_stmt, cv, NULL, 0) != SPI_OK_SELECT)
				elog(ERROR, "event_bus: _check_delivered() failed");
		}
		claim_lazy_end(&lazy);
		eb_stat_count('s', VARDATA_ANY(DatumGetTextPP(s.name)),
					  VARSIZE_ANY_EXHDR(DatumGetTextPP(s.name)), EB_ACKED, nacked);
	}
	PG_FINALLY();
	{
		claim_lazy = NULL;
		eb_pop_caller();
	}
	PG_END_TRY();
	eb_as_owner_end(&owner);
	PG_RETURN_INT32(nacked);
}
