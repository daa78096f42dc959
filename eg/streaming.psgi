# Server-sent events through the psgi.streaming writer: a timer writes one
# event per tick, then the response is closed.
#
#   twiggy --listen 127.0.0.1:5000 eg/streaming.psgi
#   curl -N 'http://127.0.0.1:5000/?events=5&interval=0.5'
#
# Query parameters (both optional):
#   events    how many events to send, 1 .. 10000 (default: STREAM_EVENTS or 5)
#   interval  seconds between events, 0 .. 60     (default: STREAM_INTERVAL or 0.2)
#
# A blocking server (Starman, HTTP::Server::PSGI) runs no event loop, so there
# the app waits for its own timer with a condition variable and holds the
# worker until the last event is written.
use strict;
use warnings;

use AnyEvent;
use Plack::Request;

use constant MAX_EVENTS   => 10_000;
use constant MAX_INTERVAL => 60;

sub number_in_range {
    my ( $value, $default, $max ) = @_;
    return $default unless defined $value && $value =~ /\A[0-9]+(?:\.[0-9]+)?\z/;
    return $value > $max ? $max : $value;
}

my $default_events   = number_in_range( $ENV{STREAM_EVENTS},   5,   MAX_EVENTS );
my $default_interval = number_in_range( $ENV{STREAM_INTERVAL}, 0.2, MAX_INTERVAL );

my $app = sub {
    my $env = shift;

    unless ( $env->{'psgi.streaming'} ) {
        return [ 501, [ 'Content-Type' => 'text/plain' ], ["This app needs a psgi.streaming server.\n"] ];
    }

    my $request  = Plack::Request->new($env);
    my $events   = int number_in_range( $request->param('events'), $default_events, MAX_EVENTS );
    my $interval = number_in_range( $request->param('interval'), $default_interval, MAX_INTERVAL );
    $events = 1 if $events < 1;

    return sub {
        my $responder = shift;
        my $writer    = $responder->(
            [   200,
                [   'Content-Type'  => 'text/event-stream',
                    'Cache-Control' => 'no-cache',
                ],
            ]
        );

        my $done = AE::cv;
        my $sent = 0;
        my $timer;
        $timer = AE::timer 0, $interval, sub {
            $sent++;
            $writer->write("id: $sent\nevent: tick\ndata: event $sent of $events\n\n");
            return if $sent < $events;
            undef $timer;
            $writer->close;
            $done->send;
        };
        $done->recv unless $env->{'psgi.nonblocking'};
    };
};
