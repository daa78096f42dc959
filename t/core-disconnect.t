# A client that goes away at any stage costs only its own connection: mid-head, mid-body, while
# a delayed response is pending, while a response is streamed, during a large response, with a
# FIN or with a RST. An empty connection or an incomplete request gets no response bytes at all.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use TwiggyTest;

safety_alarm(90);

my $dir = File::Temp->newdir;
my $big_file = "$dir/big.bin";
{
    open my $fh, '>', $big_file or die $!;
    binmode $fh;
    print {$fh} ('f' x 65536) for 1 .. 256;    # 16 MB
    close $fh;
}

my %count = map { $_ => 0 } qw(slow_started slow_finished slow_died ticker_started ticker_finished ticker_died);

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path eq '/slow') {
        $count{slow_started}++;
        return sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer(0.3, 0, sub {
                undef $timer;
                eval { $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ['slow'] ]); 1 }
                    or $count{slow_died}++;
                $count{slow_finished}++;
            });
        };
    }
    if ($path eq '/ticker') {
        $count{ticker_started}++;
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            my $ticks = 0;
            my $timer;
            $timer = AE::timer(0, 0.01, sub {
                if (++$ticks > 40) {
                    undef $timer;
                    eval { $writer->close; 1 } or $count{ticker_died}++;
                    $count{ticker_finished}++;
                    return;
                }
                eval { $writer->write('t' x 1024); 1 } or $count{ticker_died}++;
            });
        };
    }
    if ($path eq '/big') {
        return [ 200, [ 'Content-Type' => 'application/octet-stream' ], [ 'b' x (32 * 1024 * 1024) ] ];
    }
    if ($path eq '/big-file') {
        open my $fh, '<', $big_file or die $!;
        return [ 200, [ 'Content-Type' => 'application/octet-stream' ], $fh ];
    }
    if ($path eq '/big-stream') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'application/octet-stream' ] ]);
            $writer->write('s' x 65536) for 1 .. 256;
            $writer->close;
        };
    }
    if ($path eq '/stats') {
        return [ 200, [ 'Content-Type' => 'text/plain' ],
            [ join ' ', map { "$_=$count{$_}" } sort keys %count ] ];
    }
    if ($path eq '/echo') {
        my $body = '';
        $env->{'psgi.input'}->read($body, $env->{CONTENT_LENGTH} || 0);
        return [ 200, [ 'Content-Type' => 'text/plain' ], [ 'got ' . length $body ] ];
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['ok'] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

sub still_serving {
    my ($name) = @_;
    ok($server->is_running, "$name: server process still running");
    response_is(simple_request($port, request_bytes(GET => '/ok')), 200, 'ok', "$name: a new client is served");
}

sub stats {
    my $res = simple_request($port, request_bytes(GET => '/stats'));
    my %stats = map { $_ => 0 } keys %count;
    %stats = (%stats, map { split /=/ } split / /, $res->body // '') if $res->ok;
    return \%stats;
}

subtest 'no response bytes for an empty or incomplete request' => sub {
    my @cases = (
        [ 'empty connection, half-closed',          '' ],
        [ 'part of a request line',                 'GET /ok HT' ],
        [ 'head without its final CRLF',            "GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n" ],
        [ 'head ending in a lone CR',               "GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r" ],
        [ 'Content-Length body cut short',          request_bytes(POST => '/echo', 'HTTP/1.1', ['Content-Length: 100'], 'x' x 10) ],
        [ 'chunked body cut short',                 request_bytes(POST => '/echo', 'HTTP/1.1', ['Transfer-Encoding: chunked'], "a\r\n12345") ],
        [ 'chunked body without its last chunk',    request_bytes(POST => '/echo', 'HTTP/1.1', ['Transfer-Encoding: chunked'], "3\r\nabc\r\n") ],
        [ 'HTTP/1.0 head cut short',                "GET /ok HTTP/1.0\r\nUser-Agent: x" ],
    );
    for my $case (@cases) {
        my ($name, $bytes) = @$case;
        my $client = client($port);
        ok($client->connected, "$name: connected");
        $client->send($bytes) if length $bytes;
        $client->shutdown_write;
        ok($client->closed_without_more_data, "$name: closed with zero response bytes")
            or diag('received: ' . ($client->{extra} // '') . ($client->eof ? '' : ' (not closed)'));
    }
    still_serving('incomplete requests');
};

subtest 'connect and close at once' => sub {
    for (1 .. 5) {
        my $client = client($port);
        $client->close;
    }
    my $client = client($port);
    $client->abort;
    still_serving('empty connections');
};

subtest 'disconnect mid-head and mid-body' => sub {
    my @clients;
    for my $i (1 .. 20) {
        my $client = client($port);
        $client->send("GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Part: $i");
        push @clients, $client;
    }
    $_->close for @clients[0 .. 9];
    $_->abort for @clients[10 .. 19];
    still_serving('twenty clients gone mid-head');

    my $client = client($port);
    $client->send(request_bytes(POST => '/echo', 'HTTP/1.1', ['Content-Length: 1048576'], 'y' x 102400));
    $client->close;
    $client = client($port);
    $client->send(request_bytes(POST => '/echo', 'HTTP/1.1', ['Transfer-Encoding: chunked'], "100000\r\n" . ('z' x 50000)));
    $client->abort;
    still_serving('clients gone mid-body');
};

subtest 'disconnect while a delayed response is pending' => sub {
    my $before = stats();
    for my $how ('close', 'abort') {
        my $client = client($port);
        $client->send(request_bytes(GET => '/slow'));
        ok(wait_until(sub { stats()->{slow_started} > $before->{slow_started} }, 5), "$how: app got the request");
        $client->$how();
        $before = stats();
    }
    ok(wait_until(sub { my $now = stats(); $now->{slow_started} && $now->{slow_finished} == $now->{slow_started} }, 5),
        'the app responded to both gone clients');
    note('responder calls that died for gone clients: ' . stats()->{slow_died});
    still_serving('gone clients with pending delayed responses');
};

subtest 'disconnect while a response is streamed' => sub {
    for my $how ('close', 'abort') {
        my $client = client($port);
        $client->send(request_bytes(GET => '/ticker'));
        ok($client->wait_for('tttt'), "$how: streaming started");
        $client->$how();
    }
    ok(wait_until(sub { my $now = stats(); $now->{ticker_started} && $now->{ticker_finished} == $now->{ticker_started} }, 5),
        'the app finished writing to both gone clients');
    note('writer calls that died for gone clients: ' . stats()->{ticker_died});
    still_serving('gone clients of streamed responses');
};

subtest 'disconnect during a large response' => sub {
    for my $path ('/big', '/big-file', '/big-stream') {
        for my $protocol ('HTTP/1.1', 'HTTP/1.0') {
            for my $how ('close', 'abort') {
                my $client = client($port);
                $client->send(request_bytes(GET => $path, $protocol));
                ok($client->read_exact(100_000), "$path $protocol $how: response started");
                $client->$how();
            }
        }
        still_serving("gone clients of $path");
    }
};

subtest 'a reader that pauses still gets the whole large response' => sub {
    my $client = client(port => $port, timeout => 30);
    $client->send(request_bytes(GET => '/big-file'));
    select(undef, undef, undef, 0.5);    # let the server hit a full socket buffer
    my $res = $client->read_response;
    ok($res->ok && $res->status == 200, 'complete 200') or diag($res->describe);
    is(length($res->body // ''), 16 * 1024 * 1024, '16 MB');
    ok(($res->body // '') !~ /[^f]/, 'content intact');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
