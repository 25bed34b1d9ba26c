# Leases held when the server restarted or crashed are redelivered at once:
# the sessions holding them are gone, and an ordered lane must not wait out a
# long lease after every restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('restart_leases');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '200ms'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 1);
	SELECT event_bus.subscribe('o', ARRAY['t'], ordered => true, lease => '1 hour', backoff_base => '0');
	SELECT count(event_bus.emit('t', 'E', jsonb_build_object('n', g), key => 'k')) FROM generate_series(1, 3) g;
});

sub claim_all
{
	return $node->safe_psql('postgres',
		q{SELECT string_agg(payload->>'n' || ':' || attempt, ',' ORDER BY seq) FROM event_bus.claim('o', 10)});
}
is(claim_all(), '1:1,2:1,3:1', 'claimed under a one-hour lease');
is(claim_all(), '', 'the ordered lane is held');

$node->restart;
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM event_bus.leases}),
	'after a restart the worker expires the leases of the previous server life');
is($node->safe_psql('postgres', q{SELECT DISTINCT last_error FROM event_bus.retries}),
	'server restarted while it was claimed', 'and says why');
is(claim_all(), '1:2,2:2,3:2', 'the lane is delivered again at once, in order');

# The same after a crash of one backend (the postmaster stays; shared memory
# is initialised anew).
my $victim = $node->background_psql('postgres');
my $pid = $victim->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $pid;
ok($node->poll_query_until('postgres', 'SELECT 1', '1'), 'the server restarted after the crash');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM event_bus.leases}),
	'after a crash too');
is(claim_all(), '1:3,2:3,3:3', 'the lane is delivered again at once');
# A lease of this server life is left alone.
$node->safe_psql('postgres', 'SELECT event_bus.run_maintenance()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_bus.leases}), '1', 'a lease of this life stays');
eval { $victim->quit };

$node->stop;
done_testing();
