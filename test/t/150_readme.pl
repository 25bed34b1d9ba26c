# The README's Quick start runs as it stands: its SQL block, pasted into psql
# in a fresh database, completes without an error and does what its comments
# say.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $readme = slurp_file("$ENV{TESTDIR}/README.md");
my ($block) = $readme =~ /^## Quick start \(SQL\)\n.*?^```sql\n(.*?)^```\n/ms;
ok(defined $block && $block =~ /CREATE EXTENSION event_bus/, 'found the Quick start SQL block');

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_bus'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE shop');

my ($stdout, $stderr);
my $rc = $node->psql('shop', $block, stdout => \$stdout, stderr => \$stderr,
	on_error_stop => 1, extra_params => [ '-a' ]);
is($rc, 0, 'the Quick start block runs in psql without an error') or diag($stderr);
like($stdout, qr/^retry$/m, 'fail() says the event will be retried');
like($stdout, qr/^\d+\|OrderPaid\|2$/m, 'the waiting claim gets it back after its backoff, with attempt 2');
is($node->safe_psql('shop', q{
	SELECT count(*) FROM event_bus.dead_letters}), '0',
	'the dead letter was redriven');
is($node->safe_psql('shop', q{SELECT count(*) FROM event_bus.events WHERE topic = 'orders'}), '3',
	'three events were emitted');
is($stderr, '', 'nothing on standard error');

$node->stop;
done_testing();
