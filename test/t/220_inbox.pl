# Exactly-once effects in another database (examples/inbox/inbox.sql): a
# consumer applies each event's effect in its own database in the
# transaction that records the event's id in its inbox, then acks on the
# bus.  It dies before acking its first batches; the redeliveries find the
# ids recorded and are only acked.  Every effect happens exactly once.  Two
# sessions recording the same id at once: the second waits for the first,
# and applies only if the first rolled back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('inbox');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '100ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE bus');
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('bus', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('orders', 4);
	SELECT event_bus.subscribe('fulfilment', ARRAY['orders'], lease => '2 s', backoff_base => '0', max_attempts => 10);
	SELECT count(event_bus.emit('orders', 'OrderPlaced', jsonb_build_object('order', i)))
	  FROM generate_series(1, 200) i;
});
$node->safe_psql('shop', PostgreSQL::Test::Utils::slurp_file("$ENV{TESTDIR}/examples/inbox/inbox.sql"));
# The handler: its effect and the inbox record in one transaction.
$node->safe_psql('shop', q{
	CREATE TABLE shipments (order_no int, event_id uuid);
	CREATE FUNCTION ship(p_order int, p_id uuid) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
	    IF inbox_first_time('fulfilment', p_id) THEN
	        INSERT INTO shipments VALUES (p_order, p_id);
	        RETURN true;
	    END IF;
	    RETURN false;      -- applied before: only ack it
	END $$;
});
is($node->safe_psql('shop', q{SELECT count(*) FROM pg_extension WHERE extname = 'event_bus'}), '0',
	'the consumer database has no event_bus');

# The consumer: claim 25, apply each in the shop database with the inbox,
# then ack - except that it "dies" (does not ack) after applying its first
# three batches.
my ($batches, $died, $skipped, $again) = (0, 0, 0, 0);
for my $round (1 .. 400)
{
	my $rows = $node->safe_psql('bus', q{
		SELECT string_agg(seq || ':' || id || ':' || (payload->>'order') || ':' || attempt || ':' || lease_token, ' ')
		  FROM event_bus.claim('fulfilment', 25)});
	if ($rows eq '')
	{
		last if $node->safe_psql('bus', q{
			SELECT pending = 0 AND in_flight = 0 AND retrying = 0
			  FROM event_bus.subscription_status WHERE subscription = 'fulfilment'}) eq 't';
		select(undef, undef, undef, 0.1);
		next;
	}
	$batches++;
	my (@seqs, $token);
	for my $r (split / /, $rows)
	{
		my ($seq, $id, $order, $attempt, $tok) = split /:/, $r, 5;
		$token = $tok;
		push @seqs, $seq;
		$again++ if $attempt > 1;
		$skipped++ if $node->safe_psql('shop', "SELECT ship($order, '$id')") eq 'f';
	}
	if ($batches <= 3)
	{
		$died++;
		next;    # died before the ack: the lease runs out, the batch comes back
	}
	$node->safe_psql('bus', "SELECT event_bus.ack('fulfilment', '{" . join(',', @seqs) . "}', token => '$token')");
}
is($died, 3, 'the consumer died before acking three batches');
ok($again >= 75, "their 75 events (and any whose lease ran out meanwhile) were delivered again ($again)");
is($skipped, $again, 'every redelivery found its event in the inbox and was only acked, no first delivery was skipped');
is($node->safe_psql('shop', q{SELECT count(*), count(DISTINCT event_id), count(DISTINCT order_no) FROM shipments}),
	'200|200|200', 'every order was shipped exactly once');
is($node->safe_psql('shop', q{SELECT count(*) FROM event_inbox}), '200', 'the inbox holds each event once');

# Two sessions record the same id at once.
my $id = $node->safe_psql('shop', 'SELECT gen_random_uuid()');
for my $case (['ROLLBACK', 't', 'the first rolled back: the second applies'],
			  ['COMMIT', 'f', 'the first committed: the second skips'])
{
	my ($end, $want, $name) = @$case;
	my $first = $node->background_psql('shop');
	$first->query_safe("BEGIN; SELECT inbox_first_time('race-$end', '$id');");
	my ($out, $err) = ('', '');
	my $second = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('shop'), '-c', "SELECT inbox_first_time('race-$end', '$id')" ],
		'>', \$out, '2>', \$err);
	ok($node->poll_query_until('shop', q{
		SELECT count(*) > 0 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'}),
		"the second waits for the first ($end)");
	$first->query_safe($end);
	$second->finish;
	chomp $out;
	is($out, $want, $name);
	$first->quit;
}

$node->stop;
done_testing();
