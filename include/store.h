/*-------------------------------------------------------------------------
 *
 * store.h
 *	  Reading and writing the extension's own bookkeeping tables
 *	  (subscriptions, cursors, leases, retries) through the table access
 *	  method, without the executor (store.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_STORE_H
#define EVENT_BUS_STORE_H

#include "access/genam.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* The tables (eb_store_open's 'which'). */
#define EB_T_SUBSCRIPTIONS	0
#define EB_T_CURSORS		1
#define EB_T_LEASES			2
#define EB_T_RETRIES		3

/* The columns store.c reads and writes, found by name (see shapes in store.c). */
#define EB_SUB_NAME			0
#define EB_SUB_TOPICS		1
#define EB_SUB_TYPES		2
#define EB_SUB_ORDERED		3
#define EB_SUB_PAUSED		4
#define EB_SUB_LEASE		5
#define EB_SUB_OWNER		6

#define EB_CUR_SUBSCRIPTION	0
#define EB_CUR_TOPIC		1
#define EB_CUR_LANE			2
#define EB_CUR_POSITION		3
#define EB_CUR_HIGH			4
#define EB_CUR_XIDS			5
#define EB_CUR_AFTERS		6

#define EB_LEASE_ID			0
#define EB_LEASE_SUBSCRIPTION 1
#define EB_LEASE_TOPIC		2
#define EB_LEASE_LANE		3
#define EB_LEASE_SEQS		4
#define EB_LEASE_CLAIMED_AT	5
#define EB_LEASE_EXPIRES_AT	6
#define EB_LEASE_CLAIMED_BY	7
#define EB_LEASE_TOKEN		8

#define EB_STORE_MAXCOLS	9
#define EB_STORE_MAXINDEXES	8

typedef struct EventBusStore
{
	int			which;
	Relation	rel;
	TupleTableSlot *slot;		/* a slot of rel's */
	AttrNumber	att[EB_STORE_MAXCOLS];	/* column -> attnum */
	bool		indexes_open;	/* when a write first needs them */
	int			nindexes;
	Relation	indexes[EB_STORE_MAXINDEXES];
	IndexInfo  *indexinfo[EB_STORE_MAXINDEXES];
	Oid			scan_index;		/* btree led by the subscription column */
	IndexScanDesc scan;
	Relation	scan_irel;
} EventBusStore;

extern bool eb_store_open(EventBusStore *st, int which, bool write);
extern void eb_store_close(EventBusStore *st);
extern Snapshot eb_store_snapshot(void);
extern void eb_store_scan(EventBusStore *st, Datum subscription, Snapshot snap);
extern bool eb_store_next(EventBusStore *st);
extern Datum eb_store_get(EventBusStore *st, int col, bool *isnull);
extern Datum eb_store_copy(EventBusStore *st, int col, bool *isnull, MemoryContext cxt);
extern TM_Result eb_store_lock(EventBusStore *st, ItemPointer tid, Snapshot snap,
							   LockTupleMode mode, LockWaitPolicy wait);
extern void eb_store_insert(EventBusStore *st, Datum *values, bool *nulls);
extern void eb_store_update(EventBusStore *st, ItemPointer tid, Datum *values, bool *nulls);
extern void eb_store_delete(EventBusStore *st, ItemPointer tid);

#endif							/* EVENT_BUS_STORE_H */
