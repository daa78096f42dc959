# max_requests: after N requests the server stops accepting, its last response says
# "Connection: close" (RFC 9112 9.6), work in progress finishes, and run() returns.
# Prefork workers recycle themselves this way.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["request $env->{PATH_INFO}"] ];
};

my $server = start_server(app => $app, max_requests => 3);
my $port   = $server->port;

my $client = client($port);
for my $number (1 .. 2) {
    $client->send(request_bytes(GET => "/$number"));
    my $res = $client->read_response;
    response_is($res, 200, "request /$number", "request $number answered");
    isnt(lc($res->header('Connection') // ''), 'close', "response $number keeps the connection");
}
$client->send(request_bytes(GET => '/3'));
my $last = $client->read_response;
response_is($last, 200, 'request /3', 'the third request is answered');
is(lc($last->header('Connection') // ''), 'close', 'the last response says Connection: close');
ok($client->closed_without_more_data, 'and the connection closes after it');

ok(wait_until(sub { !$server->is_running }, 10), 'the server process finishes on its own');
is($server->{exit_status}, 0, 'run() returned and the process exited with status 0');

my $refused = client($port);
ok(!$refused->connected || $refused->closed_without_more_data, 'nothing accepts on the port afterwards');

done_testing;
