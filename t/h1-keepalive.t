# RFC 9112 section 9.3 (persistence): HTTP/1.1 connections persist by default and close after
# "Connection: close"; HTTP/1.0 connections persist only with "Connection: keep-alive".
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    my $body = '';
    if (my $length = $env->{CONTENT_LENGTH}) {
        $env->{'psgi.input'}->read($body, $length);
    }
    my $path = $env->{PATH_INFO};
    if ($path eq '/stream') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('part1;');
            $writer->write('part2');
            $writer->close;
        };
    }
    if ($path eq '/delayed') {
        return sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer(0.05, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ['delayed'] ]);
            });
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ],
        ["$env->{REQUEST_METHOD} $path port=$env->{REMOTE_PORT} body=$body"] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

subtest 'HTTP/1.1 connections persist by default' => sub {
    my $client = client($port);
    my $client_port = $client->local_port;

    $client->send(request_bytes(GET => '/one'));
    my $res = $client->read_response;
    response_is($res, 200, "GET /one port=$client_port body=", 'first request');
    unlike($res->header('Connection') // '', qr/close/i, 'first response does not announce close');

    $client->send(request_bytes(GET => '/two'));
    response_is($client->read_response, 200, "GET /two port=$client_port body=", 'second request, same connection');

    $client->send(request_bytes(POST => '/three', 'HTTP/1.1',
        [ 'Content-Length: 3', 'Content-Type: text/plain' ], 'abc'));
    response_is($client->read_response, 200, "POST /three port=$client_port body=abc",
        'POST with a body, same connection');

    $client->send(request_bytes(GET => '/stream'));
    $res = $client->read_response;
    response_is($res, 200, 'part1;part2', 'streamed response, same connection');

    $client->send(request_bytes(GET => '/delayed'));
    response_is($client->read_response, 200, 'delayed', 'delayed response, same connection');

    $client->send(request_bytes(GET => '/last', 'HTTP/1.1', ['Connection: close']));
    response_is($client->read_response, 200, "GET /last port=$client_port body=", 'request with Connection: close');
    ok($client->closed_without_more_data, 'server closes the connection after Connection: close')
        or diag("extra bytes: " . ($client->{extra} // ''));
};

subtest 'HTTP/1.1 many sequential requests on one connection' => sub {
    my $client = client($port);
    my $client_port = $client->local_port;
    my $good = 0;
    for my $i (1 .. 100) {
        $client->send(request_bytes(GET => "/n$i"));
        my $res = $client->read_response;
        last unless $res->ok && $res->status == 200
            && $res->body eq "GET /n$i port=$client_port body=";
        $good++;
    }
    is($good, 100, '100 requests answered on one connection');
};

subtest 'HTTP/1.1 with Connection: close on the first request' => sub {
    for my $value ('close', 'Close', 'keep-alive, close') {
        my $client = client($port);
        $client->send(request_bytes(GET => '/x', 'HTTP/1.1', ["Connection: $value"]));
        my $res = $client->read_response;
        response_is($res, 200, undef, "Connection: $value");
        ok($client->closed_without_more_data, "connection closed after Connection: $value");
    }
};

subtest 'HTTP/1.0 without keep-alive closes after the response' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/old', 'HTTP/1.0'));
    my $res = $client->read_response;
    response_is($res, 200, undef, 'HTTP/1.0 request');
    like($res->body, qr{\AGET /old port=\d+ body=\z}, 'body');
    unlike($res->header('Connection') // '', qr/keep-alive/i, 'no Connection: keep-alive');
    ok($client->eof || $client->closed_without_more_data, 'connection closed after the response');
};

subtest 'HTTP/1.0 with Connection: keep-alive persists' => sub {
    my $client = client($port);
    my $client_port = $client->local_port;
    $client->send(request_bytes(GET => '/ka1', 'HTTP/1.0', ['Connection: keep-alive']));
    my $res = $client->read_response;
    response_is($res, 200, "GET /ka1 port=$client_port body=", 'first HTTP/1.0 keep-alive request');
    like($res->header('Connection') // '', qr/\Akeep-alive\z/i, 'response has Connection: keep-alive');
    is($res->framing, 'length', 'response is framed by Content-Length');

    $client->send(request_bytes(POST => '/ka2', 'HTTP/1.0',
        [ 'Connection: Keep-Alive', 'Content-Length: 4' ], 'data'));
    $res = $client->read_response;
    response_is($res, 200, "POST /ka2 port=$client_port body=data", 'second request on the same connection');
    like($res->header('Connection') // '', qr/\Akeep-alive\z/i, 'second response has Connection: keep-alive');

    $client->send(request_bytes(GET => '/ka3', 'HTTP/1.0'));
    $res = $client->read_response;
    response_is($res, 200, "GET /ka3 port=$client_port body=", 'third request without keep-alive');
    ok($client->eof || $client->closed_without_more_data, 'connection closed after the non-keep-alive request');
};

subtest 'server still serves new connections' => sub {
    my $res = simple_request($port, request_bytes(GET => '/final'));
    response_is($res, 200, undef, 'fresh connection');
    ok($server->is_running, 'server process still running');
};

$server->stop;
done_testing;
