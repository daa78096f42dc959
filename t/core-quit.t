# run($app) serves until SIGQUIT. Then the server stops accepting, lets in-flight requests
# finish (their responses are complete), and run returns.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use IO::Socket::INET;
use TwiggyTest;
use TwiggyTest qw(refuses_connections);

safety_alarm(60);

my $dir = File::Temp->newdir;

sub touch { open my $fh, '>', $_[0] or die "$_[0]: $!"; close $fh }

my $app = sub {
    my $env = shift;
    if ($env->{PATH_INFO} eq '/slow') {
        touch("$dir/slow-started-$env->{QUERY_STRING}");
        return sub {
            my $responder = shift;
            my $timer;
            $timer = AE::timer(1.5, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ['slow done'] ]);
            });
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['ok'] ];
};

sub start {
    my ($name) = @_;
    return start_server(app => $app, after_run => sub { touch("$dir/run-returned-$name") });
}


subtest 'in-flight delayed response completes after SIGQUIT' => sub {
    my $server = start('inflight');
    my $port = $server->port;
    my $client = client($port);
    $client->send(request_bytes(GET => '/slow?inflight'));
    ok(wait_until(sub { -e "$dir/slow-started-inflight" }, 5), 'app got the slow request');

    ok($server->signal('QUIT'), 'sent SIGQUIT');
    ok(refuses_connections($port), 'new connections are refused');

    my $res = $client->read_response;
    response_is($res, 200, 'slow done', 'in-flight response');
    ok($client->closed_without_more_data, 'its connection is closed afterwards');
    $client->close;

    my $status = $server->wait_exit(5);
    ok(defined $status, 'server process exits');
    is($status, 0, 'exit status 0');
    ok(-e "$dir/run-returned-inflight", 'run() returned');
};

subtest 'idle keep-alive connection does not hold up shutdown' => sub {
    my $server = start('idle');
    my $port = $server->port;

    my $idle = client($port);
    $idle->send(request_bytes(GET => '/ok'));
    response_is($idle->read_response, 200, 'ok', 'keep-alive connection served, left open');

    my $busy = client($port);
    $busy->send(request_bytes(GET => '/slow?idle'));
    ok(wait_until(sub { -e "$dir/slow-started-idle" }, 5), 'app got the slow request');

    ok($server->signal('QUIT'), 'sent SIGQUIT');
    response_is($busy->read_response, 200, 'slow done', 'in-flight response');
    ok($idle->closed_without_more_data, 'idle connection closed without a response');
    ok($busy->closed_without_more_data, 'busy connection closed after its response');
    $_->close for $idle, $busy;
    is($server->wait_exit(5), 0, 'server exits with status 0');
    ok(-e "$dir/run-returned-idle", 'run() returned');
};

subtest 'nothing in flight' => sub {
    my $server = start('quiet');
    response_is(simple_request($server->port, request_bytes(GET => '/ok')), 200, 'ok', 'served');
    ok($server->signal('QUIT'), 'sent SIGQUIT');
    is($server->wait_exit(5), 0, 'server exits with status 0');
    ok(-e "$dir/run-returned-quiet", 'run() returned');
};

done_testing;
