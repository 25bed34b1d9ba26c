# The consumer and producer examples (examples/python, examples/node) work:
# for each language, its producer places orders - each order's row and its
# event in one transaction - and two of its consumers handle them at once,
# with handlers that fail on a first attempt, one event that keeps failing
# into the dead letters until it is fixed and redriven, and slow handlers
# that must extend their lease.  Checked by effect: every event has exactly
# one row in handled_events, written in the transaction of its ack.  Then a
# consumer whose connection is terminated reconnects and carries on, and
# SIGTERM makes a consumer finish the event in hand, give the rest of its
# batch back and exit 0.
#
# Needs /usr/bin/python3 with psycopg 3 (Debian: python3-psycopg), node, and
# examples/node/node_modules (scripts/test.sh runs npm ci there).  Without
# them the test fails; set EB_SKIP_EXAMPLES=1 to skip it instead (e.g. for
# a packager's make installcheck on a machine without node).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

plan skip_all => 'EB_SKIP_EXAMPLES is set' if $ENV{EB_SKIP_EXAMPLES};

my $examples = "$ENV{TESTDIR}/examples";
# The PATH's python3 may be another build than the system's, which has psycopg.
my %interpreter = (python => [ '/usr/bin/python3', 'py' ], node => [ 'node', 'js' ]);

ok(system('/usr/bin/python3', '-c', 'import psycopg') == 0,
	'/usr/bin/python3 has psycopg 3 (python3-psycopg)');
ok(system('node', '-e', "require('$examples/node/node_modules/pg')") == 0,
	'node runs and examples/node/node_modules has pg (npm ci in examples/node)');
if (grep { !$_ } Test::More->builder->summary)
{
	done_testing();
	exit;
}

my $node = PostgreSQL::Test::Cluster->new('examples');
$node->init;
# The consumers run tens of thousands of statements: log none of them.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_bus'
log_statement = none
});
$node->start;
my $user = $node->safe_psql('postgres', 'SELECT current_user');

# What the examples read to connect: libpq's variables, which node-postgres
# reads too.
sub app_env
{
	my ($db) = @_;
	return (PGHOST => $node->host, PGPORT => $node->port, PGUSER => $user, PGDATABASE => $db);
}

sub example
{
	my ($lang, $program, @args) = @_;
	my ($interp, $ext) = @{ $interpreter{$lang} };
	return ($interp, "$examples/$lang/$program.$ext", @args);
}

sub produce
{
	my ($lang, $db, @args) = @_;
	local %ENV = (%ENV, app_env($db));
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ example($lang, 'producer', @args) ], '>', \$out, '2>', \$err);
	diag($err) unless $ok;
	return $out;
}

# Consumers run in the background, their output in tmp_check/log.  A lease
# of 2 s, shorter than a slow handler (3 s): it must extend.  Claims wait 1 s
# in the server: an idle consumer stops within about a second.
my @consumers;

sub start_consumer
{
	my ($lang, $db, $name) = @_;
	my $log = "$PostgreSQL::Test::Utils::log_path/170_examples_$name.log";
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		%ENV = (%ENV, app_env($db));
		open(STDOUT, '>>', $log) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
		exec(example($lang, 'consumer', '--name', $name, '--lease', '2', '--wait', '1'))
		  or POSIX::_exit(127);
	}
	my $c = { pid => $pid, name => $name, log => $log };
	push @consumers, $c;
	return $c;
}

# SIGTERM a consumer and reap it: its wait status and how long it took (it is
# killed after 20 s).
sub stop_consumer
{
	my ($c) = @_;
	my $t0 = time();
	kill 'TERM', $c->{pid};
	while (waitpid($c->{pid}, WNOHANG) == 0)
	{
		kill 'KILL', $c->{pid} if time() - $t0 > 20;
		sleep 0.05;
	}
	delete $c->{pid};
	return ($?, time() - $t0);
}

END
{
	local $?;
	for my $c (grep { $_->{pid} } @consumers)
	{
		kill 'KILL', $c->{pid};
		waitpid($c->{pid}, 0);
	}
}

sub logs
{
	return join('', map { "--- $_->{name}\n" . slurp_file($_->{log}) } @consumers);
}

# Until the subscription has nothing pending, in flight or waiting for a retry.
sub wait_idle
{
	my ($db, $what) = @_;
	$node->poll_query_until($db, q{
		SELECT pending = 0 AND in_flight = 0 AND retrying = 0
		  FROM event_bus.subscription_status WHERE subscription = 'fulfilment'})
	  or diag("timed out waiting for the consumers to $what\n" . logs());
}

foreach my $lang ('python', 'node')
{
	my $db = "shop_$lang";
	my $q = sub { $node->safe_psql($db, shift) };
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$q->(slurp_file("$examples/schema.sql"));
	@consumers = ();

	# 2000 orders, every second one paid: 3000 events.  The handling of every
	# 20th order (its 200 events: all are paid) fails on its first attempt; order 1010's two
	# events take 3 s each; order 777 is put on hold, so its one event fails
	# all its 3 attempts.
	like(produce($lang, $db, qw(--orders 2000 --flaky-every 20 --slow-every 1010)),
		qr/^placed 2000 orders: 3000 events$/m, "$lang: the producer placed 2000 orders");
	is($q->(q{SELECT count(*) FROM orders o JOIN event_bus.events e ON (e.payload->>'order_id')::bigint = o.id}),
		'3000', "$lang: each order has its events");
	$q->(q{INSERT INTO held_orders VALUES (777, 'fraud review')});

	my $ca = start_consumer($lang, $db, "$lang-a");
	my $cb = start_consumer($lang, $db, "$lang-b");
	wait_idle($db, 'handle the 3000 events');

	is($q->(q{SELECT count(*), max(applied), count(DISTINCT handled_by) FROM handled_events}),
		'2999|1|2', "$lang: two consumers applied the effect of 2999 events, each once");
	is($q->(q{
		SELECT string_agg(e.type || ' ' || (e.payload->>'order_id'), ', ') FROM event_bus.events e
		 WHERE NOT EXISTS (SELECT FROM handled_events h WHERE h.event_id = e.id)}),
		'OrderPlaced 777', "$lang: all but the held order's");
	like($q->(q{SELECT type, payload->>'order_id', attempts, last_error FROM event_bus.dead_letter_queue}),
		qr/^OrderPlaced\|777\|3\|.*order 777 is on hold: fraud review$/,
		"$lang: which is a dead letter after 3 attempts, with the handler's error");
	is($q->(q{
		SELECT count(*) FILTER (WHERE e.payload->>'simulate' = 'flaky' AND h.attempt = 2),
		       count(*) FILTER (WHERE e.payload->>'simulate' = 'slow' AND h.attempt = 1),
		       count(*) FILTER (WHERE e.payload->>'simulate' IS NULL AND h.attempt = 1)
		  FROM handled_events h JOIN event_bus.events e ON e.id = h.event_id}),
		'200|2|2797',
		"$lang: failed first attempts were retried once; the rest, slow ones included, needed one delivery");
	like(logs(), qr/extended the lease/, "$lang: the slow handlers extended the lease");

	# B stops; A's connection is terminated while it handles another 1500
	# events and the redriven dead letter: it reconnects and handles them all.
	my ($status, $took) = stop_consumer($cb);
	is($status, 0, "$lang: SIGTERM stops an idle consumer with exit code 0");
	ok($took < 5, sprintf('%s: promptly (%.1f s)', $lang, $took));
	$q->(q{DELETE FROM held_orders});
	my $before = $q->(q{SELECT count(*) FROM handled_events});
	my $old_pid = $q->("SELECT pid FROM pg_stat_activity WHERE application_name = '$lang-a'");
	my $producer;
	{
		local %ENV = (%ENV, app_env($db));
		$producer = IPC::Run::start([ example($lang, 'producer', qw(--orders 1000)) ],
			'>', \my $out, '2>', \my $err);
	}
	$node->poll_query_until($db, "SELECT count(*) > $before + 100 FROM handled_events");
	is($q->("SELECT pg_terminate_backend($old_pid)"), 't', "$lang: terminated A's connection while it worked");
	is($q->(q{SELECT event_bus.redrive('fulfilment')}), '1', "$lang: redrove the dead letter");
	ok($producer->finish, "$lang: the producer placed another 1000 orders");
	wait_idle($db, 'handle the next 1500 events');
	is($q->(q{SELECT count(*), max(applied) FROM handled_events}), '4500|1',
		"$lang: every event's effect applied once, the redriven one's included");
	is($q->(q{SELECT count(*) FROM event_bus.dead_letter_queue}), '0', "$lang: no dead letter left");
	isnt($q->("SELECT pid FROM pg_stat_activity WHERE application_name = '$lang-a'"), $old_pid,
		"$lang: A is connected again, on a new connection");
	like(slurp_file($ca->{log}), qr/connection failed .*reconnecting in/, "$lang: A logged the reconnect");

	# SIGTERM while A handles a slow event with 29 more in its batch (one
	# transaction, one key: one claim takes them all, the slow one first).
	$q->(q{
		WITH o AS (INSERT INTO orders (customer, total) SELECT 'customer-x', g FROM generate_series(1, 30) g
		           RETURNING id)
		SELECT count(event_bus.emit('orders', 'OrderPlaced',
		           jsonb_build_object('order_id', id, 'customer', 'customer-x',
		                              'simulate', CASE WHEN id = (SELECT min(id) FROM o) THEN 'slow' END),
		           key => 'customer-x') ORDER BY id) FROM o});
	$node->poll_query_until($db, q{SELECT count(*) = 1 FROM event_bus.in_flight WHERE events = 30});
	($status, $took) = stop_consumer($ca);
	is($status, 0, "$lang: SIGTERM stops a consumer with a batch in hand, exit code 0");
	ok($took < 10, sprintf('%s: once its slow event is done (%.1f s)', $lang, $took));
	is($q->(q{SELECT count(*) FROM event_bus.in_flight}), '0', "$lang: it left nothing in flight");
	is($q->(q{SELECT count(*) FROM handled_events WHERE handled_by = '} . "$lang-a" . q{' AND order_id IN
	             (SELECT id FROM orders WHERE customer = 'customer-x')}),
		'1', "$lang: it finished the slow event");
	is($q->(q{SELECT count(*) FROM event_bus.retry_queue WHERE last_error = 'consumer shutting down'}),
		'29', "$lang: and gave back the other 29");

	my $c = start_consumer($lang, $db, "$lang-c");
	wait_idle($db, 'handle the given-back events');
	is($q->(q{SELECT count(*), max(applied) FROM handled_events}), '4530|1',
		"$lang: another consumer handled them");
	($status, $took) = stop_consumer($c);
	is($status, 0, "$lang: and stops on SIGTERM with exit code 0");
	is($q->(q{SELECT count(*) FROM event_bus.in_flight}), '0', "$lang: nothing in flight at the end");
	unlike(logs(), qr/Traceback|ERROR (?!event)/, "$lang: no consumer logged an unexpected error");
}

$node->stop;
done_testing();
