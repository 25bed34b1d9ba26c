-----------------------------------------------------------------------------
-- Publishing
-----------------------------------------------------------------------------
CREATE FUNCTION event_bus.emit(topic text, type text, payload jsonb, key text DEFAULT NULL,
                               headers jsonb DEFAULT NULL, version integer DEFAULT 1,
                               dedupe_key text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'eb_emit_1_1'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION event_bus.emit(text, text, jsonb, text, jsonb, integer, text) IS
'Publish one event in the current transaction; returns its seq.  The topic must exist and the caller needs its produce grant.  With a dedupe_key that an event of the topic already holds (within its dedupe window), publishes nothing and returns that event''s seq.';

CREATE FUNCTION event_bus.emit_many(topic text, type text, payloads jsonb[], keys text[] DEFAULT NULL,
                                    headers jsonb DEFAULT NULL, version integer DEFAULT 1,
                                    dedupe_keys text[] DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'eb_emit_many_1_1'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION event_bus.emit_many(text, text, jsonb[], text[], jsonb, integer, text[]) IS
'Publish one event per payload (with the matching key); returns their seqs in order.  A payload whose dedupe key an event of the topic already holds publishes nothing; its place in the result holds that event''s seq.';

