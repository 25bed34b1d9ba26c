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

#include "fmgr.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"

#define EB_SCHEMA			"event_bus"
#define EB_SEQUENCE			"event_seq"
#define EB_NAME_MAXLEN		63
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
} EventBusDb;

/* Per-backend horizon slot, indexed by pgprocno. */
typedef struct EventBusSlot
{
	pg_atomic_uint64 floor;		/* 0: no open transaction has emitted */
	Oid			dboid;			/* database of the backend owning the slot */
} EventBusSlot;

typedef struct EventBusShared
{
	LWLock	   *lock;			/* protects allocation of EventBusDb entries */
	int			max_databases;
	int			nslots;
	EventBusDb *dbs;			/* max_databases entries */
	EventBusSlot *slots;		/* nslots entries */
} EventBusShared;

/* event_bus.c */
extern EventBusShared *eb_shared;
extern int	eb_max_payload_size;
extern int	eb_partition_size;
extern int	eb_max_databases;
extern void eb_require_preload(void);
extern void eb_check_name(const char *kind, text *name);

/* horizon.c */
extern Size eb_shmem_size(void);
extern void eb_shmem_init(void);
extern void eb_horizon_init(void);
extern EventBusDb *eb_db_state(void);
extern void eb_begin_emit(EventBusDb *db);
extern void eb_note_seq(EventBusDb *db, uint64 seq);
extern uint64 eb_horizon(EventBusDb *db);
extern void eb_note_coverage(uint64 covered);
extern uint64 eb_known_coverage(EventBusDb *db);

#endif							/* EVENT_BUS_H */
