# Client-gone notice for long-poll and server-push apps (issue 3, item 6; Twiggy::Server POD,
# on_client_close): Twiggy::Server::on_client_close($env, $cb) is called soon after the client
# of a pending delayed response disconnects (with a FIN or a RST), at once when the client is
# already gone, and never once the response is complete; a streaming writer's write returns
# false and its on_close callback runs once the client has left, so a timer-driven producer
# stops; $writer->poll_cb($cb) runs exactly once when the output has drained to the socket.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use TwiggyTest;

safety_alarm(60);

# What the app saw, per request id: event name => time (or count). Read back through /stats.
my %events;
my %held;    # id => responder of a pending delayed response, or a writer, or a timer

sub record { my ($id, $name, $value) = @_; $events{$id}{$name} = defined $value ? $value : Time::HiRes::time(); return }

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    my %query = map { split /=/, $_, 2 } grep { length } split /&/, $env->{QUERY_STRING} // '';
    my $id = $query{id} // 'none';

    if ($path eq '/stats') {
        my $stats = $events{$id} || {};
        return [ 200, [ 'Content-Type' => 'text/plain' ],
            [ join ' ', map { "$_=$stats->{$_}" } sort keys %$stats ] ];
    }
    if ($path eq '/hold') {
        # Long poll: keep the responder; register the notice now, or after `late` seconds.
        return sub {
            my $responder = shift;
            $held{$id} = $responder;
            record($id, 'started');
            my $register = sub {
                record($id, "registered_at");
                my $registered = Twiggy::Server::on_client_close($env, sub { record($id, 'gone') });
                record($id, 'registered', $registered ? 1 : 0);
            };
            if ($query{late}) {
                my $timer;
                $timer = AE::timer($query{late}, 0, sub { undef $timer; $register->() });
            } else {
                $register->();
            }
        };
    }
    if ($path eq '/release') {
        my $responder = delete $held{$id} or return [ 404, [], ["nothing held for $id"] ];
        $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ["released $id"] ]);
        record($id, 'released');
        return [ 200, [ 'Content-Type' => 'text/plain' ], ['ok'] ];
    }
    if ($path eq '/push') {
        # Server push: a tick every 50 ms until write says the client is gone (or on_close).
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            record($id, 'started');
            my $registered = $writer->on_close(sub { record($id, 'on_close') });
            record($id, 'registered', $registered ? 1 : 0);
            my ($ticks, $timer) = (0);
            $timer = AE::timer(0, 0.05, sub {
                $ticks++;
                record($id, 'writes', $ticks);
                if (!$writer->write("tick $ticks\n")) {
                    record($id, 'write_false');
                    undef $timer;
                    delete $held{$id};
                    return;
                }
                if ($ticks >= 400) {    # 20 s: the test has long given up
                    record($id, 'ran_out');
                    undef $timer;
                    $writer->close;
                    delete $held{$id};
                }
            });
            $held{$id} = \$timer;
        };
    }
    if ($path eq '/drain') {
        # One big write, then poll_cb: it must wait until the client has taken the data.
        my $size = $query{size} || 16 * 1024 * 1024;
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'application/octet-stream' ] ]);
            $writer->on_close(sub { record($id, 'on_close') });
            my $alive = $writer->write('d' x $size);
            record($id, 'first_write', $alive ? 1 : 0);
            my $calls = 0;
            $writer->poll_cb(sub {
                my ($w) = @_;
                $calls++;
                record($id, 'drained');
                record($id, 'drain_calls', $calls);
                my $ok = $w ? $w->write('END') : 0;
                record($id, 'write_after_drain', $ok ? 1 : 0);
                $w->close if $w;
                delete $held{$id};
            });
            $held{$id} = $writer;
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['hello'] ];
};

my $server = start_server(app => $app, stderr => 1);
my $port = $server->port;
my $next_id = 0;

sub stats {
    my ($id) = @_;
    my $res = simple_request($port, request_bytes(GET => "/stats?id=$id"));
    return {} unless $res->ok && $res->status == 200;
    return { map { split /=/, $_, 2 } split / /, $res->body };
}

# Waits (bounded) until the app has recorded $name for $id; returns the stats then.
sub wait_event {
    my ($id, $name, $timeout) = @_;
    my $stats;
    wait_until(sub { $stats = stats($id); defined $stats->{$name} }, $timeout);
    return $stats;
}

sub gone_within {
    my ($stats, $name, $since, $limit, $label) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok(defined $stats->{$name}, "$label: $name was called")
        or return diag('app events: ' . join(' ', map { "$_=$stats->{$_}" } sort keys %$stats));
    my $after = $stats->{$name} - $since;
    ok($after < scaled($limit), sprintf('%s: %s came %.2f s after the client left (limit %.1f s)',
        $label, $name, $after, scaled($limit)));
}

for my $how (qw(close abort)) {
    subtest "long poll: on_client_close runs when the client leaves ($how)" => sub {
        my $id = ++$next_id;
        my $client = client($port);
        $client->send(request_bytes(GET => "/hold?id=$id"));
        my $stats = wait_event($id, 'registered');
        is($stats->{registered}, 1, 'on_client_close returned true while the client is there');
        ok(!defined $stats->{gone}, 'not called while the client waits');
        my $left = Time::HiRes::time();
        $client->$how();
        $stats = wait_event($id, 'gone', 5);
        gone_within($stats, 'gone', $left, 2.5, $how);
    };
}

subtest 'long poll: registering after the client has gone calls back at once, returns false' => sub {
    my $id = ++$next_id;
    my $client = client($port);
    $client->send(request_bytes(GET => "/hold?id=$id&late=1.5"));
    wait_event($id, 'started');
    $client->abort;
    my $stats = wait_event($id, 'registered', 5);
    is($stats->{registered}, 0, 'on_client_close returned false');
    ok(defined $stats->{gone}, 'and called the callback');
    ok(defined $stats->{gone} && abs($stats->{gone} - ($stats->{registered_at} // $stats->{gone})) < 1,
        'at once');
};

subtest 'long poll: no notice once the response is complete' => sub {
    my $id = ++$next_id;
    my $client = client($port);
    $client->send(request_bytes(GET => "/hold?id=$id"));
    wait_event($id, 'registered');
    response_is(simple_request($port, request_bytes(GET => "/release?id=$id")), 200, 'ok', 'released');
    response_is($client->read_response, 200, "released $id", 'the held client got its answer');
    # The connection stays for keep-alive; a close now ends no response.
    $client->send(request_bytes(GET => '/hello'));
    response_is($client->read_response, 200, 'hello', 'next request on the same connection');
    $client->close;
    Time::HiRes::sleep(scaled(1.5));
    my $stats = stats($id);
    ok(!defined $stats->{gone}, 'on_client_close was not called')
        or diag('app events: ' . join(' ', map { "$_=$stats->{$_}" } sort keys %$stats));
};

for my $how (qw(close abort)) {
    subtest "server push: write returns false and on_close runs after the client leaves ($how)" => sub {
        my $id = ++$next_id;
        my $client = client($port);
        $client->send(request_bytes(GET => "/push?id=$id"));
        ok($client->wait_for("tick 3\n"), 'three ticks arrived');
        my $stats = stats($id);
        is($stats->{registered}, 1, 'writer->on_close returned true while the client is there');
        my $left = Time::HiRes::time();
        my $writes_then = stats($id)->{writes};
        $client->$how();
        $stats = wait_event($id, 'write_false', 5);
        gone_within($stats, 'write_false', $left, 2, "$how, write returned false");
        gone_within($stats, 'on_close', $left, 2, "$how, on_close");
        ok(!defined $stats->{ran_out}, 'the producer stopped instead of running out');
        my $writes_at_stop = $stats->{writes} // 0;
        Time::HiRes::sleep(0.3);
        is(stats($id)->{writes}, $writes_at_stop, 'no more writes after write returned false');
        note("writes after the client left: " . ($writes_at_stop - ($writes_then // 0)));
    };
}

subtest 'poll_cb waits for a reader, then runs once' => sub {
    my $id = ++$next_id;
    my $size = 8 * 1024 * 1024;
    # A small receive buffer, so that most of the 8 MB must wait in the server (whose send
    # buffer holds at most 4 MB by default).
    my $client = client(port => $port, timeout => 30, rcvbuf => 65536);
    $client->send(request_bytes(GET => "/drain?id=$id&size=$size"));
    my $stats = wait_event($id, 'first_write');
    is($stats->{first_write}, 1, 'the big write was accepted');
    Time::HiRes::sleep(1);    # reading nothing: 8 MB cannot all be in socket buffers
    $stats = stats($id);
    ok(!defined $stats->{drained}, 'poll_cb not called while the client reads nothing');
    my $res = $client->read_response;
    ok($res->ok && $res->status == 200, 'complete response') or diag($res->describe);
    is(length($res->body // ''), $size + 3, 'all the data and the end marker');
    is(substr($res->body // '', -3), 'END', 'the end marker written from poll_cb comes last');
    $stats = stats($id);
    is($stats->{drain_calls}, 1, 'poll_cb was called exactly once');
    is($stats->{write_after_drain}, 1, 'write in poll_cb returned true');
    ok(!defined $stats->{on_close}, 'on_close not called for a completed response');
};

subtest 'a pending poll_cb hears about a client that left' => sub {
    my $id = ++$next_id;
    my $client = client($port);
    $client->send(request_bytes(GET => "/drain?id=$id"));
    wait_event($id, 'first_write');
    ok($client->read_exact(100_000), 'response started');
    my $left = Time::HiRes::time();
    $client->abort;
    my $stats = wait_event($id, 'on_close', 5);
    gone_within($stats, 'on_close', $left, 2.5, 'abort while output waits');
    $stats = wait_event($id, 'drained', 2);
    ok(defined $stats->{drained}, 'poll_cb was called (the writer is told, not left waiting)')
        or diag('app events: ' . join(' ', map { "$_=$stats->{$_}" } sort keys %$stats));
    is($stats->{write_after_drain}, 0, 'and write then returns false') if defined $stats->{drained};
};

subtest 'still serving' => sub {
    response_is(simple_request($port, request_bytes(GET => '/hello')), 200, 'hello', 'hello');
    ok($server->is_running, 'server process still running');
    unlike($server->stderr // '', qr/panic|Segmentation|Twiggy: .*(?:died|error)/i, 'nothing alarming on STDERR')
        or diag($server->stderr);
};

$server->stop;
done_testing;
