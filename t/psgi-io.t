# psgix.io takeover: inside a delayed response the app gets the client socket (as psgix.io and
# as the responder's second argument), writes its own raw bytes and never calls the responder.
# The client sees exactly the app's bytes, and both sides keep talking over the socket; the
# server adds nothing and reads nothing of its own from it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Errno ();
use TwiggyTest;

safety_alarm(60);

our %taken;    # sockets the app has taken over, kept alive here

my $upgrade_head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: line-echo\r\nConnection: Upgrade\r\n";
my $raw_response = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Raw: written by the app\r\n\r\nraw body from the app";

sub line_echo {
    my ($io, $key) = @_;
    my $buffer = '';
    my $watcher;
    my $finish = sub { undef $watcher; delete $taken{$key}; close $io };
    $watcher = AE::io($io, 0, sub {
        my $read = sysread($io, $buffer, 4096, length $buffer);
        if (!defined $read) {
            return if $! == Errno::EAGAIN || $! == Errno::EINTR;
            return $finish->();
        }
        return $finish->() if $read == 0;
        while ($buffer =~ s/\A([^\n]*)\n//) {
            my $line = $1;
            if ($line eq 'bye') {
                syswrite($io, "bye\n");
                return $finish->();
            }
            syswrite($io, "echo: $line\n");
        }
    });
    $taken{$key} = [ $io, \$watcher ];
    return;
}

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    my $io = $env->{'psgix.io'};
    if ($path eq '/upgrade') {
        return sub {
            my ($responder, $socket) = @_;
            my $same = defined $socket && defined fileno($socket) && fileno($socket) == fileno($io) ? 'yes' : 'no';
            syswrite($io, $upgrade_head . "X-Second-Argument-Is-The-Socket: $same\r\n\r\n");
            line_echo($io, "$io");
        };
    }
    if ($path eq '/raw') {
        return sub {
            my ($responder, $socket) = @_;
            syswrite($socket || $io, $raw_response);
            close($socket || $io);
        };
    }
    if ($path eq '/upgrade-in-app') {
        syswrite($io, $upgrade_head . "\r\n");
        line_echo($io, "$io");
        return sub { };    # never responds
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['normal'] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

sub talk {
    my ($client, $name) = @_;
    $client->send("ping\n");
    is($client->read_until("\n"), "echo: ping\n", "$name: one line echoed");
    $client->send("a\nb\n");
    is($client->read_until("b\n"), "echo: a\necho: b\n", "$name: two lines echoed");
    $client->send("par");
    select(undef, undef, undef, 0.05);
    $client->send("tial\n");
    is($client->read_until("\n"), "echo: partial\n", "$name: a line sent in two pieces");
    $client->send("bye\n");
    is($client->read_until("\n"), "bye\n", "$name: goodbye");
    ok($client->closed_without_more_data, "$name: app closed the socket, nothing else was sent")
        or diag('extra: ' . ($client->{extra} // ''));
}

subtest 'HTTP/1.1 upgrade inside a delayed response' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/upgrade', 'HTTP/1.1', [ 'Connection: Upgrade', 'Upgrade: line-echo' ]));
    my $head = $client->read_until("\r\n\r\n");
    is($head, $upgrade_head . "X-Second-Argument-Is-The-Socket: yes\r\n\r\n",
        "exactly the app's bytes; the responder's second argument is the client socket");
    talk($client, 'upgraded');
};

subtest 'HTTP/1.1 upgrade done in the app itself' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/upgrade-in-app', 'HTTP/1.1', [ 'Connection: Upgrade', 'Upgrade: line-echo' ]));
    is($client->read_until("\r\n\r\n"), $upgrade_head . "\r\n", "exactly the app's bytes");
    talk($client, 'upgraded in app');
};

for my $protocol ('HTTP/1.1', 'HTTP/1.0') {
    subtest "raw response written by the app ($protocol)" => sub {
        my $client = client($port);
        $client->send(request_bytes(GET => '/raw', $protocol));
        is($client->read_until_close, $raw_response, "exactly the app's bytes, then close");
        ok($client->eof, 'connection closed');
    };
}

subtest 'other clients are served meanwhile' => sub {
    my $upgraded = client($port);
    $upgraded->send(request_bytes(GET => '/upgrade'));
    ok(defined $upgraded->read_until("\r\n\r\n"), 'one client upgraded');
    response_is(simple_request($port, request_bytes(GET => '/plain')), 200, 'normal', 'another client');
    $upgraded->send("still here\n");
    is($upgraded->read_until("\n"), "echo: still here\n", 'upgraded client still talking');
    $upgraded->send("bye\n");
    is($upgraded->read_until("\n"), "bye\n", 'goodbye');
};

subtest 'the read timeout does not apply to a taken-over socket' => sub {
    my $strict = start_server(app => $app, timeout => 0.5);
    my $client = client($strict->port);
    $client->send(request_bytes(GET => '/upgrade'));
    ok(defined $client->read_until("\r\n\r\n"), 'upgraded');
    select(undef, undef, undef, 1.5);    # three times the server's timeout, idle
    talk($client, 'after idling');
    $strict->stop;
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
