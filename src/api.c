/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The SQL API's entry points: who is calling, then the work as the
 *	  extension's owner.
 *
 * A SECURITY DEFINER function cannot see who called it: inside it,
 * current_user is its owner.  Yet most of event_bus's API must know the
 * caller - a subscription may be worked only by its owner's roles, a topic
 * only by roles it was granted to.  So the public functions (claim, ack,
 * subscribe, ...) are this C entry point, eb_api, running with the caller's
 * identity.  It records the caller on a small backend-local stack and calls
 * the PL/pgSQL implementation event_bus._<name>_impl, a SECURITY DEFINER
 * function with a pinned search_path that nobody else may execute, with the
 * same arguments (and, for set-returning functions, the same ReturnSetInfo).
 * The implementation asks event_bus._caller() who called and checks
 * ownership and grants itself.
 *
 * The stack is popped however the call ends, so an error caught by the
 * caller's exception block leaves nothing behind.  A nested call (an
 * implementation calling another API function) runs as the extension's owner
 * and therefore with its rights, as any SECURITY DEFINER code does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "event_bus.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(eb_api);
PG_FUNCTION_INFO_V1(eb_lag);
PG_FUNCTION_INFO_V1(eb_caller_sql);
PG_FUNCTION_INFO_V1(eb_check_writable_sql);

/* Who called the API functions now running, innermost last. */
static Oid *caller_stack = NULL;
static int	caller_depth = 0;
static int	caller_space = 0;

/* What an API function's FmgrInfo caches between calls of one query. */
typedef struct ImplCall
{
	Oid			impl_oid;
	FmgrInfo	flinfo;
} ImplCall;

/* The role owning the extension's objects (the owner of event_bus.topics). */
Oid
eb_extension_owner(void)
{
	Oid			relid = get_relname_relid("topics", get_namespace_oid(EB_SCHEMA, false));
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "event_bus: cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Every function that writes refuses clearly on a standby (rather than with
 * whatever its first write says, or - for a waiting claim - after its wait).
 */
void
eb_check_writable(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("event_bus is read-only on a standby"),
				 errdetail("This server is in recovery: events are emitted, claimed and acknowledged on the primary only."),
				 errhint("Connect to the primary, for example with target_session_attrs=read-write in the connection string.")));

	/*
	 * The first write after a promotion (or the end of archive recovery)
	 * starts the life whose leases count: every lease claimed before it was
	 * claimed on another server (see _life_started).  Any lease of this
	 * server is claimed after its caller got here.
	 */
	if (eb_shared != NULL && eb_shared->from_recovery && !eb_shared->recovery_noted)
	{
		LWLockAcquire(eb_shared->lock, LW_EXCLUSIVE);
		if (!eb_shared->recovery_noted)
		{
			eb_shared->life_started = GetCurrentTimestamp();
			eb_shared->recovery_noted = true;
		}
		LWLockRelease(eb_shared->lock);
	}
}

/*
 * Run SQL from the C code of a function that runs as its caller (no
 * SECURITY DEFINER, no SET clause: applying one costs more than the rest of
 * an emit) as the extension's owner - the caller has no rights on our
 * tables and internal functions - with search_path pinned, so that nothing
 * of the caller's can resolve in it.  switch_user false: the 1.0 entry
 * points, SECURITY DEFINER functions that run as the owner already.  End
 * with eb_as_owner_end(); an error undoes both with the transaction.
 */
void
eb_as_owner_begin(EventBusAsOwner *o, bool switch_user)
{
	GetUserIdAndSecContext(&o->save_userid, &o->save_sec);
	if (switch_user)
		SetUserIdAndSecContext(eb_extension_owner(), o->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	o->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * The same without pinning search_path, for C code that resolves no name
 * through it and pins it itself before any statement (claim.c's lazy SPI).
 */
void
eb_as_owner_user(EventBusAsOwner *o)
{
	GetUserIdAndSecContext(&o->save_userid, &o->save_sec);
	SetUserIdAndSecContext(eb_extension_owner(), o->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	o->nestlevel = 0;
}

void
eb_as_owner_end(EventBusAsOwner *o)
{
	if (o->nestlevel > 0)
		AtEOXact_GUC(true, o->nestlevel);
	SetUserIdAndSecContext(o->save_userid, o->save_sec);
}

/* A datum of a type with typbyval/typlen, copied into cxt (by value: as it is). */
Datum
eb_datum_copy(Datum d, bool isnull, bool byval, int len, MemoryContext cxt)
{
	MemoryContext old;

	if (isnull || byval)
		return d;
	old = MemoryContextSwitchTo(cxt);
	d = datumCopy(d, false, len);
	MemoryContextSwitchTo(old);
	return d;
}

/*
 * The plan of 'sql', prepared once per backend (with cursor_options, e.g.
 * CURSOR_OPT_GENERIC_PLAN) and kept in *plan; SPI connected.
 */
SPIPlanPtr
eb_kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

		if (p == NULL)
			elog(ERROR, "event_bus: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/* event_bus._check_writable(): the same check for PL/pgSQL functions. */
Datum
eb_check_writable_sql(PG_FUNCTION_ARGS)
{
	eb_check_writable();
	PG_RETURN_VOID();
}

/* The caller of the innermost API function running, or InvalidOid. */
Oid
eb_current_caller(void)
{
	return caller_depth > 0 ? caller_stack[caller_depth - 1] : InvalidOid;
}

void
eb_push_caller(Oid caller)
{
	if (caller_depth == caller_space)
	{
		int			space = Max(8, caller_space * 2);

		if (caller_stack == NULL)
			caller_stack = MemoryContextAlloc(TopMemoryContext, space * sizeof(Oid));
		else
			caller_stack = repalloc(caller_stack, space * sizeof(Oid));
		caller_space = space;
	}
	caller_stack[caller_depth++] = caller;
}

void
eb_pop_caller(void)
{
	Assert(caller_depth > 0);
	caller_depth--;
}

/*
 * Call event_bus.<impl_name> with the arguments (and result set info) of
 * fcinfo, with 'caller' recorded as the caller.  The implementation must
 * have the same argument types.  impl_name is needed only on the first call
 * of a query (the implementation is then cached in fn_extra).
 */
Datum
eb_call_impl(FunctionCallInfo fcinfo, const char *impl_name, Oid caller)
{
	ImplCall   *call = (ImplCall *) fcinfo->flinfo->fn_extra;
	FunctionCallInfo impl_fcinfo;
	Datum		result;
	int			nargs = fcinfo->nargs;
	int			i;

	if (call == NULL)
	{
		Oid		   *argtypes;
		int			n;

		call = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ImplCall));
		(void) get_func_signature(fcinfo->flinfo->fn_oid, &argtypes, &n);
		call->impl_oid = LookupFuncName(list_make2(makeString(EB_SCHEMA), makeString(pstrdup(impl_name))),
										n, argtypes, false);
		fmgr_info_cxt(call->impl_oid, &call->flinfo, fcinfo->flinfo->fn_mcxt);
		fcinfo->flinfo->fn_extra = call;
	}

	impl_fcinfo = palloc0(SizeForFunctionCallInfo(nargs));
	InitFunctionCallInfoData(*impl_fcinfo, &call->flinfo, nargs, fcinfo->fncollation,
							 fcinfo->context, fcinfo->resultinfo);
	for (i = 0; i < nargs; i++)
		impl_fcinfo->args[i] = fcinfo->args[i];

	eb_push_caller(caller);
	PG_TRY();
	{
		result = FunctionCallInvoke(impl_fcinfo);
	}
	PG_FINALLY();
	{
		caller_depth--;
	}
	PG_END_TRY();

	fcinfo->isnull = impl_fcinfo->isnull;
	return result;
}

/*
 * The public functions of the API: event_bus.<name>(...) calls
 * event_bus._<name>_impl(...) with the caller recorded.
 */
Datum
eb_api(PG_FUNCTION_ARGS)
{
	char	   *impl = NULL;

	eb_check_writable();
	if (fcinfo->flinfo->fn_extra == NULL)
		impl = psprintf("_%s_impl", get_func_name(fcinfo->flinfo->fn_oid));
	return eb_call_impl(fcinfo, impl, GetUserId());
}

/*
 * event_bus._lag(): the lag of the subscriptions the caller may see, from
 * event_bus._lag_impl() (which reads the tables as the extension's owner
 * and asks _caller() whom to show).  Read-only: it works on a standby too.
 */
Datum
eb_lag(PG_FUNCTION_ARGS)
{
	return eb_call_impl(fcinfo, "_lag_impl", GetUserId());
}

/*
 * event_bus._caller(): the role that called the API function now running.
 * Only its implementation may ask.
 */
Datum
eb_caller_sql(PG_FUNCTION_ARGS)
{
	Oid			caller = eb_current_caller();

	if (!OidIsValid(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("event_bus internal functions may only be called through the event_bus API")));
	PG_RETURN_OID(caller);
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

/*
 * Append an item (zeroed, stamped with the current nest level) to a list of
 * this transaction's items; the list lives in TopMemoryContext.
 */
void *
eb_xact_list_add(EventBusXactList *l)
{
	char	   *item;

	if (l->n == l->space)
	{
		l->space = Max(8, l->space * 2);
		l->items = l->items == NULL ?
			MemoryContextAlloc(TopMemoryContext, l->space * l->size) :
			repalloc(l->items, l->space * l->size);
	}
	item = l->items + l->n++ * l->size;
	memset(item, 0, l->size);
	*(int *) item = GetCurrentTransactionNestLevel();
	return item;
}

/*
 * A subtransaction ends: a rolled-back savepoint takes its items with it, a
 * released one hands them to its parent.  From a SubXactCallback.
 */
void
eb_xact_list_subxact(EventBusXactList *l, SubXactEvent event)
{
	int			level = GetCurrentTransactionNestLevel();
	int			i,
				kept = 0;

	for (i = 0; i < l->n; i++)
	{
		char	   *item = l->items + i * l->size;
		int		   *item_level = (int *) item;

		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			if (*item_level < level)
			{
				if (kept != i)
					memcpy(l->items + kept * l->size, item, l->size);
				kept++;
			}
		}
		else if (event == SUBXACT_EVENT_COMMIT_SUB && *item_level >= level)
			*item_level = level - 1;
	}
	if (event == SUBXACT_EVENT_ABORT_SUB)
		l->n = kept;
}
