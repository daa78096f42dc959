# Timeouts (issue 3, item 2; Twiggy POD, OPTIONS): read_timeout (alias timeout) bounds the time
# to receive a request head from its first byte, or from the accept for a connection's first
# request: too slow gives "408 Request Timeout" and a close (RFC 9110 section 15.5.9), nothing
# sent gives a quiet close; body_timeout bounds silence while a body arrives (408, close);
# keepalive_timeout closes an idle persistent connection quietly (RFC 9112 section 9.3);
# write_timeout cuts a client that reads nothing. 0 turns a timeout off. None of them applies
# to the app's own time. The core checks deadlines once a second, so each is allowed about a
# second of lateness (and every bound is scaled).
#
# All scenarios run at the same time, each on its own connection, driven by one select loop;
# each records what it received and when the server closed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Errno ();
use IO::Select;
use Time::HiRes ();
use File::Temp ();
use TwiggyTest qw(:DEFAULT perl_command start_command write_file);

safety_alarm(60);

my %app_calls;
my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    $app_calls{$path}++;
    if ($path eq '/calls') {
        my $calls = join ' ', map { "$_=$app_calls{$_}" } sort keys %app_calls;
        return [ 200, [ 'Content-Type' => 'text/plain' ], [$calls] ];
    }
    if ($path eq '/big') {
        return [ 200, [ 'Content-Type' => 'application/octet-stream' ], [ 'b' x (16 * 1024 * 1024) ] ];
    }
    if ($path eq '/delayed') {    # the app takes 3 s: longer than every timeout
        return sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer(3, 0, sub { undef $timer; $responder->([ 200, [], ['delayed'] ]) });
        };
    }
    if ($path eq '/pauses') {    # a streamed body with a 3 s pause
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('before;');
            my $timer;
            $timer = AE::timer(3, 0, sub { undef $timer; $writer->write('after'); $writer->close });
        };
    }
    my $body = '';
    while ($env->{'psgi.input'}->read(my $buffer, 65536)) { $body .= $buffer }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["$path got " . length $body] ];
};

my $strict = start_server(app => $app,
    read_timeout => 2, body_timeout => 2, keepalive_timeout => 4, write_timeout => 2);
my $alias = start_server(app => $app, timeout => 1);
my $off = start_server(app => $app,
    read_timeout => 0, body_timeout => 0, keepalive_timeout => 0, write_timeout => 0);

# The same options as twiggy --dashed-names (Plack::Runner turns them into option names).
my $dir = File::Temp->newdir('twiggy-XXXXXX', TMPDIR => 1);
write_file("$dir/app.psgi", <<'APP');
sub {
    my $env = shift;
    return [ 200, [], [ 'b' x (16 * 1024 * 1024) ] ] if $env->{PATH_INFO} eq '/big';
    return [ 200, [], ['cli'] ];
}
APP
my $cli_port = empty_port();
my $cli = start_command(port => $cli_port, command => perl_command('bin/twiggy', '--listen', "127.0.0.1:$cli_port",
    '--read-timeout', 1, '--body-timeout', 1, '--keepalive-timeout', 3, '--write-timeout', 1, "$dir/app.psgi"));

my $head = "GET /partial HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Unfinished: yes";
my $post_head = "POST /post HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n";

# Each scenario: port, steps ([seconds, bytes], ...), optional trickle ([bytes, seconds per
# byte]), rcvbuf, read_from (seconds: read nothing before), until (seconds, not scaled: stop watching;
# "still open" checks mean "still open then").
my @scenarios = (
    { name => 'silent connection',  port => $strict->port },
    { name => 'partial head',       port => $strict->port, steps => [ [ 0, $head ] ] },
    { name => 'trickled head',      port => $strict->port,
      trickle => [ "GET /trickle HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: " . ('t' x 200), 0.25 ] },
    { name => 'silent body',        port => $strict->port, steps => [ [ 0, sprintf($post_head, 100) . ('x' x 10) ] ] },
    { name => 'trickled body',      port => $strict->port, until => 8,
      steps => [ [ 0, sprintf($post_head, 16) ], map { [ 0.3 * $_, 'y' ] } 1 .. 16 ] },
    { name => 'idle keep-alive',    port => $strict->port, steps => [ [ 0, request_bytes(GET => '/first') ] ] },
    { name => 'keep-alive, then a partial head', port => $strict->port,
      steps => [ [ 0, request_bytes(GET => '/first') ], [ 0.5, $head ] ] },
    { name => 'keep-alive, then a body in two parts', port => $strict->port, until => 6,
      steps => [ [ 0, request_bytes(GET => '/first') ], [ 2.5, sprintf($post_head, 10) . 'aaaaa' ],
                 [ 3.5, 'bbbbb' ] ] },
    { name => 'keep-alive, then a body 1.2 s after 100 Continue', port => $strict->port, until => 6,
      steps => [ [ 0, request_bytes(GET => '/first') ],
                 [ 2.5, request_bytes(POST => '/post', 'HTTP/1.1', [ 'Content-Length: 5', 'Expect: 100-continue' ]) ],
                 [ 3.7, 'hello' ] ] },
    { name => 'reader that reads nothing', port => $strict->port, rcvbuf => 4096, read_from => 5,
      steps => [ [ 0, request_bytes(GET => '/big') ] ] },
    { name => 'app slower than the timeouts', port => $strict->port, until => 6,
      steps => [ [ 0, request_bytes(GET => '/delayed') ] ] },
    { name => 'stream pausing longer than the timeouts', port => $strict->port, until => 6,
      steps => [ [ 0, request_bytes(GET => '/pauses') ] ] },
    { name => 'timeout alias: partial head', port => $alias->port, steps => [ [ 0, $head ] ] },
    { name => 'timeout alias: silent connection', port => $alias->port },
    { name => 'cli: partial head',    port => $cli->port, steps => [ [ 0, $head ] ] },
    { name => 'cli: silent body',     port => $cli->port, steps => [ [ 0, sprintf($post_head, 100) . ('x' x 10) ] ] },
    { name => 'cli: idle keep-alive', port => $cli->port, steps => [ [ 0, request_bytes(GET => '/first') ] ] },
    { name => 'cli: reader that reads nothing', port => $cli->port, rcvbuf => 4096, read_from => 5,
      steps => [ [ 0, request_bytes(GET => '/big') ] ] },
    { name => 'all off: silent connection', port => $off->port, until => 6 },
    { name => 'all off: partial head',      port => $off->port, until => 6, steps => [ [ 0, $head ] ] },
    { name => 'all off: silent body',       port => $off->port, until => 6,
      steps => [ [ 0, sprintf($post_head, 100) . ('x' x 10) ] ] },
    { name => 'all off: idle keep-alive',   port => $off->port, until => 6,
      steps => [ [ 0, request_bytes(GET => '/first') ] ] },
);

run_scenarios(\@scenarios, 12);
my %by_name = map { $_->{name} => $_ } @scenarios;

my $late = scaled(2.5);    # a deadline checked once a second, plus scheduling slack

sub closed_between {
    my ($scenario, $from, $to) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $at = $scenario->{eof_at};
    ok(defined $at && $at >= $from && $at <= $to,
        sprintf('%s: closed between %.1f and %.1f s (at %s)', $scenario->{name}, $from, $to,
            defined $at ? sprintf('%.2f s', $at) : 'never'));
}

sub still_open {
    my ($scenario) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok(!defined $scenario->{eof_at}, "$scenario->{name}: still open after $scenario->{until} s")
        or diag(sprintf 'closed at %.2f s', $scenario->{eof_at});
}

# Parses the received bytes as a sequence of responses; returns them.
sub responses_of {
    my ($scenario) = @_;
    my $data = $scenario->{data};
    my @responses;
    while (length $data) {
        my $res = parse_response($data, eof => defined $scenario->{eof_at});
        push @responses, $res;
        last unless $res && $res->{complete};
        substr($data, 0, $res->{consumed}) = '';
    }
    return @responses;
}

sub is_408 {
    my ($res, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok($res && $res->ok && $res->status == 408, "$name: 408") or return diag($res ? $res->describe : 'no response');
    is($res->{reason}, 'Request Timeout', "$name: reason phrase");
    like($res->header('Connection') // '', qr/\Aclose\z/i, "$name: Connection: close");
}

subtest 'read_timeout: a connection that sends nothing is closed quietly' => sub {
    my $scenario = $by_name{'silent connection'};
    is($scenario->{data}, '', 'no bytes at all');
    closed_between($scenario, 1.9, 2 + $late);
};

subtest 'read_timeout: an unfinished head gets 408' => sub {
    my $scenario = $by_name{'partial head'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 1, 'one response');
    is_408($responses[0], 'partial head');
    closed_between($scenario, 1.9, 2 + $late);
};

subtest 'read_timeout counts from the first byte, not from the last' => sub {
    my $scenario = $by_name{'trickled head'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 1, 'one response');
    is_408($responses[0], 'a head trickled at 4 bytes a second');
    my $at = $scenario->{first_data_at};
    ok(defined $at && $at >= 1.9 && $at <= 2 + $late, sprintf('408 after %s s', $at // 'never'));
    ok(defined $scenario->{eof_at}, 'then closed');
    note("trickled bytes sent: $scenario->{trickled}");
};

subtest 'body_timeout: a body that stops arriving gets 408' => sub {
    my $scenario = $by_name{'silent body'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 1, 'one response');
    is_408($responses[0], 'silent body');
    closed_between($scenario, 1.9, 2 + $late);
};

subtest 'body_timeout counts silence, not the whole body' => sub {
    my $scenario = $by_name{'trickled body'};
    my @responses = responses_of($scenario);
    ok(@responses && $responses[0]->ok && $responses[0]->status == 200,
        '16 bytes over 4.8 s, never 2 s of silence: 200') or diag($responses[0] ? $responses[0]->describe : 'nothing');
    is($responses[0] && $responses[0]->body, '/post got 16', 'the app got the whole body');
};

subtest 'keepalive_timeout: an idle persistent connection is closed quietly' => sub {
    my $scenario = $by_name{'idle keep-alive'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 1, 'exactly one response, nothing after it');
    ok($responses[0] && $responses[0]->ok && $responses[0]->status == 200, 'the request was answered');
    closed_between($scenario, 3.9, 4 + $late);
};

subtest 'read_timeout applies to the next request on a kept-alive connection' => sub {
    my $scenario = $by_name{'keep-alive, then a partial head'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 2, 'two responses');
    ok($responses[0] && $responses[0]->ok && $responses[0]->status == 200, 'first request answered');
    is_408($responses[1], 'partial second head');
    closed_between($scenario, 2.4, 2.5 + $late);
};

subtest 'body_timeout counts from the body, not from an earlier idle time' => sub {
    # The second request's head and first body bytes come in one packet 2.5 s after the first
    # request (longer than body_timeout, shorter than keepalive_timeout); the rest follows 1 s
    # later. No silence inside the body reaches 2 s.
    my $scenario = $by_name{'keep-alive, then a body in two parts'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 2, 'two responses') or diag(map { ($_ ? $_->describe : 'undef') . "\n" } @responses);
    ok($responses[0] && $responses[0]->ok && $responses[0]->status == 200, 'first request answered');
    ok($responses[1] && $responses[1]->ok && $responses[1]->status == 200, 'second request: 200, not 408')
        or diag($responses[1] ? $responses[1]->describe : 'no second response');
    is($responses[1] && $responses[1]->body, '/post got 10', 'the app got the whole body');

    # The same with a head alone (Expect: 100-continue) and the body 1.2 s after the 100.
    $scenario = $by_name{'keep-alive, then a body 1.2 s after 100 Continue'};
    @responses = responses_of($scenario);
    my @statuses = map { $_ ? $_->status : 'none' } @responses;
    is("@statuses", '200 100 200', 'after 100 Continue: 200, not 408')
        or diag(map { ($_ ? $_->describe : 'undef') . "\n" } @responses);
    is($responses[2] && $responses[2]->body, '/post got 5', 'the app got the body');
};

subtest 'write_timeout: a client that reads nothing is cut' => sub {
    my $scenario = $by_name{'reader that reads nothing'};
    my @responses = responses_of($scenario);
    ok(defined $scenario->{eof_at}, 'the connection was closed');
    is($responses[0] && $responses[0]->status, 200, 'the response had started');
    ok($responses[0] && !$responses[0]{complete}, 'but was cut short');
    cmp_ok(length($responses[0] ? $responses[0]->body // '' : ''), '<', 16 * 1024 * 1024, 'not all 16 MB arrived');
};

subtest 'timeouts do not cover the app' => sub {
    for my $name ('app slower than the timeouts', 'stream pausing longer than the timeouts') {
        my $scenario = $by_name{$name};
        my @responses = responses_of($scenario);
        ok(@responses && $responses[0]->ok && $responses[0]->status == 200, "$name: complete 200")
            or diag($responses[0] ? $responses[0]->describe : 'nothing');
        is($responses[0] && $responses[0]->body, $name =~ /stream/ ? 'before;after' : 'delayed', "$name: body");
        still_open($scenario);
    }
};

subtest 'timeout is an alias of read_timeout' => sub {
    my $scenario = $by_name{'timeout alias: partial head'};
    my @responses = responses_of($scenario);
    is_408($responses[0], 'timeout => 1, partial head');
    closed_between($scenario, 0.9, 1 + $late);
    $scenario = $by_name{'timeout alias: silent connection'};
    is($scenario->{data}, '', 'timeout => 1, silent connection: no bytes');
    closed_between($scenario, 0.9, 1 + $late);
};

subtest 'twiggy --read-timeout 1 --body-timeout 1 --keepalive-timeout 3 --write-timeout 1' => sub {
    my $scenario = $by_name{'cli: partial head'};
    is_408((responses_of($scenario))[0], 'partial head');
    closed_between($scenario, 0.9, 1 + $late);
    $scenario = $by_name{'cli: silent body'};
    is_408((responses_of($scenario))[0], 'silent body');
    closed_between($scenario, 0.9, 1 + $late);
    $scenario = $by_name{'cli: idle keep-alive'};
    is(scalar(my @responses = responses_of($scenario)), 1, 'idle keep-alive: one response, nothing after it');
    closed_between($scenario, 2.9, 3 + $late);
    $scenario = $by_name{'cli: reader that reads nothing'};
    my ($res) = responses_of($scenario);
    ok(defined $scenario->{eof_at} && $res && $res->status == 200 && !$res->{complete},
        'a reader that reads nothing is cut');
};

subtest '0 turns the timeouts off' => sub {
    for my $name ('all off: silent connection', 'all off: partial head', 'all off: silent body') {
        my $scenario = $by_name{$name};
        is($scenario->{data}, '', "$name: nothing received");
        still_open($scenario);
    }
    my $scenario = $by_name{'all off: idle keep-alive'};
    my @responses = responses_of($scenario);
    is(scalar @responses, 1, 'idle keep-alive: one response');
    still_open($scenario);
};

subtest 'the app saw only the requests that completed' => sub {
    my $res = simple_request($strict->port, request_bytes(GET => '/calls'));
    my %calls = map { split /=/ } split / /, ($res->body // '');
    ok(!$calls{'/partial'} && !$calls{'/trickle'}, 'no call for an unfinished head');
};

for my $server ($strict, $alias, $off, $cli) {
    ok($server->is_running, 'server ' . $server->port . ' still running');
    $server->stop;
}
done_testing;

# Runs every scenario at once until each has seen the server close (or passed its `until`), or
# $limit seconds (scaled) pass. Fills in: data, eof_at, first_data_at (seconds from the start).
sub run_scenarios {
    my ($scenarios, $limit) = @_;
    for my $scenario (@$scenarios) {
        my $client = client(port => $scenario->{port}, rcvbuf => $scenario->{rcvbuf});
        die "cannot connect for $scenario->{name}" unless $client->connected;
        $client->socket->blocking(0);
        @$scenario{qw(client data step trickled)} = ($client, '', 0, 0);
    }
    my $start = Time::HiRes::time();
    my $stop = $start + scaled($limit);
    while (1) {
        my $now = Time::HiRes::time();
        my $elapsed = $now - $start;
        my @watching = grep { !defined $_->{eof_at} && $elapsed < ($_->{until} // scaled($limit)) } @$scenarios;
        last if !@watching || $now > $stop;
        for my $scenario (@watching) {
            my $socket = $scenario->{client}->socket;
            next if $scenario->{send_failed};
            my $steps = $scenario->{steps} || [];
            while ($scenario->{step} < @$steps && $steps->[ $scenario->{step} ][0] <= $elapsed) {
                my $bytes = $steps->[ $scenario->{step}++ ][1];
                my $sent = syswrite($socket, $bytes);
                $scenario->{send_failed} = 1 unless defined $sent && $sent == length $bytes;
            }
            if (my $trickle = $scenario->{trickle}) {
                my ($bytes, $interval) = @$trickle;
                if ($scenario->{trickled} < length $bytes && $scenario->{trickled} * $interval <= $elapsed) {
                    my $sent = syswrite($socket, substr($bytes, $scenario->{trickled}, 1));
                    if (defined $sent && $sent == 1) { $scenario->{trickled}++ } else { $scenario->{send_failed} = 1 }
                }
            }
        }
        my @readers = grep { $elapsed >= scaled($_->{read_from} // 0) } @watching;
        my $select = IO::Select->new(map { $_->{client}->socket } @readers);
        my %scenario_of = map { fileno($_->{client}->socket) => $_ } @readers;
        for my $socket ($select->count ? $select->can_read(0.01) : ()) {
            my $scenario = $scenario_of{ fileno $socket };
            my $read = sysread($socket, $scenario->{data}, 262144, length $scenario->{data});
            next if !defined $read && ($! == Errno::EAGAIN || $! == Errno::EINTR);
            my $at = Time::HiRes::time() - $start;
            $scenario->{first_data_at} //= $at if $read;
            $scenario->{eof_at} = $at if !$read;
            $scenario->{reset} = 1 if !defined $read;
        }
        Time::HiRes::sleep(0.01) unless $select->count;
    }
    $_->{client}->close for @$scenarios;
    return;
}
