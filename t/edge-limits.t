# Limits (issue 3, item 1; Twiggy POD, OPTIONS): a request line over max_request_line gets 414
# (RFC 9112 section 3, RFC 9110 section 15.5.15), a head over max_head_size or with more than
# max_headers fields gets 431 (RFC 6585 section 5), a body over max_body gets 413 (RFC 9110
# section 15.5.14) before it is read and without "100 Continue" (RFC 9110 section 10.1.1), a
# chunked body as soon as it grows past it; an overflowing or malformed chunk size or line gets
# 400 (RFC 9112 section 7.1). Each limit holds exactly at its value and is refused one byte (or
# field) over it, with the defaults and with values given as options and as twiggy --dashed-names.
# After every automatic answer the connection closes, nothing after it is answered, and the app
# is never called.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use TwiggyTest qw(:DEFAULT perl_command start_command write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-XXXXXX', TMPDIR => 1);
my $app_file = "$dir/app.psgi";
write_file($app_file, <<'APP');
my $calls = 0;
sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ], [$calls] ] if $env->{PATH_INFO} eq '/calls';
    $calls++;
    my $body = '';
    while ($env->{'psgi.input'}->read(my $buffer, 65536)) { $body .= $buffer }
    return [ 200, [ 'Content-Type' => 'text/plain' ],
        [ 'line=' . length("$env->{REQUEST_METHOD} $env->{REQUEST_URI} $env->{SERVER_PROTOCOL}")
          . ' headers=' . scalar(grep { /\AHTTP_/ } keys %$env) . ' body=' . length $body ] ];
}
APP
my $app = do $app_file or die "cannot load $app_file: " . ($@ || $!);

my %reason = (
    400 => 'Bad Request',
    413 => 'Content Too Large',
    414 => 'URI Too Long',
    431 => 'Request Header Fields Too Large',
);

my $defaults = start_server(app => $app);
my $maximum_headers = start_server(app => $app, max_headers => 128);
my $small_port = empty_port();
my $small = start_command(port => $small_port, command => perl_command('bin/twiggy',
    '--listen', "127.0.0.1:$small_port", '--max-request-line', 100, '--max-head-size', 1024,
    '--max-headers', 10, '--max-body', 1000, $app_file));

# A request line of exactly $length bytes (without its CRLF).
sub line_of {
    my ($length) = @_;
    return 'GET /' . ('l' x ($length - length('GET / HTTP/1.1'))) . ' HTTP/1.1';
}

# A GET head of exactly $size bytes, final blank line included.
sub head_of {
    my ($size) = @_;
    my $bare = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill: \r\n\r\n";
    return "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill: " . ('f' x ($size - length $bare)) . "\r\n\r\n";
}

# A GET head with exactly $count header fields, Host included.
sub head_with_fields {
    my ($count) = @_;
    return request_bytes(GET => '/', 'HTTP/1.1', [ map { "X-Field-$_: v" } 1 .. $count - 1 ]);
}

sub chunked_post {
    my ($chunked_body) = @_;
    return request_bytes(POST => '/', 'HTTP/1.1', ['Transfer-Encoding: chunked'], $chunked_body);
}

sub app_calls {
    my ($port) = @_;
    my $res = simple_request($port, request_bytes(GET => '/calls'));
    return $res->ok ? $res->body : 'unknown';
}

# The request is answered by the app with $body.
sub accepted {
    my ($server, $name, $bytes, $body) = @_;
    subtest "$name: accepted" => sub {
        my $port = $server->port;
        my $calls = app_calls($port);
        my $client = client(port => $port, timeout => 10);
        $client->send($bytes);
        response_is($client->read_response, 200, $body, $name);
        is(app_calls($port), $calls + 1, 'the app was called once');
    };
}

# The request gets the automatic $status, the connection closes, and a request sent right after
# it on the same connection is neither answered nor given to the app.
sub refused {
    my ($server, $name, $bytes, $status, %opt) = @_;
    subtest "$name: $status" => sub {
        my $port = $server->port;
        return fail('server is not running any more') unless $server->is_running;
        my $calls = app_calls($port);
        my $client = client(port => $port, timeout => 10);
        $client->send($bytes . ($opt{no_follower} ? '' : request_bytes(GET => '/after')));
        my $res = $client->read_response;
        ok($res->ok && $res->status == $status, "complete $status response") or diag('got: ' . $res->describe);
        is($res->{reason}, $reason{$status}, 'reason phrase');
        like($res->header('Connection') // '', qr/\Aclose\z/i, 'Connection: close');
        ok($client->closed_without_more_data, 'then the connection closes, nothing more answered')
            or diag('after the response: ' . ($client->{extra} // '') . ($client->eof ? '' : ' (still open)'));
        is(app_calls($port), $calls, 'the app was not called');
    };
}

# Default limits: 8190-byte request line, 64 KiB head, 100 fields, no body limit.
accepted($defaults, 'default: request line of 8190 bytes', line_of(8190) . "\r\nHost: 127.0.0.1\r\n\r\n",
    'line=8190 headers=1 body=0');
refused($defaults, 'default: request line of 8191 bytes', line_of(8191) . "\r\nHost: 127.0.0.1\r\n\r\n", 414);
refused($defaults, 'default: request line of 9000 bytes, no line end yet', 'GET /' . ('l' x 9000), 414,
    no_follower => 1);
accepted($defaults, 'default: head of 65536 bytes', head_of(65536), 'line=14 headers=2 body=0');
refused($defaults, 'default: head of 65537 bytes', head_of(65537), 431);
refused($defaults, 'default: 70000 bytes of header lines, no end yet',
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" . ("X-More: 1234567890\r\n" x 3500), 431, no_follower => 1);
accepted($defaults, 'default: 100 header fields', head_with_fields(100), 'line=14 headers=100 body=0');
refused($defaults, 'default: 101 header fields', head_with_fields(101), 431);
accepted($defaults, 'default: no body limit, 3 MB body',
    request_bytes(POST => '/', 'HTTP/1.1', ['Content-Length: 3145728'], 'b' x 3145728),
    'line=15 headers=1 body=3145728');

subtest 'limits apply to each request of a connection, not to what is buffered' => sub {
    my $port = $defaults->port;
    # Three pipelined heads of 40000 bytes: 120000 bytes in the buffer, each head within 64 KiB.
    my $client = client(port => $port, timeout => 10);
    $client->send(head_of(40000) x 3);
    for my $round (1 .. 3) {
        response_is($client->read_response, 200, 'line=14 headers=2 body=0', "pipelined 40000-byte head $round");
    }
    $client->close;

    # A good request, then one over the request line limit, on one connection.
    my $calls = app_calls($port);
    $client = client(port => $port, timeout => 10);
    $client->send(request_bytes(GET => '/') . line_of(8191) . "\r\nHost: 127.0.0.1\r\n\r\n"
        . request_bytes(GET => '/'));
    response_is($client->read_response, 200, 'line=14 headers=1 body=0', 'first request');
    my $res = $client->read_response;
    ok($res->ok && $res->status == 414, 'second request: 414') or diag($res->describe);
    ok($client->closed_without_more_data, 'then the connection closes, the third is not answered');
    is(app_calls($port), $calls + 1, 'the app was called for the first request only');
};

# Chunk sizes and lines (RFC 9112 section 7.1): 1*HEXDIG, overflow-checked, bounded lines.
accepted($defaults, 'chunk size with 20 leading zeros', chunked_post(('0' x 20) . "5\r\nhello\r\n0\r\n\r\n"),
    'line=15 headers=1 body=5');
accepted($defaults, 'chunk extension and trailer field',
    chunked_post("5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
    'line=15 headers=1 body=5');
refused($defaults, 'chunk size 2^64 (17 hex digits)', chunked_post("10000000000000000\r\nabc\r\n"), 400);
refused($defaults, 'chunk size of 40 hex digits', chunked_post(('f' x 40) . "\r\nabc\r\n"), 400);
refused($defaults, 'negative chunk size', chunked_post("-5\r\nhello\r\n0\r\n\r\n"), 400);
refused($defaults, 'chunk size with a 0x prefix', chunked_post("0x5\r\nhello\r\n0\r\n\r\n"), 400);
refused($defaults, 'empty chunk size line', chunked_post("\r\nhello\r\n0\r\n\r\n"), 400);
refused($defaults, 'chunk size line ending in a bare LF', chunked_post("5\nhello\r\n0\r\n\r\n"), 400);
refused($defaults, 'chunk extension of 5000 bytes', chunked_post('5;' . ('e' x 5000) . "\r\nhello\r\n0\r\n\r\n"), 400);
refused($defaults, 'trailer field of 5000 bytes',
    chunked_post("5\r\nhello\r\n0\r\nX-T: " . ('t' x 5000) . "\r\n\r\n"), 400);
refused($defaults, 'chunk data longer than its size', chunked_post("5\r\nhello!\r\n0\r\n\r\n"), 400);

# max_headers can go up to 128, the most the parser holds; not beyond.
accepted($maximum_headers, 'max_headers 128: 128 fields', head_with_fields(128), 'line=14 headers=128 body=0');
refused($maximum_headers, 'max_headers 128: 129 fields', head_with_fields(129), 431);
{
    require Twiggy::Server;
    ok(!eval { Twiggy::Server->new(max_headers => 129); 1 }, 'max_headers 129 is refused by new');
    like($@, qr/max_headers/, 'with a message naming the option');
}

# Limits given to bin/twiggy as --dashed-names.
accepted($small, '--max-request-line 100: 100 bytes', line_of(100) . "\r\nHost: 127.0.0.1\r\n\r\n",
    'line=100 headers=1 body=0');
refused($small, '--max-request-line 100: 101 bytes', line_of(101) . "\r\nHost: 127.0.0.1\r\n\r\n", 414);
accepted($small, '--max-head-size 1024: 1024 bytes', head_of(1024), 'line=14 headers=2 body=0');
refused($small, '--max-head-size 1024: 1025 bytes', head_of(1025), 431);
accepted($small, '--max-headers 10: 10 fields', head_with_fields(10), 'line=14 headers=10 body=0');
refused($small, '--max-headers 10: 11 fields', head_with_fields(11), 431);
accepted($small, '--max-body 1000: Content-Length 1000',
    request_bytes(POST => '/', 'HTTP/1.1', ['Content-Length: 1000'], 'c' x 1000), 'line=15 headers=1 body=1000');
refused($small, '--max-body 1000: Content-Length 1001 with the body',
    request_bytes(POST => '/', 'HTTP/1.1', ['Content-Length: 1001'], 'c' x 1001), 413);
refused($small, '--max-body 1000: Content-Length 1001, body not sent yet',
    request_bytes(POST => '/', 'HTTP/1.1', ['Content-Length: 1001']), 413, no_follower => 1);
refused($small, '--max-body 1000: Content-Length 10^15',
    request_bytes(POST => '/', 'HTTP/1.1', ['Content-Length: 1000000000000000']), 413, no_follower => 1);
accepted($small, '--max-body 1000: chunked body of 1000 bytes',
    chunked_post(sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 600, 'c' x 600, 400, 'c' x 400)),
    'line=15 headers=1 body=1000');
refused($small, '--max-body 1000: chunked body of 1001 bytes',
    chunked_post(sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 600, 'c' x 600, 401, 'c' x 401)), 413);
refused($small, '--max-body 1000: a 5000-byte chunk, refused once 1001 bytes arrived',
    chunked_post(sprintf("%x\r\n%s", 5000, 'c' x 1001)), 413, no_follower => 1);
refused($small, '--max-body 1000: chunk size 2^64-1, refused once 1001 bytes arrived',
    chunked_post(('f' x 16) . "\r\n" . ('c' x 1001)), 413, no_follower => 1);

subtest '--max-body 1000: Expect: 100-continue gets 100 only within the limit' => sub {
    my $port = $small->port;
    my $client = client($port);
    $client->send(request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 1000', 'Expect: 100-continue' ]));
    my $interim = $client->read_response;
    ok($interim->ok && $interim->status == 100, '100 Continue within the limit') or diag($interim->describe);
    $client->send('c' x 1000);
    response_is($client->read_response, 200, 'line=15 headers=2 body=1000', 'then the answer');
    $client->close;

    my $calls = app_calls($port);
    $client = client($port);
    $client->send(request_bytes(POST => '/', 'HTTP/1.1', [ 'Content-Length: 1001', 'Expect: 100-continue' ]));
    my $res = $client->read_response;
    ok($res->ok && $res->status == 413, 'over the limit: the first response is 413, not 100') or diag($res->describe);
    ok($client->closed_without_more_data, 'then the connection closes');
    is(app_calls($port), $calls, 'the app was not called');
};

for my $server ($defaults, $maximum_headers, $small) {
    ok($server->is_running, 'server on port ' . $server->port . ' still running');
    response_is(simple_request($server->port, request_bytes(GET => '/calls')), 200, undef, 'and still serving');
    $server->stop;
}
done_testing;
