/*-------------------------------------------------------------------------
 *
 * hook.c
 *	  The ProcessUtility hook.
 *
 * DROP DATABASE (and CREATE DATABASE ... TEMPLATE, ALTER DATABASE RENAME or
 * SET TABLESPACE) cannot run while our worker is connected: the hook stops
 * the worker of that database first and keeps the launcher from starting
 * it again while the command runs.  It also notes a LISTEN on an
 * "event_bus." channel, from which on emitting commits wake the worker to
 * send its NOTIFYs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/syscache.h"

#include "event_bus.h"
#include "horizon.h"
#include "shmem.h"
#include "worker.h"

/* How long a stopped worker's database is left alone (DROP DATABASE etc.). */
#define EB_PAUSE_SECONDS		10

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static void eb_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
							  bool readOnlyTree, ProcessUtilityContext context,
							  ParamListInfo params, QueryEnvironment *queryEnv,
							  DestReceiver *dest, QueryCompletion *qc);

/* Whether the current user owns a database, or may use it as a template. */
static bool
eb_may_copy_database(Oid dboid)
{
	HeapTuple	tup;
	bool		istemplate;

	if (pg_database_ownercheck(dboid, GetUserId()))
		return true;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tup))
		return false;
	istemplate = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
	ReleaseSysCache(tup);
	return istemplate;
}

/*
 * The database a utility statement needs for itself, if any: DROP
 * DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME and
 * ... SET TABLESPACE refuse to run while another session (our worker) is
 * connected to it.  Only statements that would pass Postgres's own checks
 * count - the caller owns the database (or may copy it), has CREATEDB where
 * the command needs it, and runs it where a transaction block is not
 * refused - so that nobody can stop a worker with a command that is going
 * to fail anyway.
 */
static Oid
eb_database_needing_exclusivity(Node *parsetree, ProcessUtilityContext context)
{
	bool		may_run = (context == PROCESS_UTILITY_TOPLEVEL && !IsTransactionBlock());
	ListCell   *lc;
	Oid			dboid;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			dboid = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);
			if (may_run && OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
				return dboid;
			return InvalidOid;
		case T_CreatedbStmt:
			if (!may_run || !have_createdb_privilege())
				return InvalidOid;
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "template") == 0 && def->arg != NULL)
				{
					dboid = get_database_oid(defGetString(def), true);
					if (OidIsValid(dboid) && eb_may_copy_database(dboid))
						return dboid;
				}
			}
			return InvalidOid;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType != OBJECT_DATABASE || !have_createdb_privilege())
				return InvalidOid;
			dboid = get_database_oid(((RenameStmt *) parsetree)->subname, true);
			if (OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
				return dboid;
			return InvalidOid;
		case T_AlterDatabaseStmt:
			if (!may_run)
				return InvalidOid;
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "tablespace") == 0)
				{
					dboid = get_database_oid(((AlterDatabaseStmt *) parsetree)->dbname, true);
					if (OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
						return dboid;
				}
			}
			return InvalidOid;
		default:
			return InvalidOid;
	}
}

/*
 * Stop a database's worker for as long as a command that needs the
 * database to itself runs (at most EB_PAUSE_SECONDS, should this backend
 * die meanwhile).
 */
static void
eb_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				  bool readOnlyTree, ProcessUtilityContext context,
				  ParamListInfo params, QueryEnvironment *queryEnv,
				  DestReceiver *dest, QueryCompletion *qc)
{
	Oid			dboid = InvalidOid;

	if (eb_shared != NULL)
		dboid = eb_database_needing_exclusivity(pstmt->utilityStmt, context);
	if (OidIsValid(dboid))
		eb_pause_worker(dboid, EB_PAUSE_SECONDS);

	/* A LISTEN for our NOTIFYs: emitting commits must wake the worker. */
	if (eb_shared != NULL && IsA(pstmt->utilityStmt, ListenStmt) &&
		strncmp(((ListenStmt *) pstmt->utilityStmt)->conditionname, "event_bus.", 10) == 0)
		eb_note_listen();

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (OidIsValid(dboid))
			eb_resume_worker(dboid);
	}
	PG_END_TRY();
}

/* Install the hook; called from _PG_init while preloading. */
void
eb_hook_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = eb_ProcessUtility;
}
