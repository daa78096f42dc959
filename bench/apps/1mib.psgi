# bench/run's 1 MiB workload: the same bytes bench/limit serves under /1mib, built once when
# the app loads and returned as a one-element array body.
use strict;
use warnings;

my $body = ( ( 'x' x 63 ) . "\n" ) x 16_384;    # 1,048,576 bytes

my $app = sub {
    return [ 200, [ 'Content-Type' => 'application/octet-stream', 'Content-Length' => length $body ], [$body] ];
};
