# RFC 9112 section 7.1 (chunked transfer coding) on requests: the server decodes the chunks,
# ignores chunk extensions, consumes trailer fields, and hands the app the decoded body with
# CONTENT_LENGTH set to its length.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::MD5 qw(md5_hex);
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    my $input = $env->{'psgi.input'};
    my $body = '';
    while (1) {
        my $read = $input->read(my $buffer, 65536);
        last unless $read;
        $body .= $buffer;
    }
    my $length = defined $env->{CONTENT_LENGTH} ? $env->{CONTENT_LENGTH} : 'undef';
    my $shown = length($body) <= 64 ? $body : 'md5:' . md5_hex($body);
    return [ 200, [ 'Content-Type' => 'text/plain' ],
        ["$env->{PATH_INFO} CONTENT_LENGTH=$length read=" . length($body) . " body=$shown"] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

sub chunked_post {
    my ($path, $chunked_body, @headers) = @_;
    return request_bytes(POST => $path, 'HTTP/1.1',
        [ 'Transfer-Encoding: chunked', 'Content-Type: application/octet-stream', @headers ],
        $chunked_body);
}

my @cases = (
    [ 'two chunks',         "5\r\nHello\r\n6\r\n World\r\n0\r\n\r\n",          'Hello World' ],
    [ 'upper-case hex with leading zeros', "000A\r\n0123456789\r\n0\r\n\r\n", '0123456789' ],
    [ 'lower-case hex',     "a\r\nabcdefghij\r\n1\r\nk\r\n0\r\n\r\n",          'abcdefghijk' ],
    [ 'chunk extensions',   "5;name=value\r\nHello\r\n1;flag\r\n!\r\n0;last=1\r\n\r\n", 'Hello!' ],
    [ 'trailer fields',     "4\r\nbody\r\n0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n", 'body' ],
    [ 'empty body',         "0\r\n\r\n",                                       '' ],
    [ 'binary data with CRLF inside a chunk', "6\r\n\r\n\x00\xff\r\n\r\n0\r\n\r\n", "\r\n\x00\xff\r\n" ],
);

for my $case (@cases) {
    my ($name, $chunked, $expected) = @$case;
    my $length = length $expected;
    my $res = simple_request($port, chunked_post('/c', $chunked));
    response_is($res, 200, "/c CONTENT_LENGTH=$length read=$length body=$expected", $name);
}

subtest 'Transfer-Encoding value is case-insensitive' => sub {
    my $res = simple_request($port, request_bytes(POST => '/case', 'HTTP/1.1',
        ['Transfer-Encoding: Chunked'], "3\r\nabc\r\n0\r\n\r\n"));
    response_is($res, 200, '/case CONTENT_LENGTH=3 read=3 body=abc', 'Transfer-Encoding: Chunked');
};

subtest 'keep-alive after a chunked request with trailers' => sub {
    my $client = client($port);
    $client->send(chunked_post('/first', "3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")
        . request_bytes(GET => '/second'));
    response_is($client->read_response, 200, '/first CONTENT_LENGTH=3 read=3 body=abc', 'chunked request');
    response_is($client->read_response, 200, '/second CONTENT_LENGTH=undef read=0 body=', 'next request on the connection');
    $client->send(chunked_post('/third', "2\r\nxy\r\n0\r\n\r\n"));
    response_is($client->read_response, 200, '/third CONTENT_LENGTH=2 read=2 body=xy', 'another chunked request');
};

subtest 'chunked request sent in small pieces' => sub {
    my $client = client($port);
    $client->send_slowly(chunked_post('/slow', "5\r\nHello\r\n6;x=y\r\n World\r\n0\r\nT: 1\r\n\r\n"), 3, 0.002);
    response_is($client->read_response, 200, '/slow CONTENT_LENGTH=11 read=11 body=Hello World', 'pieces');
};

subtest 'chunk head and data in separate writes' => sub {
    my $client = client($port);
    $client->send(request_bytes(POST => '/parts', 'HTTP/1.1', ['Transfer-Encoding: chunked']));
    for my $piece ("5\r\n", "hel", "lo", "\r", "\n", "0\r\n", "\r\n") {
        select(undef, undef, undef, 0.03);
        $client->send($piece);
    }
    response_is($client->read_response, 200, '/parts CONTENT_LENGTH=5 read=5 body=hello', 'separate writes');
};

subtest 'two megabytes in uneven chunks' => sub {
    my $data = join '', map { chr(($_ * 7 + 3) % 256) } 0 .. 255;
    $data = substr($data x 8193, 0, 2 * 1024 * 1024 + 17);
    my $chunked = '';
    my ($offset, $step) = (0, 1);
    while ($offset < length $data) {
        my $size = 1 + ($step++ * 7919) % 70000;
        my $piece = substr($data, $offset, $size);
        $chunked .= sprintf("%x\r\n", length $piece) . $piece . "\r\n";
        $offset += length $piece;
    }
    $chunked .= "0\r\n\r\n";
    my $client = client(port => $port, timeout => 20);
    $client->send(chunked_post('/big', $chunked));
    my $length = length $data;
    response_is($client->read_response, 200,
        "/big CONTENT_LENGTH=$length read=$length body=md5:" . md5_hex($data), 'big chunked body');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
