# Under Server::Starter (SERVER_STARTER_PORT set), Plack::Handler::Twiggy serves through
# Twiggy::Server::SS on the listening socket start_server hands down. A HUP starts a new worker
# generation; the old worker gets SIGQUIT (--signal-on-hup=QUIT) and exits gracefully.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use POSIX ();
use TwiggyTest;

safety_alarm(60);

plan skip_all => 'Server::Starter is not installed' unless eval { require Server::Starter; 1 };

my $port = empty_port();
my $log = File::Temp->new;
my @include = -d 'blib' ? ('-Mblib') : ('-Ilib');
my $worker_code = <<'CODE';
Plack::Loader->load('Twiggy')->run(sub {
    my $class = $INC{'Twiggy/Server/SS.pm'} ? 'SS' : 'plain';
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["pid=$$ class=$class"] ];
});
CODE

my $starter = start_server(
    stderr => $log->filename,
    port   => $port,
    runner => sub {
        Server::Starter::start_server(
            port          => "127.0.0.1:$port",
            signal_on_hup => 'QUIT',
            interval      => 1,
            exec          => [ $^X, @include, '-MPlack::Loader', '-e', $worker_code ],
        );
    },
    no_wait => 1,
);

if (!$starter->wait_ready(timeout => 15)) {
    my $text = $starter->stderr // '';
    $starter->stop;
    plan skip_all => "start_server did not come up: $text";
}

sub ask {
    my $res = simple_request($port, request_bytes(GET => '/'));
    return $res->ok && $res->status == 200 && ($res->body // '') =~ /\Apid=(\d+) class=(\w+)\z/ ? ($1, $2) : ();
}

my ($first_worker, $class) = ask();
ok($first_worker, 'a worker answers') or diag($starter->stderr);
isnt($first_worker, $starter->pid, 'the worker is not start_server itself');
is($class, 'SS', 'the worker runs Twiggy::Server::SS');

subtest 'keep-alive through the inherited socket' => sub {
    my $client = client($port);
    for my $n (1 .. 3) {
        $client->send(request_bytes(GET => "/$n"));
        response_is($client->read_response, 200, "pid=$first_worker class=SS", "request $n");
    }
};

ok($starter->signal('HUP'), 'HUP to start_server');
my $second_worker;
ok(wait_until(sub { my ($pid) = ask(); $second_worker = $pid if $pid && $pid != $first_worker; $second_worker }, 15),
    'a new worker generation answers');
ok(wait_until(sub { !kill(0, $first_worker) }, 10), 'the old worker exited after SIGQUIT');
is((ask())[1], 'SS', 'the new worker runs Twiggy::Server::SS');

$starter->signal('TERM');
ok(defined $starter->wait_exit(10), 'start_server exits on TERM');
ok(wait_until(sub { !kill(0, $second_worker) }, 5), 'the worker is gone too') if $second_worker;
$starter->stop;
done_testing;
