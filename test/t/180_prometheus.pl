# examples/prometheus/queries.yaml: every query runs, as a monitoring role
# that is a member of event_bus_admin, and returns the columns its metrics
# name, with numbers where postgres_exporter expects numbers; the counters
# and gauges move as events flow.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The file keeps each query on one line in double quotes, and each metric as
# "    - name:" followed by its usage: enough to read it without a YAML module.
my $yaml = slurp_file("$ENV{TESTDIR}/examples/prometheus/queries.yaml");
my (%query, %metrics, @order, $current);
for my $line (split /\n/, $yaml)
{
	if ($line =~ /^([a-z_]+):\s*$/)
	{
		$current = $1;
		push @order, $current;
	}
	elsif ($line =~ /^\s+query:\s+"(.*)"\s*$/)
	{
		$query{$current} = $1;
	}
	elsif ($line =~ /^\s+- ([a-z_]+):\s*$/)
	{
		push @{ $metrics{$current} }, [ $1, undef ];
	}
	elsif ($line =~ /^\s+usage:\s+"([A-Z]+)"/)
	{
		$metrics{$current}[-1][1] = $1;
	}
}
is(scalar(@order), 4, 'four metric groups in queries.yaml');
is(scalar(grep { defined $query{$_} && @{ $metrics{$_} || [] } } @order), scalar(@order),
	'each has a query and metrics');

my $node = PostgreSQL::Test::Cluster->new('prometheus');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_bus'\nevent_bus.naptime = 100\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE DATABASE shop;
	CREATE ROLE exporter LOGIN;
});
$node->safe_psql('shop', q{
	CREATE EXTENSION event_bus;
	GRANT event_bus_admin TO exporter;
	SELECT event_bus.create_topic('orders', 2);
	SELECT event_bus.subscribe('billing', ARRAY['orders'], start => 'earliest', max_attempts => 1);
	SELECT event_bus.emit('orders', 'OrderPlaced', jsonb_build_object('n', g)) FROM generate_series(1, 10) g;
	WITH c AS (SELECT * FROM event_bus.claim('billing', 4))
	SELECT event_bus.ack('billing', ARRAY(SELECT seq FROM c OFFSET 1)),
	       event_bus.fail('billing', (SELECT min(seq) FROM c), 'boom');
});
$node->poll_query_until('shop', "SELECT rounds > 0 FROM event_bus.worker_status WHERE datname = 'shop'");

# Run every query as the exporter; a row is "label=value,..." in column order.
sub scrape
{
	my %rows;
	for my $name (@order)
	{
		my ($stdout, $stderr);
		# With its header line (the helper runs psql with --tuples-only).
		$node->psql('shop', "\\pset tuples_only off\n$query{$name}", stdout => \$stdout, stderr => \$stderr,
			extra_params => [ '-U', 'exporter', '-F', '|', '-P', 'footer=off' ]);
		is($stderr, '', "$name runs without an error") or next;
		my @lines = split /\n/, $stdout;
		my @cols = split /\|/, shift(@lines) // '';
		is_deeply(\@cols, [ map { $_->[0] } @{ $metrics{$name} } ],
			"$name returns the columns its metrics name, in order");
		for my $l (@lines)
		{
			my %r;
			@r{@cols} = split /\|/, $l, -1;
			for my $m (@{ $metrics{$name} })
			{
				next if $m->[1] eq 'LABEL';
				like($r{ $m->[0] }, qr/^-?\d+(\.\d+)?$/, "$name.$m->[0] is a number");
			}
			my $label = join ',', map { $r{ $_->[0] } } grep { $_->[1] eq 'LABEL' } @{ $metrics{$name} };
			$rows{$name}{$label} = \%r;
		}
	}
	return \%rows;
}

my $s = scrape();
is($s->{event_bus_topic}{orders}{emitted}, 10, 'emitted counts the ten events');
my $b = $s->{event_bus_subscription}{billing};
is(join(',', map { $b->{$_} } qw(claimed acked failed dead_lettered pending in_flight dead)),
	'4,3,1,1,6,0,1', 'claimed, acked, failed, dead-lettered, pending, in flight, dead');
cmp_ok($b->{oldest_pending_age_seconds}, '>', 0, 'the oldest pending event has an age');
is($s->{event_bus_worker}{shop}{running}, 1, 'the worker runs');
is($s->{event_bus_open_emitters}{''}{transactions}, 0, 'no open emitting transaction');

# An open emitting transaction shows up; consuming everything empties the lag.
my $open = $node->background_psql('shop');
$open->query_safe("BEGIN; SELECT event_bus.emit('orders', 'OrderPlaced', '{}');");
$node->safe_psql('shop', q{
	SELECT event_bus.ack('billing', ARRAY(SELECT seq FROM event_bus.claim('billing', 100)))});
$s = scrape();
is($s->{event_bus_open_emitters}{''}{transactions}, 1, 'the open emitting transaction is counted');
$b = $s->{event_bus_subscription}{billing};
is(join(',', map { $b->{$_} } qw(claimed acked pending oldest_pending_age_seconds)),
	'10,9,0,0', 'all consumed: no lag');
$open->query_safe('COMMIT');
$open->quit;
is($s->{event_bus_worker}{shop}{has_error}, 0, 'no round of the worker failed');

$node->stop;
done_testing();
