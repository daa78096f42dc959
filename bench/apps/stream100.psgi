# bench/run's streaming workload: a psgi.streaming response of 100 writes of about 20 bytes,
# made one after the other (no timer), then closed. Without Content-Length, HTTP/1.1 servers
# send it chunked.
use strict;
use warnings;

use constant WRITES => 100;

my $app = sub {
    my $env = shift;
    return [ 501, [ 'Content-Type' => 'text/plain' ], ["This app needs a psgi.streaming server.\n"] ]
        unless $env->{'psgi.streaming'};
    return sub {
        my $responder = shift;
        my $writer    = $responder->( [ 200, [ 'Content-Type' => 'text/plain' ] ] );
        $writer->write( sprintf "line %03d of %d\n", $_, WRITES ) for 1 .. WRITES;
        $writer->close;
    };
};
