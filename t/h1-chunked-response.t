# Streaming responses without a Content-Length (RFC 9112 section 6.3, 7.1): HTTP/1.1 clients
# get Transfer-Encoding: chunked ending with the 0-size chunk, and the connection stays usable;
# HTTP/1.0 clients get the raw body delimited by closing the connection. A Content-Length from
# the app is honoured instead of chunking, and array bodies get a computed Content-Length.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::MD5 qw(md5_hex);
use TwiggyTest;

safety_alarm(60);

our $held_writer;

my $big_piece = join '', map { chr(($_ * 13 + 5) % 256) } 0 .. 65535;

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path eq '/stream') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('Hello');
            $writer->write('');    # must not end the chunked body
            $writer->write(', ');
            $writer->write('World');
            $writer->close;
        };
    }
    if ($path eq '/stream-timed') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            my $count = 0;
            my $timer;
            $timer = AE::timer(0.02, 0.02, sub {
                $writer->write('t' . ++$count);
                if ($count == 4) {
                    undef $timer;
                    $writer->close;
                }
            });
        };
    }
    if ($path eq '/stream-length') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain', 'Content-Length' => 10 ] ]);
            $writer->write('12345');
            $writer->write('67890');
            $writer->close;
        };
    }
    if ($path eq '/stream-big') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'application/octet-stream' ] ]);
            $writer->write($big_piece) for 1 .. 24;
            $writer->close;
        };
    }
    if ($path eq '/hold') {
        return sub {
            $held_writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $held_writer->write('first;');
        };
    }
    if ($path eq '/release') {
        if ($held_writer) {
            $held_writer->write('second;');
            $held_writer->close;
            undef $held_writer;
            return [ 200, [ 'Content-Type' => 'text/plain' ], ['released'] ];
        }
        return [ 409, [ 'Content-Type' => 'text/plain' ], ['nothing held'] ];
    }
    if ($path eq '/array') {
        return [ 200, [ 'Content-Type' => 'text/plain' ], [ 'abc', '', 'defg' ] ];
    }
    if ($path eq '/delayed-array') {
        return sub { shift->([ 200, [ 'Content-Type' => 'text/plain' ], [ 'de', 'layed' ] ]) };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], [$path] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

subtest 'HTTP/1.1: streamed body is chunked' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream'));
    my $res = $client->read_response;
    response_is($res, 200, 'Hello, World', 'streamed response');
    is($res->framing, 'chunked', 'Transfer-Encoding: chunked');
    is($res->header('Transfer-Encoding'), 'chunked', 'Transfer-Encoding value is exactly chunked');
    is($res->header_count('Content-Length'), 0, 'no Content-Length with chunked');
    ok($res->{terminated}, 'body ends with the 0-size chunk');
    ok(!grep({ $_ == 0 } @{ $res->{chunks} }), 'no empty data chunk before the end');
    $client->send(request_bytes(GET => '/next'));
    response_is($client->read_response, 200, '/next', 'connection usable after the chunked response');
};

subtest 'HTTP/1.1: writes from timers are chunked' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream-timed') . request_bytes(GET => '/after'));
    my $res = $client->read_response;
    response_is($res, 200, 't1t2t3t4', 'timed writes');
    is($res->framing, 'chunked', 'chunked');
    response_is($client->read_response, 200, '/after', 'pipelined request after it');
};

subtest 'HTTP/1.1: data written while the response is open reaches the client' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/hold'));
    ok($client->wait_for('first;'), 'first write arrives before the writer is closed')
        or diag('received so far: ' . $client->buffered);
    my $release = simple_request($port, request_bytes(GET => '/release'));
    response_is($release, 200, 'released', 'release request on another connection');
    my $res = $client->read_response;
    response_is($res, 200, 'first;second;', 'held response completes');
    is($res->framing, 'chunked', 'chunked');
    ok($res->{terminated}, 'ends with the 0-size chunk');
};

subtest 'HTTP/1.1: Content-Length from the app is used instead of chunking' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream-length'));
    my $res = $client->read_response;
    response_is($res, 200, '1234567890', 'streamed response with Content-Length');
    is($res->framing, 'length', 'framed by Content-Length');
    is($res->header_count('Transfer-Encoding'), 0, 'no Transfer-Encoding');
    is($res->header('Content-Length'), '10', 'Content-Length: 10');
    $client->send(request_bytes(GET => '/next'));
    response_is($client->read_response, 200, '/next', 'connection usable afterwards');
};

subtest 'HTTP/1.1: big streamed body' => sub {
    my $client = client(port => $port, timeout => 20);
    $client->send(request_bytes(GET => '/stream-big'));
    my $res = $client->read_response;
    ok($res->ok && $res->status == 200, 'complete 200') or diag($res->describe);
    is($res->framing, 'chunked', 'chunked');
    is(length($res->body // ''), 24 * 65536, 'length');
    is(md5_hex($res->body // ''), md5_hex($big_piece x 24), 'content');
};

subtest 'array bodies get a computed Content-Length' => sub {
    for my $path ('/array', '/delayed-array') {
        my $client = client($port);
        $client->send(request_bytes(GET => $path));
        my $res = $client->read_response;
        my $expected = $path eq '/array' ? 'abcdefg' : 'delayed';
        response_is($res, 200, $expected, $path);
        is($res->framing, 'length', "$path: framed by Content-Length");
        is($res->header('Content-Length'), length $expected, "$path: Content-Length value");
        is($res->header_count('Transfer-Encoding'), 0, "$path: no Transfer-Encoding");
    }
};

subtest 'HTTP/1.1 with Connection: close: streamed body, then close' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream-timed', 'HTTP/1.1', ['Connection: close']));
    my $res = $client->read_response;
    response_is($res, 200, 't1t2t3t4', 'streamed response (chunked or close-delimited)');
    ok($client->eof || $client->closed_without_more_data, 'connection closed afterwards');
};

subtest 'HTTP/1.0: streamed body is delimited by close' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream', 'HTTP/1.0'));
    my $res = $client->read_response;
    response_is($res, 200, 'Hello, World', 'HTTP/1.0 streamed response');
    is($res->framing, 'close', 'no chunking and no Content-Length');
    is($res->header_count('Transfer-Encoding'), 0, 'no Transfer-Encoding to an HTTP/1.0 client');
    ok($client->eof, 'connection closed');
};

subtest 'HTTP/1.0 keep-alive request: streamed body still delimited by close' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream-timed', 'HTTP/1.0', ['Connection: keep-alive']));
    my $res = $client->read_response;
    response_is($res, 200, 't1t2t3t4', 'HTTP/1.0 keep-alive streamed response');
    is($res->framing, 'close', 'close-delimited');
    unlike($res->header('Connection') // '', qr/keep-alive/i, 'does not promise keep-alive');
    ok($client->eof, 'connection closed');
};

subtest 'HTTP/1.0: streamed response with Content-Length keeps the connection' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/stream-length', 'HTTP/1.0', ['Connection: keep-alive']));
    my $res = $client->read_response;
    response_is($res, 200, '1234567890', 'HTTP/1.0 keep-alive response with Content-Length');
    like($res->header('Connection') // '', qr/\Akeep-alive\z/i, 'Connection: keep-alive');
    $client->send(request_bytes(GET => '/next', 'HTTP/1.0'));
    response_is($client->read_response, 200, '/next', 'second request on the connection');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
