# A waiting claim is woken by the first commits in a new database, and sees
# events in log partitions attached while it waited (before, it got them only
# when its wait ran out).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('wakeup');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
event_bus.worker = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 1);
	SELECT event_bus.subscribe('s', ARRAY['t']);
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM event_bus.log_partitions'), '0',
	'a new database has no log partition yet');

# Run a query in a session of its own until it sleeps in the server, then
# wake it up ($wake: SQL, or code to run).  Returns what it printed, how long
# after the wake-up it returned, and whether, while it slept, its session
# held neither a snapshot (backend_xmin) nor a transaction id.
sub wait_and_wake
{
	my ($query, $wake) = @_;
	my $w = $node->background_psql('postgres');
	$w->query_until(qr/waiting/, "\\echo waiting\n$query;\n\\echo done\n");
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'");
	my $free = $node->safe_psql('postgres', q{
		SELECT backend_xmin IS NULL AND backend_xid IS NULL FROM pg_stat_activity
		 WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'});
	my $t0 = time();
	ref $wake ? $wake->() : $node->safe_psql('postgres', $wake);
	my $out = $w->query_until(qr/done/, '');
	my $took = time() - $t0;
	$w->quit;
	return ($out, $took, $free);
}

# The same for a query that prints "got <n>": returns n and how long it took.
sub waited
{
	my ($out, $took) = wait_and_wake(@_);
	return ($out =~ /got (\d+)/ ? $1 : -1, $took);
}

# A claim waiting up to 30 s, woken by an emit.
sub waiting_claim
{
	my ($emit) = @_;
	return waited(q{SELECT 'got ' || count(*) FROM event_bus.claim('s', 10000, wait => '30 s')}, $emit);
}

my ($n, $took) = waiting_claim(q{SELECT event_bus.emit('t', 'First', '{}')});
is($n, 1, 'the waiting claim gets the first event of the database');
ok($took < 10, sprintf('woken by the commit, not by the end of its wait (%.2f s)', $took));
is($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM event_bus.log_partitions'), 't',
	'the first emit created a partition');

($n, $took) = waiting_claim(q{
	SELECT cardinality(event_bus.emit_many('t', 'Bulk',
		(SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 3000) g)))});
is($n, 3000, "events in partitions attached during the wait are claimed ($n)");
ok($took < 10, sprintf('at once (%.2f s)', $took));

$node->restart;
($n, $took) = waiting_claim(q{
	SELECT cardinality(event_bus.emit_many('t', 'After restart',
		(SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 3000) g)))});
is($n, 3000, 'after a restart too');
ok($took < 10, sprintf('at once (%.2f s)', $took));

# A claim that skipped a lane another transaction held (a transactional
# consumer, or a concurrent claim) is woken when that transaction ends and
# leaves events behind.
$node->safe_psql('postgres', q{
	SELECT event_bus.create_topic('one', 1);
	SELECT event_bus.subscribe('u', ARRAY['one']);
	SELECT count(event_bus.emit('one', 'E', jsonb_build_object('n', g))) FROM generate_series(1, 5) g;
});
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
is($holder->query_safe(q{SELECT count(*) FROM event_bus.claim('u', 2)}), '2', 'a transactional consumer holds the lane');
($n, $took) = waited(q{SELECT 'got ' || count(*) FROM event_bus.claim('u', 10, wait => '30 s')},
	sub { $holder->query_safe('COMMIT') });
is($n, 3, 'the waiting claim gets the rest of the lane once the holder commits');
ok($took < 10, sprintf('at once (%.2f s)', $took));
$holder->quit;

# Waiters are woken only by commits that concern their subscription's
# topics: a busy topic does not keep waking the waiters of a quiet one.
$node->safe_psql('postgres', q{
	SELECT event_bus.create_topic('quiet', 1);
	SELECT event_bus.create_topic('busy', 1);
});
sub timed_wait
{
	my ($emit) = @_;
	my (undef, $took) = waited(
		q{SELECT 'got ' || event_bus._wait_topics(event_bus._wake_gen(), 3000, ARRAY['quiet'])}, $emit);
	return $took;
}
$took = timed_wait(q{
	DO $$ BEGIN FOR i IN 1 .. 10 LOOP PERFORM event_bus.emit('busy', 'E', '{}'); COMMIT; END LOOP; END $$});
ok($took > 1.5, sprintf('ten commits on another topic do not wake it (it slept out its 3 s: %.2f s after them)', $took));
$took = timed_wait(q{SELECT event_bus.emit('quiet', 'E', '{}')});
ok($took < 1.5, sprintf('a commit on its topic does (%.2f s)', $took));

# CALL event_bus.wait(): ready as soon as a claim would get something.
# Outside a transaction block it commits before it sleeps: no snapshot, no
# xmin held back meanwhile - where a waiting claim keeps its query's.
$node->safe_psql('postgres', q{SELECT event_bus.subscribe('w', ARRAY['quiet'])});
(my $out, $took, my $free) = wait_and_wake(q{CALL event_bus.wait('w', '30 s', NULL)},
	q{SELECT event_bus.emit('quiet', 'E', '{}')});
is($free, 't', 'a waiting CALL event_bus.wait() holds no snapshot and no transaction id');
like($out, qr/^t$/m, 'it returns ready once an event arrives');
ok($took < 10, sprintf('at once (%.2f s)', $took));
is($node->safe_psql('postgres', q{CALL event_bus.wait('w', '30 s', NULL)}), 't',
	'with something to claim already, it returns ready at once');
$node->safe_psql('postgres', q{SELECT event_bus.ack('w', ARRAY(SELECT seq FROM event_bus.claim('w', 100)))});
(undef, undef, $free) = wait_and_wake(q{SELECT 'got ' || count(*) FROM event_bus.claim('w', 10, wait => '30 s')},
	q{SELECT event_bus.emit('quiet', 'E', '{}')});
is($free, 'f', 'a waiting claim, by contrast, keeps its snapshot');
$node->safe_psql('postgres',
	q{SELECT event_bus.ack('w', ARRAY(SELECT unnest(seqs) FROM event_bus.in_flight WHERE subscription = 'w'))});
# An ordered lane held by a lease has nothing to claim: no ready, no busy loop.
$node->safe_psql('postgres', q{
	SELECT event_bus.subscribe('wo', ARRAY['quiet'], ordered => true, start => 'earliest');
	SELECT count(*) FROM event_bus.claim('wo', 1);
});
my $t0 = time();
is($node->safe_psql('postgres', q{CALL event_bus.wait('wo', '1 s', NULL)}), 'f',
	'an ordered subscription whose only lane is leased is not ready');
ok(time() - $t0 >= 0.9, 'and the call slept out its timeout');

$node->stop;
done_testing();
