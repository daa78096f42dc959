# The PSGI environment (PSGI spec, "The Environment"): every required key with the right value
# and type, PATH_INFO URI-decoded while REQUEST_URI stays raw, request headers as HTTP_* with
# repeated headers joined by ", ", and the Twiggy extensions psgix.io and psgix.input.buffered.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP ();
use Scalar::Util ();
use TwiggyTest;

safety_alarm(60);

my $json = JSON::PP->new->latin1->canonical;

my $app = sub {
    my $env = shift;
    my %report;
    for my $key (keys %$env) {
        my $value = $env->{$key};
        if (!defined $value) {
            $report{$key} = { type => 'undef' };
        } elsif (!ref $value) {
            $report{$key} = { type => 'scalar', value => "$value" };
        } elsif (ref $value eq 'ARRAY') {
            $report{$key} = { type => 'ARRAY', value => [ map { "$_" } @$value ] };
        } else {
            $report{$key} = { type => ref $value };
        }
    }
    my $io = $env->{'psgix.io'};
    $report{'psgix.io'}{isa_socket} = (Scalar::Util::blessed($io) && $io->isa('IO::Socket')) ? 1 : 0;
    $report{'psgix.io'}{peerport} = eval { $io->peerport } // 'none';
    $report{'psgix.io'}{fileno} = defined(eval { fileno $io }) ? 1 : 0;
    my $input = $env->{'psgi.input'};
    $report{'psgi.input'}{can_read} = eval { $input->can('read') } ? 1 : 0;
    $report{'psgi.input'}{can_seek} = eval { $input->can('seek') } ? 1 : 0;
    $report{'psgi.errors'}{can_print} = eval { $env->{'psgi.errors'}->print(''); 1 } ? 1 : 0;
    for my $flag (qw(psgi.multithread psgi.multiprocess psgi.run_once psgi.nonblocking psgi.streaming
                     psgix.input.buffered)) {
        $report{$flag}{true} = $env->{$flag} ? 1 : 0;
    }
    my $body = '';
    $input->read($body, $env->{CONTENT_LENGTH} || 0) if $input;
    $report{body} = $body;
    return [ 200, [ 'Content-Type' => 'application/json' ], [ $json->encode(\%report) ] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

sub env_for {
    my ($request, %opt) = @_;
    my $client = client($port);
    my $client_port = $client->local_port;
    $client->send($request);
    my $res = $client->read_response;
    ok($res->ok && $res->status == 200, 'request answered') or diag($res->describe);
    my $env = eval { $json->decode($res->body // '') } || {};
    return wantarray ? ($env, $client_port) : $env;
}

sub value_of { my ($env, $key) = @_; return $env->{$key} ? $env->{$key}{value} : undef }

subtest 'GET with an encoded path, a query and various headers' => sub {
    my ($env, $client_port) = env_for(
        "GET /foo%20bar/%C3%BC%2Fx+y?x=1&y=%20z HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\n"
        . "X-Multi: a\r\n"
        . "User-Agent: twiggy-test\r\n"
        . "X-Multi: b\r\n"
        . "x-lower-case: low\r\n"
        . "X-Space:   padded value  \r\n"
        . "X-Empty:\r\n"
        . "\r\n");

    is(value_of($env, 'REQUEST_METHOD'),  'GET', 'REQUEST_METHOD');
    is($env->{SCRIPT_NAME}{type}, 'scalar', 'SCRIPT_NAME is defined');
    is(value_of($env, 'SCRIPT_NAME'),     '', 'SCRIPT_NAME is empty');
    is(value_of($env, 'PATH_INFO'),       "/foo bar/\xC3\xBC/x+y", 'PATH_INFO is URI-decoded (bytes, + kept)');
    is(value_of($env, 'REQUEST_URI'),     '/foo%20bar/%C3%BC%2Fx+y?x=1&y=%20z', 'REQUEST_URI is raw');
    is(value_of($env, 'QUERY_STRING'),    'x=1&y=%20z', 'QUERY_STRING is raw');
    is(value_of($env, 'SERVER_PROTOCOL'), 'HTTP/1.1', 'SERVER_PROTOCOL');
    is(value_of($env, 'SERVER_NAME'),     '127.0.0.1', 'SERVER_NAME');
    is(value_of($env, 'SERVER_PORT'),     $port, 'SERVER_PORT');
    is(value_of($env, 'REMOTE_ADDR'),     '127.0.0.1', 'REMOTE_ADDR');
    is(value_of($env, 'REMOTE_PORT'),     $client_port, 'REMOTE_PORT is the client port');

    is(value_of($env, 'HTTP_HOST'),         "127.0.0.1:$port", 'HTTP_HOST');
    is(value_of($env, 'HTTP_USER_AGENT'),   'twiggy-test', 'HTTP_USER_AGENT');
    is(value_of($env, 'HTTP_X_MULTI'),      'a, b', 'repeated header joined with ", " in order');
    is(value_of($env, 'HTTP_X_LOWER_CASE'), 'low', 'lower-case header name');
    is(value_of($env, 'HTTP_X_SPACE'),      'padded value', 'surrounding whitespace removed');
    is(value_of($env, 'HTTP_X_EMPTY'),      '', 'empty header value kept');
    ok(!exists $env->{CONTENT_LENGTH}, 'no CONTENT_LENGTH without a body');
    ok(!exists $env->{CONTENT_TYPE}, 'no CONTENT_TYPE without one in the request');

    is_deeply($env->{'psgi.version'}, { type => 'ARRAY', value => [ 1, 1 ] }, 'psgi.version is [1, 1]');
    is(value_of($env, 'psgi.url_scheme'), 'http', 'psgi.url_scheme');
    ok($env->{'psgi.input'}{can_read}, 'psgi.input can read');
    ok($env->{'psgi.input'}{can_seek}, 'psgi.input can seek');
    ok($env->{'psgi.errors'}{can_print}, 'psgi.errors can print');
    is($env->{'psgi.multithread'}{true},  0, 'psgi.multithread is false');
    is($env->{'psgi.multiprocess'}{true}, 0, 'psgi.multiprocess is false');
    is($env->{'psgi.run_once'}{true},     0, 'psgi.run_once is false');
    is($env->{'psgi.nonblocking'}{true},  1, 'psgi.nonblocking is true');
    is($env->{'psgi.streaming'}{true},    1, 'psgi.streaming is true');
    is($env->{'psgix.input.buffered'}{true}, 1, 'psgix.input.buffered is true');
    ok($env->{'psgix.io'}{isa_socket}, 'psgix.io isa IO::Socket');
    ok($env->{'psgix.io'}{fileno}, 'psgix.io has a file descriptor');
    is($env->{'psgix.io'}{peerport}, $client_port, 'psgix.io is the client connection');
    ok(!grep({ /\AHTTP_CONTENT_(?:LENGTH|TYPE)\z/ } keys %$env), 'no HTTP_CONTENT_LENGTH or HTTP_CONTENT_TYPE');
};

subtest 'POST with a body' => sub {
    my $env = env_for(request_bytes(POST => '/form', 'HTTP/1.1',
        [ 'Content-Type: application/x-www-form-urlencoded', 'Content-Length: 7' ], 'a=1&b=2'));
    is(value_of($env, 'REQUEST_METHOD'), 'POST', 'REQUEST_METHOD');
    is(value_of($env, 'CONTENT_LENGTH'), '7', 'CONTENT_LENGTH');
    is(value_of($env, 'CONTENT_TYPE'), 'application/x-www-form-urlencoded', 'CONTENT_TYPE');
    ok(!exists $env->{HTTP_CONTENT_LENGTH}, 'no HTTP_CONTENT_LENGTH');
    ok(!exists $env->{HTTP_CONTENT_TYPE}, 'no HTTP_CONTENT_TYPE');
    is($env->{body}, 'a=1&b=2', 'body');
    is(value_of($env, 'QUERY_STRING'), '', 'QUERY_STRING exists and is empty');
    is(value_of($env, 'PATH_INFO'), '/form', 'PATH_INFO');
};

subtest 'HTTP/1.0' => sub {
    my $env = env_for(request_bytes(GET => '/old?q', 'HTTP/1.0'));
    is(value_of($env, 'SERVER_PROTOCOL'), 'HTTP/1.0', 'SERVER_PROTOCOL');
    is(value_of($env, 'QUERY_STRING'), 'q', 'QUERY_STRING');
    ok(!exists $env->{HTTP_HOST}, 'no HTTP_HOST when the request has none');
};

subtest 'other methods' => sub {
    for my $method (qw(PUT DELETE OPTIONS PATCH)) {
        my $env = env_for(request_bytes($method => '/m', 'HTTP/1.1', ['Content-Length: 0']));
        is(value_of($env, 'REQUEST_METHOD'), $method, "REQUEST_METHOD $method");
    }
};

subtest 'absolute-form request target (RFC 9112 section 3.2.2)' => sub {
    my $env = env_for(request_bytes(GET => "http://127.0.0.1:$port/abs/p%41th?q=1"));
    is(value_of($env, 'PATH_INFO'), '/abs/pAth', 'PATH_INFO is the decoded path');
    is(value_of($env, 'QUERY_STRING'), 'q=1', 'QUERY_STRING');
};

subtest 'each request on a connection gets its own env' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/first', 'HTTP/1.1', ['X-Only-First: 1'])
        . request_bytes(GET => '/second'));
    my $first = eval { $json->decode($client->read_response->body // '') } || {};
    my $second = eval { $json->decode($client->read_response->body // '') } || {};
    is(value_of($first, 'PATH_INFO'), '/first', 'first PATH_INFO');
    is(value_of($second, 'PATH_INFO'), '/second', 'second PATH_INFO');
    ok(exists $first->{HTTP_X_ONLY_FIRST}, 'first has its header');
    ok(!exists $second->{HTTP_X_ONLY_FIRST}, 'second does not inherit it');
};

$server->stop;
done_testing;
