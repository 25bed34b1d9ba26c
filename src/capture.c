/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Entry points of capture() and uncapture(), the compilation of capture
 *	  conditions, and the row-to-JSON conversion of captured rows.
 *
 * capture(table, ...) must be refused unless the caller owns the table (or
 * is a superuser), yet the work - writing event_bus.captures, generating the
 * trigger function - needs the extension owner's rights.  These entry
 * points run as the caller: they check ownership with the caller's
 * identity, then call the PL/pgSQL implementation event_bus._<name>_impl
 * through the API trampoline (api.c), which runs as the extension's owner.
 *
 * A capture condition is text the caller wrote, so it never runs, and is
 * never planned, with the extension owner's rights.  It is parsed and
 * analysed as one boolean expression over the table's row with the rights
 * of the table's owner (parse analysis executes nothing and folds no
 * functions), and stored as an expression tree.  The generated trigger
 * function receives the tree deparsed by ruleutils - every column qualified
 * by the row's alias, every function and operator outside pg_catalog
 * schema-qualified - so no statement can be smuggled in and no search_path
 * can change what it calls.  The trigger function runs as whoever writes to
 * the table, as any trigger of the table's owner would.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/typcache.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "event_bus.h"

PG_FUNCTION_INFO_V1(eb_call_as_owner);
PG_FUNCTION_INFO_V1(eb_capture_1_1);
PG_FUNCTION_INFO_V1(eb_capture_compile);
PG_FUNCTION_INFO_V1(eb_capture_condition_sql);
PG_FUNCTION_INFO_V1(eb_capture_depend);
PG_FUNCTION_INFO_V1(eb_row_jsonb);

/* The alias of the row in generated code and deparsed conditions. */
#define EB_ROW_ALIAS "n"

/*
 * Refuse what capture() cannot capture; the caller must own the table.
 */
static void
eb_check_capturable(FunctionCallInfo fcinfo, bool for_capture)
{
	Oid			relid;
	char		relkind;

	eb_check_writable();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table must not be null")));
	relid = PG_GETARG_OID(0);
	relkind = get_rel_relkind(relid);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(relid) ? get_rel_name(relid) : "?"),
				 errhint("event_bus captures ordinary and partitioned tables.")));
	if (for_capture && get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot capture temporary table \"%s\"", get_rel_name(relid)),
				 errdetail("A temporary table lives only as long as its session.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));
}

/*
 * The 1.0 entry point of capture() and uncapture() (kept for databases
 * still on the 1.0 install script).  1.0 ran the condition as the
 * extension's owner, so a condition is accepted there from superusers only.
 */
Datum
eb_call_as_owner(PG_FUNCTION_ARGS)
{
	eb_check_capturable(fcinfo, false);
	if (fcinfo->nargs >= 9 && !PG_ARGISNULL(8) && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("capture conditions need event_bus 1.1 or later"),
				 errhint("Update the extension with ALTER EXTENSION event_bus UPDATE.")));
	return eb_call_impl(fcinfo, psprintf("_%s_impl", get_func_name(fcinfo->flinfo->fn_oid)),
						eb_extension_owner());
}

/*
 * capture() and uncapture() since 1.1: check the table as the caller,
 * compile the condition (capture's ninth argument) as the table's owner,
 * then call the implementation with the compiled condition in its place.
 */
Datum
eb_capture_1_1(PG_FUNCTION_ARGS)
{
	bool		is_capture = (fcinfo->nargs == 9);

	eb_check_capturable(fcinfo, is_capture);
	if (is_capture && !PG_ARGISNULL(8))
	{
		Datum		compiled = DirectFunctionCall2(eb_capture_compile, PG_GETARG_DATUM(0), PG_GETARG_DATUM(8));

		/* The executor fills the arguments afresh for every call. */
		fcinfo->args[8].value = compiled;
	}
	return eb_call_impl(fcinfo, is_capture ? "_capture_impl" : "_uncapture_impl", GetUserId());
}

/* Run parse analysis of a condition; see eb_capture_compile. */
static Node *
eb_analyze_condition(Relation rel, const char *cond)
{
	List	   *raw;
	SelectStmt *sel;
	ResTarget  *rt;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;

	raw = raw_parser(cond, RAW_PARSE_PLPGSQL_EXPR);
	sel = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	if (list_length(raw) != 1 || !IsA(sel, SelectStmt) ||
		list_length(sel->targetList) != 1 || sel->distinctClause != NIL ||
		sel->fromClause != NIL || sel->whereClause != NULL || sel->groupClause != NIL ||
		sel->havingClause != NULL || sel->windowClause != NIL || sel->sortClause != NIL ||
		sel->limitOffset != NULL || sel->limitCount != NULL || sel->lockingClause != NIL ||
		((ResTarget *) linitial(sel->targetList))->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("the condition is not one expression")));
	rt = linitial_node(ResTarget, sel->targetList);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = cond;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   makeAlias(EB_ROW_ALIAS, NIL), false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);
	expr = transformExpr(pstate, rt->val, EXPR_KIND_WHERE);
	expr = coerce_to_boolean(pstate, expr, "the capture condition");
	assign_expr_collations(pstate, expr);
	if (checkExprHasSubLink(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subqueries are not allowed in a capture condition")));
	free_parsestate(pstate);
	return expr;
}

/*
 * event_bus._capture_compile(table regclass, condition text) returns text:
 * the condition as a stored expression tree.  The condition must be one
 * boolean expression over the columns of the table's row; it is analysed
 * with the rights of the table's owner and is neither planned nor run.
 */
Datum
eb_capture_compile(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *cond = text_to_cstring(PG_GETARG_TEXT_PP(1));
	MemoryContext oldcxt = CurrentMemoryContext;
	Relation	rel;
	Node	   *expr = NULL;
	Oid			save_userid;
	int			save_sec;

	rel = table_open(relid, AccessShareLock);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		expr = eb_analyze_condition(rel, cond);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		SetUserIdAndSecContext(save_userid, save_sec);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid capture condition for table %s: %s",
						quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												   RelationGetRelationName(rel)),
						edata->message),
				 errdetail("The condition was: %s", cond),
				 errhint("The condition is one boolean SQL expression over the columns of the row.")));
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
	table_close(rel, NoLock);
	PG_RETURN_TEXT_P(cstring_to_text(nodeToString(expr)));
}

/* Columns a stored condition uses must still be there, with their type. */
static bool
eb_check_condition_vars(Node *node, void *context)
{
	Oid			relid = *(Oid *) context;

	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;
		HeapTuple	tup;
		bool		dropped;
		bool		same_type;
		char	   *attname;

		if (var->varattno == 0)
			return false;		/* the whole row */
		tup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(var->varattno));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "event_bus: capture condition of %u names a column that does not exist", relid);
		dropped = ((Form_pg_attribute) GETSTRUCT(tup))->attisdropped;
		same_type = ((Form_pg_attribute) GETSTRUCT(tup))->atttypid == var->vartype &&
			((Form_pg_attribute) GETSTRUCT(tup))->atttypmod == var->vartypmod;
		attname = pstrdup(NameStr(((Form_pg_attribute) GETSTRUCT(tup))->attname));
		ReleaseSysCache(tup);
		if (dropped)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot drop a column of table %s that the event_bus capture condition uses",
							get_rel_name(relid)),
					 errhint("Change the condition with event_bus.capture() first.")));
		if (!same_type)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot change the type of column \"%s\" of table %s: the event_bus capture condition uses it",
							attname, get_rel_name(relid)),
					 errhint("Change the condition with event_bus.capture() first.")));
		return false;
	}
	return expression_tree_walker(node, eb_check_condition_vars, context);
}

/*
 * event_bus._capture_condition_sql(table regclass, expr text) returns text:
 * a stored condition as SQL over the row alias "n", for the generated
 * trigger function.  Names outside pg_catalog come out schema-qualified.
 * Errors if a column it uses was dropped or changed its type.
 */
Datum
eb_capture_condition_sql(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Node	   *expr = stringToNode(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	OverrideSearchPath *path;
	char	   *sql = NULL;

	(void) eb_check_condition_vars(expr, &relid);
	path = GetOverrideSearchPath(CurrentMemoryContext);
	path->schemas = NIL;
	path->addCatalog = true;
	path->addTemp = false;
	PushOverrideSearchPath(path);
	PG_TRY();
	{
		sql = deparse_expression(expr, deparse_context_for(EB_ROW_ALIAS, relid), true, false);
	}
	PG_FINALLY();
	{
		PopOverrideSearchPath();
	}
	PG_END_TRY();
	PG_RETURN_TEXT_P(cstring_to_text(sql));
}

/*
 * event_bus._capture_depend(fn regprocedure): make a generated trigger
 * function depend on the extension, so that DROP EXTENSION refuses to leave
 * captured tables with triggers that fail (and CASCADE drops them).
 */
Datum
eb_capture_depend(PG_FUNCTION_ARGS)
{
	ObjectAddress fn;
	ObjectAddress ext;

	ObjectAddressSet(fn, ProcedureRelationId, PG_GETARG_OID(0));
	ObjectAddressSet(ext, ExtensionRelationId, get_extension_oid("event_bus", false));
	(void) deleteDependencyRecordsForSpecific(fn.classId, fn.objectId, DEPENDENCY_NORMAL,
											  ext.classId, ext.objectId);
	recordDependencyOn(&fn, &ext, DEPENDENCY_NORMAL);
	PG_RETURN_VOID();
}

/*
 * event_bus._row_jsonb(row record) returns jsonb: the row as a JSON object,
 * exactly as to_jsonb(row) makes it, for the rows a capture trigger turns
 * into events.  to_jsonb looks up each column's type (its category and
 * output function, in the syscache) again for every row; here that is done
 * once per row type and kept while the type's tuple descriptor stays the
 * same.  Only columns whose conversion is simple are taken this way -
 * booleans, integers, floats, numeric, dates and timestamps, and text,
 * varchar, char and uuid, which become strings - each converted as to_jsonb
 * converts it.  A row type with any other column (a domain, an array, a
 * composite, json, an extension's type...) goes to to_jsonb itself.
 */
typedef enum
{
	RJ_BOOL, RJ_INT, RJ_NUMERIC, RJ_DATETIME, RJ_TEXT, RJ_OUTPUT, RJ_DROPPED
} RowJsonKind;

typedef struct RowJsonColumn
{
	RowJsonKind kind;
	Oid			typid;
	char	   *key;
	int			keylen;
	FmgrInfo	out;			/* RJ_NUMERIC, RJ_OUTPUT */
} RowJsonColumn;

typedef struct RowJsonCache
{
	uint64		ident;			/* the row type's descriptor identifier */
	bool		fallback;		/* to_jsonb does the row */
	FmgrInfo	to_jsonb;
	int			natts;
	RowJsonColumn *cols;
	int			nkeys;			/* columns not dropped */
	int		   *order;			/* their attribute numbers - 1, in key order */
} RowJsonCache;

/* jsonb's order of object keys: shorter first, then bytewise. */
static int
eb_row_jsonb_key_cmp(const void *a, const void *b, void *arg)
{
	const RowJsonColumn *cols = (const RowJsonColumn *) arg;
	const RowJsonColumn *x = &cols[*(const int *) a];
	const RowJsonColumn *y = &cols[*(const int *) b];

	if (x->keylen != y->keylen)
		return x->keylen < y->keylen ? -1 : 1;
	return memcmp(x->key, y->key, x->keylen);
}

static void
eb_row_jsonb_prepare(RowJsonCache *c, TupleDesc desc, uint64 ident, MemoryContext cxt)
{
	int			i;

	c->ident = ident;
	c->fallback = false;
	c->natts = desc->natts;
	c->cols = MemoryContextAllocZero(cxt, sizeof(RowJsonColumn) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		RowJsonColumn *col = &c->cols[i];
		Oid			outfn;
		bool		varlena;

		col->typid = att->atttypid;
		if (att->attisdropped)
		{
			col->kind = RJ_DROPPED;
			continue;
		}
		col->key = MemoryContextStrdup(cxt, NameStr(att->attname));
		col->keylen = strlen(col->key);
		switch (att->atttypid)
		{
			case BOOLOID:
				col->kind = RJ_BOOL;
				break;
			case INT2OID:
			case INT4OID:
			case INT8OID:
				col->kind = RJ_INT;
				break;
			case FLOAT4OID:
			case FLOAT8OID:
			case NUMERICOID:
				col->kind = RJ_NUMERIC;
				break;
			case DATEOID:
			case TIMESTAMPOID:
			case TIMESTAMPTZOID:
				col->kind = RJ_DATETIME;
				break;
			case TEXTOID:
			case VARCHAROID:
			case BPCHAROID:
				col->kind = RJ_TEXT;
				break;
			case UUIDOID:
				col->kind = RJ_OUTPUT;
				break;
			default:
				c->fallback = true;
				return;
		}
		if (col->kind == RJ_NUMERIC || col->kind == RJ_OUTPUT)
		{
			getTypeOutputInfo(att->atttypid, &outfn, &varlena);
			fmgr_info_cxt(outfn, &col->out, cxt);
		}
	}

	/*
	 * The object is built with its keys already in jsonb's order, which the
	 * columns keep from one row to the next.  Two columns of one name (a
	 * record from a query can have them) go to to_jsonb, which keeps the
	 * last.
	 */
	c->order = MemoryContextAlloc(cxt, sizeof(int) * Max(desc->natts, 1));
	c->nkeys = 0;
	for (i = 0; i < desc->natts; i++)
		if (c->cols[i].kind != RJ_DROPPED)
			c->order[c->nkeys++] = i;
	qsort_arg(c->order, c->nkeys, sizeof(int), eb_row_jsonb_key_cmp, c->cols);
	for (i = 1; i < c->nkeys; i++)
		if (eb_row_jsonb_key_cmp(&c->order[i - 1], &c->order[i], c->cols) == 0)
			c->fallback = true;
}

/* A string value, refused beyond jsonb's limit as to_jsonb refuses it. */
static void
eb_row_jsonb_string(JsonbValue *v, char *s, int len)
{
	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = len;
}

Datum
eb_row_jsonb(PG_FUNCTION_ARGS)
{
	HeapTupleHeader td = PG_GETARG_HEAPTUPLEHEADER(0);
	Oid			typid = HeapTupleHeaderGetTypeId(td);
	int32		typmod = HeapTupleHeaderGetTypMod(td);
	RowJsonCache *c = (RowJsonCache *) fcinfo->flinfo->fn_extra;
	TupleDesc	desc;
	uint64		ident;
	HeapTupleData tuple;
	JsonbPair  *pairs;
	JsonbValue	obj;
	Datum	   *values;
	bool	   *nulls;
	int			k;

	if (c == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RowJsonCache));
		fmgr_info_cxt(F_TO_JSONB, &c->to_jsonb, fcinfo->flinfo->fn_mcxt);
		c->to_jsonb.fn_expr = fcinfo->flinfo->fn_expr;
		fcinfo->flinfo->fn_extra = c;
	}

	/*
	 * A named row type, or a blessed record (the rows of a transition
	 * table): the identifier changes whenever the descriptor does.
	 */
	ident = assign_record_type_identifier(typid, typmod);
	desc = lookup_rowtype_tupdesc(typid, typmod);
	if (c->cols == NULL || c->ident != ident)
	{
		if (c->cols != NULL)
			pfree(c->cols);
		if (c->order != NULL)
			pfree(c->order);
		c->cols = NULL;
		c->order = NULL;
		eb_row_jsonb_prepare(c, desc, ident, fcinfo->flinfo->fn_mcxt);
	}
	if (c->fallback)
	{
		ReleaseTupleDesc(desc);
		return FunctionCall1(&c->to_jsonb, PG_GETARG_DATUM(0));
	}

	tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = td;
	values = palloc(sizeof(Datum) * Max(c->natts, 1));
	nulls = palloc(sizeof(bool) * Max(c->natts, 1));
	heap_deform_tuple(&tuple, desc, values, nulls);
	ReleaseTupleDesc(desc);

	pairs = palloc(sizeof(JsonbPair) * Max(c->nkeys, 1));
	for (k = 0; k < c->nkeys; k++)
	{
		int			i = c->order[k];
		RowJsonColumn *col = &c->cols[i];
		JsonbValue *v = &pairs[k].value;
		char	   *s;

		eb_row_jsonb_string(&pairs[k].key, col->key, col->keylen);
		pairs[k].order = k;
		if (nulls[i])
			v->type = jbvNull;
		else
			switch (col->kind)
			{
				case RJ_BOOL:
					v->type = jbvBool;
					v->val.boolean = DatumGetBool(values[i]);
					break;
				case RJ_INT:
					v->type = jbvNumeric;
					v->val.numeric = int64_to_numeric(col->typid == INT2OID ? DatumGetInt16(values[i]) :
													  col->typid == INT4OID ? DatumGetInt32(values[i]) :
													  DatumGetInt64(values[i]));
					break;
				case RJ_NUMERIC:
					/*
					 * As to_jsonb: a number if its text is one, else (NaN,
					 * infinities) a string.  A numeric that is a number is
					 * what numeric_in would make of its text: taken as it is.
					 */
					if (col->typid == NUMERICOID)
					{
						Numeric		num = DatumGetNumeric(values[i]);

						if (!numeric_is_nan(num) && !numeric_is_inf(num))
						{
							v->type = jbvNumeric;
							v->val.numeric = num;
							break;
						}
					}
					s = OutputFunctionCall(&col->out, values[i]);
					if (strchr(s, 'N') != NULL || strchr(s, 'n') != NULL)
						eb_row_jsonb_string(v, s, strlen(s));
					else
					{
						v->type = jbvNumeric;
						v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(s),
																			 ObjectIdGetDatum(InvalidOid),
																			 Int32GetDatum(-1)));
					}
					break;
				case RJ_DATETIME:
					s = palloc(MAXDATELEN + 1);
					JsonEncodeDateTime(s, values[i], col->typid, NULL);
					eb_row_jsonb_string(v, s, strlen(s));
					break;
				case RJ_TEXT:
					{
						text	   *t = DatumGetTextPP(values[i]);

						eb_row_jsonb_string(v, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
					}
					break;
				case RJ_OUTPUT:
					s = OutputFunctionCall(&col->out, values[i]);
					eb_row_jsonb_string(v, s, strlen(s));
					break;
				case RJ_DROPPED:
					break;
			}
	}
	obj.type = jbvObject;
	obj.val.object.nPairs = c->nkeys;
	obj.val.object.pairs = pairs;
	PG_RETURN_POINTER(JsonbValueToJsonb(&obj));
}
