# Requests whose message framing cannot be trusted get "400 Bad Request" and the connection is
# closed right after it (RFC 9112 sections 6.1, 6.3, 7.1, 3.2, 5.1; RFC 9110 section 8.6).
# Nothing after the bad request may be answered: that would be request smuggling.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;
use TwiggyTest qw(answered_then_closed);

safety_alarm(60);

my $app_calls = 0;
my $app = sub {
    my $env = shift;
    my $body = '';
    $env->{'psgi.input'}->read($body, $env->{CONTENT_LENGTH} || 0);
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["app:$env->{PATH_INFO}:$body"] ];
};

my $server = start_server(app => $app, stderr => 1);
my $port = $server->port;

my $smuggled = request_bytes(GET => '/smuggled');

# [ name, request bytes, acceptable statuses ]
my @cases = (
    [ 'Content-Length and Transfer-Encoding',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 5', 'Transfer-Encoding: chunked' ]) ],
    [ 'Transfer-Encoding and Content-Length (other order), with a smuggled request',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Transfer-Encoding: chunked', 'Content-Length: 40' ],
          "0\r\n\r\n" . $smuggled) ],
    [ 'two different Content-Length headers',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 5', 'Content-Length: 6' ], 'hello!') ],
    [ 'Content-Length list with different values',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 5, 6' ], 'hello!') ],
    [ 'Content-Length: abc',  request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: abc' ]) ],
    [ 'Content-Length: -1',   request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: -1' ]) ],
    [ 'Content-Length: +5',   request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: +5' ], 'hello') ],
    [ 'Content-Length: 0x5',  request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 0x5' ], 'hello') ],
    [ 'Content-Length: 1.5',  request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 1.5' ]) ],
    [ 'empty Content-Length', request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length:' ]) ],
    [ 'Content-Length too large to represent',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 184467440737095516160' ]), [ 400, 413 ] ],
    [ 'Transfer-Encoding: gzip', request_bytes(POST => '/', 'HTTP/1.1', [ 'Transfer-Encoding: gzip' ], 'abc') ],
    [ 'Transfer-Encoding: chunked, gzip',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Transfer-Encoding: chunked, gzip' ], "3\r\nabc\r\n0\r\n\r\n") ],
    [ 'malformed chunk size',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Transfer-Encoding: chunked' ], "zz\r\nhello\r\n0\r\n\r\n") ],
    [ 'chunk size too large to represent',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Transfer-Encoding: chunked' ], "fffffffffffffffffffff\r\nabc\r\n"),
      [ 400, 413 ] ],
    [ 'chunk data not followed by CRLF',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Transfer-Encoding: chunked' ], "3\r\nabcXY0\r\n\r\n") ],
    [ 'missing Host on HTTP/1.1', request_bytes(GET => '/', 'HTTP/1.1', [ '-host' ]) ],
    [ 'two Host headers on HTTP/1.1',
      request_bytes(GET => '/', 'HTTP/1.1', [ 'Host: one.example', 'Host: two.example' ]) ],
    [ 'whitespace between header name and colon',
      request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length : 5' ], 'hello') ],
    [ 'request line that is not HTTP', "THIS IS NOT HTTP\r\n\r\n" ],
);

for my $case (@cases) {
    my ($name, $bytes, $statuses) = @$case;
    $statuses ||= [400];
    subtest $name => sub {
        return fail('server is not running any more') unless $server->is_running;
        answered_then_closed($port, $bytes, $statuses);
    };
}

subtest 'HTTP/1.0 without Host is fine' => sub {
    my $res = simple_request($port, request_bytes(GET => '/old', 'HTTP/1.0'));
    response_is($res, 200, 'app:/old:', 'HTTP/1.0 request without Host');
};

subtest 'repeated identical Content-Length is not a framing conflict' => sub {
    # RFC 9110 section 8.6 allows either rejecting it or using the single value; both are fine,
    # but the body must never be read as something else.
    my $res = simple_request($port,
        request_bytes(POST => '/same', 'HTTP/1.1', [ 'Content-Length: 3', 'Content-Length: 3' ], 'abc'));
    ok($res->ok && ($res->status == 400 || ($res->status == 200 && $res->body eq 'app:/same:abc')),
        '400, or 200 with the 3-byte body') or diag($res->describe);
};

subtest 'server still serves after all the bad requests' => sub {
    my $res = simple_request($port, request_bytes(GET => '/good'));
    response_is($res, 200, 'app:/good:', 'good request');
    ok($server->is_running, 'server process still running');
};

$server->stop;
done_testing;
