# Every PSGI response form reaches the client byte for byte (PSGI spec, "The Response"): array
# bodies (strings, numbers, objects with overloaded stringification), real filehandles,
# in-memory filehandles, IO::Handle-like objects (whose close is called), delayed responses,
# the streaming writer, and bodies over 1 MB of each kind; over HTTP/1.1 and HTTP/1.0.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::MD5 qw(md5_hex);
use File::Temp ();
use TwiggyTest;

safety_alarm(90);

{
    package Local::Stringy;
    use overload '""' => sub { $_[0]{text} }, fallback => 1;
    sub new { my ($class, $text) = @_; return bless { text => $text }, $class }
}

our %closed;
{
    package Local::Lines;
    # An IO::Handle-like body: getline until undef, then close.
    sub new { my ($class, $name, @lines) = @_; return bless { name => $name, lines => [@lines] }, $class }
    sub getline { my ($self) = @_; return shift @{ $self->{lines} } }
    sub close { my ($self) = @_; $main::closed{ $self->{name} }++; return 1 }
}

my $dir = File::Temp->newdir;
my $small_data = join '', map { chr(($_ * 7) % 256) } 1 .. 200_000;
my $big_data = join '', map { chr(($_ * 11 + 1) % 256) } 1 .. 65536;
$big_data = $big_data x 48;    # 3 MB
for ([ 'small.bin', $small_data ], [ 'big.bin', $big_data ]) {
    open my $fh, '>', "$dir/$_->[0]" or die $!;
    binmode $fh;
    print {$fh} $_->[1];
    close $fh;
}
my $memory_data = "in-memory filehandle\nsecond line\n";
my $big_piece = substr($big_data, 0, 65536);

my %responses = (
    '/array'          => [ sub { [ 200, [ 'Content-Type' => 'text/plain' ], [ 'Hello', ' ', 'World' ] ] }, 'Hello World' ],
    '/array-length'   => [ sub { [ 200, [ 'Content-Type' => 'text/plain', 'Content-Length' => 5 ], ['hel', 'lo'] ] }, 'hello' ],
    '/array-empty'    => [ sub { [ 200, [ 'Content-Type' => 'text/plain' ], [] ] }, '' ],
    '/array-numbers'  => [ sub { [ 200, [ 'Content-Type' => 'text/plain' ], [ 42, 3.5 ] ] }, '423.5' ],
    '/array-overload' => [ sub {
        [ 200, [ 'Content-Type' => 'text/plain' ], [ Local::Stringy->new('over'), '+', Local::Stringy->new('loaded') ] ]
    }, 'over+loaded' ],
    '/fh'             => [ sub {
        open my $fh, '<', "$dir/small.bin" or die $!;
        binmode $fh;
        [ 200, [ 'Content-Type' => 'application/octet-stream' ], $fh ];
    }, $small_data ],
    '/memory-fh'      => [ sub {
        open my $fh, '<', \$memory_data or die $!;
        [ 200, [ 'Content-Type' => 'text/plain' ], $fh ];
    }, $memory_data ],
    '/handle'         => [ sub {
        [ 200, [ 'Content-Type' => 'text/plain' ], Local::Lines->new('handle', 'ab', '', 'cd', "\n", 'ef') ]
    }, "abcd\nef" ],
    '/delayed'        => [ sub { sub { $_[0]->([ 200, [ 'Content-Type' => 'text/plain' ], ['delayed now'] ]) } }, 'delayed now' ],
    '/delayed-timer'  => [ sub {
        sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer(0.05, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], [ 'delayed ', 'later' ] ]);
            });
        };
    }, 'delayed later' ],
    '/delayed-handle' => [ sub {
        sub { $_[0]->([ 200, [ 'Content-Type' => 'text/plain' ], Local::Lines->new('delayed-handle', 'x', 'y', 'z') ]) }
    }, 'xyz' ],
    '/writer'         => [ sub {
        sub {
            my $writer = $_[0]->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('wr');
            $writer->write('it');
            $writer->write('er');
            $writer->close;
        };
    }, 'writer' ],
    '/writer-timer'   => [ sub {
        sub {
            my $writer = $_[0]->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            my @left = ('a' .. 'e');
            my $timer;
            $timer = AE::timer(0, 0.01, sub {
                if (@left) {
                    $writer->write(shift @left);
                } else {
                    undef $timer;
                    $writer->close;
                }
            });
        };
    }, 'abcde' ],
    '/big-array'      => [ sub { [ 200, [ 'Content-Type' => 'application/octet-stream' ], [$big_data] ] }, $big_data ],
    '/big-array-many' => [ sub {
        [ 200, [ 'Content-Type' => 'application/octet-stream' ], [ unpack '(a1024)*', $big_data ] ]
    }, $big_data ],
    '/big-fh'         => [ sub {
        open my $fh, '<', "$dir/big.bin" or die $!;
        binmode $fh;
        [ 200, [ 'Content-Type' => 'application/octet-stream' ], $fh ];
    }, $big_data ],
    '/big-handle'     => [ sub {
        [ 200, [ 'Content-Type' => 'application/octet-stream' ], Local::Lines->new('big-handle', unpack '(a65536)*', $big_data) ]
    }, $big_data ],
    '/big-writer'     => [ sub {
        sub {
            my $writer = $_[0]->([ 200, [ 'Content-Type' => 'application/octet-stream' ] ]);
            $writer->write($_) for unpack '(a65536)*', $big_data;
            $writer->close;
        };
    }, $big_data ],
    '/big-writer-length' => [ sub {
        sub {
            my $writer = $_[0]->([ 200, [ 'Content-Type' => 'application/octet-stream', 'Content-Length' => length $big_data ] ]);
            $writer->write($_) for unpack '(a65536)*', $big_data;
            $writer->close;
        };
    }, $big_data ],
);

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path eq '/closed') {
        return [ 200, [ 'Content-Type' => 'text/plain' ],
            [ join ',', map { "$_=$closed{$_}" } sort keys %closed ] ];
    }
    my $entry = $responses{$path} or return [ 404, [ 'Content-Type' => 'text/plain' ], ['no such case'] ];
    return $entry->[0]->($env);
};

my $server = start_server(app => $app);
my $port = $server->port;

sub same_body {
    my ($res, $expected, $name) = @_;
    ok($res->ok && $res->status == 200, "$name: complete 200") or diag($res->describe);
    my $body = $res->body // '';
    if (length $expected > 200 || length $body > 200) {
        is(length $body, length $expected, "$name: length");
        is(md5_hex($body), md5_hex($expected), "$name: content");
    } else {
        is($body, $expected, "$name: body");
    }
}

my @paths = sort keys %responses;

subtest 'HTTP/1.1, all on one keep-alive connection' => sub {
    my $client = client(port => $port, timeout => 20);
    for my $path (@paths) {
        $client->send(request_bytes(GET => $path));
        same_body($client->read_response, $responses{$path}[1], $path);
    }
};

subtest 'HTTP/1.0, one connection each' => sub {
    for my $path (@paths) {
        my $client = client(port => $port, timeout => 20);
        $client->send(request_bytes(GET => $path, 'HTTP/1.0'));
        same_body($client->read_response, $responses{$path}[1], "$path (HTTP/1.0)");
    }
};

subtest 'HTTP/1.1, all pipelined' => sub {
    my $client = client(port => $port, timeout => 30);
    $client->send(join '', map { request_bytes(GET => $_) } @paths);
    same_body($client->read_response, $responses{$_}[1], "$_ (pipelined)") for @paths;
};

subtest 'close is called on IO::Handle-like bodies' => sub {
    my $expected = 'big-handle=3,delayed-handle=3,handle=3';
    my $report = '';
    ok(wait_until(sub {
        $report = simple_request($port, request_bytes(GET => '/closed'))->body // '';
        $report eq $expected;
    }, 5), 'each body object was closed once per response') or diag("closed: $report");
};

subtest 'exactly one Content-Length on array bodies' => sub {
    my $res = simple_request($port, request_bytes(GET => '/array'));
    is($res->header_count('Content-Length'), 1, 'computed: one Content-Length');
    is($res->header('Content-Length'), 11, 'computed: value');
    $res = simple_request($port, request_bytes(GET => '/array-length'));
    is($res->header_count('Content-Length'), 1, "app's own: one Content-Length");
    is($res->header('Content-Length'), 5, "app's own: value");
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
