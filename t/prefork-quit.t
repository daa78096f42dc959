# QUIT to the master: the listeners close, every worker finishes the requests it has in
# progress (a 2-second delayed response and a streaming one), idle keep-alive connections are
# closed, and the master exits when the last worker has. With graceful_timeout, workers still
# busy after it are killed and their connections cut.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use IO::Socket::INET;
use Time::HiRes ();
use TwiggyTest;
use TwiggyTest qw(child_pids write_file refuses_connections);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path =~ m{\A/delayed/(\d+)\z}) {
        my $seconds = $1;
        write_file("$dir/started-delayed-$seconds", $$);
        return sub {
            my $responder = shift;
            my $timer; $timer = AE::timer($seconds, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ["delayed $seconds done"] ]);
            });
        };
    }
    if ($path eq '/stream') {
        write_file("$dir/started-stream", $$);
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            my $count = 0;
            my $timer; $timer = AE::timer(0.5, 0.5, sub {
                $writer->write('chunk ' . ++$count . "\n");
                if ($count == 4) { undef $timer; $writer->close }
            });
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["pid=$$"] ];
};

sub start {
    my (%options) = @_;
    return start_server(app => $app, class => 'Twiggy::Prefork::Server', stderr => 1,
        max_workers => 2, graceful_term => 0, %options);
}


subtest 'QUIT drains delayed and streaming responses' => sub {
    my $server = start();
    my $port = $server->port;
    my @workers;
    ok(wait_until(sub { @workers = child_pids($server->pid); @workers == 2 }), 'two workers');

    my $idle = client($port);
    $idle->send(request_bytes(GET => '/'));
    response_is($idle->read_response, 200, undef, 'a keep-alive connection, left idle');

    my $delayed = client($port);
    $delayed->send(request_bytes(GET => '/delayed/2'));
    my $stream = client($port);
    $stream->send(request_bytes(GET => '/stream'));
    ok(wait_until(sub { -e "$dir/started-delayed-2" && -e "$dir/started-stream" }), 'both requests are in progress');

    my $started = Time::HiRes::time();
    ok($server->signal('QUIT'), 'QUIT to the master');
    ok(refuses_connections($port), 'new connections are refused');
    ok($idle->closed_without_more_data(3), 'the idle keep-alive connection is closed');

    response_is($delayed->read_response(timeout => 5), 200, 'delayed 2 done', 'the delayed response');
    my $res = $stream->read_response(timeout => 5);
    response_is($res, 200, join('', map { "chunk $_\n" } 1 .. 4), 'the streaming response');
    is($res->framing, 'chunked', 'chunked, and terminated') if $res->ok;
    $_->close for $delayed, $stream;    # or the worker lingers 2 s, waiting for our FIN

    is($server->wait_exit(5), 0, 'the master exits with status 0');
    cmp_ok(Time::HiRes::time() - $started, '>=', 1.5, 'after the requests were done');
    ok(!grep({ kill 0, $_ } @workers), 'the workers are gone');
    unlike($server->stderr, qr/killing/, 'no worker was killed') or diag($server->stderr);
};

subtest 'QUIT with graceful_timeout cuts what is still running' => sub {
    my $server = start(graceful_timeout => 1);
    my $port = $server->port;
    my $client = client($port);
    $client->send(request_bytes(GET => '/delayed/20'));
    ok(wait_until(sub { -e "$dir/started-delayed-20" }), 'a 20-second request is in progress');
    my @workers = child_pids($server->pid);
    my $started = Time::HiRes::time();
    ok($server->signal('QUIT'), 'QUIT to the master');
    my $res = $client->read_response(timeout => 5);
    ok(!$res->ok && $client->eof, 'the request is cut: the connection closes without an answer')
        or diag($res->describe);
    is($server->wait_exit(5), 0, 'the master exits with status 0');
    my $took = Time::HiRes::time() - $started;
    ok($took >= 0.9 && $took < scaled(4), 'after the graceful timeout of 1 s') or diag("took $took s");
    like($server->stderr, qr/did not finish within the graceful timeout \(1 s\); killing it/, 'the master says so');
    ok(wait_until(sub { !grep { kill 0, $_ } @workers }, 2), 'the workers are gone');
};

done_testing;
