/*-------------------------------------------------------------------------
 *
 * event_bus.c
 *	  Module entry point: GUCs, shared memory hooks and small SQL helpers.
 *
 * The extension must be loaded through shared_preload_libraries: the
 * visibility horizon lives in shared memory.  Loaded any other way, the
 * library still defines its GUCs (so postgresql.conf settings are accepted)
 * but every function that needs the shared state fails with a clear error,
 * and CREATE EXTENSION refuses to run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "event_bus.h"

PG_MODULE_MAGIC;

int			eb_max_payload_size = 1024 * 1024;
int			eb_partition_size = 1000000;
int			eb_max_databases = 32;
bool		eb_worker_enabled = true;
int			eb_naptime = 1000;
int			eb_retention = 7 * 24 * 3600;
int			eb_expire_batch_size = 1000;
int			eb_dispatch_interval = 2;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
eb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(eb_shmem_size());
	RequestNamedLWLockTranche("event_bus", 1);
}

static void
eb_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	eb_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	DefineCustomIntVariable("event_bus.max_payload_size",
							"Largest payload plus headers an event may carry.",
							NULL,
							&eb_max_payload_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.partition_size",
							"Number of seqs covered by each partition of the event log.",
							"Applies to partitions created from now on.",
							&eb_partition_size,
							1000000, 1000, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("event_bus.worker",
							 "Run the event_bus worker in each database that has the extension.",
							 NULL,
							 &eb_worker_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.naptime",
							"Longest time the worker sleeps between rounds.",
							"Commits of emitting transactions wake it at once; this bounds how late lease expiry and maintenance run.",
							&eb_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.retention",
							"How long consumed events stay in the log before their partition may be dropped.",
							NULL,
							&eb_retention,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.dispatch_interval",
							"Shortest time between two rounds of a worker.",
							"Bursts of commits within it are dispatched together, which bounds the worker's CPU use under heavy load.",
							&eb_dispatch_interval,
							2, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.expire_batch_size",
							"Most expired leases one run_maintenance() call turns into retries.",
							"The rest wait for the next round, which keeps rounds short.",
							&eb_expire_batch_size,
							1000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	/* PGC_POSTMASTER settings can only be defined while preloading. */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("event_bus.max_databases",
								"Largest number of databases that can use event_bus at once.",
								NULL,
								&eb_max_databases,
								32, 1, 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	MarkGUCPrefixReserved("event_bus");

	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = eb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = eb_shmem_startup;

	eb_horizon_init();
	eb_worker_init();
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

/*
 * Validate a topic or subscription name: [a-z0-9][a-z0-9._-]*, at most
 * EB_NAME_MAXLEN bytes.  'kind' is "topic" or "subscription".
 */
void
eb_check_name(const char *kind, text *name)
{
	const char *s;
	int			len;
	int			i;

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s name must not be null", kind)));
	s = VARDATA_ANY(name);
	len = VARSIZE_ANY_EXHDR(name);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s name must not be empty", kind)));
	if (len > EB_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s name \"%.*s...\" is too long", kind, 20, s),
				 errdetail("Names are at most %d bytes long.", EB_NAME_MAXLEN)));
	for (i = 0; i < len; i++)
	{
		char		c = s[i];
		bool		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			(i > 0 && (c == '.' || c == '_' || c == '-'));

		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name \"%.*s\"", kind, len, s),
					 errdetail("Names start with a lower-case letter or digit and contain only lower-case letters, digits, \".\", \"_\" and \"-\".")));
	}
}

PG_FUNCTION_INFO_V1(eb_check_preloaded);
PG_FUNCTION_INFO_V1(eb_check_name_sql);
PG_FUNCTION_INFO_V1(eb_horizon_sql);
PG_FUNCTION_INFO_V1(eb_note_coverage_sql);
PG_FUNCTION_INFO_V1(eb_topics_changed);
PG_FUNCTION_INFO_V1(eb_life_started);

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
