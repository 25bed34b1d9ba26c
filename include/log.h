/*-------------------------------------------------------------------------
 *
 * log.h
 *	  Writing event rows into the log without the executor (log.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_LOG_H
#define EVENT_BUS_LOG_H

#include "access/transam.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define EB_LOG_MAX_INDEXES 8
#define EB_LOG_MAX_COLUMNS 32
#define EB_LOG_BATCH 1000		/* rows per multi-insert, at most */
#define EB_LOG_BATCH_BYTES (1024 * 1024)	/* and their bytes */
typedef struct EventBusRow
{
	int64		seq;
	pg_uuid_t  *id;
	text	   *topic;
	text	   *type;
	int32		version;
	text	   *key;			/* NULL: none */
	int16		lane;
	Jsonb	   *payload;
	Jsonb	   *headers;
	TimestampTz emitted_at;
	FullTransactionId txid;
	bool		with_txid;		/* false: NULL (the 1.0 entry points) */
} EventBusRow;

typedef struct EventBusLog
{
	/*
	 * Where the log keeps what lives while it is open (slots, index info);
	 * rows are formed in the caller's context and freed once inserted.
	 */
	MemoryContext cxt;
	Relation	parent;			/* event_bus.events */
	Relation	part;			/* the partition open now, or NULL */
	int64		lo;				/* its bounds */
	int64		hi;
	bool		plain;			/* rows can go in without the executor */
	int			colmap[EB_LOG_MAX_COLUMNS];	/* per attribute: a LogColumn */
	/* Rows formed, not inserted yet (heap-tuple slots, made as needed). */
	int			nbuffered;
	Size		buffered_bytes;
	int			nslots;
	struct TupleTableSlot *slots[EB_LOG_BATCH];
	TupleDesc	slotdesc;		/* unpinned copy of the partition's, for slots 2.. */
	/* Per buffered row, by slot: the fixed-width columns indexes key on. */
	int64		seqs[EB_LOG_BATCH];
	int16		lanes[EB_LOG_BATCH];
	int32		hashes[EB_LOG_BATCH];
	int32		topic_hash;		/* of hashed_topic, the last row's topic */
	text	   *hashed_topic;
	int			nindexes;
	Relation	indexes[EB_LOG_MAX_INDEXES];
	struct IndexInfo *indexinfo[EB_LOG_MAX_INDEXES];
	/* Per index key column: the LogColumn to take it from, or -1 (deform). */
	int			direct[EB_LOG_MAX_INDEXES][INDEX_MAX_KEYS];
} EventBusLog;

/* The log's partitions, in seq order (eb_log_parts). */
typedef struct EventBusParts
{
	int			n;
	Oid		   *oids;
	int64	   *lo;				/* bounds: [lo, hi) */
	int64	   *hi;
} EventBusParts;

extern int32 eb_topic_hash(const char *name, int len);
extern void eb_uuid_v7(pg_uuid_t *uuid, TimestampTz ts);
/* eb_extension_relid()'s relations */
#define EB_REL_EVENTS		0
#define EB_REL_SEQUENCE		1

extern Oid	eb_extension_relid(int which);
extern void eb_log_open(EventBusLog *log);
extern bool eb_log_insert(EventBusLog *log, const EventBusRow *row);
extern void eb_log_close(EventBusLog *log);
extern uint64 eb_log_readable(uint64 max_seq);
extern bool eb_log_parts(EventBusParts *parts);
extern int	eb_log_parts_above(const EventBusParts *parts, int64 after);

#endif							/* EVENT_BUS_LOG_H */
