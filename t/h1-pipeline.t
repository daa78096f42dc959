# RFC 9112 section 9.3.2 (pipelining): a server answers pipelined requests in the order they
# were received, even when an earlier response takes longer than a later one. Requests are
# parsed from a buffer, so a request may arrive in arbitrary pieces (section 2.2).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

our $held_writer;

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path =~ m{\A/delay/(\d+)\z}) {
        my $milliseconds = $1;
        return sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer($milliseconds / 1000, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ["delayed $milliseconds"] ]);
            });
        };
    }
    if ($path eq '/stream') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            my $count = 0;
            my $timer;
            $timer = AE::timer(0.01, 0.01, sub {
                $writer->write('tick' . ++$count . ';');
                if ($count == 3) {
                    undef $timer;
                    $writer->close;
                }
            });
        };
    }
    if ($path eq '/hold') {
        return sub {
            $main::held_writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $main::held_writer->write('held;');
        };
    }
    if ($path eq '/release') {
        return [ 409, [], ['nothing held'] ] unless $main::held_writer;
        $main::held_writer->write('released');
        $main::held_writer->close;
        undef $main::held_writer;
        return [ 200, [ 'Content-Type' => 'text/plain' ], ['ok'] ];
    }
    if ($path eq '/echo') {
        my $body = '';
        $env->{'psgi.input'}->read($body, $env->{CONTENT_LENGTH} || 0);
        return [ 200, [ 'Content-Type' => 'text/plain' ], ["echo:$body"] ];
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], [$path] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

subtest 'three GETs in one write' => sub {
    my $client = client($port);
    $client->send(join '', map { request_bytes(GET => $_) } qw(/a /b /c));
    response_is($client->read_response, 200, $_, "response for $_") for qw(/a /b /c);
};

subtest 'order is kept when an earlier response is slower' => sub {
    my $client = client($port);
    $client->send(join '', map { request_bytes(GET => $_) } qw(/delay/300 /fast1 /delay/100 /stream /fast2));
    response_is($client->read_response, 200, 'delayed 300', 'first: slow delayed response');
    response_is($client->read_response, 200, '/fast1', 'second: immediate response');
    response_is($client->read_response, 200, 'delayed 100', 'third: delayed response');
    response_is($client->read_response, 200, 'tick1;tick2;tick3;', 'fourth: streamed response');
    response_is($client->read_response, 200, '/fast2', 'fifth: immediate response');
};

subtest 'a later response waits for an open streamed response' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/hold') . request_bytes(GET => '/queued-behind'));
    ok($client->wait_for('held;'), 'streamed response started');
    unlike($client->peek_for(0.2), qr/queued-behind/,
        'the pipelined response is not sent while the stream is open');
    response_is(simple_request($port, request_bytes(GET => '/release')), 200, 'ok', 'release from another connection');
    response_is($client->read_response, 200, 'held;released', 'streamed response completes');
    response_is($client->read_response, 200, '/queued-behind', 'then the pipelined response');
};

subtest 'pipelined requests with bodies' => sub {
    my $client = client($port);
    $client->send(
        request_bytes(POST => '/echo', 'HTTP/1.1', ['Content-Length: 5'], 'hello')
        . request_bytes(POST => '/echo', 'HTTP/1.1', ['Transfer-Encoding: chunked'], "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        . request_bytes(GET => '/after-bodies')
        . request_bytes(POST => '/echo', 'HTTP/1.1', ['Content-Length: 0'])
    );
    response_is($client->read_response, 200, 'echo:hello', 'Content-Length body');
    response_is($client->read_response, 200, 'echo:abcde', 'chunked body');
    response_is($client->read_response, 200, '/after-bodies', 'GET after bodies');
    response_is($client->read_response, 200, 'echo:', 'empty body');
};

subtest 'twenty pipelined requests' => sub {
    my $client = client($port);
    $client->send(join '', map { request_bytes(GET => "/p$_") } 1 .. 20);
    my $in_order = 0;
    for my $i (1 .. 20) {
        my $res = $client->read_response;
        last unless $res->ok && $res->status == 200 && $res->body eq "/p$i";
        $in_order++;
    }
    is($in_order, 20, 'all twenty answered in order');
};

subtest 'nothing is answered after a request with Connection: close' => sub {
    my $client = client($port);
    $client->send(
        request_bytes(GET => '/first')
        . request_bytes(GET => '/closing', 'HTTP/1.1', ['Connection: close'])
        . request_bytes(GET => '/never')
    );
    response_is($client->read_response, 200, '/first', 'request before the close');
    response_is($client->read_response, 200, '/closing', 'request with Connection: close');
    ok($client->closed_without_more_data, 'connection closed, the request after it is not answered')
        or diag('extra bytes: ' . ($client->{extra} // ''));
};

subtest 'request sent one byte at a time' => sub {
    my $client = client($port);
    $client->send_slowly(request_bytes(GET => '/bytewise', 'HTTP/1.1', ['X-Padding: ' . ('p' x 40)]), 1, 0.001);
    response_is($client->read_response, 200, '/bytewise', 'byte-wise request');
};

subtest 'CR and LF arriving in separate reads' => sub {
    my $client = client($port);
    my @pieces = ("GET /crlf HTTP/1.1\r", "\nHost: 127.0.0.1\r", "\n\r", "\n");
    for my $piece (@pieces) {
        $client->send($piece);
        select(undef, undef, undef, 0.05);
    }
    response_is($client->read_response, 200, '/crlf', 'request with split CRLFs');
};

subtest 'second request split across writes' => sub {
    my $client = client($port);
    my $bytes = request_bytes(GET => '/split1') . request_bytes(GET => '/split2');
    my $cut = length(request_bytes(GET => '/split1')) + 9;    # inside the second request line
    $client->send(substr($bytes, 0, $cut));
    response_is($client->read_response, 200, '/split1', 'first request answered before the second is complete');
    $client->send(substr($bytes, $cut));
    response_is($client->read_response, 200, '/split2', 'second request answered once complete');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
