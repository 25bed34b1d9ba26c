/*-------------------------------------------------------------------------
 *
 * event_bus.h
 *	  Shared declarations of the event_bus extension.
 *
 * The extension keeps a small amount of state in shared memory:
 *
 *	- one EventBusDb entry per database that uses the extension, holding the
 *	  highest event seq known to be allocated there and how far the log's
 *	  partitions reach;
 *	- one EventBusSlot per PGPROC, holding the visibility-horizon floor of
 *	  that backend's open emitting transaction (see horizon.c).
 *
 * Everything else (the log, cursors, leases, retries, dead letters) lives in
 * ordinary tables of schema event_bus, created by the install script.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_H
#define EVENT_BUS_H

#include "postgres.h"

#include "access/transam.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define EB_SCHEMA			"event_bus"
#define EB_SEQUENCE			"event_seq"
/* Names fit in a NOTIFY channel "event_bus.<name>" (NAMEDATALEN - 1). */
#define EB_NAME_MAXLEN		48
#define EB_TYPE_MAXLEN		255
#define EB_KEY_MAXLEN		1024

/* Per-database state; dboid == InvalidOid marks a free entry. */
typedef struct EventBusDb
{
	Oid			dboid;
	Oid			seqoid;			/* event_bus.event_seq this state belongs to */
	pg_atomic_uint32 seq_loaded;	/* max_seq has been read from the sequence */
	pg_atomic_uint64 max_seq;	/* highest seq known to have been allocated */
	pg_atomic_uint64 covered;	/* log partitions exist for seqs below this */
	pg_atomic_uint32 worker_procno; /* pgprocno of the worker + 1, 0 if none */
	pg_atomic_uint64 wake_gen;	/* bumped whenever claimable events may appear */
	pg_atomic_uint32 replan;	/* set by commits that changed retries or
								 * leases: the worker reads its next due time */
} EventBusDb;

/* What a per-database worker is doing; see worker.c. */
typedef enum EventBusWorkerState
{
	EBW_FREE = 0,				/* slot unused */
	EBW_STARTING,				/* registered by the launcher */
	EBW_RUNNING,				/* connected, extension present */
	EBW_NO_EXTENSION,			/* exited: the database has no event_bus */
	EBW_STOPPED					/* exited for another reason */
} EventBusWorkerState;

/* One per database the launcher watches; protected by EventBusShared.lock. */
typedef struct EventBusWorker
{
	Oid			dboid;
	EventBusWorkerState state;
	pid_t		pid;
	int			procno;			/* pgprocno of the worker, while pid != 0 */
	pid_t		retention_pid;	/* its retention process (retention.c), or 0 */
	TimestampTz started_at;
	TimestampTz last_round;
	uint64		rounds;
	uint64		notifications;
	TimestampTz pause_until;	/* do not start a worker before this */
	TimestampTz last_error_at;
	char		last_error[256];
} EventBusWorker;

/* Per-backend horizon slot, indexed by pgprocno. */
typedef struct EventBusSlot
{
	pg_atomic_uint64 floor;		/* 0: no open transaction has emitted */
	Oid			dboid;			/* database of the backend owning the slot */
	pg_atomic_uint64 wait_mask;	/* topic bits a claim(wait) of it waits for */
	pg_atomic_uint32 listening;	/* it ran LISTEN "event_bus.*" this session */
	/* Of the open emitting transaction, written before floor: */
	pg_atomic_uint64 xid;		/* its FullTransactionId */
	pg_atomic_uint64 topics;	/* bits of the topics it emitted to */
	pg_atomic_uint64 since;		/* TimestampTz of its first emit */
	pg_atomic_uint64 warned;	/* xid the worker warned about as long-running */
} EventBusSlot;

/* One open emitting transaction, as a claimer or the worker sees it. */
typedef struct EventBusEmitter
{
	int			procno;
	uint64		xid;			/* FullTransactionId */
	uint64		floor;			/* no seq of it is lower */
	uint64		topics;			/* topic bits */
	TimestampTz since;
} EventBusEmitter;

typedef struct EventBusShared
{
	LWLock	   *lock;			/* protects allocation of EventBusDb entries */
	int			max_databases;
	int			nslots;
	EventBusDb *dbs;			/* max_databases entries */
	EventBusSlot *slots;		/* nslots entries */
	EventBusWorker *workers;	/* max_databases entries */
	pid_t		launcher_pid;
	int			launcher_procno;	/* -1 if no launcher */
	bool		rescan;			/* launcher: forget "no extension" marks */
	TimestampTz life_started;	/* when shared memory was (re)initialised, or
								 * when a server that started from a backup or
								 * as a standby first wrote (eb_check_writable) */
	bool		from_recovery;	/* started with standby.signal or recovery.signal */
	bool		recovery_noted; /* ... and life_started says when it ended */
} EventBusShared;

/* event_bus.c */
extern EventBusShared *eb_shared;
extern int	eb_max_payload_size;
extern int	eb_partition_size;
extern int	eb_max_databases;
extern void eb_require_preload(void);
extern void eb_check_name(const char *kind, text *name);

extern bool eb_worker_enabled;
extern int	eb_naptime;
extern int	eb_retention;
extern int	eb_expire_batch_size;
extern int	eb_dispatch_interval;
extern int	eb_long_emit_warning;

/* api.c */
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
extern void eb_as_owner_end(EventBusAsOwner *o);
extern void eb_check_writable(void);
extern Datum eb_call_impl(FunctionCallInfo fcinfo, const char *impl_name, Oid caller);

/* worker.c */
extern void eb_worker_init(void);
extern EventBusWorker *eb_find_worker(Oid dboid);
struct BackgroundWorkerHandle;
extern bool eb_register_database_process(const char *function, const char *type, Oid dboid,
										 struct BackgroundWorkerHandle **handle);
extern void eb_wake_database(EventBusDb *db, uint64 topics, bool worker);
extern uint64 eb_topic_bit(const char *name, int len);
extern void eb_pause_worker(Oid dboid, int seconds);
extern void eb_wake_launcher(void);
PGDLLEXPORT void eb_launcher_main(Datum arg);
PGDLLEXPORT void eb_worker_main(Datum arg);

/* retention.c */
extern void eb_start_retention(Oid dboid, struct BackgroundWorkerHandle **handle);
PGDLLEXPORT void eb_retention_main(Datum arg);

/* log.c: writing event rows without the executor */
#define EB_LOG_MAX_INDEXES 8
#define EB_LOG_MAX_COLUMNS 32
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
	Relation	parent;			/* event_bus.events */
	Relation	part;			/* the partition open now, or NULL */
	int64		lo;				/* its bounds */
	int64		hi;
	bool		plain;			/* rows can go in without the executor */
	struct TupleTableSlot *slot;
	int			colmap[EB_LOG_MAX_COLUMNS];	/* per attribute: a LogColumn */
	int			nindexes;
	Relation	indexes[EB_LOG_MAX_INDEXES];
	struct IndexInfo *indexinfo[EB_LOG_MAX_INDEXES];
} EventBusLog;

extern void eb_uuid_v7(pg_uuid_t *uuid, TimestampTz ts);
extern void eb_log_open(EventBusLog *log);
extern bool eb_log_insert(EventBusLog *log, const EventBusRow *row);
extern void eb_log_close(EventBusLog *log);

/* horizon.c */
extern Size eb_shmem_size(void);
extern void eb_shmem_init(void);
extern void eb_horizon_init(void);
extern EventBusDb *eb_db_state(void);
extern void eb_begin_emit(EventBusDb *db);
extern void eb_note_seq(EventBusDb *db, uint64 seq);
extern uint64 eb_horizon(EventBusDb *db);
extern int	eb_emitters(EventBusDb *db, uint64 *max_seq, EventBusEmitter **out);
extern void eb_warn_long_emitters(void);
extern void eb_note_coverage(uint64 covered);
extern uint64 eb_known_coverage(EventBusDb *db);
extern void eb_wake_at_commit(void);
extern void eb_note_emit_topic(text *topic);
extern EventBusSlot *eb_my_slot(void);
extern void eb_wake_launcher_at_commit(void);
extern void eb_note_listen(void);

#endif							/* EVENT_BUS_H */
