/*-------------------------------------------------------------------------
 *
 * horizon.h
 *	  The visibility horizon: which seqs a claimer may hand out (horizon.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_BUS_HORIZON_H
#define EVENT_BUS_HORIZON_H

#include "shmem.h"

/* One open emitting transaction, as a claimer or the worker sees it. */
typedef struct EventBusEmitter
{
	int			procno;
	uint64		xid;			/* FullTransactionId */
	uint64		floor;			/* no seq of it is lower */
	uint64		topics;			/* topic bits */
	TimestampTz since;
} EventBusEmitter;

extern void eb_horizon_init(void);
extern void eb_begin_emit(EventBusDb *db);
extern void eb_note_emit_topic(text *topic);
extern void eb_note_seq(EventBusDb *db, uint64 seq);
extern void eb_note_log_written(void);
extern uint64 eb_horizon(EventBusDb *db);
extern int	eb_emitters(EventBusDb *db, uint64 *max_seq, EventBusEmitter **out);
extern int	eb_emitters_known(EventBusDb *db, uint64 *max_seq, EventBusEmitter **out);
extern int	eb_emitters_of(Datum *names, bool *nnulls, int nnames, uint64 *max_seq,
						   Datum **topics, bool **tnulls, Datum **xids, Datum **floors);
extern void eb_warn_long_emitters(void);
extern void eb_note_coverage(uint64 covered);
extern uint64 eb_known_coverage(EventBusDb *db);
extern void eb_note_listen(void);
extern void eb_wake_at_commit(void);
extern void eb_wake_due_at_commit(TimestampTz due);
extern void eb_wake_claimers_at_commit(uint64 topics);
extern void eb_wake_launcher_at_commit(void);

#endif							/* EVENT_BUS_HORIZON_H */
