/*-------------------------------------------------------------------------
 *
 * event_bus.h
 *	  Declarations every module of the event_bus extension uses: limits,
 *	  settings (settings.c), and the checks and identity helpers of the SQL
 *	  API (api.c).
 *
 * The other headers, one per concern, are included only where needed:
 *	shmem.h		the shared-memory layout (shmem.c)
 *	horizon.h	the visibility horizon and open emitters (horizon.c)
 *	log.h		writing event rows (log.c)
 *	stats.h		cumulative statistics (stats.c)
 *	store.h		the bookkeeping tables through the table AM (store.c)
 *	worker.h	background processes, the utility hook, waits and wake-ups
 *				(launcher.c, worker.c, retention.c, hook.c, wait.c)
 *
 * Modules depend on each other in one direction only (see
 * docs/architecture.md, "C layout"): settings, api and shmem at the bottom;
 * wait, then horizon, log, launcher, retention, worker, hook, emit,
 * capture and sql_helpers above them; event_bus.c (_PG_init) on top.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_H
#define EVENT_BUS_H

#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"

#define EB_SCHEMA			"event_bus"
#define EB_SEQUENCE			"event_seq"
/* Names fit in a NOTIFY channel "event_bus.<name>" (NAMEDATALEN - 1). */
#define EB_NAME_MAXLEN		48
#define EB_TYPE_MAXLEN		255
#define EB_KEY_MAXLEN		1024
#define EB_DEDUPE_KEY_MAXLEN	512

/* settings.c */
extern int	eb_max_payload_size;
extern int	eb_partition_size;
extern int	eb_max_databases;
extern int	eb_max_stats_entries;
extern bool eb_worker_enabled;
extern int	eb_naptime;
extern int	eb_retention;
extern int	eb_expire_batch_size;
extern int	eb_dispatch_interval;
extern int	eb_long_emit_warning;
extern int	eb_dedupe_window;
extern void eb_define_settings(void);

/* api.c */
extern void eb_check_name(const char *kind, text *name);
extern Oid	eb_extension_owner(void);
extern Oid	eb_current_caller(void);
extern void eb_push_caller(Oid caller);
extern void eb_pop_caller(void);

/* SQL run from C as the extension's owner, with search_path pinned. */
typedef struct EventBusAsOwner
{
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
} EventBusAsOwner;
extern void eb_as_owner_begin(EventBusAsOwner *o, bool switch_user);
extern void eb_as_owner_user(EventBusAsOwner *o);
extern void eb_as_owner_end(EventBusAsOwner *o);
extern void eb_check_writable(void);
extern Datum eb_datum_copy(Datum d, bool isnull, bool byval, int len, MemoryContext cxt);
extern SPIPlanPtr eb_kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
							   int cursor_options);
extern Datum eb_call_impl(FunctionCallInfo fcinfo, const char *impl_name, Oid caller);

/* sql_helpers.c: a lane cursor's next state after a claim's read (_lane_next). */
typedef struct EventBusLaneNext
{
	int64		position;
	int64		high;
	Datum		xids;			/* xid8[] */
	Datum		afters;			/* bigint[] */
} EventBusLaneNext;
extern void eb_lane_next_state(int64 pos, int64 high, Datum xids, Datum afters, int64 max_seq,
							   Datum emitters, Datum floors, bool full, bool has_last, int64 last,
							   Datum snap, bool pending_read, EventBusLaneNext *next);

/* Are two texts equal byte for byte (as collation "C" compares them)? */
static inline bool
eb_text_eq(const text *a, const text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* qsort comparator of int64s (seqs, sort keys). */
static inline int
eb_cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * This transaction's items (counts, reports) kept until it ends, each
 * belonging to the (sub)transaction that added it: an item's first member
 * is that nest level (an int).  Declare one with EB_XACT_LIST(type).
 */
typedef struct EventBusXactList
{
	char	   *items;
	int			n;
	int			space;
	Size		size;			/* of one item */
} EventBusXactList;

#define EB_XACT_LIST(type)	{NULL, 0, 0, sizeof(type)}
extern void *eb_xact_list_add(EventBusXactList *l);
extern void eb_xact_list_subxact(EventBusXactList *l, SubXactEvent event);

#endif							/* EVENT_BUS_H */
