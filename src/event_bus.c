/*-------------------------------------------------------------------------
 *
 * event_bus.c
 *	  Module entry point: settings, shared memory hooks, and the start of
 *	  every other module.
 *
 * The extension must be loaded through shared_preload_libraries: the
 * visibility horizon lives in shared memory.  Loaded any other way, the
 * library still defines its settings (so postgresql.conf entries are
 * accepted) but every function that needs the shared state fails with a
 * clear error, and CREATE EXTENSION refuses to run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "event_bus.h"
#include "dispatch.h"
#include "horizon.h"
#include "shmem.h"
#include "stats.h"
#include "worker.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
eb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(eb_shmem_size());
	RequestNamedLWLockTranche("event_bus", 2);
	RequestAddinShmemSpace(eb_stats_shmem_size());
	RequestNamedLWLockTranche("event_bus stats", 1);
}

static void
eb_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	eb_shmem_init();
	eb_stats_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	eb_define_settings();

	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = eb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = eb_shmem_startup;

	eb_horizon_init();
	eb_stats_init();
	eb_dispatch_init();
	eb_launcher_init();
	eb_hook_init();
}
