/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Cumulative statistics in shared memory (stats.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_STATS_H
#define EVENT_BUS_STATS_H

#include "port/atomics.h"
#include "utils/timestamp.h"

#include "event_bus.h"

/* What a counter counts; the order of the columns of event_bus.stats. */
typedef enum EventBusCounter
{
	EB_EMITTED = 0,				/* topic: events emitted (committed) */
	EB_CLAIMED,					/* subscription: events handed out by claims */
	EB_ACKED,					/* events acked */
	EB_FAILED,					/* fail() calls */
	EB_RETRIED,					/* events scheduled for another attempt */
	EB_DEAD_LETTERED,			/* events moved to the dead letters */
	EB_EXPIRED,					/* events whose lease expired */
	EB_NUM_COUNTERS
} EventBusCounter;

/* One topic or subscription of one database; never freed, only reused. */
typedef struct EventBusStatEntry
{
	Oid			dboid;			/* InvalidOid: free */
	char		kind;			/* 't' topic, 's' subscription */
	char		name[EB_NAME_MAXLEN + 1];
	pg_atomic_uint64 since;		/* TimestampTz the counters count from */
	pg_atomic_uint64 counters[EB_NUM_COUNTERS];
} EventBusStatEntry;

extern Size eb_stats_shmem_size(void);
extern void eb_stats_shmem_init(void);
extern void eb_stats_init(void);
extern void eb_stat_count(char kind, const char *name, int len, EventBusCounter counter, int64 n);

#endif							/* EVENT_BUS_STATS_H */
