-- Install the extension and check what it created.
CREATE EXTENSION event_bus;
\set SHOW_CONTEXT never
SELECT extversion FROM pg_extension WHERE extname = 'event_bus';
-- Tables, views and sequence of the extension
SELECT c.relname, c.relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'event_bus' AND c.relkind IN ('r', 'p', 'v', 'S')
 ORDER BY 1;
-- State that pg_dump must keep
SELECT unnest(extconfig)::regclass FROM pg_extension WHERE extname = 'event_bus' ORDER BY 1;
-- Every SECURITY DEFINER function pins search_path; no function is
-- executable by PUBLIC but _row_jsonb (the to_jsonb of capture triggers)
-- and _emit_rows (their emit, which checks the caller's rights itself)
SELECT count(*) > 20 AS many_definer_functions FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'event_bus' AND p.prosecdef;
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'event_bus' AND p.prosecdef
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'event_bus' AND has_function_privilege('public', p.oid, 'EXECUTE');
-- Every user-facing function and view is documented
SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'event_bus' AND p.proname NOT LIKE '\_%'
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'event_bus' AND c.relkind IN ('r', 'p', 'v')
   AND obj_description(c.oid, 'pg_class') IS NULL;
-- Roles
SELECT rolname FROM pg_roles WHERE rolname LIKE 'event\_bus\_%' ORDER BY 1;
-- A helper for the other files: run a statement, show SQLSTATE and message
-- (with event seqs masked, since they depend on earlier files).
CREATE FUNCTION public.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'event \d+', 'event N');
END $$;
