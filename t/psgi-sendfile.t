# Real file handles as bodies go out with sendfile(2): the bytes must be exactly the file's
# from the handle's position (tell, even when PerlIO has read ahead), with a Content-Length,
# nothing for HEAD, the handle closed afterwards, and a client leaving midway costing nothing.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp ();
use Test::More;
use TwiggyTest;

safety_alarm(60);

my $dir  = File::Temp::tempdir(CLEANUP => 1);
my $path = "$dir/data.bin";
my $content = join '', map { sprintf "line %07d %s\n", $_, 'x' x 40 } 1 .. 60_000;    # about 3.4 MB
open my $out, '>', $path or die $!;
binmode $out;
print {$out} $content;
close $out;

my $closed = 0;
{
    package Counting::FH;
    our @ISA = ('IO::File');
    sub close { $closed++; my $self = shift; $self->SUPER::close(@_) }
}
require IO::File;

my $app = sub {
    my $env = shift;
    my $fh = Counting::FH->new($path, '<') or die $!;
    binmode $fh;
    if ($env->{PATH_INFO} eq '/after-first-line') {
        my $first = <$fh>;    # PerlIO reads a whole buffer ahead of tell()
    }
    if ($env->{PATH_INFO} eq '/closed-count') {
        close $fh;
        return [ 200, [], [$closed] ];
    }
    return [ 200, [ 'Content-Type' => 'application/octet-stream' ], $fh ];
};

my $server = start_server(app => $app);
my $port   = $server->port;

my $response = simple_request($port, request_bytes(GET => '/whole'));
ok($response->ok, 'complete response');
is($response->header('Content-Length'), length $content, 'Content-Length from the file size');
ok($response->body eq $content, 'the body is exactly the file') or diag(length($response->body) . ' bytes');

$response = simple_request($port, request_bytes(GET => '/after-first-line'));
my $rest = substr $content, index($content, "\n") + 1;
is($response->header('Content-Length'), length $rest, 'Content-Length counts from tell()');
ok($response->body eq $rest, 'the body starts at tell(), not where PerlIO read to');

my $client = client($port);
$client->send("HEAD /whole HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
my $head = $client->read_until_close;
like($head, qr{\AHTTP/1\.1 200 OK\r\n.*Content-Length: ${\ length $content}\r\n.*\r\n\r\n\z}s, 'HEAD: the length, no body');

# A client that reads a little and leaves.
my $leaver = client($port);
$leaver->send(request_bytes(GET => '/whole'));
$leaver->read_exact(1000);
$leaver->abort;

ok(wait_until(sub {
    my $count = simple_request($port, request_bytes(GET => '/closed-count'));
    $count->ok && $count->body >= 4;
}, 10), 'every file handle was closed (including the one of the client that left)');
ok($server->is_running, 'the server is still running');

done_testing;
