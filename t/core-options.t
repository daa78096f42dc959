# Constructor options of Twiggy::Server: the listen forms ("host:port", ":port", several at
# once), backlog, no_delay, read_chunk_size, and timeout (a client that stops in the middle of a
# request is dropped after it).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::MD5 qw(md5_hex);
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    if ($env->{PATH_INFO} eq '/slow') {
        return sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer(1.5, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ['slow but complete'] ]);
            });
        };
    }
    if ($env->{PATH_INFO} eq '/pauses') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            my $count = 0;
            my $timer;
            $timer = AE::timer(0.7, 0.7, sub {
                $writer->write('tick' . ++$count . ';');
                return if $count < 2;
                undef $timer;
                $writer->close;
            });
        };
    }
    my $body = '';
    while ($env->{'psgi.input'}->read(my $buffer, 65536)) { $body .= $buffer }
    return [ 200, [ 'Content-Type' => 'text/plain' ],
        [ "$env->{PATH_INFO} port=$env->{SERVER_PORT} length=" . length($body) . ' md5=' . md5_hex($body) ] ];
};
my $empty_md5 = md5_hex('');

subtest 'two host:port listeners' => sub {
    my ($first, $second) = (empty_port(), empty_port());
    for (1 .. 20) { last if $second != $first; $second = empty_port() }
    my $server = start_server(app => $app, listen => [ "127.0.0.1:$first", "127.0.0.1:$second" ],
        port => $first);
    ok($server->wait_ready(port => $second), 'second listener accepts');
    for my $port ($first, $second) {
        my $res = simple_request($port, request_bytes(GET => '/two'));
        response_is($res, 200, "/two port=$port length=0 md5=$empty_md5", "served on port $port");
    }
    $server->stop;
};

subtest ':port listens on all addresses' => sub {
    my $port = empty_port();
    my $server = start_server(app => $app, listen => [":$port"], port => $port);
    my $res = simple_request($port, request_bytes(GET => '/any'));
    response_is($res, 200, "/any port=$port length=0 md5=$empty_md5", 'served via 127.0.0.1');
    $server->stop;
};

subtest 'backlog, no_delay, read_chunk_size' => sub {
    my $server = start_server(app => $app, backlog => 16, no_delay => 1, read_chunk_size => 1024, timeout => 300);
    my $port = $server->port;
    my $data = join '', map { chr(($_ * 31) % 256) } 1 .. 300_000;
    my $client = client($port);
    $client->send(request_bytes(POST => '/upload', 'HTTP/1.1', [ 'Content-Length: ' . length $data ], $data));
    response_is($client->read_response, 200, "/upload port=$port length=300000 md5=" . md5_hex($data),
        'body read in small chunks arrives whole');
    my @clients = map { client($port) } 1 .. 40;
    $_->send(request_bytes(GET => '/many')) for @clients;
    my $good = grep { my $res = $_->read_response; $res->ok && $res->status == 200 } @clients;
    is($good, 40, '40 simultaneous connections with backlog 16');
    $server->stop;
};

subtest 'timeout drops a client that stops mid-request, and only such a client' => sub {
    my $server = start_server(app => $app, timeout => 0.5);
    my $port = $server->port;
    my $client = client(port => $port, timeout => 10);
    $client->send("GET /stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Unfinished: ");
    my $data = $client->read_until_close(10);
    ok($client->eof, 'server closed the stalled connection');
    ok($data eq '' || $data =~ m{\AHTTP/1\.[01] 408 }, 'with no bytes or a 408 response')
        or diag("got: $data");
    response_is(simple_request($port, request_bytes(GET => '/alive')), 200, undef, 'server still serves');

    # The timeout covers receiving a request, not the app's time to answer it.
    my $slow = client(port => $port, timeout => 10);
    $slow->send(request_bytes(GET => '/slow'));
    response_is($slow->read_response, 200, 'slow but complete', 'a delayed response slower than the timeout');
    my $paused = client(port => $port, timeout => 10);
    $paused->send(request_bytes(GET => '/pauses'));
    response_is($paused->read_response, 200, 'tick1;tick2;', 'a streamed response with pauses longer than the timeout');
    $server->stop;
};

done_testing;
