# The native access log (access_log / twiggy --access-log): one combined-format line per
# response, with the status and body bytes actually sent, request fields escaped so a client
# cannot forge lines, and every line on disk once the server stops gracefully (QUIT).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp ();
use Test::More;
use TwiggyTest;

safety_alarm(60);

my $dir = File::Temp::tempdir(CLEANUP => 1);
my $log = "$dir/access.log";

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    return [ 404, [ 'Content-Type' => 'text/plain' ], ['nope'] ] if $path eq '/missing';
    die "intended\n" if $path eq '/die';
    if ($path eq '/stream') {
        return sub {
            my $writer = shift->([ 200, [] ]);
            $writer->write('abc');
            $writer->write('defg');
            $writer->close;
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['Hello World'] ];
};

my $server = start_server(app => $app, access_log => $log, stderr => 1);
my $client = client($server->port);
my @requests = (
    [ "GET /plain?x=1 HTTP/1.1\r\nHost: h\r\nReferer: http://r/\r\nUser-Agent: agent/1.0\r\n\r\n", 200 ],
    [ "GET /missing HTTP/1.1\r\nHost: h\r\n\r\n",                                            404 ],
    [ "GET /stream HTTP/1.1\r\nHost: h\r\n\r\n",                                             200 ],
    [ "GET /die HTTP/1.1\r\nHost: h\r\n\r\n",                                                500 ],
    [ "GET /q\"x HTTP/1.1\r\nHost: h\r\nUser-Agent: a\"b\\c\r\n\r\n",                          200 ],
);
for my $request (@requests) {
    $client->send($request->[0]);
    my $response = $client->read_response;
    is($response->status, $request->[1], "answered: " . ($request->[0] =~ /\A(\S+ \S+)/)[0]);
}
$client->close;

# HEAD on its own connection: a raw client cannot tell a HEAD answer has no body.
my $head = client($server->port);
$head->send("HEAD /plain HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
like($head->read_until_close // '', qr{\AHTTP/1\.1 200 OK\r\n.*\r\n\r\n\z}s, 'HEAD answered without a body');

ok($server->signal('QUIT'), 'QUIT the server');
ok(defined $server->wait_exit(10), 'it stops');

open my $fh, '<', $log or die "no access log: $!";
my @lines = <$fh>;
close $fh;
is(scalar @lines, @requests + 1, 'one line per response');
my $prefix = qr{\A127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] };
like($lines[0], qr{$prefix"GET /plain\?x=1 HTTP/1\.1" 200 11 "http://r/" "agent/1\.0"\n\z}, 'combined format');
like($lines[1], qr{$prefix"GET /missing HTTP/1\.1" 404 4 }, 'the status the app chose');
like($lines[2], qr{$prefix"GET /stream HTTP/1\.1" 200 7 }, 'streamed body bytes, without chunk framing');
like($lines[3], qr{$prefix"GET /die HTTP/1\.1" 500 21 }, 'the 500 the server sent for a dying app');
like($lines[4], qr{$prefix"GET /q\\x22x HTTP/1\.1" 200 11 "-" "a\\x22b\\x5cc"\n\z}, 'quotes and backslashes escaped');
like($lines[5], qr{$prefix"HEAD /plain HTTP/1\.1" 200 - "-" "-"\n\z}, 'HEAD: no body bytes');

done_testing;
