/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Entry points of capture() and uncapture(): an ownership check as the
 *	  caller, then the work as the extension's owner.
 *
 * capture(table, ...) must be refused unless the caller owns the table (or
 * is a superuser), yet the work - writing event_bus.captures, generating the
 * trigger function - needs the extension owner's rights.  A SECURITY
 * DEFINER function cannot see who called it, so these entry points are
 * plain C functions running as the caller: they check ownership with the
 * caller's identity, then switch to the extension owner (as core does for
 * maintenance commands) and call the PL/pgSQL implementation
 * event_bus._<name>_impl with the same arguments.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "event_bus.h"

PG_FUNCTION_INFO_V1(eb_call_as_owner);

/* The role owning the extension's objects (the owner of event_bus.captures). */
static Oid
eb_extension_owner(void)
{
	Oid			relid = get_relname_relid("captures", get_namespace_oid(EB_SCHEMA, false));
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
 * The first argument is the table (regclass).  The caller must own it.
 */
Datum
eb_call_as_owner(PG_FUNCTION_ARGS)
{
	Oid			fnoid = fcinfo->flinfo->fn_oid;
	Oid		   *argtypes;
	int			nargs;
	Oid			rettype;
	int16		typlen;
	bool		typbyval;
	Datum	   *values;
	char	   *nulls;
	StringInfoData sql;
	Oid			relid;
	Oid			save_userid;
	int			save_sec;
	Datum		result = (Datum) 0;
	bool		isnull = true;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table must not be null")));
	relid = PG_GETARG_OID(0);
	if (get_rel_relkind(relid) != RELKIND_RELATION &&
		get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(relid) ? get_rel_name(relid) : "?"),
				 errhint("event_bus captures ordinary and partitioned tables.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));

	rettype = get_func_signature(fnoid, &argtypes, &nargs);
	get_typlenbyval(rettype, &typlen, &typbyval);

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT event_bus.%s(", quote_identifier(psprintf("_%s_impl", get_func_name(fnoid))));
	values = palloc(sizeof(Datum) * nargs);
	nulls = palloc(sizeof(char) * nargs);
	for (i = 0; i < nargs; i++)
	{
		appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	appendStringInfoChar(&sql, ')');

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(eb_extension_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE);

	/* Errors restore the user id as part of transaction abort. */
	SPI_connect();
	if (SPI_execute_with_args(sql.data, nargs, argtypes, values, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "event_bus: %s failed", sql.data);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		result = SPI_datumTransfer(result, typbyval, typlen);
	SPI_finish();

	SetUserIdAndSecContext(save_userid, save_sec);

	if (isnull)
		PG_RETURN_NULL();
	return result;
}
