/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory of event_bus: its layout (shmem.h), its set-up, and
 *	  lookups of the entries of this backend and its database.
 *
 * The extension must be loaded through shared_preload_libraries: the
 * visibility horizon lives here.  Loaded any other way, every function that
 * needs the shared state fails with a clear error (eb_require_preload).
 *
 * Locking: slots and the per-database counters are lock-free atomics;
 * EventBusShared.lock guards assignment of EventBusDb entries to databases
 * and the workers[] entries; EventBusShared.heads_lock the lane heads' hash
 * table (its heads themselves are atomics).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "event_bus.h"
#include "log.h"
#include "shmem.h"

EventBusShared *eb_shared = NULL;
EventBusDb *eb_current_db = NULL;
EventBusSlot *eb_current_slot = NULL;

/* A lane's head: see eb_lane_head_raise(). */
typedef struct LaneHeadKey
{
	Oid			dboid;
	Oid			seqoid;			/* of the extension the events belong to */
	int32		topic_hash;
	int32		lane;
} LaneHeadKey;

typedef struct LaneHead
{
	LaneHeadKey key;
	pg_atomic_uint64 head;		/* no event of the lane has a higher seq... */
	pg_atomic_uint64 base_epoch;	/* ...if this is its database's heads_epoch */
} LaneHead;

static HTAB *lane_heads = NULL;

static int
eb_nslots(void)
{
	/* Same size as ProcGlobal->allProcs: every PGPROC gets a slot. */
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
eb_shmem_struct_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(EventBusShared));
	size = add_size(size, MAXALIGN(mul_size(eb_max_databases, sizeof(EventBusDb))));
	size = add_size(size, MAXALIGN(mul_size(eb_nslots(), sizeof(EventBusSlot))));
	size = add_size(size, MAXALIGN(mul_size(eb_max_databases, sizeof(EventBusWorker))));
	return size;
}

Size
eb_shmem_size(void)
{
	return add_size(eb_shmem_struct_size(), hash_estimate_size(EB_LANE_HEADS, sizeof(LaneHead)));
}

/*
 * Attach to (and on first use initialise) the shared state.  Called from the
 * shmem_startup_hook with AddinShmemInitLock held by the caller.
 */
void
eb_shmem_init(void)
{
	bool		found;
	char	   *base;
	HASHCTL		info;

	info.keysize = sizeof(LaneHeadKey);
	info.entrysize = sizeof(LaneHead);
	lane_heads = ShmemInitHash("event_bus lane heads", EB_LANE_HEADS, EB_LANE_HEADS, &info,
							   HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	base = ShmemInitStruct("event_bus", eb_shmem_struct_size(), &found);
	eb_shared = (EventBusShared *) base;
	/* Pointers are process-local (EXEC_BACKEND may map shmem elsewhere). */
	base += MAXALIGN(sizeof(EventBusShared));
	eb_shared->dbs = (EventBusDb *) base;
	base += MAXALIGN(mul_size(eb_max_databases, sizeof(EventBusDb)));
	eb_shared->slots = (EventBusSlot *) base;
	base += MAXALIGN(mul_size(eb_nslots(), sizeof(EventBusSlot)));
	eb_shared->workers = (EventBusWorker *) base;
	if (!found)
	{
		int			i;

		eb_shared->lock = &(GetNamedLWLockTranche("event_bus"))[0].lock;
		eb_shared->heads_lock = &(GetNamedLWLockTranche("event_bus"))[1].lock;
		pg_atomic_init_u64(&eb_shared->next_epoch, 1);
		eb_shared->max_databases = eb_max_databases;
		eb_shared->nslots = eb_nslots();
		eb_shared->launcher_pid = 0;
		eb_shared->launcher_procno = -1;
		eb_shared->rescan = false;
		pg_atomic_init_u32(&eb_shared->nlistening, 0);
		eb_shared->life_started = GetCurrentTimestamp();

		/*
		 * Archive recovery or standby mode: the leases in the log came from
		 * another server, whose sessions are gone.  The life that counts
		 * starts when this one begins to write (eb_check_writable).  The
		 * postmaster runs in the data directory.
		 */
		eb_shared->from_recovery = access(STANDBY_SIGNAL_FILE, F_OK) == 0 ||
			access(RECOVERY_SIGNAL_FILE, F_OK) == 0;
		eb_shared->recovery_noted = false;
		for (i = 0; i < eb_shared->max_databases; i++)
		{
			EventBusDb *db = &eb_shared->dbs[i];

			db->dboid = InvalidOid;
			db->seqoid = InvalidOid;
			pg_atomic_init_u32(&db->seq_loaded, 0);
			pg_atomic_init_u64(&db->max_seq, 0);
			pg_atomic_init_u64(&db->covered, 0);
			pg_atomic_init_u32(&db->worker_procno, 0);
			pg_atomic_init_u64(&db->wake_gen, 0);
			pg_atomic_init_u32(&db->nwaiting, 0);
			pg_atomic_init_u32(&db->replan, 0);
			pg_atomic_init_u64(&db->planned, 0);
			pg_atomic_init_u64(&db->subs_gen, 0);
			pg_atomic_init_u64(&db->emit_seq, 0);
			pg_atomic_init_u64(&db->heads_epoch, 0);
			SpinLockInit(&db->ring_lock);
			pg_atomic_init_u64(&db->ring_head, 0);
			memset(&eb_shared->workers[i], 0, sizeof(EventBusWorker));
		}
		for (i = 0; i < eb_shared->nslots; i++)
		{
			pg_atomic_init_u64(&eb_shared->slots[i].floor, 0);
			pg_atomic_init_u64(&eb_shared->slots[i].wait_mask, 0);
			pg_atomic_init_u32(&eb_shared->slots[i].listening, 0);
			pg_atomic_init_u64(&eb_shared->slots[i].xid, 0);
			pg_atomic_init_u64(&eb_shared->slots[i].topics, 0);
			pg_atomic_init_u64(&eb_shared->slots[i].since, 0);
			pg_atomic_init_u64(&eb_shared->slots[i].warned, 0);
			eb_shared->slots[i].dboid = InvalidOid;
		}
	}
}

/*
 * A backend exiting in the middle of a transaction must not pin the horizon,
 * nor leave its waits and LISTEN marks to the next user of its slot.
 */
static void
eb_before_shmem_exit(int code, Datum arg)
{
	if (eb_current_slot != NULL)
	{
		pg_atomic_write_u64(&eb_current_slot->floor, 0);
		eb_slot_wait_unpublish();
		if (pg_atomic_exchange_u32(&eb_current_slot->listening, 0) != 0)
			pg_atomic_fetch_sub_u32(&eb_shared->nlistening, 1);
	}
}

/* The database this backend counts as waiting in (nwaiting), if any. */
static EventBusDb *eb_waiting_db = NULL;

/*
 * Publish the topics this backend sleeps for and count it among the
 * database's sleepers; the fetch-add is a full barrier between the two and
 * the caller's next look at the wake-up generation.
 */
void
eb_slot_wait_publish(EventBusDb *db, EventBusSlot *slot, uint64 mask)
{
	pg_atomic_write_u64(&slot->wait_mask, mask);
	pg_atomic_fetch_add_u32(&db->nwaiting, 1);
	eb_waiting_db = db;
}

/*
 * The sleep is over (or the backend exits in the middle of it,
 * eb_before_shmem_exit): clear the mask and the count.  The entry is still
 * this database's: a dropped database's entry is reused only once its
 * backends are gone.
 */
void
eb_slot_wait_unpublish(void)
{
	if (eb_current_slot != NULL)
		pg_atomic_write_u64(&eb_current_slot->wait_mask, 0);
	if (eb_waiting_db != NULL)
	{
		pg_atomic_fetch_sub_u32(&eb_waiting_db->nwaiting, 1);
		eb_waiting_db = NULL;
	}
}

/* Does the database with this OID still exist? */
static bool
eb_database_exists(Oid dboid)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));

	if (!HeapTupleIsValid(tup))
		return false;
	ReleaseSysCache(tup);
	return true;
}

/*
 * Return this database's shared state, assigning an entry on first use.  The
 * entry is tied to the OID of event_bus.event_seq, so DROP EXTENSION followed
 * by CREATE EXTENSION starts from a clean state.
 */
EventBusDb *
eb_db_state(void)
{
	Oid			seqoid;
	EventBusDb *db = NULL;
	int			i;

	eb_require_preload();

	seqoid = eb_extension_relid(EB_REL_SEQUENCE);
	if (!OidIsValid(seqoid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"event_bus\" is not installed in database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errhint("Run CREATE EXTENSION event_bus.")));

	if (eb_current_db != NULL && eb_current_db->dboid == MyDatabaseId && eb_current_db->seqoid == seqoid)
		return eb_current_db;

	LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < eb_shared->max_databases; i++)
	{
		if (eb_shared->dbs[i].dboid == MyDatabaseId)
		{
			db = &eb_shared->dbs[i];
			break;
		}
	}
	if (db == NULL)
	{
		/* A free entry, or one left behind by a dropped database. */
		for (i = 0; i < eb_shared->max_databases; i++)
		{
			EventBusDb *e = &eb_shared->dbs[i];

			if (!OidIsValid(e->dboid) || !eb_database_exists(e->dboid))
			{
				db = e;
				db->dboid = MyDatabaseId;
				db->seqoid = InvalidOid;
				break;
			}
		}
	}
	if (db == NULL)
	{
		LWLockRelease(eb_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many databases use event_bus"),
				 errdetail("event_bus.max_databases is %d.", eb_shared->max_databases),
				 errhint("Raise event_bus.max_databases and restart the server.")));
	}
	if (db->seqoid != seqoid)
	{
		db->seqoid = seqoid;
		pg_atomic_write_u32(&db->seq_loaded, 0);
		pg_atomic_write_u64(&db->max_seq, 0);
		pg_atomic_write_u64(&db->covered, 0);
		pg_atomic_write_u64(&db->emit_seq, 0);
		eb_lane_heads_forget(db);
	}
	LWLockRelease(eb_shared->lock);

	eb_current_db = db;
	return db;
}

/* This backend's slot, set up on first use. */
EventBusSlot *
eb_my_slot(void)
{
	if (eb_current_slot == NULL)
	{
		int			procno = MyProc->pgprocno;

		if (procno < 0 || procno >= eb_shared->nslots)
			elog(ERROR, "event_bus: pgprocno %d out of range", procno);
		eb_current_slot = &eb_shared->slots[procno];
		eb_current_slot->dboid = MyDatabaseId;
		pg_atomic_write_u64(&eb_current_slot->floor, 0);
		pg_atomic_write_u64(&eb_current_slot->wait_mask, 0);
		pg_atomic_write_u32(&eb_current_slot->listening, 0);
		before_shmem_exit(eb_before_shmem_exit, (Datum) 0);
	}
	return eb_current_slot;
}

/* The bit of a topic in the masks of waiting claims (64 buckets). */
uint64
eb_topic_bit(const char *name, int len)
{
	return UINT64CONST(1) << (hash_bytes((const unsigned char *) name, len) % 64);
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

/* The worker slot of a database, or NULL.  Caller holds eb_shared->lock. */
EventBusWorker *
eb_find_worker(Oid dboid)
{
	int			i;

	for (i = 0; i < eb_shared->max_databases; i++)
		if (eb_shared->workers[i].state != EBW_FREE && eb_shared->workers[i].dboid == dboid)
			return &eb_shared->workers[i];
	return NULL;
}

/*
 * Is the worker recorded in a slot still running?  Its PGPROC still carries
 * its pid while it lives.  Caller holds eb_shared->lock.
 */
bool
eb_worker_alive(EventBusWorker *w)
{
	return w->pid != 0 && w->procno >= 0 &&
		ProcGlobal->allProcs[w->procno].pid == w->pid;
}


/*
 * Lane heads.  An entry (database, extension, topic hash, lane) holds a seq
 * that no event of the lane exceeds, so a claim whose cursor is at or above
 * it skips the lane without an index probe.  Two parts make the bound:
 *
 *	- every emit raises the head of each lane it writes to (creating the
 *	  entry if there is none) before its transaction commits, so the head
 *	  covers every event written since shared memory was set up;
 *	- events from before - written before a restart, or before the entry
 *	  existed while the table was full - are counted once by a claim, which
 *	  reads the lane's highest seq from the log and folds it in as the
 *	  lane's base (eb_lane_head_base).  Everything from before a restart
 *	  has committed or rolled back (PREPARE after an emit is refused), and
 *	  an emitter still open when the entry was made raises it itself.
 *
 * A base is tied to its database's heads_epoch, which moves (and so makes
 * every base stale) when the extension is created anew or a claimer finds
 * the seq sequence ahead of what emitters noted (setval, a restored dump:
 * events may have entered the log some other way).  The hash table has a
 * fixed size and entries are never removed: a lane without an entry is
 * probed as before.  A head too high only costs a probe; a head never
 * lowers.  Topics whose names hash alike share entries, which is safe.
 */
static void
eb_lane_head_key(LaneHeadKey *key, EventBusDb *db, int32 topic_hash, int16 lane)
{
	memset(key, 0, sizeof(*key));
	key->dboid = db->dboid;
	key->seqoid = db->seqoid;
	key->topic_hash = topic_hash;
	key->lane = lane;
}

/* Raise *v to at least x; a full barrier when it writes. */
void
eb_atomic_max_u64(pg_atomic_uint64 *v, uint64 x)
{
	uint64		old = pg_atomic_read_u64(v);

	while (old < x && !pg_atomic_compare_exchange_u64(v, &old, x))
		;
}

/* A lane's entry in the shared table, made if missing and there is room. */
static LaneHead *
eb_lane_head_lookup(LaneHeadKey *key, uint64 first)
{
	LaneHead   *e;
	bool		found;

	LWLockAcquire(eb_shared->heads_lock, LW_SHARED);
	e = hash_search(lane_heads, key, HASH_FIND, NULL);
	LWLockRelease(eb_shared->heads_lock);
	if (e != NULL)
		return e;				/* entries are never removed */
	LWLockAcquire(eb_shared->heads_lock, LW_EXCLUSIVE);
	e = hash_search(lane_heads, key, HASH_ENTER_NULL, &found);
	if (e != NULL && !found)
	{
		pg_atomic_init_u64(&e->head, first);
		pg_atomic_init_u64(&e->base_epoch, 0);
	}
	LWLockRelease(eb_shared->heads_lock);
	return e;
}

/*
 * This backend's pointers to the entries it used (or NULL: no room): entries
 * are never removed, so after the first lookup an emit or a claim reaches
 * its lane's head without the table's lock.
 */
typedef struct LaneHeadRef
{
	LaneHeadKey key;
	LaneHead   *entry;
} LaneHeadRef;

static HTAB *lane_head_refs = NULL;

/* The same through this backend's pointers; NULL if there is no room. */
static LaneHead *
eb_lane_head_entry(LaneHeadKey *key, uint64 first)
{
	LaneHead   *e;
	LaneHeadRef *ref;

	if (lane_head_refs == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(LaneHeadKey);
		ctl.entrysize = sizeof(LaneHeadRef);
		ctl.hcxt = TopMemoryContext;
		lane_head_refs = hash_create("event_bus lane head refs", 64, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	ref = hash_search(lane_head_refs, key, HASH_FIND, NULL);
	if (ref != NULL)
		return ref->entry;

	/* No room is for good too: the table never shrinks. */
	e = eb_lane_head_lookup(key, first);
	ref = hash_search(lane_head_refs, key, HASH_ENTER, NULL);
	ref->entry = e;
	return e;
}

/* An emitter wrote an event with this seq into the lane (before commit). */
void
eb_lane_head_raise(EventBusDb *db, int32 topic_hash, int16 lane, uint64 seq)
{
	LaneHeadKey key;
	LaneHead   *e;

	eb_lane_head_key(&key, db, topic_hash, lane);
	e = eb_lane_head_entry(&key, seq);
	if (e != NULL)
		eb_atomic_max_u64(&e->head, seq);
}

/*
 * A claimer's bound for a lane: EB_HEAD_KNOWN with *head, or EB_HEAD_NO_BASE
 * with the *epoch to pass to eb_lane_head_base() after reading the lane's
 * highest seq (with a snapshot taken after this returns), or EB_HEAD_NONE.
 */
EventBusHead
eb_lane_head(EventBusDb *db, int32 topic_hash, int16 lane, uint64 *head, uint64 *epoch)
{
	LaneHeadKey key;
	LaneHead   *e;

	eb_lane_head_key(&key, db, topic_hash, lane);
	*epoch = pg_atomic_read_u64(&db->heads_epoch);
	pg_memory_barrier();
	e = eb_lane_head_entry(&key, 0);
	if (e == NULL)
		return EB_HEAD_NONE;
	if (pg_atomic_read_u64(&e->base_epoch) != *epoch)
		return EB_HEAD_NO_BASE;
	pg_read_barrier();			/* the head the base was folded into */
	*head = pg_atomic_read_u64(&e->head);
	return EB_HEAD_KNOWN;
}

/* Fold in a lane's highest seq read under the epoch eb_lane_head() gave. */
void
eb_lane_head_base(EventBusDb *db, int32 topic_hash, int16 lane, uint64 epoch, uint64 base)
{
	LaneHeadKey key;
	LaneHead   *e;

	eb_lane_head_key(&key, db, topic_hash, lane);
	e = eb_lane_head_entry(&key, base);
	if (e == NULL)
		return;
	eb_atomic_max_u64(&e->head, base);
	pg_memory_barrier();		/* the head before the mark */
	pg_atomic_write_u64(&e->base_epoch, epoch);	/* stale if the epoch moved */
}

/* Make every base of the database's lanes stale. */
void
eb_lane_heads_forget(EventBusDb *db)
{
	pg_atomic_write_u64(&db->heads_epoch, pg_atomic_fetch_add_u64(&eb_shared->next_epoch, 1));
	pg_memory_barrier();
}
