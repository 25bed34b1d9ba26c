-----------------------------------------------------------------------------
-- Outbox capture: row changes of ordinary tables become events in the same
-- transaction, through statement-level triggers with transition tables.
-----------------------------------------------------------------------------
CREATE TABLE event_bus.captures (
    relid           regclass PRIMARY KEY,
    topic           text COLLATE "C" NOT NULL,
    operations      text[] NOT NULL,
    types           jsonb NOT NULL,
    key_columns     text[],
    key_attnums     smallint[],
    columns         text[],
    column_attnums  smallint[],
    exclude_columns text[],
    exclude_attnums smallint[],
    update_mode     text NOT NULL,
    condition       text,
    function_name   text NOT NULL,      -- the generated trigger function in schema event_bus
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    condition_expr  text                -- condition as compiled by _capture_compile()
);
SELECT pg_catalog.pg_extension_config_dump('event_bus.captures', '');
COMMENT ON TABLE event_bus.captures IS 'Tables whose row changes are captured as events, and how (see event_bus.capture()).';

-- The live attnums of columns named in a list, raising a clear error for a
-- name that is not a column.
CREATE FUNCTION event_bus._capture_attnums(p_table regclass, p_cols text[], what text) RETURNS smallint[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c   text;
    n   smallint;
    res smallint[] := '{}';
BEGIN
    IF p_cols IS NULL THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.cardinality(p_cols) = 0 OR pg_catalog.array_position(p_cols, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '% must be NULL or a non-empty array of column names', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH c IN ARRAY p_cols LOOP
        SELECT a.attnum INTO n FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) p_table AND a.attname OPERATOR(pg_catalog.=) c
           AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'column "%" of table % does not exist', c, p_table
                USING ERRCODE = 'undefined_column',
                      DETAIL = pg_catalog.format('It is named in %s.', what);
        END IF;
        res := res || n;
    END LOOP;
    RETURN res;
END
$$;

-- Bring the column lists of a capture in line with the table after DDL:
-- renamed columns are followed by attnum, dropped excluded columns are
-- forgotten, and a dropped key or included column is an error.
CREATE FUNCTION event_bus._capture_columns(p_table regclass, names text[], nums smallint[], what text,
                                           may_vanish boolean, OUT new_names text[], OUT new_nums smallint[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i  integer;
    nm text;
BEGIN
    IF names IS NULL THEN
        RETURN;
    END IF;
    new_names := '{}';
    new_nums := '{}';
    FOR i IN 1 .. pg_catalog.cardinality(names) LOOP
        SELECT a.attname INTO nm FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) p_table AND a.attnum OPERATOR(pg_catalog.=) nums[i]
           AND NOT a.attisdropped;
        IF nm IS NULL THEN
            CONTINUE WHEN may_vanish;
            RAISE EXCEPTION 'cannot drop column "%" of table %: event_bus captures it as %', names[i], p_table, what
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Change the capture with event_bus.capture() or remove it with event_bus.uncapture() first.';
        END IF;
        new_names := new_names || nm;
        new_nums := new_nums || nums[i];
    END LOOP;
    IF pg_catalog.cardinality(new_names) = 0 THEN
        new_names := NULL;
        new_nums := NULL;
    END IF;
END
$$;

-- A table and every partition or inheritance child below it, at any depth.
CREATE FUNCTION event_bus._capture_tree(p_table regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE t(relid) AS (
        SELECT p_table::oid
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent OPERATOR(pg_catalog.=) t.relid)
    SELECT t.relid::regclass FROM t
$$;

-- Drop the capture triggers of a captured table: on it, on every table
-- below it, and on tables that were below it (detached partitions, former
-- children) and still call its trigger function.
CREATE FUNCTION event_bus._capture_drop_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t  record;
    fn oid;
BEGIN
    SELECT pg_catalog.to_regprocedure(pg_catalog.format('event_bus.%I()', c.function_name)) INTO fn
      FROM event_bus.captures c WHERE c.relid OPERATOR(pg_catalog.=) p_table;
    FOR t IN SELECT g.tgname, g.tgrelid::regclass AS rel FROM pg_catalog.pg_trigger g
              WHERE g.tgname::text LIKE 'event\_bus\_capture\_%'
                AND (g.tgrelid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT x::oid FROM event_bus._capture_tree(p_table) x))
                     OR g.tgfoid OPERATOR(pg_catalog.=) fn)
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    END LOOP;
END
$$;

-- SQL for the row image of a captured row as jsonb: whole is the row itself
-- (n.*), prefix qualifies its columns (n.).  Column names only ever pass
-- through %I, never into a format string.
CREATE FUNCTION event_bus._capture_row_sql(c event_bus.captures, whole text, prefix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN c.columns IS NOT NULL THEN
            'pg_catalog.jsonb_build_object('
            || (SELECT pg_catalog.string_agg(pg_catalog.format('%L, %s%I', u.x, prefix, u.x), ', ' ORDER BY u.o)
                  FROM pg_catalog.unnest(c.columns) WITH ORDINALITY AS u(x, o))
            || ')'
        WHEN c.exclude_columns IS NOT NULL THEN
            pg_catalog.format('(event_bus._row_jsonb(%s) OPERATOR(pg_catalog.-) %L::text[])', whole, c.exclude_columns)
        ELSE pg_catalog.format('event_bus._row_jsonb(%s)', whole)
    END
$$;

-- SQL for the key of a captured row: one column as text, several as a JSON
-- array, NULL without key columns.
CREATE FUNCTION event_bus._capture_key_sql(c event_bus.captures, prefix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN c.key_columns IS NULL THEN 'NULL::text'
        WHEN pg_catalog.cardinality(c.key_columns) = 1 THEN
            pg_catalog.format('(%s%I)::text', prefix, c.key_columns[1])
        ELSE
            'pg_catalog.jsonb_build_array('
            || (SELECT pg_catalog.string_agg(pg_catalog.format('%s%I', prefix, u.x), ', ' ORDER BY u.o)
                  FROM pg_catalog.unnest(c.key_columns) WITH ORDINALITY AS u(x, o))
            || ')::text'
    END
$$;

-- SQL for the key columns of a captured row as a jsonb array, to pair the
-- old and new images of updated rows.
CREATE FUNCTION event_bus._capture_keyjson_sql(c event_bus.captures, prefix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'pg_catalog.jsonb_build_array('
           || (SELECT pg_catalog.string_agg(pg_catalog.format('%s%I', prefix, u.x), ', ' ORDER BY u.o)
                 FROM pg_catalog.unnest(c.key_columns) WITH ORDINALITY AS u(x, o))
           || ')'
$$;

-- (Re)generate the trigger function and triggers of a captured table from
-- its row in event_bus.captures.  The generated code names the row only
-- through aliases qualified so that no column can shadow them (n.*, n.col,
-- (q.r).col); the condition is the compiled expression, deparsed.  The
-- function is SECURITY INVOKER: it runs as whoever writes to the table, who
-- needs the produce grant of the topic, as for emitting directly.
CREATE FUNCTION event_bus._capture_generate(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $gen$
DECLARE
    c        event_bus.captures;
    fn       text;
    qname    text;
    cond     text := 'true';
    payload  text;
    body     text := '';
    op       text;
    hdr      text;
    rel      regclass;
BEGIN
    SELECT * INTO c FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    fn := pg_catalog.format('event_bus.%I', c.function_name);
    SELECT pg_catalog.format('%I.%I', n.nspname, r.relname) INTO qname
      FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace
     WHERE r.oid OPERATOR(pg_catalog.=) p_table;
    IF c.condition_expr IS NOT NULL THEN
        cond := event_bus._capture_condition_sql(p_table, c.condition_expr);
        UPDATE event_bus.captures x SET condition = cond WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    END IF;

    FOREACH op IN ARRAY c.operations LOOP
        hdr := pg_catalog.quote_literal(pg_catalog.jsonb_build_object(
                   'source', 'table:' || qname, 'operation', op)::text) || '::jsonb';
        IF op = 'truncate' THEN
            body := body || pg_catalog.format($f$
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM event_bus.emit(%L, %L, pg_catalog.jsonb_build_object('table', %L), NULL, %s);
    END IF;$f$, c.topic, c.types OPERATOR(pg_catalog.->>) op, qname, hdr);
        ELSIF op = 'update' AND c.update_mode <> 'new' THEN
            -- Pair old and new rows by key, as jsonb (the same code serves
            -- partitions and inheritance children, whatever their row
            -- types; jsonb equality hashes and treats NULLs as equal).
            -- q.nj is the new row, q.oj the old one.
            IF c.update_mode = 'old_and_new' THEN
                payload := 'pg_catalog.jsonb_build_object(''old'', q.oj, ''new'', q.nj)';
            ELSE
                payload := pg_catalog.format(
                    '(SELECT pg_catalog.jsonb_object_agg(e.key, e.value) FROM pg_catalog.jsonb_each(q.nj) e'
                    ' WHERE e.key OPERATOR(pg_catalog.=) ANY (%L::text[])'
                    ' OR (q.oj OPERATOR(pg_catalog.->) e.key) IS DISTINCT FROM e.value)',
                    c.key_columns);
            END IF;
            body := body || pg_catalog.format($f$
    IF TG_OP = 'UPDATE' THEN
        PERFORM event_bus._emit_rows(%L, %L, x.p, x.k, %s ORDER BY x.ord)
           FROM (SELECT %s AS p, q.k, q.ord
                   FROM (SELECT nn.nj, nn.k, nn.ord, oo.oj
                           FROM (SELECT %s AS nj, %s AS k, %s AS kj, pg_catalog.row_number() OVER () AS ord
                                   FROM new_rows n WHERE %s) nn
                           LEFT JOIN (SELECT %s AS oj, %s AS kj FROM old_rows o) oo
                                  ON oo.kj OPERATOR(pg_catalog.=) nn.kj) q) x;
    END IF;$f$, c.topic, c.types OPERATOR(pg_catalog.->>) op, hdr, payload,
                event_bus._capture_row_sql(c, 'n.*', 'n.'), event_bus._capture_key_sql(c, 'n.'),
                event_bus._capture_keyjson_sql(c, 'n.'), cond,
                event_bus._capture_row_sql(c, 'o.*', 'o.'), event_bus._capture_keyjson_sql(c, 'o.'));
        ELSE
            -- A scan of the transition table returns rows in the order the
            -- statement wrote them; nothing here reorders them.  _emit_rows
            -- writes each event as its row comes.
            body := body || pg_catalog.format($f$
    IF TG_OP = %L THEN
        PERFORM event_bus._emit_rows(%L, %L, %s, %s, %s)
           FROM %s n WHERE %s;
    END IF;$f$, pg_catalog.upper(op), c.topic, c.types OPERATOR(pg_catalog.->>) op,
                event_bus._capture_row_sql(c, 'n.*', 'n.'),
                event_bus._capture_key_sql(c, 'n.'), hdr, CASE op WHEN 'delete' THEN 'old_rows' ELSE 'new_rows' END,
                cond);
        END IF;
    END LOOP;

    EXECUTE pg_catalog.format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS %L$f$, fn,
        E'\nBEGIN' || body ||
        E'\n    RETURN NULL;\nEND\n');
    EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s() IS %L', fn,
                              'event_bus capture of ' || qname || ' (generated by event_bus.capture(); do not edit)');
    PERFORM event_bus._capture_depend(pg_catalog.format('%s()', fn)::regprocedure);

    -- Statement triggers fire only for the table a statement names, and
    -- its transition tables hold the rows of every table below it: so the
    -- triggers go on the captured table and on every partition or child
    -- (for statements naming those directly), each row is captured once.
    -- TRUNCATE fires on every table it empties: only on the captured one.
    PERFORM event_bus._capture_drop_triggers(p_table);
    FOR rel IN SELECT * FROM event_bus._capture_tree(p_table) LOOP
        FOREACH op IN ARRAY c.operations LOOP
            CONTINUE WHEN op = 'truncate' AND rel OPERATOR(pg_catalog.<>) p_table;
            EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                'event_bus_capture_' || op, pg_catalog.upper(op), rel,
                CASE op WHEN 'insert' THEN 'REFERENCING NEW TABLE AS new_rows'
                        WHEN 'update' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                        WHEN 'delete' THEN 'REFERENCING OLD TABLE AS old_rows'
                        ELSE '' END,
                fn);
        END LOOP;
    END LOOP;
END
$gen$;

-- capture() after its C entry point checked the table and compiled the
-- condition (p_condition is the compiled expression).
CREATE FUNCTION event_bus._capture_impl(p_table regclass, p_topic text, p_operations text[], p_types jsonb,
                                        p_key_columns text[], p_columns text[], p_exclude_columns text[],
                                        p_update_mode text, p_condition text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel     text;
    t       text;
    ops     text[];
    types   jsonb;
    k       text;
    keycols text[] := p_key_columns;
    existed boolean;
    fname   text;
    other   regclass;
BEGIN
    SELECT r.relname INTO rel FROM pg_catalog.pg_class r WHERE r.oid OPERATOR(pg_catalog.=) p_table;
    IF p_topic IS NULL THEN
        t := pg_catalog.lower(rel);
        IF t !~ '^[a-z0-9][a-z0-9._-]*$' OR pg_catalog.length(t) > 48 THEN
            RAISE EXCEPTION 'table name "%" is not a valid topic name', rel
                USING ERRCODE = 'invalid_name',
                      HINT = 'Pass a topic: event_bus.capture(table, topic => ''...'').';
        END IF;
    ELSE
        t := p_topic;
    END IF;
    PERFORM event_bus._check_name('topic', t);

    IF p_operations IS NULL OR pg_catalog.cardinality(p_operations) = 0 THEN
        RAISE EXCEPTION 'operations must name at least one of insert, update, delete, truncate'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT pg_catalog.lower(o) ORDER BY pg_catalog.lower(o)) INTO ops
      FROM pg_catalog.unnest(p_operations) o;
    SELECT pg_catalog.string_agg(o, ', ') INTO k FROM pg_catalog.unnest(ops) o
     WHERE o IS NULL OR o <> ALL (ARRAY['insert', 'update', 'delete', 'truncate']);
    IF k IS NOT NULL OR pg_catalog.array_position(ops, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'unknown operation %', coalesce(k, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Operations are insert, update, delete and truncate.';
    END IF;

    types := pg_catalog.jsonb_build_object('insert', rel || '.inserted', 'update', rel || '.updated',
                                           'delete', rel || '.deleted', 'truncate', rel || '.truncated');
    IF p_types IS NOT NULL THEN
        IF pg_catalog.jsonb_typeof(p_types) <> 'object' THEN
            RAISE EXCEPTION 'types must be a JSON object mapping operations to event types'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example ''{"insert": "OrderPlaced", "delete": "OrderCancelled"}''.';
        END IF;
        SELECT pg_catalog.string_agg(x.key, ', ') INTO k FROM pg_catalog.jsonb_each(p_types) x
         WHERE x.key <> ALL (ARRAY['insert', 'update', 'delete', 'truncate'])
            OR pg_catalog.jsonb_typeof(x.value) <> 'string'
            OR pg_catalog.length(x.value OPERATOR(pg_catalog.#>>) '{}') NOT BETWEEN 1 AND 255;
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'invalid event type for %', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Map insert, update, delete or truncate to a non-empty event type name.';
        END IF;
        types := types || p_types;
    END IF;

    IF p_columns IS NOT NULL AND p_exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'columns and exclude_columns cannot both be given'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keycols IS NULL THEN
        SELECT pg_catalog.array_agg(a.attname::text ORDER BY x.o) INTO keycols
          FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS x(attnum, o)
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                        AND a.attnum OPERATOR(pg_catalog.=) x.attnum
         WHERE i.indrelid OPERATOR(pg_catalog.=) p_table AND i.indisprimary;
    END IF;
    IF p_update_mode IS NULL OR p_update_mode NOT IN ('new', 'old_and_new', 'changed') THEN
        RAISE EXCEPTION 'update_mode must be new, old_and_new or changed, not %', coalesce(p_update_mode, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_update_mode <> 'new' AND keycols IS NULL AND 'update' = ANY (ops) THEN
        RAISE EXCEPTION 'update_mode % needs key columns to pair old and new rows', p_update_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the table a primary key or pass key_columns.';
    END IF;

    -- Only admins create topics; everyone else needs the produce grant.
    IF NOT EXISTS (SELECT FROM event_bus.topics tp WHERE tp.topic OPERATOR(pg_catalog.=) t) THEN
        IF NOT pg_catalog.pg_has_role(event_bus._caller(), 'event_bus_admin', 'USAGE') THEN
            RAISE EXCEPTION 'topic "%" does not exist', t
                USING ERRCODE = 'undefined_object',
                      HINT = 'An event_bus_admin can create it with event_bus.create_topic(), or capture it once.';
        END IF;
        PERFORM event_bus.create_topic(t);
    END IF;
    PERFORM event_bus._check_topic_privilege(ARRAY[t], 'produce');

    -- One capture per tree of partitions or inheritance children: a table
    -- above or below a captured one would have its rows captured twice.
    SELECT x.relid INTO other FROM event_bus.captures x
     WHERE x.relid OPERATOR(pg_catalog.<>) p_table
       AND (p_table OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT event_bus._capture_tree(x.relid)))
            OR x.relid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT event_bus._capture_tree(p_table))))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot capture table % because table % is captured', p_table, other
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'One is a partition or inheritance child of the other; capturing the upper one captures both.',
                  HINT = 'Capture only the upper table, or uncapture the other one first.';
    END IF;

    SELECT x.function_name INTO fname FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    existed := FOUND;
    DELETE FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    INSERT INTO event_bus.captures (relid, topic, operations, types, key_columns, key_attnums, columns,
                                    column_attnums, exclude_columns, exclude_attnums, update_mode,
                                    function_name, condition_expr)
    VALUES (p_table, t, ops, types,
            keycols, event_bus._capture_attnums(p_table, keycols, 'key_columns'),
            p_columns, event_bus._capture_attnums(p_table, p_columns, 'columns'),
            p_exclude_columns, event_bus._capture_attnums(p_table, p_exclude_columns, 'exclude_columns'),
            p_update_mode, coalesce(fname, '_capture_' || p_table::oid), p_condition);
    PERFORM event_bus._capture_generate(p_table);
    RETURN NOT existed;
END
$$;

CREATE FUNCTION event_bus._uncapture_impl(p_table regclass) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fname text;
BEGIN
    SELECT x.function_name INTO fname FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM event_bus._capture_drop_triggers(p_table);
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS event_bus.%I()', fname);
    DELETE FROM event_bus.captures x WHERE x.relid OPERATOR(pg_catalog.=) p_table;
    RETURN true;
END
$$;

CREATE FUNCTION event_bus.capture("table" regclass, topic text DEFAULT NULL,
                                  operations text[] DEFAULT ARRAY['insert', 'update', 'delete'],
                                  types jsonb DEFAULT NULL, key_columns text[] DEFAULT NULL,
                                  columns text[] DEFAULT NULL, exclude_columns text[] DEFAULT NULL,
                                  update_mode text DEFAULT 'new', condition text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_capture_1_1'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.capture(regclass, text, text[], jsonb, text[], text[], text[], text, text) IS
'Turn row changes of a table into events in the same transaction (statement-level triggers). Only the table''s owner may call it, with the produce grant of an existing topic. The condition is one boolean expression over the row. Returns false when it replaced an existing capture.';

CREATE FUNCTION event_bus.uncapture("table" regclass) RETURNS boolean
AS 'MODULE_PATHNAME', 'eb_capture_1_1'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION event_bus.uncapture(regclass) IS
'Stop capturing a table (idempotent: returns false if it was not captured).';

-- DDL on a captured table: follow renamed columns, forget dropped excluded
-- columns, refuse to drop key or included columns or columns the condition
-- uses, and regenerate the trigger function; put capture triggers on new
-- partitions and children, and take them off detached ones.  A capture trigger created
-- by pg_restore makes its function depend on the extension again.
CREATE FUNCTION event_bus._capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r  record;
    c  event_bus.captures;
    kc record;
    ic record;
    ec record;
BEGIN
    FOR r IN
        SELECT DISTINCT x.function_name FROM pg_catalog.pg_event_trigger_ddl_commands() d
          JOIN pg_catalog.pg_trigger g ON g.oid OPERATOR(pg_catalog.=) d.objid
          JOIN event_bus.captures x ON x.relid::oid OPERATOR(pg_catalog.=) g.tgrelid
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::regclass
           AND g.tgname::text LIKE 'event\_bus\_capture\_%'
    LOOP
        PERFORM event_bus._capture_depend(pg_catalog.format('event_bus.%I()', r.function_name)::regprocedure);
    END LOOP;
    -- The captures a command touched: of the table itself, of a table above
    -- it (a new partition or child), or whose triggers it still carries (a
    -- partition detached, a child that left).
    FOR r IN
        SELECT DISTINCT x.relid::oid AS objid
          FROM pg_catalog.pg_event_trigger_ddl_commands() d, event_bus.captures x
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
           AND d.command_tag OPERATOR(pg_catalog.=) ANY (ARRAY['ALTER TABLE', 'CREATE TABLE'])
           AND (d.objid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t::oid FROM event_bus._capture_tree(x.relid) t))
                OR EXISTS (SELECT FROM pg_catalog.pg_trigger g
                            WHERE g.tgrelid OPERATOR(pg_catalog.=) d.objid
                              AND g.tgfoid OPERATOR(pg_catalog.=)
                                  pg_catalog.to_regprocedure(pg_catalog.format('event_bus.%I()', x.function_name))))
    LOOP
        SELECT * INTO c FROM event_bus.captures x WHERE x.relid::oid OPERATOR(pg_catalog.=) r.objid;
        -- A table being restored by pg_restore gets its constraints before
        -- its (dumped) capture triggers: leave it to the dump.
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                                   WHERE g.tgrelid OPERATOR(pg_catalog.=) r.objid
                                     AND g.tgname::text LIKE 'event\_bus\_capture\_%');
        kc := event_bus._capture_columns(c.relid, c.key_columns, c.key_attnums, 'key', false);
        ic := event_bus._capture_columns(c.relid, c.columns, c.column_attnums, 'payload column', false);
        ec := event_bus._capture_columns(c.relid, c.exclude_columns, c.exclude_attnums, 'excluded column', true);
        UPDATE event_bus.captures x
           SET key_columns = kc.new_names, key_attnums = kc.new_nums,
               columns = ic.new_names, column_attnums = ic.new_nums,
               exclude_columns = ec.new_names, exclude_attnums = ec.new_nums
         WHERE x.relid OPERATOR(pg_catalog.=) c.relid;
        PERFORM event_bus._capture_generate(c.relid);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER event_bus_capture_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE TRIGGER') EXECUTE FUNCTION event_bus._capture_ddl();

-- A dropped captured table leaves the registry, with its trigger function.
CREATE FUNCTION event_bus._capture_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regclass('event_bus.captures') IS NULL THEN
        RETURN;     -- the extension itself is being dropped
    END IF;
    FOR r IN
        DELETE FROM event_bus.captures c
         USING pg_catalog.pg_event_trigger_dropped_objects() d
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
           AND d.objsubid OPERATOR(pg_catalog.=) 0
           AND d.objid OPERATOR(pg_catalog.=) c.relid::oid
        RETURNING c.function_name
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS event_bus.%I()', r.function_name);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER event_bus_capture_drop ON sql_drop
    EXECUTE FUNCTION event_bus._capture_dropped();

CREATE VIEW event_bus.captured_tables AS
SELECT c.relid AS "table", c.topic, c.operations, c.types, c.key_columns, c.columns, c.exclude_columns,
       c.update_mode, c.condition, c.created_at
  FROM event_bus.captures c JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) c.relid
 WHERE event_bus._visible(r.relowner::regrole);
COMMENT ON VIEW event_bus.captured_tables IS 'Which tables are captured, to which topic, and how (the tables one''s roles own, or all for admins).';

