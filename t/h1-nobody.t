# RFC 9112 section 6.3 and RFC 9110 sections 9.3.2, 15.2, 15.3.5, 15.4.5: responses to HEAD, and
# 1xx, 204 and 304 responses, never carry content, whatever body the app returns. Each case is
# pipelined with a following request, so a single stray body byte breaks the next response.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path eq '/body') {
        return [ 200, [ 'Content-Type' => 'text/plain', 'Content-Length' => 5 ], ['hello'] ];
    }
    if ($path eq '/no-length') {
        return [ 200, [ 'Content-Type' => 'text/plain' ], ['hello'] ];
    }
    if ($path eq '/stream') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('streamed body');
            $writer->close;
        };
    }
    if ($path =~ m{\A/status/(\d+)\z}) {
        return [ $1, [ 'Content-Type' => 'text/plain' ], ['FORBIDDEN-BODY'] ];
    }
    if ($path =~ m{\A/stream-status/(\d+)\z}) {
        my $status = $1;
        return sub {
            my $writer = shift->([ $status, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('FORBIDDEN-BODY');
            $writer->close;
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["after:$path"] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

sub no_body_then_next {
    my ($request, $name, %opt) = @_;
    my $client = client($port);
    $client->send($request . request_bytes(GET => '/next'));
    my $res = $client->read_response(head => $opt{head});
    ok($res->ok, "$name: response head complete") or diag($res->describe);
    is($res->status, $opt{status}, "$name: status $opt{status}");
    my $next = $client->read_response;
    response_is($next, 200, 'after:/next', "$name: next response starts right after the head");
    unlike($res->{raw_head} . ($next->{raw} // ''), qr/FORBIDDEN-BODY/, "$name: the app's body was not sent");
    return $res;
}

subtest 'HEAD' => sub {
    my $res = no_body_then_next(request_bytes(HEAD => '/body'), 'HEAD with Content-Length', head => 1, status => 200);
    my $length = $res->header('Content-Length');
    ok(!defined $length || $length eq '5', 'Content-Length, if sent, is that of the GET response');

    $res = no_body_then_next(request_bytes(HEAD => '/no-length'), 'HEAD, array body', head => 1, status => 200);
    $length = $res->header('Content-Length');
    ok(!defined $length || $length eq '5', 'Content-Length, if sent, is that of the GET response');

    no_body_then_next(request_bytes(HEAD => '/stream'), 'HEAD, streamed body', head => 1, status => 200);
    no_body_then_next(request_bytes(HEAD => '/status/404'), 'HEAD, 404', head => 1, status => 404);
};

subtest 'HEAD over HTTP/1.0' => sub {
    my $client = client($port);
    $client->send(request_bytes(HEAD => '/stream', 'HTTP/1.0'));
    my $res = $client->read_response(head => 1);
    ok($res->ok && $res->status == 200, 'HEAD answered') or diag($res->describe);
    is($client->read_until_close, '', 'no bytes after the head, then close');
    ok($client->eof, 'connection closed');
};

for my $status (204, 304) {
    subtest "status $status" => sub {
        my $res = no_body_then_next(request_bytes(GET => "/status/$status"), "$status with array body", status => $status);
        is($res->header_count('Transfer-Encoding'), 0, "$status: no Transfer-Encoding");
        is($res->header_count('Content-Length'), 0, "$status: no Content-Length") if $status == 204;

        $res = no_body_then_next(request_bytes(GET => "/stream-status/$status"), "$status with streamed body", status => $status);
        is($res->header_count('Transfer-Encoding'), 0, "$status streamed: no Transfer-Encoding");
        is($res->header_count('Content-Length'), 0, "$status streamed: no Content-Length") if $status == 204;
    };
}

subtest '1xx returned by the app' => sub {
    for my $status (102, 103) {
        my $res = no_body_then_next(request_bytes(GET => "/status/$status"), "$status with array body", status => $status);
        is($res->header_count('Transfer-Encoding'), 0, "$status: no Transfer-Encoding");
        is($res->header_count('Content-Length'), 0, "$status: no Content-Length");
    }
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
