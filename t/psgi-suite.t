# Plack's own server conformance suite, run against Plack::Handler::Twiggy.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;
use Plack::Test::Suite;

safety_alarm(120);

Plack::Test::Suite->run_server_tests('Twiggy');
done_testing;
