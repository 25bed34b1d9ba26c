# The background worker: topology, dispatch (LISTEN/NOTIFY and waiting
# claims), lease expiry, retries, dead letters and retention.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '200ms'
event_bus.partition_size = 1000
event_bus.retention = 0
max_worker_processes = 16
});
$node->start;

sub workers
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = '$db'");
}

# Claim and ack everything subscription s has.
sub consume_all
{
	$node->safe_psql('bus', q{
	DO $$
	DECLARE s bigint[];
	BEGIN
	    LOOP
	        SELECT array_agg(seq) INTO s FROM event_bus.claim('s', 1000);
	        EXIT WHEN s IS NULL;
	        PERFORM event_bus.ack('s', s);
	    END LOOP;
	END $$});
}

# --- Topology --------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE with_ext');
$node->safe_psql('postgres', 'CREATE DATABASE without_ext');
$node->safe_psql('with_ext', 'CREATE EXTENSION event_bus');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'with_ext'"),
	'CREATE EXTENSION starts a worker for the database');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_bus launcher'"),
	'1', 'one launcher');
sleep 2;
is(workers('without_ext'), '0', 'no worker for a database without the extension');
is(workers('postgres'), '0', 'no worker for postgres either');
like($node->safe_psql('with_ext',
		"SELECT state || ' ' || (pid > 0) || ' ' || (rounds > 0) FROM event_bus.worker_status WHERE datname = 'with_ext'"),
	qr/^running true true$/, 'worker_status shows the running worker and its rounds');

# DROP DATABASE must not hang on, or be refused because of, our worker.
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE with_ext');
is($ret, 0, 'DROP DATABASE of a database with a worker succeeds') or diag $err;
note sprintf('DROP DATABASE took %.2f s', time - $t0);
is(workers('with_ext'), '0', 'its worker is gone');

# DROP EXTENSION stops the worker; CREATE EXTENSION brings it back.
$node->safe_psql('postgres', 'CREATE DATABASE bus');
$node->safe_psql('bus', 'CREATE EXTENSION event_bus');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'bus'"),
	'worker for a new database');
$node->safe_psql('bus', 'DROP EXTENSION event_bus');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'bus'"),
	'DROP EXTENSION stops the worker');
$node->safe_psql('bus', 'CREATE EXTENSION event_bus');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'bus'"),
	'CREATE EXTENSION again starts it again');

# One session emits, drops the extension, creates it again and emits: its
# cached OIDs of the log and the seq sequence must not outlive the drop.
my $again = $node->safe_psql('bus', q{
	SELECT event_bus.create_topic('again', 1);
	SELECT event_bus.emit('again', 'T', '{}');
	SELECT event_bus.emit('again', 'T', '{}');
	DROP EXTENSION event_bus;
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('again', 1);
	SELECT event_bus.emit('again', 'T', '{"n": 1}');
	SELECT count(*) || ' ' || min(payload::text) FROM event_bus.events;
});
like($again, qr/\n1\n1 \{"n": 1\}$/, 'a session emits into the new install after DROP and CREATE EXTENSION');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_bus worker' AND datname = 'bus'"),
	'and the worker runs again');

$node->safe_psql('bus', q{
	SELECT event_bus.create_topic('t', 2);
	SELECT event_bus.subscribe('s', ARRAY['t'], lease => '1 second', backoff_base => '10 ms',
	                           backoff_max => '20 ms', max_attempts => 3);
});

# SIGTERM to the worker: it comes back, and nothing is lost.
my $pid = $node->safe_psql('bus', "SELECT pid FROM event_bus.worker_status WHERE datname = 'bus'");
$node->safe_psql('bus', "SELECT event_bus.emit('t', 'E', jsonb_build_object('n', g)) FROM generate_series(1, 10) g");
kill 'TERM', $pid;
ok($node->poll_query_until('bus',
		"SELECT count(*) = 1 FROM event_bus.worker_status WHERE state = 'running' AND pid <> $pid"),
	'a terminated worker is restarted');
$node->safe_psql('bus', "SELECT event_bus.emit('t', 'E', jsonb_build_object('n', g)) FROM generate_series(11, 20) g");
is($node->safe_psql('bus', q{
	WITH c AS (SELECT * FROM event_bus.claim('s', 100)) SELECT count(*), sum((payload->>'n')::int) FROM c}),
	'20|210', 'every event emitted around the restart is delivered');
$node->safe_psql('bus', "SELECT event_bus.ack('s', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases))");

# --- LISTEN/NOTIFY -----------------------------------------------------------
# While nobody LISTENs, emitting commits do not wake the worker: it runs on
# its timers only.
my $rounds = $node->safe_psql('bus', "SELECT rounds FROM event_bus.worker_status WHERE datname = 'bus'");
$node->pgbench('--no-vacuum --transactions=200', 0, [qr{processed: 200/200}], [qr{^$}],
	'two hundred emitting commits', { '010_emit' => "SELECT event_bus.emit('t', 'Quiet', '{}');\n" }, 'bus');
my $more = $node->safe_psql('bus', "SELECT rounds - $rounds FROM event_bus.worker_status WHERE datname = 'bus'");
ok($more < 50, "without a listener, 200 emitting commits cost the worker $more rounds, not one each");
$node->safe_psql('bus', q{
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 1000)))});

my $listener = $node->background_psql('bus');
$listener->query_safe('LISTEN "event_bus.s"');
$node->safe_psql('bus', "SELECT event_bus.emit('t', 'Ping', '{}')");
my $notified = $listener->query_until(qr/Asynchronous notification/,
	"SELECT pg_sleep(0.5);\n");
like($notified . $listener->{stderr},
	qr/"event_bus.s" with payload "\{"subscription" : "s", "seq" : \d+, "events" : \d+, "retries" : 0\}"/,
	'a LISTENing session is notified after an emit commits');
# From now on every commit wakes the worker: one notification per emit here.
$listener->{stderr} = '';
$node->safe_psql('bus', "SELECT event_bus.emit('t', 'Ping', '{}')");
$notified = $listener->query_until(qr/Asynchronous notification/, "SELECT pg_sleep(0.5);\n");
like($notified . $listener->{stderr},
	qr/"event_bus.s" with payload "\{"subscription" : "s", "seq" : \d+, "events" : 1, "retries" : 0\}"/,
	'and for the next emit, with exactly its one event');
# A restarted worker has no previous round to count from: its first
# notification counts every event not handed out yet (the two Pings).
$listener->{stderr} = '';
my $old_pid = $node->safe_psql('bus', "SELECT pid FROM event_bus.worker_status WHERE datname = 'bus'");
$node->safe_psql('bus', "SELECT pg_terminate_backend($old_pid)");
$node->poll_query_until('bus', qq{
	SELECT pid <> $old_pid AND rounds > 0 FROM event_bus.worker_status WHERE datname = 'bus'});
$notified = $listener->query_until(qr/Asynchronous notification/, "SELECT 1;\n");
like($notified . $listener->{stderr},
	qr/"event_bus.s" with payload "\{"subscription" : "s", "seq" : \d+, "events" : 2, "retries" : 0\}"/,
	'the first notification of a restarted worker counts the pending events');
$listener->quit;
$node->safe_psql('bus', q{
	SELECT event_bus.ack('s', ARRAY(SELECT seq FROM event_bus.claim('s', 100)))});

# --- Waiting claims ----------------------------------------------------------
my $waiter = $node->background_psql('bus', on_error_stop => 0);
$waiter->query_until(qr/waiting/, "\\echo waiting\nSELECT 'got ' || count(*) FROM event_bus.claim('s', 10, wait => '60 s');\n");
$node->poll_query_until('bus',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%claim%wait%'");
$node->safe_psql('bus', "SELECT event_bus.emit('t', 'Wake', '{}')");
my $got = $waiter->query_until(qr/got \d+/, '');
like($got, qr/got 1/, 'a waiting claim returns the event emitted meanwhile');
$node->safe_psql('bus', "SELECT event_bus.ack('s', ARRAY(SELECT unnest(event_bus._unpack_seqs(seqs)) FROM event_bus.leases))");

$waiter->query_safe("SET statement_timeout = '300ms'");
my ($wret) = $waiter->query("SELECT count(*) FROM event_bus.claim('s', 10, wait => '60 s')");
like($waiter->{stderr}, qr/canceling statement due to statement timeout/,
	'statement_timeout ends a waiting claim');
$waiter->{stderr} = '';
$waiter->query_safe("RESET statement_timeout");
$waiter->query_until(qr/waiting/, "\\echo waiting\nSELECT count(*) FROM event_bus.claim('s', 10, wait => '60 s');\n");
$node->poll_query_until('bus',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%claim%wait%'");
$node->safe_psql('bus',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%claim%wait%' AND pid <> pg_backend_pid()");
$waiter->query("SELECT 1");
like($waiter->{stderr}, qr/canceling statement due to user request/,
	'pg_cancel_backend ends a waiting claim');
$waiter->{stderr} = '';
is($waiter->query_safe("SELECT count(*) FROM event_bus.leases"), '0', 'nothing was leased by the cancelled claim');
$waiter->quit;

# --- Leases, retries and dead letters, by the worker alone ------------------
$node->safe_psql('bus', "SELECT event_bus.emit('t', 'Lease', '{\"x\": 1}', key => 'k')");
is($node->safe_psql('bus', "SELECT attempt FROM event_bus.claim('s', 10)"), '1', 'first delivery');
# The lease (1 s) expires; the worker turns it into a retry and wakes claimers.
is($node->safe_psql('bus', "SELECT type || ' ' || attempt FROM event_bus.claim('s', 10, wait => '30 s')"),
	'Lease 2', 'an expired lease is redelivered with attempt 2');
my $seq = $node->safe_psql('bus', "SELECT seq FROM event_bus.retries");
$node->safe_psql('bus', "SELECT event_bus.fail('s', $seq, 'boom 2')");
is($node->safe_psql('bus', "SELECT attempt FROM event_bus.claim('s', 10, wait => '30 s')"),
	'3', 'a failed event comes back after its backoff');
is($node->safe_psql('bus', "SELECT event_bus.fail('s', $seq, 'boom 3')"), 'dead',
	'the third failure of three is final');
is($node->safe_psql('bus', "SELECT attempts || ' ' || last_error FROM event_bus.dead_letters"),
	'3 boom 3', 'the dead letter keeps the attempts and the last error');
is($node->safe_psql('bus', "SELECT event_bus.redrive('s')"), '1', 'redrive');
is($node->safe_psql('bus', "SELECT type || ' ' || attempt FROM event_bus.claim('s', 10, wait => '30 s')"),
	'Lease 1', 'a redriven event is delivered again');
$node->safe_psql('bus', "SELECT event_bus.ack('s', ARRAY[$seq])");

# --- Partitions and retention ------------------------------------------------
# A dead letter whose event is in a partition retention will drop.
$node->safe_psql('bus', q{
	SELECT event_bus.subscribe('dl', ARRAY['t'], types => ARRAY['Doomed'], max_attempts => 1);
	SELECT event_bus.emit('t', 'Doomed', '{"d": 1}');
});
my $doomed = $node->safe_psql('bus', "SELECT seq FROM event_bus.claim('dl', 10)");
is($node->safe_psql('bus', "SELECT event_bus.fail('dl', $doomed, 'poison')"), 'dead', 'a dead letter');
for my $i (1 .. 6)
{
	$node->safe_psql('bus',
		"SELECT event_bus.emit_many('t', 'Bulk', (SELECT array_agg(jsonb_build_object('i', g)) FROM generate_series(1, 1000) g))");
}
ok($node->safe_psql('bus', 'SELECT count(*) FROM event_bus.log_partitions') >= 6,
	'a long run of emits crosses several partitions without an error');
consume_all();
is($node->safe_psql('bus', 'SELECT count(*) FROM event_bus.leases'), '0', 'everything consumed');
my $before = $node->safe_psql('bus', 'SELECT min(lo) FROM event_bus.log_partitions');
ok($node->poll_query_until('bus',
		"SELECT min(lo) > $before AND count(*) <= 4 FROM event_bus.log_partitions"),
	'consumed partitions past retention are dropped by the worker');
ok($node->poll_query_until('bus', q{
		SELECT retention_runs > 0 AND partitions_dropped > 0 AND retention_failures = 0
		       AND last_retention IS NOT NULL
		  FROM event_bus.worker_status WHERE datname = 'bus'}),
	'worker_status counts the retention runs and the partitions they dropped');
is($node->safe_psql('bus', "SELECT event_bus.ack('s', ARRAY[$doomed])"), '0',
	'a late ack of an event whose partition is gone is a no-op, not an error');
($ret, $out, $err) = $node->psql('bus', "SELECT event_bus.fail('s', $doomed)");
like($err, qr/is not in flight for subscription "s"/, 'and a late fail says it is no longer in flight');
($ret, $out, $err) = $node->psql('bus', "SELECT event_bus.redrive('dl')");
like($err, qr/dead letter $doomed of subscription "dl" can no longer be redriven/,
	'redrive refuses a dead letter whose part of the log is gone');
is($node->safe_psql('bus', "SELECT payload FROM event_bus.dead_letters WHERE subscription = 'dl'"),
	'{"d": 1}', 'its copy is kept in dead_letters');
is($node->safe_psql('bus', q{
	SELECT count(*) = (SELECT count(*) FROM event_bus.log_partitions)
	  FROM pg_inherits WHERE inhparent = 'event_bus.events'::regclass}),
	't', 'the partition registry matches the attached partitions');
is($node->safe_psql('bus', "SELECT count(*) FROM event_bus.retention_status WHERE holds_retention"),
	'0', 'once everything is consumed, no subscription holds the log');

# A stalled subscription holds retention, and the view says so.
$node->safe_psql('bus', "SELECT event_bus.subscribe('stalled', ARRAY['t'])");
$node->safe_psql('bus',
	"SELECT event_bus.emit_many('t', 'Bulk', (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 2500)))");
consume_all();
ok($node->poll_query_until('bus',
		"SELECT holds_retention AND partitions_held >= 2 FROM event_bus.retention_status WHERE subscription = 'stalled'"),
	'a stalled subscription shows up as what holds retention');

# A transaction open too long after emitting: listed in open_emitters, and
# the worker warns about it once in the server log.
$node->safe_psql('postgres', "ALTER SYSTEM SET event_bus.long_emit_warning = '1s'");
$node->reload;
my $long = $node->background_psql('bus');
$long->query_safe("BEGIN; SELECT event_bus.emit('t', 'Slow', '{}')");
my $long_pid = $long->query_safe("SELECT pg_backend_pid()");
is($node->safe_psql('bus', "SELECT pid = $long_pid AND topics = '{t}' FROM event_bus.open_emitters"),
	't', 'open_emitters shows the open emitting transaction and its topic');
my $offset = -s $node->logfile;
ok($node->wait_for_log(qr/transaction \d+ of process $long_pid has been open for \d+ s since its first emit/, $offset),
	'the worker warns about a transaction open longer than event_bus.long_emit_warning');
$long->query_safe("COMMIT");
$long->quit;
is($node->safe_psql('bus', "SELECT count(*) FROM event_bus.open_emitters"), '0',
	'a committed transaction is no open emitter');
$node->safe_psql('postgres', "ALTER SYSTEM RESET event_bus.long_emit_warning");
$node->reload;

is($node->safe_psql('bus', "SELECT count(*) FROM event_bus.worker_status WHERE last_error IS NOT NULL"),
	'0', 'no round of the worker failed');

$node->stop;
done_testing();
