/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  The shared memory of the event_bus extension (shmem.c).
 *
 * A small amount of state lives in shared memory:
 *
 *	- one EventBusDb entry per database that uses the extension, holding the
 *	  highest event seq known to be allocated there and how far the log's
 *	  partitions reach;
 *	- one EventBusSlot per PGPROC, holding the visibility-horizon floor of
 *	  that backend's open emitting transaction (horizon.c) and what it waits
 *	  for (wait.c);
 *	- one EventBusWorker per database the launcher watches (launcher.c);
 *	- a hash table of lane heads: per database, topic and lane, a seq no
 *	  event of the lane exceeds (shmem.c), so claims skip empty lanes.
 *
 * Everything else (the log, cursors, leases, retries, dead letters) lives in
 * ordinary tables of schema event_bus, created by the install script.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_SHMEM_H
#define EVENT_BUS_SHMEM_H

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/*
 * Committed events of one topic and type, as a committing emitter reports
 * them to the worker's dispatch (dispatch.c): hashes of the names, how many,
 * and the newest seq.
 */
typedef struct EventBusCommit
{
	uint64		topic;
	uint64		type;
	int64		newest;
	int64		n;
} EventBusCommit;

/* How many commit reports a database's ring holds between two rounds. */
#define EB_COMMIT_RING	1024

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
	pg_atomic_uint32 nwaiting;	/* slots of the database with a wait_mask */
	pg_atomic_uint32 replan;	/* set by commits that changed retries or
								 * leases: the worker reads its next due time */
	pg_atomic_uint64 planned;	/* that time (a TimestampTz), as the worker
								 * last read it; 0: none, or being read */
	pg_atomic_uint64 subs_gen;	/* bumped by commits that changed
								 * event_bus.subscriptions */
	/* Lane heads (shmem.c): */
	pg_atomic_uint64 emit_seq;	/* highest seq emitters have noted taking */
	pg_atomic_uint64 heads_epoch;	/* lane bases folded in under another
									 * epoch are stale */
	/* Commit reports for the worker (dispatch.c): */
	slock_t		ring_lock;		/* taken to append or to read */
	pg_atomic_uint64 ring_head; /* reports appended so far, ever */
	EventBusCommit ring[EB_COMMIT_RING];	/* report i at i % EB_COMMIT_RING */
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
	/* Retention processes of the database, since shared memory was set up: */
	uint64		retention_runs; /* started */
	uint64		retention_failures; /* ended by an error, or could not start */
	uint64		partitions_dropped;
	TimestampTz last_retention; /* end of the last run */
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

typedef struct EventBusShared
{
	LWLock	   *lock;			/* protects allocation of EventBusDb entries */
	LWLock	   *heads_lock;		/* protects the lane heads' hash table */
	pg_atomic_uint64 next_epoch;	/* source of EventBusDb.heads_epoch */
	int			max_databases;
	int			nslots;
	EventBusDb *dbs;			/* max_databases entries */
	EventBusSlot *slots;		/* nslots entries */
	EventBusWorker *workers;	/* max_databases entries */
	pid_t		launcher_pid;
	int			launcher_procno;	/* -1 if no launcher */
	bool		rescan;			/* launcher: forget "no extension" marks */
	pg_atomic_uint32 nlistening;	/* slots with listening set */
	TimestampTz life_started;	/* when shared memory was (re)initialised, or
								 * when a server that started from a backup or
								 * as a standby first wrote (eb_check_writable) */
	bool		from_recovery;	/* started with standby.signal or recovery.signal */
	bool		recovery_noted; /* ... and life_started says when it ended */
} EventBusShared;

extern EventBusShared *eb_shared;
extern EventBusDb *eb_current_db;	/* this backend's database, once looked up */
extern EventBusSlot *eb_current_slot;	/* this backend's slot, once set up */

extern Size eb_shmem_size(void);
extern void eb_shmem_init(void);
extern void eb_require_preload(void);
extern EventBusDb *eb_db_state(void);
extern EventBusSlot *eb_my_slot(void);
extern void eb_slot_wait_publish(EventBusDb *db, EventBusSlot *slot, uint64 mask);
extern void eb_slot_wait_unpublish(void);
extern uint64 eb_topic_bit(const char *name, int len);
extern EventBusWorker *eb_find_worker(Oid dboid);
extern bool eb_worker_alive(EventBusWorker *w);

/*
 * Lane heads: per database, topic and lane, a bound on the seqs of the
 * lane's events, so claims skip lanes with nothing above their cursor
 * without looking at the log (see shmem.c).
 */
#define EB_LANE_HEADS 8192		/* entries, for all databases */

typedef enum EventBusHead
{
	EB_HEAD_NONE,				/* no room for the lane: look at the log */
	EB_HEAD_NO_BASE,			/* its events from before are not counted */
	EB_HEAD_KNOWN				/* every event of the lane is at or below */
} EventBusHead;

extern void eb_atomic_max_u64(pg_atomic_uint64 *v, uint64 x);
extern void eb_lane_head_raise(EventBusDb *db, int32 topic_hash, int16 lane, uint64 seq);
extern EventBusHead eb_lane_head(EventBusDb *db, int32 topic_hash, int16 lane, uint64 *head,
								 uint64 *epoch);
extern void eb_lane_head_base(EventBusDb *db, int32 topic_hash, int16 lane, uint64 epoch,
							  uint64 base);
extern void eb_lane_heads_forget(EventBusDb *db);

#endif							/* EVENT_BUS_SHMEM_H */
