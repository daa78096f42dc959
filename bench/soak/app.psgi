# The soak app: one endpoint per response type and failure path, so a long run exercises
# every allocation the server makes on behalf of a request.
use strict;
use warnings;
use AnyEvent;

my $file = __FILE__;
my $small = 'x' x 100;

my %routes = (
    '/array'   => sub { [ 200, [ 'Content-Type' => 'text/plain' ], [ 'Hello, ', 'World!' ] ] },
    '/numeric' => sub { [ 200, [ 'Content-Length' => 5 ], ['12345'] ] },
    '/fh'      => sub { open my $fh, '<', $file or die $!; [ 200, [ 'Content-Type' => 'text/plain' ], $fh ] },
    '/object'  => sub {
        my @lines = ("a\n", "b\n", "c\n");
        [ 200, [], Soak::Body->new(\@lines) ];
    },
    '/delayed' => sub {
        sub { my $respond = shift; $respond->([ 200, [ 'Content-Type' => 'text/plain' ], ['later'] ]) };
    },
    '/timer' => sub {
        sub {
            my $respond = shift;
            my $timer;
            $timer = AE::timer 0, 0, sub { undef $timer; $respond->([ 200, [], ['timer'] ]) };
        };
    },
    '/stream' => sub {
        sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write($_) for 1 .. 5;
            $writer->close;
        };
    },
    '/post' => sub {
        my $env = shift;
        my $length = $env->{CONTENT_LENGTH} || 0;
        $env->{'psgi.input'}->read(my $body, $length);
        [ 200, [], [ length $body ] ];
    },
    '/die'     => sub { die "soak: intended failure\n" },
    '/invalid' => sub { [ 'nonsense' ] },
    '/splitting' => sub { [ 200, [ 'X-Bad' => "a\r\nb" ], ['no'] ] },
    '/getline-die' => sub { [ 200, [], Soak::Dies->new ] },
);

my $app = sub {
    my $env = shift;
    my $route = $routes{ $env->{PATH_INFO} } || sub { [ 404, [], ['not found'] ] };
    return $route->($env);
};

package Soak::Body;
sub new { my ($class, $lines) = @_; bless { lines => [@$lines] }, $class }
sub getline { shift @{ $_[0]{lines} } }
sub close { }

package Soak::Dies;
sub new { bless {}, shift }
sub getline { die "soak: getline failure\n" }
sub close { }

package main;
$app;
