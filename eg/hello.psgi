# The smallest PSGI application: the benchmark's baseline workload.
#
#   twiggy --listen 127.0.0.1:5000 eg/hello.psgi
#   curl http://127.0.0.1:5000/
use strict;
use warnings;

my $app = sub {
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['Hello, World!'] ];
};
