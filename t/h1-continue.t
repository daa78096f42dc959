# RFC 9110 section 10.1.1 (Expect: 100-continue): an HTTP/1.1 client that waits for an interim
# "100 Continue" before sending the body gets it; the final response follows the body. HTTP/1.0
# clients never get a 1xx response (RFC 9110 section 15.2).
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
    $env->{'psgi.input'}->read($body, $env->{CONTENT_LENGTH} || 0);
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["$env->{PATH_INFO}:$body"] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

subtest 'Content-Length body sent after 100 Continue' => sub {
    my $client = client($port);
    $client->send(request_bytes(POST => '/cl', 'HTTP/1.1', [ 'Content-Length: 5', 'Expect: 100-continue' ]));
    my $interim = $client->read_response;
    ok($interim->ok, 'interim response is complete') or diag($interim->describe);
    is($interim->{status_line}, 'HTTP/1.1 100 Continue', 'HTTP/1.1 100 Continue');
    is($interim->body, '', 'interim response has no body');
    $client->send('hello');
    response_is($client->read_response, 200, '/cl:hello', 'final response after the body');
    $client->send(request_bytes(GET => '/next'));
    response_is($client->read_response, 200, '/next:', 'connection usable afterwards, no stray 100');
};

subtest 'chunked body sent after 100 Continue' => sub {
    my $client = client($port);
    $client->send(request_bytes(POST => '/chunked', 'HTTP/1.1',
        [ 'Transfer-Encoding: chunked', 'Expect: 100-Continue' ]));
    my $interim = $client->read_response;
    is($interim->{status_line}, 'HTTP/1.1 100 Continue', 'HTTP/1.1 100 Continue (expectation is case-insensitive)')
        or diag($interim->describe);
    $client->send("4\r\nbody\r\n0\r\n\r\n");
    response_is($client->read_response, 200, '/chunked:body', 'final response after the chunked body');
};

subtest 'client that sends the body without waiting' => sub {
    my $client = client($port);
    $client->send(request_bytes(POST => '/eager', 'HTTP/1.1',
        [ 'Content-Length: 4', 'Expect: 100-continue' ], 'data')
        . request_bytes(GET => '/after'));
    my $res = $client->read_response;
    if ($res->status == 100) {
        pass('server sent 100 Continue (allowed)');
        $res = $client->read_response;
    } else {
        pass('server skipped 100 Continue (allowed: body already received)');
    }
    response_is($res, 200, '/eager:data', 'final response');
    response_is($client->read_response, 200, '/after:', 'pipelined request after it');
};

subtest 'HTTP/1.0 clients do not get 100 Continue' => sub {
    my $client = client($port);
    $client->send(request_bytes(POST => '/old', 'HTTP/1.0', [ 'Content-Length: 3', 'Expect: 100-continue' ]));
    my $early = $client->read_for(0.3);
    is($early, '', 'nothing sent before the body');
    $client->send('abc');
    my $res = $client->read_response;
    response_is($res, 200, '/old:abc', 'final response to the HTTP/1.0 client');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
