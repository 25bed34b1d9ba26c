# Lane heads in shared memory (shmem.c): a claim skips a lane with nothing
# above its cursor without probing the log, and never skips an event:
#   - one emitted in this life of the server (the emit raises the lane's head);
#   - one from before a restart (the first claim reads the lane's base once);
#   - one that entered the log other than by emit (the log's trigger makes
#     every base be read again when its transaction commits), even with an
#     emit between it and the next claim.
# The probes are counted as index scans of the log's partitions, flushed by
# the session that made them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('heads');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.retention = 0
max_prepared_transactions = 2
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE bus');
$node->safe_psql('bus', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('sparse', 8);
	SELECT event_bus.create_topic('other', 1);
	SELECT event_bus.subscribe('s', ARRAY['sparse']);
});

# Claim and ack everything there is, n times over; returns how many.
sub drain
{
	my ($n) = @_;
	return $node->safe_psql('bus', join("\n", (q{
		SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 1000)));}) x ($n // 1))
		. q{
		SELECT pg_stat_force_next_flush();
		SELECT 0;});
}

sub claimed
{
	my $out = drain(@_);
	my $sum = 0;
	$sum += $_ for grep { /^\d+$/ } split /\n/, $out;
	return $sum;
}

# Index scans of the log so far.
sub log_scans
{
	return $node->safe_psql('bus', q{
		SELECT pg_stat_clear_snapshot();
		SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes
		 WHERE schemaname = 'event_bus' AND relname LIKE 'events\_%'});
}

sub idle_claims
{
	my ($what) = @_;
	$node->safe_psql('bus', q{SELECT event_bus.emit('other', 'Tick', '{}') FROM generate_series(1, 5)});
	my $before = log_scans();
	my $got = claimed(20);
	my $scans = log_scans() - $before;
	is($got, 0, "$what: idle claims get nothing");
	is($scans, 0, "$what: 20 idle claims of 8 lanes behind max_seq do not probe the log");
}

$node->safe_psql('bus', q{
	SELECT event_bus.emit('sparse', 'Placed', '{}', 'key-' || g) FROM generate_series(1, 8) g});
is(claimed(), 8, 'events emitted in this life are claimed');
idle_claims('after emits');

$node->safe_psql('bus', q{SELECT event_bus.emit('sparse', 'Placed', '{}', 'key-new')});
my $before = log_scans();
is(claimed(), 1, 'an event of a lane whose head was known is claimed');
cmp_ok(log_scans() - $before, '>', 0, 'and reading it counts as a scan of the log (the counts work)');

# An event that enters the log without emit (as a restore's COPY does), its
# seq taken from the sequence directly.
my $lane = $node->safe_psql('bus', q{SELECT lane FROM event_bus.cursors WHERE subscription = 's' ORDER BY lane LIMIT 1});
$node->safe_psql('bus', qq{
	INSERT INTO event_bus.events (seq, id, topic, type, version, key, lane, payload, headers, emitted_at, topic_hash)
	VALUES (nextval('event_bus.event_seq'), gen_random_uuid(), 'sparse', 'Restored', 1, NULL, $lane, '{}', '{}',
	        now(), event_bus._topic_hash('sparse'))});
is(claimed(), 1, 'an event written with a seq no emitter noted is claimed');
idle_claims('after a seq taken outside emit');

# The same with an emit (to another topic) between the INSERT and the next
# claim, which catches the seqs emitters noted up with the sequence.
$node->safe_psql('bus', qq{
	INSERT INTO event_bus.events (seq, id, topic, type, version, key, lane, payload, headers, emitted_at, topic_hash)
	VALUES (nextval('event_bus.event_seq'), gen_random_uuid(), 'sparse', 'Restored', 1, NULL, $lane, '{}', '{}',
	        now(), event_bus._topic_hash('sparse'))});
$node->safe_psql('bus', q{SELECT event_bus.emit('other', 'Tick', '{}')});
is(claimed(), 1, 'an event written other than by emit is claimed after a later emit');
idle_claims('after that');

# A prepared transaction's rows would become visible without a commit of
# this backend to mark them: refused, as after an emit.
my ($ret, $out, $err) = $node->psql('bus', qq{
	BEGIN;
	INSERT INTO event_bus.events (seq, id, topic, type, version, key, lane, payload, headers, emitted_at, topic_hash)
	VALUES (nextval('event_bus.event_seq'), gen_random_uuid(), 'sparse', 'Restored', 1, NULL, $lane, '{}', '{}',
	        now(), event_bus._topic_hash('sparse'));
	PREPARE TRANSACTION 'p';});
like($err, qr/cannot PREPARE a transaction that has written to event_bus.events/,
	'PREPARE after writing to the log other than by emit is refused');

# Events from before a restart, in lanes that see no emit afterwards.
$node->safe_psql('bus', q{
	SELECT event_bus.emit('sparse', 'Placed', '{}', 'old-' || g) FROM generate_series(1, 3) g});
$node->stop('immediate');
$node->start;
$node->safe_psql('bus', q{SELECT event_bus.emit('other', 'Tick', '{}') FROM generate_series(1, 5)});
is(claimed(), 3, 'events from before a restart are claimed');
idle_claims('after a restart');

done_testing();
