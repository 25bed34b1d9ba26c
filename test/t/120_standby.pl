# On a hot standby every function that writes refuses with one clear error
# (25006, "event_bus is read-only on a standby") - a waiting claim before it
# waits - while the views and the log stay readable.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.partition_size = 1000
});
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 2);
	SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest');
	SELECT event_bus.emit('t', 'E', '{"n": 1}');
	CREATE TABLE orders (id int PRIMARY KEY);
});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->safe_psql('postgres', q{SELECT event_bus.emit('t', 'E', '{"n": 2}')});
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT count(*) FROM event_bus.events'), '2', 'the standby reads the log');
is($standby->safe_psql('postgres', q{SELECT pending FROM event_bus.subscription_status WHERE subscription = 's'}),
	'2', 'and the status views');

my @writes = (
	q{SELECT event_bus.emit('t', 'E', '{}')},
	q{SELECT event_bus.emit_many('t', 'E', ARRAY['{}']::jsonb[])},
	q{SELECT * FROM event_bus.claim('s')},
	q{SELECT event_bus.ack('s', ARRAY[1])},
	q{SELECT event_bus.fail('s', 1)},
	q{SELECT event_bus.dead_letter('s', 1)},
	q{SELECT event_bus.subscribe('s2', ARRAY['t'])},
	q{SELECT event_bus.unsubscribe('s')},
	q{SELECT event_bus.pause('s')},
	q{SELECT event_bus.replay('s')},
	q{SELECT event_bus.redrive('s')},
	q{SELECT event_bus.purge_dead_letters('s')},
	q{SELECT event_bus.create_topic('u')},
	q{SELECT event_bus.drop_topic('t')},
	q{SELECT event_bus.grant_topic('t', 'event_bus_consumer', 'consume')},
	q{SELECT event_bus.run_maintenance()},
	q{SELECT event_bus.capture('orders')},
);
for my $sql (@writes)
{
	my ($rc, $out, $err) = $standby->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  25006: event_bus is read-only on a standby/, "refused on the standby: $sql");
}

my $t0 = time();
my ($rc, $out, $err) = $standby->psql('postgres', q{SELECT * FROM event_bus.claim('s', 10, wait => '30 s')});
like($err, qr/event_bus is read-only on a standby.*\n.*\nHINT:  Connect to the primary, for example with target_session_attrs=read-write/,
	'a waiting claim is refused with a hint');
ok(time() - $t0 < 20, 'before it waits');

# The primary is unaffected.
is($primary->safe_psql('postgres', q{SELECT count(*) FROM event_bus.claim('s', 10)}), '2', 'the primary delivers');

$standby->stop;
$primary->stop;
done_testing();
