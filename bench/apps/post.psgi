# bench/run's POST workload: reads the whole request body from psgi.input and answers with its
# length in bytes, as bench/limit does under /post.
use strict;
use warnings;

use constant READ_BYTES => 65_536;

my $app = sub {
    my $env   = shift;
    my $input = $env->{'psgi.input'};
    my $total = 0;
    while (1) {
        my $read = $input->read( my $chunk, READ_BYTES );
        last unless $read;
        $total += $read;
    }
    return [ 200, [ 'Content-Type' => 'text/plain', 'Content-Length' => length $total ], [$total] ];
};
