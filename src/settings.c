/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The event_bus.* configuration parameters.
 *
 * They are defined whether or not the library was preloaded, so that
 * postgresql.conf settings are accepted either way; event_bus.max_databases
 * sizes shared memory and can only be defined while preloading.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/guc.h"

#include "event_bus.h"

int			eb_max_payload_size = 1024 * 1024;
int			eb_partition_size = 1000000;
int			eb_max_databases = 32;
int			eb_max_stats_entries = 1000;
bool		eb_worker_enabled = true;
int			eb_naptime = 1000;
int			eb_retention = 7 * 24 * 3600;
int			eb_expire_batch_size = 1000;
int			eb_dispatch_interval = 2;
int			eb_long_emit_warning = 60 * 1000;
int			eb_dedupe_window = 24 * 3600;

/* Define every setting; called first thing from _PG_init. */
void
eb_define_settings(void)
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
	DefineCustomIntVariable("event_bus.long_emit_warning",
							"Warn in the server log about a transaction that has been open this long since its first emit.",
							"Such a transaction holds back log retention; event_bus.open_emitters shows it. 0 disables the warning.",
							&eb_long_emit_warning,
							60 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_bus.dedupe_window",
							"How long a dedupe key of an emit holds.",
							"A second emit to the same topic with the same dedupe key within it publishes nothing and returns the first event's seq. create_topic(dedupe_window => ...) overrides it per topic.",
							&eb_dedupe_window,
							24 * 3600, 1, 366 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
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
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("event_bus.max_stats_entries",
								"Largest number of topics and subscriptions, over all databases, that event_bus.stats counts for.",
								"Each takes about 130 bytes of shared memory.",
								&eb_max_stats_entries,
								1000, 10, 1000000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	MarkGUCPrefixReserved("event_bus");
}
