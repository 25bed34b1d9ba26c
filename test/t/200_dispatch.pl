# Dispatch from commit reports (dispatch.c): the worker notifies listeners
# from what emitting commits report, without querying the log.  The payloads
# must say exactly what a count from the log would: per subscription, its
# topics and types only, nothing rolled back, paused subscriptions silent,
# new subscriptions seen at once; and when reports were lost (the worker
# stopped while more than the ring holds was committed) the worker counts
# from the log instead, so no event goes unannounced - if anybody listens.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dispatch');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_bus'
event_bus.naptime = '200ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE bus');
$node->safe_psql('bus', q{
	CREATE EXTENSION event_bus;
	SELECT event_bus.create_topic('t', 4);
	SELECT event_bus.create_topic('u', 4);
	SELECT event_bus.subscribe('s1', ARRAY['t']);
	SELECT event_bus.subscribe('s2', ARRAY['t', 'u'], types => ARRAY['A']);
	SELECT event_bus.subscribe('s3', ARRAY['u'], backoff_base => '0');
});
ok($node->poll_query_until('bus', q{SELECT rounds > 0 FROM event_bus.worker_status WHERE datname = 'bus'}),
	'the worker runs');

my $listener = $node->background_psql('bus');
$listener->query_safe('LISTEN "event_bus.s1"; LISTEN "event_bus.s2"; LISTEN "event_bus.s3"; '
	  . 'LISTEN "event_bus.s4"; LISTEN "event_bus.dead_letters"');

# The notifications the listener received within $secs, as
# "channel payload" lines sorted by channel.
sub received
{
	my ($secs) = @_;
	$listener->{stderr} = '';
	my $out = $listener->query_safe("SELECT pg_sleep($secs)") . $listener->{stderr};
	my @got;
	while ($out =~ /Asynchronous notification "([^"]+)" with payload "(.*?)" received/g)
	{
		push @got, "$1 $2";
	}
	return join("\n", sort @got);
}

sub payload
{
	my ($sub, $seq, $events) = @_;
	return qq{event_bus.$sub {"subscription" : "$sub", "seq" : $seq, "events" : $events, "retries" : 0}};
}

received(0.5);    # whatever the first round said

# One transaction: types, topics, emit_many, and a savepoint rolled back.
my $seqs = $node->safe_psql('bus', q{
	BEGIN;
	SELECT event_bus.emit('t', 'A', '{}');
	SELECT event_bus.emit('t', 'B', '{}');
	SELECT max(s) FROM unnest(event_bus.emit_many('u', 'A', ARRAY['{}', '{}']::jsonb[])) s;
	SAVEPOINT x;
	SELECT event_bus.emit('t', 'A', '{}');
	SELECT event_bus.emit('u', 'A', '{}');
	ROLLBACK TO x;
	SELECT event_bus.emit('u', 'C', '{}');
	COMMIT;
});
my @seqs = split /\n/, $seqs;
my ($tb, $ua, $uc) = @seqs[1, 2, -1];
is(received(1),
	join("\n", payload('s1', $tb, 2), payload('s2', $ua, 3), payload('s3', $uc, 3)),
	'each subscription is told its own events: topics, types, emit_many, not the rolled-back savepoint');

# Rolled back: nothing.  Paused: silent.
$node->safe_psql('bus', q{
	BEGIN; SELECT event_bus.emit('t', 'A', '{}'); ROLLBACK;
	SELECT event_bus.pause('s1');
});
my $seq = $node->safe_psql('bus', q{SELECT event_bus.emit('t', 'A', '{}')});
is(received(1), payload('s2', $seq, 1), 'nothing for a rolled-back emit, nothing for a paused subscription');
$node->safe_psql('bus', q{SELECT event_bus.resume('s1')});
$seq = $node->safe_psql('bus', q{SELECT event_bus.emit('t', 'B', '{}')});
is(received(1), payload('s1', $seq, 1), 'a resumed subscription is told again');

# A subscription created while the worker runs is told at once.
$node->safe_psql('bus', q{SELECT event_bus.subscribe('s4', ARRAY['t'], types => ARRAY['D'])});
$seq = $node->safe_psql('bus', q{SELECT event_bus.emit('t', 'D', '{}')});
is(received(1), join("\n", payload('s1', $seq, 1), payload('s4', $seq, 1)),
	'a new subscription is notified for the first event after it');

# A retry that becomes due, and a dead letter.
$node->safe_psql('bus', q{
	SELECT event_bus.ack('s3', ARRAY(SELECT seq FROM event_bus.claim('s3', 100)));
	SELECT event_bus.ack('s2', ARRAY(SELECT seq FROM event_bus.claim('s2', 100)));
});
$seq = $node->safe_psql('bus', q{SELECT event_bus.emit('u', 'E', '{}')});
received(1);
$node->safe_psql('bus', q{SELECT event_bus.fail('s3', seq, 'boom', retry_in => '0') FROM event_bus.claim('s3', 1)});
like(received(1), qr/^event_bus.s3 \{"subscription" : "s3", "seq" : \d+, "events" : 0, "retries" : 1\}$/,
	'a retry that is due at once is announced');
$node->safe_psql('bus', q{SELECT event_bus.dead_letter('s3', seq, 'no') FROM event_bus.claim('s3', 1)});
is(received(1), 'event_bus.dead_letters {"subscription" : "s3", "events" : 1}', 'a dead letter is announced');

# Reports lost: the worker stopped while 1,500 transactions committed (the
# ring holds 1,024).  It counts from the log instead.
my $pid = $node->safe_psql('bus', q{SELECT pid FROM event_bus.worker_status WHERE datname = 'bus'});
kill 'STOP', $pid;
$node->pgbench('--no-vacuum --client=2 --transactions=750', 0, [qr{processed: 1500/1500}], [qr{^$}],
	'1,500 emitting commits while the worker is stopped',
	{ '200_emit' => "SELECT event_bus.emit('u', 'Z', '{}');\n" }, 'bus');
$seq = $node->safe_psql('bus', q{SELECT max(seq) FROM event_bus.events});
kill 'CONT', $pid;
is(received(2), payload('s3', $seq, 1500), 'after lost reports, one notification counts all 1,500 events');
$seq = $node->safe_psql('bus', q{SELECT event_bus.emit('u', 'Z', '{}')});
is(received(1), payload('s3', $seq, 1), 'and the next commit is reported as usual');
is($node->safe_psql('bus', q{SELECT pid FROM event_bus.worker_status WHERE datname = 'bus'}), $pid,
	'the same worker throughout');
is($node->safe_psql('bus', q{SELECT last_error FROM event_bus.worker_status WHERE datname = 'bus'}), '',
	'no round of the worker failed');
$listener->quit;

# Without a listener, lost reports are not counted from the log (as costly
# as the emits were many): nobody is owed a notification for them, and the
# worker sends none.  A session that LISTENs afterwards hears of what
# commits after it.
ok($node->poll_query_until('bus', q{SELECT count(*) = 0 FROM pg_stat_activity
	WHERE datname = 'bus' AND backend_type = 'client backend' AND pid <> pg_backend_pid()}),
	'the listener has gone');
my ($rounds, $sent) = split /\|/, $node->safe_psql('bus',
	q{SELECT rounds, notifications FROM event_bus.worker_status WHERE datname = 'bus'});
kill 'STOP', $pid;
$node->pgbench('--no-vacuum --client=2 --transactions=750', 0, [qr{processed: 1500/1500}], [qr{^$}],
	'1,500 emitting commits while the worker is stopped and nobody listens',
	{ '200_emit_unheard' => "SELECT event_bus.emit('u', 'Z', '{}');\n" }, 'bus');
kill 'CONT', $pid;
ok($node->poll_query_until('bus', qq{SELECT rounds > $rounds + 2 FROM event_bus.worker_status WHERE datname = 'bus'}),
	'the worker runs again');
is($node->safe_psql('bus', q{SELECT notifications FROM event_bus.worker_status WHERE datname = 'bus'}), $sent,
	'and sends no notification for the lost reports');
$listener = $node->background_psql('bus');
$listener->query_safe('LISTEN "event_bus.s3"');
is(received(0.5), '', 'a new listener is told nothing of them');
$seq = $node->safe_psql('bus', q{SELECT event_bus.emit('u', 'Z', '{}')});
is(received(1), payload('s3', $seq, 1), 'but of what commits after it');
$listener->quit;

# A database still on 1.0 is dispatched from the log, and once updated to
# 1.1 while its worker runs, from the reports: notifications go on throughout.
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', q{
	CREATE EXTENSION event_bus VERSION '1.0';
	SELECT event_bus.create_topic('t', 2);
	SELECT event_bus.subscribe('s1', ARRAY['t']);
});
ok($node->poll_query_until('bus', q{SELECT rounds > 0 FROM event_bus.worker_status WHERE datname = 'old'}),
	'a worker for the 1.0 database');
$listener = $node->background_psql('old');
$listener->query_safe('LISTEN "event_bus.s1"');
received(0.5);
$seq = $node->safe_psql('old', q{SELECT event_bus.emit('t', 'A', '{}')});
is(received(1), qq{event_bus.s1 {"subscription" : "s1", "seq" : $seq, "events" : 1}},
	'on 1.0, notified from the log (with the payload of 1.0)');
my $old_seq = $seq;
$node->safe_psql('old', q{ALTER EXTENSION event_bus UPDATE});
received(0.5);
$seq = $node->safe_psql('old', q{SELECT event_bus.emit('t', 'A', '{}')});
# The worker turns to the reports at its next maintenance job, with a round
# from the log that counts what each subscription has not been handed yet;
# until then its rounds count from the log too.  So s1 may hear of the
# event of 1.0 again (when is a matter of timing) and of the new one with
# the old one counted in: the new one must be heard of, in 1.1's payload.
my $heard = '';
for (my $i = 0; $i < 20 && $heard !~ /"seq" : $seq,/; $i++)
{
	$heard .= received(0.5) . "\n";
}
like($heard, qr/^\Qevent_bus.s1 {"subscription" : "s1", "seq" : $seq, "events" : \E[12]\Q, "retries" : 0}\E$/m,
	'updated to 1.1 while the worker runs, still notified');
unlike($heard, qr/"seq" : (?!$old_seq,|$seq,)/, 'and of nothing else');
$listener->quit;

$node->stop;
done_testing();
