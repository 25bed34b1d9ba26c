/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Background processes and what wakes them: the launcher (launcher.c),
 *	  the per-database worker (worker.c), the retention process
 *	  (retention.c), the utility hook (hook.c), and waits and wake-ups
 *	  (wait.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_WORKER_H
#define EVENT_BUS_WORKER_H

#include "shmem.h"
#include "utils/array.h"

struct BackgroundWorkerHandle;

/* launcher.c */
extern void eb_launcher_init(void);
extern bool eb_register_database_process(const char *function, const char *type, Oid dboid,
										 struct BackgroundWorkerHandle **handle);
extern void eb_pause_worker(Oid dboid, int seconds);
extern void eb_resume_worker(Oid dboid);
PGDLLEXPORT void eb_launcher_main(Datum arg);

/* worker.c */
PGDLLEXPORT void eb_worker_main(Datum arg);

/* retention.c */
extern void eb_start_retention(Oid dboid, struct BackgroundWorkerHandle **handle);
PGDLLEXPORT void eb_retention_main(Datum arg);

/* hook.c */
extern void eb_hook_init(void);

/* wait.c */
extern void eb_wake_database(EventBusDb *db, uint64 topics, bool worker);
extern void eb_wake_launcher(void);
extern bool eb_database_listened(EventBusDb *db);
extern uint64 eb_topics_mask(ArrayType *topics);
extern int64 eb_wait_internal(uint64 gen, int32 timeout_ms, uint64 mask);

#endif							/* EVENT_BUS_WORKER_H */
