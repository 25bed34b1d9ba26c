/*-------------------------------------------------------------------------
 *
 * dispatch.h
 *	  What emitting commits tell the worker, and the NOTIFYs it sends from
 *	  that (dispatch.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_DISPATCH_H
#define EVENT_BUS_DISPATCH_H

#include "shmem.h"

/* Emitting backends */
extern void eb_dispatch_init(void);
extern void eb_dispatch_note(text *topic, text *type, int64 n, int64 newest);
extern void eb_dispatch_xact_end(EventBusDb *db, bool commit);

/* The worker */
extern bool eb_dispatch_waiting(EventBusDb *db, uint64 tail);
extern int	eb_dispatch_drain(EventBusDb *db, uint64 *tail, EventBusCommit **out, bool *lost);
extern uint64 eb_dispatch_notify(EventBusDb *db, EventBusCommit *commits, int n);
extern void eb_dispatch_forget_subscriptions(void);

#endif							/* EVENT_BUS_DISPATCH_H */
