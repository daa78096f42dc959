# listen => [ '/path/to/socket' ] serves over a UNIX domain socket, alone or next to TCP.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    my $body = '';
    $env->{'psgi.input'}->read($body, $env->{CONTENT_LENGTH} || 0);
    return [ 200, [ 'Content-Type' => 'text/plain' ],
        ["$env->{REQUEST_METHOD} $env->{PATH_INFO} $env->{SERVER_PROTOCOL} body=$body"] ];
};

# Keep socket paths short: sun_path holds about 100 bytes.
my $dir = File::Temp->newdir('twiggy-XXXXXX', TMPDIR => 1);

subtest 'UNIX socket only' => sub {
    my $path = "$dir/only.sock";
    my $server = start_server(app => $app, listen => [$path], unix => $path);
    ok(-S $path, 'socket file exists');

    my $client = client(path => $path);
    ok($client->connected, 'connected over the UNIX socket');
    $client->send(request_bytes(GET => '/unix'));
    response_is($client->read_response, 200, 'GET /unix HTTP/1.1 body=', 'GET');
    $client->send(request_bytes(POST => '/post', 'HTTP/1.1', ['Content-Length: 4'], 'data'));
    response_is($client->read_response, 200, 'POST /post HTTP/1.1 body=data', 'POST on the same connection');
    $client->send(request_bytes(GET => '/stream-close', 'HTTP/1.1', ['Connection: close']));
    response_is($client->read_response, 200, 'GET /stream-close HTTP/1.1 body=', 'request with Connection: close');
    ok($client->closed_without_more_data, 'closed after Connection: close');

    my $http10 = client(path => $path);
    $http10->send(request_bytes(GET => '/old', 'HTTP/1.0'));
    response_is($http10->read_response, 200, 'GET /old HTTP/1.0 body=', 'HTTP/1.0 request');

    ok($server->is_running, 'server still running');
    $server->stop;
};

subtest 'UNIX socket next to a TCP port' => sub {
    my $path = "$dir/mixed.sock";
    my $port = empty_port();
    my $server = start_server(app => $app, listen => [ $path, "127.0.0.1:$port" ],
        port => $port);
    ok($server->wait_ready(unix => $path), 'UNIX socket accepts');

    my $unix = client(path => $path);
    $unix->send(request_bytes(GET => '/via-unix'));
    response_is($unix->read_response, 200, 'GET /via-unix HTTP/1.1 body=', 'served over the UNIX socket');

    my $tcp = simple_request($port, request_bytes(GET => '/via-tcp'));
    response_is($tcp, 200, 'GET /via-tcp HTTP/1.1 body=', 'served over TCP');

    $server->stop;
};

done_testing;
