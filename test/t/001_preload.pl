# Without shared_preload_libraries the extension must fail early and clearly,
# never half-work; with it, a restart keeps every committed event claimable.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;

my ($ret, $stdout, $stderr) =
  $node->psql('postgres', 'CREATE EXTENSION event_bus');
isnt($ret, 0, 'CREATE EXTENSION fails without shared_preload_libraries');
like($stderr, qr/event_bus must be loaded via shared_preload_libraries/,
	'the error names the setting');
like($stderr, qr/HINT:  Add event_bus to shared_preload_libraries/,
	'the error carries a hint');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_namespace WHERE nspname = 'event_bus'"),
	'0', 'nothing is left behind');

# Preload it: the extension installs and works.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_bus'");
$node->restart;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 2);
	SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest');
	SELECT event_bus.emit('t', 'E', jsonb_build_object('n', g)) FROM generate_series(1, 5) g;
});

# Remove it again while the extension is installed: every entry point
# refuses with the same clear error instead of running without the horizon.
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
for my $q ("SELECT event_bus.emit('t', 'E', '{}')",
	"SELECT * FROM event_bus.claim('s')")
{
	($ret, $stdout, $stderr) = $node->psql('postgres', $q);
	isnt($ret, 0, "refused without preload: $q");
	like($stderr, qr/event_bus must be loaded via shared_preload_libraries/,
		"clear error: $q");
}

# Back with the library: after the restart the horizon is rebuilt from the
# sequence, so the events committed before are all claimable.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_bus'");
$node->restart;
is($node->safe_psql('postgres', "SELECT count(*) FROM event_bus.claim('s')"),
	'5', 'events committed before a restart are delivered after it');
$node->safe_psql('postgres', "SELECT event_bus.emit('t', 'E', '{}')");
is($node->safe_psql('postgres', "SELECT count(*) FROM event_bus.claim('s')"),
	'1', 'new events after the restart are delivered');

$node->stop;
done_testing();
