# Requests beyond the server's limits are refused with a 4xx status and a closed connection,
# without reaching the app (RFC 9110 sections 15.5.15 414 URI Too Long and RFC 6585 section 5,
# 431 Request Header Fields Too Large); the server keeps serving others.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;
use TwiggyTest qw(answered_then_closed);

safety_alarm(60);

my $app = sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['app: ' . length $env->{REQUEST_URI}] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

my @cases = (
    [ 'request line of 200 KB',   request_bytes(GET => '/' . ('u' x 200_000)),            [ 400, 414, 431 ] ],
    [ 'one header of 200 KB',     request_bytes(GET => '/', 'HTTP/1.1', [ 'X-Big: ' . ('h' x 200_000) ]), [ 400, 431 ] ],
    [ '2000 small headers',       request_bytes(GET => '/', 'HTTP/1.1', [ map { "X-H$_: v" } 1 .. 2000 ]), [ 400, 431 ] ],
);

for my $case (@cases) {
    my ($name, $bytes, $statuses) = @$case;
    subtest $name => sub {
        return fail('server is not running any more') unless $server->is_running;
        answered_then_closed($port, $bytes, $statuses);
    };
}

subtest 'requests just under the limits still work' => sub {
    my $target = '/' . ('u' x 4000);
    response_is(simple_request($port, request_bytes(GET => $target)), 200, 'app: 4001', '4 KB request line');
    response_is(simple_request($port, request_bytes(GET => '/', 'HTTP/1.1', [ map { "X-H$_: v" } 1 .. 60 ])),
        200, 'app: 1', '60 headers');
    response_is(simple_request($port, request_bytes(GET => '/', 'HTTP/1.1', [ 'X-Big: ' . ('h' x 8000) ])),
        200, 'app: 1', 'one header of 8 KB');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
