# Retention never queues an ACCESS EXCLUSIVE lock in front of emits and
# claims: a long reader holds a lock on the log while retention runs; emits
# and claims go on meanwhile (each with a short lock_timeout, so any wait
# behind a queued lock would fail them), and the consumed partitions are
# dropped once the reader is gone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('retention');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
event_bus.retention = 0
event_bus.naptime = '100ms'
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 1);
	SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest');
});

# A long reader of the log, from before the partitions become droppable.
my $reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN');
$reader->query_safe('SELECT count(*) FROM event_bus.events');

$node->safe_psql('postgres', q{
	SELECT event_bus.emit_many('t', 'E', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 3500) g));
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 10000)));
});
my $first = $node->safe_psql('postgres', 'SELECT min(relname) FROM event_bus.log_partitions');
ok($node->poll_query_until('postgres', qq{SELECT detaching_at IS NOT NULL FROM event_bus.log_partitions WHERE relname = '$first'}),
	'retention marks the consumed partitions in the registry');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'event_bus retention' AND query LIKE '%DETACH%CONCURRENTLY%'}),
	'the retention process detaches them concurrently, waiting for the reader');

# Emits and claims meanwhile: none may wait for a lock.
my ($rc, $out, $err) = $node->psql('postgres', q{
	SET lock_timeout = '50ms';
	DO $$
	DECLARE s bigint[];
	BEGIN
	    FOR i IN 1 .. 100 LOOP
	        PERFORM event_bus.emit('t', 'During', jsonb_build_object('i', i));
	        COMMIT;
	        SELECT array_agg(seq) INTO s FROM event_bus.claim('s', 10);
	        PERFORM event_bus.ack('s', s);
	        COMMIT;
	        PERFORM pg_sleep(0.02);
	    END LOOP;
	END $$;
	SELECT 'done'});
is($err, '', 'no emit or claim waited on a lock while retention ran');
like($out, qr/done/, '100 emits and claims went through');
is($node->safe_psql('postgres', qq{SELECT to_regclass('event_bus.$first') IS NOT NULL}), 't',
	'the partition the reader may still read is not dropped');

$reader->query_safe('COMMIT');
$reader->quit;
ok($node->poll_query_until('postgres', qq{SELECT to_regclass('event_bus.$first') IS NULL}),
	'once the reader is gone, the partition is dropped');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass AND inhdetachpending}),
	'0', 'no detach is left pending');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = (SELECT count(*) FROM event_bus.log_partitions)
	  FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass}),
	'the registry and the log agree');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_bus.claim('s', 1000)}), '0',
	'nothing was lost or redelivered');
is($node->safe_psql('postgres', q{SELECT coalesce(last_error, '') FROM event_bus.worker_status}), '',
	'no error');

# A detach interrupted half-way (the retention process stopped while it
# waits) is finished by a later run.
$reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN');
$reader->query_safe('SELECT count(*) FROM event_bus.events');
$node->safe_psql('postgres', q{
	SELECT event_bus.emit_many('t', 'E', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 2000) g));
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 10000)));
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'event_bus retention' AND query LIKE '%DETACH%CONCURRENTLY%'}),
	'a second detach waits for the second reader');
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'event_bus retention'});
$reader->query_safe('COMMIT');
$reader->quit;
ok($node->poll_query_until('postgres', q{
	SELECT NOT EXISTS (SELECT FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass AND inhdetachpending)
	   AND (SELECT count(*) FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass)
	       = (SELECT count(*) FROM event_bus.log_partitions)
	   AND NOT EXISTS (SELECT FROM pg_class c WHERE c.relnamespace = 'event_bus'::regnamespace AND c.relkind = 'r'
	                      AND c.relname ~ '^events_[0-9]{19}$' AND NOT c.relispartition)}),
	'the next run finalizes the interrupted detach and drops the table');

$node->stop;
done_testing();
