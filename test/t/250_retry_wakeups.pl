# Failing events wakes the worker only when it must plan anew (horizon.c,
# worker.c): a retry that falls due no earlier than the worker already plans
# to look costs it no round; an earlier one wakes it, and every retry is
# still delivered when it falls due.  A long naptime keeps the worker's
# timer out of the count of its rounds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('wakeups');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '1h'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE bus');
$node->safe_psql('bus', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 4);
	SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest', max_attempts => 10);
	SELECT event_bus.emit_many('t', 'Job', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 52) g));
});
ok($node->poll_query_until('bus', "SELECT state = 'running' FROM event_bus.worker_status WHERE datname = 'bus'"),
	'the worker runs');

sub rounds
{
	return $node->safe_psql('bus', "SELECT rounds FROM event_bus.worker_status WHERE datname = 'bus'");
}

# Wait until the worker has no round to run (its rounds stop moving).
sub settled
{
	my $last = rounds();
	for (1 .. 100)
	{
		select(undef, undef, undef, 0.3);
		my $now = rounds();
		return $now if $now == $last;
		$last = $now;
	}
	return $last;
}

# A retry due in an hour: the worker is woken and plans to look then.
my $r0 = settled();
is($node->safe_psql('bus', q{
	SELECT event_bus.fail('s', c.seq, 'busy', retry_in => '1 hour') FROM event_bus.claim('s', 1) c}),
	'retry', 'a retry due in an hour');
ok($node->poll_query_until('bus', "SELECT rounds > $r0 FROM event_bus.worker_status WHERE datname = 'bus'"),
	'wakes the worker, which had nothing planned');

# Fifty retries due later than that cost the worker no round.
my $r1 = settled();
is($node->safe_psql('bus', q{
	SELECT count(event_bus.fail('s', c.seq, 'busy', retry_in => '2 hours')) FROM event_bus.claim('s', 50) c}),
	'50', 'fifty retries due in two hours');
is($node->safe_psql('bus', "SELECT count(*) FROM event_bus.retries"), '51', 'all kept');
select(undef, undef, undef, 1.5);
is(rounds(), $r1, 'and the worker ran no round for them');

# One due before the worker's plan wakes it, and comes back when due.
is($node->safe_psql('bus', q{
	SELECT event_bus.fail('s', c.seq, 'busy', retry_in => '1 second') FROM event_bus.claim('s', 1) c}),
	'retry', 'a retry due in a second');
ok($node->poll_query_until('bus', "SELECT rounds > $r1 FROM event_bus.worker_status WHERE datname = 'bus'"),
	'wakes the worker');
is($node->safe_psql('bus', q{
	SELECT attempt FROM event_bus.claim('s', 10, wait => '30 s')}),
	'2', 'and is delivered again when it falls due, though naptime is an hour');
$node->safe_psql('bus', "SELECT event_bus.ack('s', ARRAY(SELECT (event_bus._unpack_seqs(seqs))[1] FROM event_bus.leases))");

# A scheduled event behaves alike: due after the plan, no round.
my $r2 = settled();
$node->safe_psql('bus', q{
	SELECT event_bus.emit('t', 'Later', '{}', deliver_at => now() + interval '3 hours')});
select(undef, undef, undef, 1.5);
is(rounds(), $r2, 'an event scheduled after the plan costs no round');
$node->safe_psql('bus', q{
	SELECT event_bus.emit('t', 'Soon', '{}', deliver_at => clock_timestamp() + interval '1 second')});
is($node->safe_psql('bus', q{
	SELECT type FROM event_bus.claim('s', 10, wait => '30 s') WHERE type = 'Soon'}),
	'Soon', 'one scheduled before it enters the log in time');

$node->stop;
done_testing();
