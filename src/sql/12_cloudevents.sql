-----------------------------------------------------------------------------
-- CloudEvents
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.to_cloudevent(seq bigint, id uuid, topic text, type text, version integer,
                                        key text, payload jsonb, headers jsonb, emitted_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_object_agg(x.key, x.value)
      FROM pg_catalog.jsonb_each(pg_catalog.jsonb_build_object(
               'specversion', '1.0',
               'id', id::text,
               'source', coalesce(headers OPERATOR(pg_catalog.->>) 'source',
                                  '/event_bus/' || pg_catalog.current_database() || '/' || topic),
               'type', type,
               'subject', key,
               'time', pg_catalog.to_char(emitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'datacontenttype', 'application/json',
               'data', payload,
               'topic', topic,
               'sequence', seq::text,
               'partitionkey', key,
               'dataversion', version,
               'traceparent', headers OPERATOR(pg_catalog.->>) 'traceparent',
               'tracestate', headers OPERATOR(pg_catalog.->>) 'tracestate')) x
     WHERE x.value OPERATOR(pg_catalog.<>) 'null'::jsonb OR x.key OPERATOR(pg_catalog.=) 'data'
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(bigint, uuid, text, text, integer, text, jsonb, jsonb, timestamptz) IS
'Render an event as a CloudEvents 1.0 JSON document (structured mode).';

CREATE FUNCTION event_bus.to_cloudevent(e event_bus.events) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus.to_cloudevent(e.seq, e.id, e.topic, e.type, e.version, e.key, e.payload, e.headers, e.emitted_at)
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(event_bus.events) IS
'Render a row of event_bus.events as a CloudEvents 1.0 JSON document.';

CREATE FUNCTION event_bus.to_cloudevent(d event_bus.delivery) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT event_bus.to_cloudevent(d.seq, d.id, d.topic, d.type, d.version, d.key, d.payload, d.headers, d.emitted_at)
$$;
COMMENT ON FUNCTION event_bus.to_cloudevent(event_bus.delivery) IS
'Render a row returned by claim() as a CloudEvents 1.0 JSON document: SELECT event_bus.to_cloudevent(c) FROM event_bus.claim(...) c.';
