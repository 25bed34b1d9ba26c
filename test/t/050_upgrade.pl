# Upgrades: the released 1.0 install script is untouched; a database that
# installed 1.0 and holds data (topics, subscriptions with cursors, leases,
# retries, dead letters, a captured table) is upgraded with ALTER EXTENSION
# UPDATE and then has exactly the catalog of a fresh install of the current
# version, and its data goes on flowing.
use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The 1.0 install script as released (commit 586fcdf): users have it.
my $released = '4d8f8f605e9ff933eb896f86203ce55e3bc4e8ac598489ea5dc9117f831dbe29';
my $script = PostgreSQL::Test::Utils::slurp_file("$ENV{TESTDIR}/event_bus--1.0.sql");
is(sha256_hex($script), $released, 'event_bus--1.0.sql is the released 1.0 script');

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
event_bus.worker = off
});
$node->start;

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'event_bus'");
my @versions = split /\n/, $node->safe_psql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'event_bus' ORDER BY string_to_array(version, '.')::int[]");
is($versions[0], '1.0', '1.0 is still installable');
is($versions[-1], $current, 'the default version is the newest');

# Every object of the extension, described so that two databases can be
# compared line by line (no oids; ACLs and lists sorted).
my $describe = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'event_bus'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT line FROM (
    SELECT 'function ' || p.oid::regprocedure || E'\n'
           || CASE WHEN p.prokind = 'a'
                   THEN (SELECT format('aggregate sfunc %s stype %s finalfunc %s finalmodify %s kind %s',
                                       g.aggtransfn::regprocedure, g.aggtranstype::regtype,
                                       nullif(g.aggfinalfn, 0)::regprocedure, g.aggfinalmodify, g.aggkind)
                           FROM pg_aggregate g WHERE g.aggfnoid = p.oid)
                   ELSE pg_get_functiondef(p.oid) END
           || E'\nacl ' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(p.proacl) x), '-')
           || E'\ncomment ' || coalesce(obj_description(p.oid, 'pg_proc'), '-') AS line
      FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' kind ' || c.relkind::text || ' rls ' || c.relrowsecurity
           || E'\nacl ' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) x), '-')
           || E'\ncomment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
           || coalesce(E'\ncolumns ' || (SELECT string_agg(format('%s %s%s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                                           CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                                                           coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                                                           CASE WHEN a.attcollation <> 0 AND a.attcollation <> 100
                                                                THEN ' collate ' || a.attcollation::regcollation ELSE '' END),
                                                    ', ' ORDER BY a.attnum)
                                          FROM pg_attribute a
                                          LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                                         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
           || coalesce(E'\nview ' || pg_get_viewdef(c.oid), '')
           || coalesce(E'\npartitioned by ' || pg_get_partkeydef(c.oid), '')
           || coalesce(E'\nsequence ' || (SELECT format('%s %s %s %s %s %s', s.seqtypid::regtype, s.seqstart, s.seqincrement,
                                                         s.seqmax, s.seqmin, s.seqcache)
                                            FROM pg_sequence s WHERE s.seqrelid = c.oid), '')
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
      JOIN pg_index i ON i.indrelid = c.oid
    UNION ALL
    SELECT 'constraint ' || co.conname || ' on ' || co.conrelid::regclass || ' ' || pg_get_constraintdef(co.oid)
      FROM members m JOIN pg_constraint co ON m.classid = 'pg_class'::regclass AND co.conrelid = m.objid
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
      FROM members m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid
     WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regproc || ' '
           || e.evtenabled::text || ' ' || coalesce(e.evttags::text, '-')
      FROM members m JOIN pg_event_trigger e ON m.classid = 'pg_event_trigger'::regclass AND e.oid = m.objid
    UNION ALL
    SELECT 'type ' || t.oid::regtype || ' ' || t.typtype::text
      FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
    UNION ALL
    SELECT 'schema ' || n.nspname || ' acl '
           || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(n.nspacl) x), '-')
      FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
    UNION ALL
    SELECT 'member of another kind ' || m.classid::regclass
      FROM members m
     WHERE m.classid NOT IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_event_trigger'::regclass,
                             'pg_type'::regclass, 'pg_namespace'::regclass)
    UNION ALL
    SELECT 'dumped ' || (SELECT string_agg(x::regclass::text || ' ' || coalesce(nullif(y, ''), '-'), ', ' ORDER BY x::regclass::text)
                           FROM unnest(e.extconfig, e.extcondition) AS u(x, y))
           || ' version ' || e.extversion
      FROM pg_extension e WHERE e.extname = 'event_bus'
) all_lines
ORDER BY line;
};

# A 1.0 database with some of everything in it.
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
$node->safe_psql('upgraded', q{
	CREATE EXTENSION event_bus VERSION '1.0';
	SELECT event_bus.create_topic('orders', 2);
	SELECT event_bus.create_topic('audit', 1);
	SELECT event_bus.subscribe('billing', ARRAY['orders'], start => 'earliest', max_attempts => 2);
	SELECT event_bus.subscribe('ordered', ARRAY['orders'], start => 'earliest', ordered => true, backoff_base => '0');
	SELECT event_bus.emit_many('orders', 'OrderPlaced',
	                           (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 30) g),
	                           (SELECT array_agg('k' || g % 5) FROM generate_series(1, 30) g));
	CREATE TABLE shop (id int PRIMARY KEY, status text, note text);
	SELECT event_bus.capture('shop', topic => 'audit', condition => $$status <> 'draft'$$);
	INSERT INTO shop VALUES (1, 'paid', 'before the upgrade'), (2, 'draft', 'not captured');
});
$node->safe_psql('upgraded', q{
	SELECT event_bus.ack('billing', ARRAY(SELECT seq FROM event_bus.claim('billing', 10)));
	SELECT event_bus.fail('billing', (SELECT min(seq) FROM event_bus.claim('billing', 5)), 'retry me', '1 hour');
	SELECT event_bus.dead_letter('billing', (SELECT min(seq) FROM event_bus.claim('billing', 1)), 'poison');
	SELECT count(*) FROM event_bus.claim('ordered', 100);
});
my $state = q{
	SELECT (SELECT count(*) FROM event_bus.events), (SELECT count(*) FROM event_bus.subscriptions),
	       (SELECT sum(position) FROM event_bus.cursors), (SELECT count(*) FROM event_bus.leases),
	       (SELECT count(*) FROM event_bus.retries), (SELECT count(*) FROM event_bus.dead_letters),
	       (SELECT count(*) FROM event_bus.captures)};
my $before = $node->safe_psql('upgraded', $state);

$node->safe_psql('upgraded', 'ALTER EXTENSION event_bus UPDATE');
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'event_bus'"),
	$current, "ALTER EXTENSION UPDATE reaches $current");
is($node->safe_psql('upgraded', $state), $before, 'the data survives the upgrade');

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION event_bus');
my $want = $node->safe_psql('fresh', $describe);
my $got = $node->safe_psql('upgraded', $describe);
ok(length($want) > 10000, 'the catalog description covers the extension');
if ($got eq $want)
{
	pass('an upgraded database has the catalog of a fresh install');
}
else
{
	my $dir = PostgreSQL::Test::Utils::tempdir;
	PostgreSQL::Test::Utils::append_to_file("$dir/fresh.txt", $want . "\n");
	PostgreSQL::Test::Utils::append_to_file("$dir/upgraded.txt", $got . "\n");
	diag(scalar `diff -u $dir/fresh.txt $dir/upgraded.txt | head -c 20000`);
	fail('an upgraded database has the catalog of a fresh install');
}

# The log's partitions are not members of the extension: check them apart.
# Every one (those of 1.0 and those created since) has the columns of the
# parent and the one index a fresh install gives a partition, and the
# events logged by 1.0 have their topic_hash.
my $partitions = q{
	SELECT string_agg(DISTINCT (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
	                                              || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum)
	                              FROM pg_attribute a WHERE a.attrelid = i.inhrelid AND a.attnum > 0 AND NOT a.attisdropped)
	                           || ' | ' || (SELECT string_agg(replace(pg_get_indexdef(x.indexrelid), (SELECT c.relname FROM pg_class c WHERE c.oid = i.inhrelid), 'P'), '; ')
	                                          FROM pg_index x WHERE x.indrelid = i.inhrelid), E'\n')
	  FROM pg_inherits i WHERE i.inhparent = 'event_bus.events'::regclass};
$node->safe_psql('upgraded', q{SELECT event_bus._ensure_partitions((SELECT max(hi) FROM event_bus.log_partitions))});
$node->safe_psql('fresh', q{SELECT event_bus._ensure_partitions(1)});
is($node->safe_psql('upgraded', $partitions), $node->safe_psql('fresh', $partitions),
	'the log partitions of 1.0 and the new ones have the columns and index of a fresh install');
like($node->safe_psql('upgraded', $partitions), qr/USING btree \(topic_hash, lane, seq\)$/,
	'partitions are indexed by topic_hash');
is($node->safe_psql('upgraded', q{
	SELECT count(*) FILTER (WHERE topic_hash = event_bus._topic_hash(topic)) || ' of ' || count(*) FROM event_bus.events}),
	$node->safe_psql('upgraded', q{SELECT count(*) || ' of ' || count(*) FROM event_bus.events}),
	'every event logged by 1.0 has its topic_hash');

# Data flows after the upgrade: the retry, the rest of the backlog, acks,
# the ordered lane and the captured table.
is($node->safe_psql('upgraded', q{
	SELECT count(*) FROM (SELECT event_bus.ack('billing', ARRAY[seq]) FROM event_bus.claim('billing', 100)) x}),
	'14', 'the backlog is claimed and acked after the upgrade');
is($node->safe_psql('upgraded', "SELECT count(*) FROM event_bus.claim('billing', 100)"), '0', 'nothing is left');
is($node->safe_psql('upgraded', q{SELECT count(*) FROM event_bus.claim('ordered', 100)}), '0',
	'lanes held by 1.0 leases stay held');
$node->safe_psql('upgraded', q{UPDATE event_bus.leases SET expires_at = now() - interval '1 second'});
$node->safe_psql('upgraded', 'SELECT event_bus.run_maintenance()');
is($node->safe_psql('upgraded', q{SELECT count(*) FROM event_bus.claim('ordered', 100)}), '30',
	'expired 1.0 leases come back and the ordered subscription drains');
$node->safe_psql('upgraded', q{INSERT INTO shop VALUES (3, 'paid', 'after the upgrade'), (4, 'draft', 'not captured')});
is($node->safe_psql('upgraded', q{SELECT string_agg(payload->>'note', ',' ORDER BY seq) FROM event_bus.events WHERE topic = 'audit'}),
	'before the upgrade,after the upgrade', 'the capture (with its condition) works after the upgrade');

is($node->safe_psql('upgraded', q{
	SELECT string_agg(d.deptype::text, ',' ORDER BY d.deptype)
	  FROM event_bus.captures c
	  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass
	                  AND d.objid = format('event_bus.%I()', c.function_name)::regprocedure
	                  AND d.refclassid = 'pg_extension'::regclass}),
	'n', 'a regenerated capture function depends on the extension but is not a member of it');
my ($rc, $out, $err) = $node->psql('upgraded', 'DROP EXTENSION event_bus');
like($err, qr/cannot drop extension event_bus because other objects depend on it/,
	'DROP EXTENSION refuses to leave the captured table with broken triggers');

$node->stop;
done_testing();
