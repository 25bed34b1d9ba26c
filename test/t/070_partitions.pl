# An emit never fails for lack of a log partition: with the worker off (no
# maintenance keeping partitions ahead) and tiny partitions, concurrent bulk
# emits across many partition boundaries all succeed.  Seqs are taken before
# the partitions are made sure of, so a concurrent emitter cannot take seqs
# that the check did not cover.  Single emits cross 80 boundaries: an emitter
# that sees a partition another one just committed must find it in its own
# partition descriptor too (it failed in three runs of four
# without the check).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('partitions');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.worker = off
event_bus.partition_size = 1000
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('bulk', 4);
	SELECT event_bus.subscribe('s', ARRAY['bulk'], start => 'earliest');
});

# Seqs taken while the log has no partition yet (an emitter's transaction
# creating the first one is open, or the sequence was set): a claim reads
# nothing and moves nothing.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
is($node->safe_psql('fresh', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('f', 2);
	SELECT event_bus.subscribe('fs', ARRAY['f'], start => 'earliest');
	SELECT setval('event_bus.event_seq', 5);
	SELECT count(*) FROM event_bus.claim('fs', 10);
	SELECT count(*) FROM event_bus.log_partitions;
	SELECT event_bus.emit('f', 'E', '{}');
	SELECT seq FROM event_bus.claim('fs', 10);
}), "t\nt\n5\n0\n0\n6\n6", 'a claim before the log has a partition finds nothing, then the first event');

$node->pgbench('--no-vacuum --client=8 --jobs=8 --transactions=3', 0,
	[ qr{processed: 24/24} ], [ qr{^$} ],
	'8 clients emitting 3000 events per call, with 1000 seqs per partition',
	{ '070_emit_many' => q{
SELECT event_bus.emit_many('bulk', 'E', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 3000) g));
} },
	'postgres');
$node->pgbench('--no-vacuum --client=8 --jobs=8 --transactions=10000', 0,
	[ qr{processed: 80000/80000} ], [ qr{^$} ],
	'8 clients emitting one event per transaction across boundaries',
	{ '070_emit' => q{
SELECT event_bus.emit('bulk', 'E', '{"one": true}');
} },
	'postgres');

is($node->safe_psql('postgres', 'SELECT count(*) FROM event_bus.events'), '152000', 'every event is in the log');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM event_bus.events e
	 WHERE NOT EXISTS (SELECT FROM event_bus.log_partitions p WHERE e.seq >= p.lo AND e.seq < p.hi)}),
	'0', 'each in a partition the registry knows');
is($node->safe_psql('postgres', q{
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 10000)))}),
	'10000', 'and they are claimable');

# A consumer's transaction that claims again after a partition was attached
# must read that partition too.  Its backend locked the log and every
# partition before (the plain count below plans with them all), so no lock
# of the second claim reads the new partition's invalidation messages: a
# claim that read with the old partition list moved its cursor past the new
# partition's events, which were never delivered.
$node->safe_psql('postgres', q{
	SELECT event_bus.create_topic('one', 1);
	SELECT event_bus.subscribe('k', ARRAY['one']);
	SELECT event_bus.subscribe('ko', ARRAY['one'], ordered => true);
});
my $k = $node->background_psql('postgres');
my ($emitted, $claimed, $acked) = (0, 0, 0);
my $claim_ack = q{SELECT event_bus.ack('ko', ARRAY(SELECT seq FROM event_bus.claim('ko', 10000)))};
for my $round (1 .. 5)
{
	$emitted += $node->safe_psql('postgres', q{SELECT count(event_bus.emit('one', 'E', '{}'))});
	$k->query_safe('BEGIN');
	$k->query_safe('SELECT count(*) FROM event_bus.events WHERE seq > 0');
	$claimed += $k->query_safe(q{SELECT count(*) FROM event_bus.claim('k', 10000)});
	$acked += $k->query_safe($claim_ack);
	# A new partition above the others, and events up to 5 seqs into it.
	$node->safe_psql('postgres',
		q{SELECT event_bus._ensure_partitions((SELECT max(hi) FROM event_bus.log_partitions))});
	my $lo = $node->safe_psql('postgres', q{SELECT max(lo) FROM event_bus.log_partitions});
	$emitted += $node->safe_psql('postgres', qq{
		SELECT count(*) FROM unnest(event_bus.emit_many('one', 'E',
			(SELECT array_agg('{}'::jsonb) FROM generate_series(1, $lo + 5 -
				(SELECT last_value FROM event_bus.event_seq)::int))))});
	$claimed += $k->query_safe(q{SELECT count(*) FROM event_bus.claim('k', 10000)});
	$acked += $k->query_safe($claim_ack);
	$k->query_safe('COMMIT');
}
$claimed += $k->query_safe(q{SELECT count(*) FROM event_bus.claim('k', 10000)});
$acked += $k->query_safe($claim_ack);
$k->quit;
is($claimed, $emitted, "a consumer claiming twice in a transaction across a new partition gets all $emitted events");
is($acked, $emitted, "so does an ordered subscription's");

# Claims read the partitions a range covers, each with its own kept plans.
# A backlog over many partitions, claimed in small batches by both kinds of
# subscription, comes out whole and in order; then, with a partition the
# log's own layout does not have (a default one), claims read through the
# parent instead and still get everything.
$node->safe_psql('postgres', q{
	SELECT event_bus.create_topic('many', 4);
	SELECT event_bus.subscribe('mu', ARRAY['many']);
	SELECT event_bus.subscribe('mo', ARRAY['many'], ordered => true);
	SET event_bus.partition_size = 1000;
	SELECT event_bus._ensure_partitions((SELECT max(hi) FROM event_bus.log_partitions) + 30000);
});
my $n_many = $node->safe_psql('postgres', q{
	SELECT count(*) FROM unnest(event_bus.emit_many('many', 'E',
		(SELECT array_agg(pg_catalog.jsonb_build_object('i', g)) FROM generate_series(1, 30000) g),
		(SELECT array_agg('k' || g % 7) FROM generate_series(1, 30000) g)))});
my $spanned = $node->safe_psql('postgres', q{
	SELECT count(*) FROM event_bus.log_partitions p
	 WHERE p.hi > (SELECT min(seq) FROM event_bus.events WHERE topic = 'many')});
cmp_ok($spanned, '>=', 30, "the backlog spans $spanned partitions");
my $drain = q{
	CREATE TEMP TABLE got (ord bigserial, batch int, sub text, seq bigint, lane int);
	DO $$
	DECLARE b int := 0; m int; k int;
	BEGIN
		LOOP
			b := b + 1;
			INSERT INTO got (batch, sub, seq, lane)
			SELECT b, 'mu', c.seq, c.lane FROM event_bus.claim('mu', 37) c ORDER BY c.seq;
			GET DIAGNOSTICS m = ROW_COUNT;
			PERFORM event_bus.ack('mu', ARRAY(SELECT seq FROM got WHERE batch = b AND sub = 'mu'));
			INSERT INTO got (batch, sub, seq, lane)
			SELECT b, 'mo', c.seq, c.lane FROM event_bus.claim('mo', 37) c ORDER BY c.seq;
			GET DIAGNOSTICS k = ROW_COUNT;
			PERFORM event_bus.ack('mo', ARRAY(SELECT seq FROM got WHERE batch = b AND sub = 'mo'));
			EXIT WHEN m = 0 AND k = 0;
		END LOOP;
	END $$;
	-- Per lane, an ordered subscription's events come in seq order.
	SELECT sub, count(*), count(DISTINCT seq),
	       count(*) FILTER (WHERE sub = 'mo' AND seq < prev)
	  FROM (SELECT *, lag(seq) OVER (PARTITION BY sub, lane ORDER BY ord) AS prev FROM got) x
	 GROUP BY sub ORDER BY sub;
};
is($node->safe_psql('postgres', $drain), "mo|$n_many|$n_many|0\nmu|$n_many|$n_many|0",
	'both subscriptions got every event of a backlog over many partitions once, the ordered one in order');
# A partition without its (topic_hash, lane, seq) index: a claim probes it
# with a statement instead of an index scan, and reads it all the same.
my $bare = $node->safe_psql('postgres', q{
	SELECT p.relname FROM event_bus.log_partitions p
	 WHERE p.lo > (SELECT max(seq) FROM event_bus.events) ORDER BY p.lo LIMIT 1});
$node->safe_psql('postgres', qq{
	SELECT format('DROP INDEX event_bus.%I', i.relname) FROM pg_index x
	  JOIN pg_class i ON i.oid = x.indexrelid
	 WHERE x.indrelid = 'event_bus.$bare'::regclass \\gexec});
is($node->safe_psql('postgres', qq{SELECT count(*) FROM pg_index WHERE indrelid = 'event_bus.$bare'::regclass}),
	'0', "partition $bare has no index");
$node->safe_psql('postgres', q{
	SELECT setval('event_bus.event_seq', (SELECT p.lo FROM event_bus.log_partitions p
		WHERE p.lo > (SELECT max(seq) FROM event_bus.events) ORDER BY p.lo LIMIT 1));
	SELECT count(*) FROM unnest(event_bus.emit_many('many', 'E',
		(SELECT array_agg('{}'::jsonb) FROM generate_series(1, 300)),
		(SELECT array_agg('k' || g % 7) FROM generate_series(1, 300) g)))});
is($node->safe_psql('postgres', $drain), "mo|300|300|0\nmu|300|300|0",
	'claims probe and read a partition without its index');

$node->safe_psql('postgres', q{
	CREATE TABLE event_bus.events_default PARTITION OF event_bus.events DEFAULT});
$node->safe_psql('postgres', q{
	SELECT count(*) FROM unnest(event_bus.emit_many('many', 'E',
		(SELECT array_agg('{}'::jsonb) FROM generate_series(1, 500)),
		(SELECT array_agg('k' || g % 7) FROM generate_series(1, 500) g)))});
is($node->safe_psql('postgres', $drain), "mo|500|500|0\nmu|500|500|0",
	'with a default partition, claims read through the parent and get every event');

$node->stop;
done_testing();
