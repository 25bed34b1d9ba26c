# Failover.  With synchronous replication, a primary killed under load
# loses no event whose emit was acknowledged; after promotion the worker
# starts, the leases held at the crash come back, and everything is
# delivered.  After an asynchronous failover that lost the last commits, the
# new primary hands their seqs out again to other events: an ack or fail
# carrying a lease token from the old primary changes nothing there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

sub pair
{
	my ($name, $sync) = @_;
	my $primary = PostgreSQL::Test::Cluster->new("${name}_primary");
	$primary->init(allows_streaming => 1);
	$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '200ms'
event_bus.partition_size = 1000
});
	$primary->start;
	$primary->safe_psql('postgres', q{
		CREATE EXTENSION event_bus;
		SELECT event_bus.create_topic('t', 4);
		SELECT event_bus.subscribe('s', ARRAY['t'], start => 'earliest', lease => '1 hour');
	});
	$primary->backup('b');
	my $standby = PostgreSQL::Test::Cluster->new("${name}_standby");
	$standby->init_from_backup($primary, 'b', has_streaming => 1);
	$standby->start;
	if ($sync)
	{
		$primary->append_conf('postgresql.conf', "synchronous_standby_names = '${name}_standby'\n");
		$primary->reload;
		$primary->poll_query_until('postgres',
			"SELECT sync_state = 'sync' FROM pg_stat_replication") or die "no synchronous standby";
	}
	$primary->wait_for_catchup($standby);
	return ($primary, $standby);
}

# --- Synchronous replication: kill the primary under load ---------------------
my ($primary, $standby) = pair('sync', 1);
my $script = join('', map { "SELECT event_bus.emit('t', 'E', '{\"n\": $_}', key => 'k' || ($_ % 20));\n" } 1 .. 100000);
my $file = PostgreSQL::Test::Utils::tempdir() . '/produce.sql';
open my $fh, '>', $file or die;
print $fh $script;
close $fh;
my ($out, $err) = ('', '');
my $producer = IPC::Run::start([ 'psql', '-XAtq', '-d', $primary->connstr('postgres'), '-f', $file ],
	'>', \$out, '2>', \$err);
$primary->poll_query_until('postgres', 'SELECT count(*) > 300 FROM event_bus.events')
  or die 'the producer did not start';
# A consumer holds some events when the primary dies.
my $held = $primary->safe_psql('postgres', q{SELECT count(*) FROM event_bus.claim('s', 7)});
$primary->stop('immediate');
$producer->finish;
my @acked = $out =~ /^(\d+)$/mg;
note scalar(@acked) . ' emits were acknowledged before the crash';
ok(@acked > 300, 'emits were acknowledged under load');

$standby->promote;
ok($standby->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM event_bus.worker_status WHERE state = 'running'"),
	'the worker starts on the promoted standby');
my $acked_array = '{' . join(',', @acked) . '}';
is($standby->safe_psql('postgres', "SELECT count(*) FROM unnest('$acked_array'::bigint[]) a(seq)
		WHERE NOT EXISTS (SELECT FROM event_bus.events e WHERE e.seq = a.seq)"),
	'0', 'every acknowledged emit is on the new primary');

# Drain it: the leases held at the crash come back with attempt 2.
my $delivered = '';
for (my $i = 0; $i < 100; $i++)
{
	$delivered .= $standby->safe_psql('postgres', q{
		WITH c AS (SELECT * FROM event_bus.claim('s', 1000, wait => '1 second'))
		SELECT string_agg(seq || ':' || attempt || ':' || event_bus.ack('s', ARRAY[seq], token => lease_token), ',')
		  FROM c}) . ',';
	last if $standby->safe_psql('postgres', q{
		SELECT pending = 0 AND in_flight = 0 AND retrying = 0
		  FROM event_bus.subscription_status WHERE subscription = 's'}) eq 't';
}
my %seen = map { (split /:/)[0] => 1 } grep { /\d/ } split /,/, $delivered;
is(scalar(grep { !$seen{$_} } @acked), 0, 'every acknowledged event is delivered on the new primary');
is(scalar(grep { /^\d+:2:1$/ } split /,/, $delivered), $held,
	'the events leased at the crash come back with attempt 2');
$standby->stop;

# --- Asynchronous replication: a stale ack after failover -----------------------
($primary, $standby) = pair('async', 0);
$standby->stop;		# from now on the standby lags behind
# 40 events: more than the 32 seqs the sequence logs ahead, so that the
# new primary is bound to hand some of their seqs out again.
my ($old_seqs, $old_token) = split /\|/, (split /\n/, $primary->safe_psql('postgres', q{
	SELECT cardinality(event_bus.emit_many('t', 'Lost', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 40) g))) = 0;
	SELECT '{' || string_agg(seq::text, ',' ORDER BY seq) || '}', min(lease_token::text)
	  FROM event_bus.claim('s', 100)}))[-1];
$primary->stop('immediate');
$standby->start;
$standby->promote;
my ($new_seqs, $new_token) = split /\|/, (split /\n/, $standby->safe_psql('postgres', q{
	SELECT cardinality(event_bus.emit_many('t', 'New', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 40) g))) = 0;
	SELECT '{' || string_agg(seq::text, ',' ORDER BY seq) || '}', min(lease_token::text)
	  FROM event_bus.claim('s', 100)}))[-1];
my $reused = $standby->safe_psql('postgres', "SELECT count(*) FROM unnest('$new_seqs'::bigint[]) n(seq)
	WHERE n.seq = ANY ('$old_seqs'::bigint[])");
ok($reused > 0, "the new primary handed out $reused seqs of lost events again, to other events");
is($standby->safe_psql('postgres', "SELECT event_bus.ack('s', '$old_seqs', token => '$old_token')"), '0',
	'an ack with the old primary\'s lease token acks nothing');
my ($rc, $fout, $ferr) = $standby->psql('postgres',
	"SELECT event_bus.fail('s', (SELECT max(seq) FROM unnest('$old_seqs'::bigint[]) o(seq) WHERE seq = ANY ('$new_seqs'::bigint[])), token => '$old_token')");
like($ferr, qr/is not in flight/, 'a fail with it is refused: the event is not in flight under that token');
is($standby->safe_psql('postgres', "SELECT sum(events) FROM event_bus.in_flight WHERE subscription = 's'"), '40',
	'the new deliveries are all still in flight');
is($standby->safe_psql('postgres', "SELECT event_bus.ack('s', '$new_seqs', token => '$new_token')"), '40',
	'and their own token acks them');
$standby->stop;
done_testing();
