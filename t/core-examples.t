# Every example app under eg/ loads and works when served by Twiggy.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Plack::Util ();
use TwiggyTest;

safety_alarm(60);

my $eg = "$FindBin::Bin/../eg";
plan skip_all => 'no eg/ directory' unless -d $eg;

# name => [ environment, request target, check ]
my %checks = (
    'hello.psgi' => [ {}, '/', sub {
        my ($res) = @_;
        response_is($res, 200, 'Hello, World!', 'hello.psgi');
    } ],
    'async_echo.psgi' => [ { ECHO_DELAY => '0.1' }, '/?field=%3Cb%3Ehi', sub {
        my ($res) = @_;
        response_is($res, 200, undef, 'async_echo.psgi');
        like($res->body // '', qr/You said: &lt;b&gt;hi/, 'echoes the field, escaped');
    } ],
    'streaming.psgi' => [ {}, '/?events=3&interval=0.02', sub {
        my ($res) = @_;
        response_is($res, 200, undef, 'streaming.psgi');
        is($res->framing, 'chunked', 'streamed with chunked encoding');
        my @events = ($res->body // '') =~ /^data: (.*)$/mg;
        is_deeply(\@events, [ map { "event $_ of 3" } 1 .. 3 ], 'three events');
    } ],
);

my @files = sort glob("$eg/*.psgi");
ok(scalar @files, 'there are example apps');

for my $file (@files) {
    my ($name) = $file =~ m{([^/]+)\z};
    subtest $name => sub {
        my ($environment, $target, $check) = @{ $checks{$name} || [ {}, '/', undef ] };
        local @ENV{ keys %$environment } = values %$environment;
        my $app = eval { Plack::Util::load_psgi($file) };
        ok($app, 'loads') or return diag($@);
        my $server = start_server(app => $app);
        my $res = simple_request($server->port, request_bytes(GET => $target));
        if ($check) {
            $check->($res);
        } else {
            ok($res->ok && $res->status < 500, "$name answers") or diag($res->describe);
        }
        $server->stop;
    };
}

done_testing;
