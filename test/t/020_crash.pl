# Crashes under load: a SIGKILLed backend (restart_after_crash = on) and an
# immediate shutdown.  Producers record what they emit in the same
# transaction; consumers record what they process in the transaction that
# acks it.  Afterwards every committed event is delivered, none from an
# aborted transaction, leases stranded by the crash expire and are
# redelivered, and - with claim and ack in one transaction - nothing is
# processed twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
restart_after_crash = on
event_bus.naptime = '200ms'
event_bus.partition_size = 1000
max_connections = 40
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 4);
	SELECT event_bus.subscribe('s', ARRAY['t'], lease => '2 seconds', backoff_base => '10 ms',
	                           backoff_max => '50 ms', max_attempts => 1000, start => 'earliest');
	CREATE SEQUENCE ids;
	CREATE TABLE produced (id bigint PRIMARY KEY);
	CREATE TABLE consumed (id bigint NOT NULL, seq bigint NOT NULL, attempt int NOT NULL,
	                       token uuid NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
	                       at timestamptz NOT NULL DEFAULT clock_timestamp());
});

my $dir = PostgreSQL::Test::Utils::tempdir;
my $producer = "$dir/producer.sql";
my $consumer = "$dir/consumer.sql";
my $abandoner = "$dir/abandoner.sql";
my $bulk = "$dir/bulk.sql";
# Producers: one transaction in ten rolls back.
sub producer_script
{
	my ($file, $body) = @_;
	open my $fh, '>', $file or die;
	print $fh "\\set r random(1, 10)\nBEGIN;\n$body\\if :r = 1\nROLLBACK;\n\\else\nCOMMIT;\n\\endif\n";
	close $fh;
}
producer_script($producer, <<'EOF');
INSERT INTO produced VALUES (nextval('ids')) RETURNING id \gset
SELECT event_bus.emit('t', 'E', jsonb_build_object('id', :id), key => (:id % 50)::text);
EOF
# A bulk producer: emit_many takes its seqs as one block of the sequence.
producer_script($bulk, <<'EOF');
WITH ins AS (INSERT INTO produced SELECT nextval('ids') FROM generate_series(1, 40) RETURNING id)
SELECT cardinality(event_bus.emit_many('t', 'E', array_agg(jsonb_build_object('id', id) ORDER BY id),
                                       array_agg((id % 50)::text ORDER BY id))) FROM ins;
EOF
open my $fh, '>', $consumer or die;
print $fh <<'EOF';
BEGIN;
CREATE TEMP TABLE IF NOT EXISTS batch (seq bigint, id bigint, attempt int, token uuid);
TRUNCATE batch;
INSERT INTO batch SELECT seq, (payload->>'id')::bigint, attempt, lease_token FROM event_bus.claim('s', 20);
SELECT event_bus.ack('s', ARRAY(SELECT seq FROM batch));
INSERT INTO consumed SELECT id, seq, attempt, token FROM batch;
COMMIT;
EOF
close $fh;
# A consumer that claims and never acks: its leases must expire.
open $fh, '>', $abandoner or die;
print $fh "SELECT count(*) FROM event_bus.claim('s', 3);\n";
close $fh;

sub load
{
	my $seconds = shift;
	my @common = ('pgbench', '-n', '-T', $seconds);
	my $db = $node->connstr('postgres');
	my @h;
	push @h, IPC::Run::start([ @common, '-c', '3', '-f', $producer, "$db application_name=producer" ],
		'>', \my $o1, '2>', \my $e1);
	push @h, IPC::Run::start([ @common, '-c', '1', '-f', $bulk, "$db application_name=producer" ],
		'>', \my $o4, '2>', \my $e4);
	push @h, IPC::Run::start([ @common, '-c', '2', '-f', $consumer, $db ], '>', \my $o2, '2>', \my $e2);
	push @h, IPC::Run::start([ @common, '-c', '1', '-R', '5', '-f', $abandoner, $db ], '>', \my $o3, '2>', \my $e3);
	return @h;
}

# Drain with transactional consumers until nothing is pending, in flight or
# waiting for a retry.
sub drain
{
	my $rounds = 0;
	while ($rounds++ < 200)
	{
		$node->safe_psql('postgres', q{
			BEGIN;
			CREATE TEMP TABLE batch (seq bigint, id bigint, attempt int, token uuid);
			INSERT INTO batch SELECT seq, (payload->>'id')::bigint, attempt, lease_token
			  FROM event_bus.claim('s', 1000, wait => '1 second');
			SELECT event_bus.ack('s', ARRAY(SELECT seq FROM batch));
			INSERT INTO consumed SELECT id, seq, attempt, token FROM batch;
			COMMIT;
		});
		last if $node->safe_psql('postgres', q{
			SELECT pending = 0 AND in_flight = 0 AND retrying = 0
			  FROM event_bus.subscription_status WHERE subscription = 's'}) eq 't';
	}
}

sub check
{
	my $what = shift;
	my $r = $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM produced),
		       (SELECT count(*) FROM produced p WHERE NOT EXISTS (SELECT FROM consumed c WHERE c.id = p.id)),
		       (SELECT count(*) FROM consumed c WHERE NOT EXISTS (SELECT FROM produced p WHERE p.id = c.id)),
		       (SELECT count(*) FROM (SELECT id FROM consumed GROUP BY id HAVING count(*) > 1) d),
		       (SELECT count(*) FROM consumed WHERE attempt > 1)});
	my ($produced, $lost, $phantom, $dups, $redelivered) = split /\|/, $r;
	is($node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT seq) FROM event_bus.events'), '0',
		"$what: no seq was handed out twice");
	note "$what: committed=$produced lost=$lost phantom=$phantom processed_twice=$dups redelivered=$redelivered";
	ok($produced > 100, "$what: events were committed under load");
	is($lost, '0', "$what: every committed event was delivered");
	is($phantom, '0', "$what: no event of an aborted transaction was delivered");
	is($dups, '0', "$what: claim and ack in one transaction processed nothing twice")
	  or diag($node->safe_psql('postgres', q{
		SELECT string_agg(format('id %s seq %s attempt %s token %s xid %s at %s', id, seq, attempt, token, xid, at),
		                  E'\n' ORDER BY id, at)
		  FROM consumed WHERE id IN (SELECT id FROM consumed GROUP BY id HAVING count(*) > 1)}));
	return $redelivered;
}

# --- SIGKILL of a backend under load -----------------------------------------
my @h = load(8);
sleep 4;
# A producer's backend, in the middle of its work.
my $victim = '';
for (my $i = 0; $i < 300 && $victim eq ''; $i++)
{
	$victim = $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity
		 WHERE application_name = 'producer' AND state <> 'idle' LIMIT 1});
	usleep(20_000) if $victim eq '';
}
ok($victim ne '', 'found a producer backend to kill');
kill 'KILL', $victim;
$_->finish for @h;
ok($node->poll_query_until('postgres', 'SELECT 1', '1'), 'the server restarted after the crash');
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'the crash was a real one');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM event_bus.worker_status WHERE state = 'running'"),
	'the worker is back after the crash');
drain();
my $redelivered = check('after SIGKILL');
ok($redelivered > 0, 'leases stranded by the crash were redelivered with a higher attempt');

# --- Immediate shutdown under load --------------------------------------------
@h = load(8);
sleep 4;
$node->stop('immediate');
$_->finish for @h;
$node->start;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM event_bus.worker_status WHERE state = 'running'"),
	'the worker is back after an immediate shutdown');
drain();
check('after immediate shutdown');
is($node->safe_psql('postgres', 'SELECT count(*) FROM event_bus.leases'), '0', 'no lease is left');

$node->stop;
done_testing();
