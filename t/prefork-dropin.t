# Twiggy::Prefork 0.08, drop-in: the modules and their options and defaults, plackup -s
# Twiggy::Prefork, psgix.exit_guard and psgi.multiprocess in the env, HUP replacing every
# worker, and TERM stopping gracefully (as 0.08 did: requests in progress finish).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use Plack::Loader;
use TwiggyTest;
use TwiggyTest qw(start_command perl_command child_pids process_title write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);

for my $module (qw(Twiggy::Prefork Twiggy::Prefork::Server Plack::Handler::Twiggy::Prefork)) {
    use_ok($module);
}
SKIP: {
    skip 'Server::Starter is not installed', 2 unless eval { require Server::Starter; 1 };
    use_ok('Twiggy::Prefork::Server::SS');
    ok(Twiggy::Prefork::Server::SS->isa('Twiggy::Prefork::Server'), 'the SS master is a prefork master');
}
ok(Twiggy::Prefork->VERSION >= 0.08, 'Twiggy::Prefork says it is at least 0.08');
ok(Twiggy::Prefork::Server->isa('Twiggy::Server'), 'Twiggy::Prefork::Server is a Twiggy::Server, as in 0.08');

subtest 'options and defaults' => sub {
    my $server = Twiggy::Prefork::Server->new(host => '127.0.0.1', port => 0);
    is($server->{max_workers}, 10, 'max_workers defaults to 10');
    is($server->{max_reqs_per_child}, 100, 'max_reqs_per_child defaults to 100');
    is($server->{min_reqs_per_child}, 0, 'min_reqs_per_child defaults to none');
    is(Twiggy::Prefork::Server->new(max_reqs_per_child => 0)->{max_reqs_per_child}, 0, 'max_reqs_per_child 0 stays 0 (no limit)');
    is(Twiggy::Prefork::Server->new(max_workers => 0)->{max_workers}, 10, 'max_workers 0 means the default, as in 0.08');
    is(Twiggy::Prefork::Server->new(workers => 3)->{max_workers}, 3, 'workers is another name for max_workers');
    is(Twiggy::Prefork::Server->new(max_requests => 7)->{max_reqs_per_child}, 7, 'max_requests is another name for max_reqs_per_child');
    is(Twiggy::Prefork::Server->new(socket_mode => '0660')->{socket_mode}, 0660, 'socket_mode "0660" is octal');
    is(Twiggy::Prefork::Server->new(socket_mode => '600')->{socket_mode}, 0600, 'socket_mode "600" is octal');
    is(Twiggy::Prefork::Server->new(socket_mode => 0640)->{socket_mode}, 0640, 'socket_mode as a Perl number');
    for my $bad ([max_workers => 'many'], [max_reqs_per_child => '-1'], [graceful_timeout => 'soon'],
                 [socket_mode => 'rw'], [min_reqs_per_child => 10, max_reqs_per_child => 5], [timeout => 'x']) {
        my @args = @$bad;
        ok(!eval { Twiggy::Prefork::Server->new(@args); 1 }, "new(@args) croaks")
            and like($@, qr/\ATwiggy: /, '... with a Twiggy: message');
    }
    my $handler = Plack::Loader->load('Twiggy::Prefork', host => '127.0.0.1', port => 0);
    isa_ok($handler, 'Plack::Handler::Twiggy::Prefork', q{Plack::Loader->load('Twiggy::Prefork')});
};

my $app = sub {
    my $env = shift;
    if ($env->{PATH_INFO} eq '/slow') {
        write_file("$dir/slow-started", $$);
        return sub {
            my $responder = shift;
            my $timer; $timer = AE::timer(1, 0, sub {
                undef $timer;
                $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ['slow done'] ]);
            });
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], [
        join ' ', "pid=$$", 'multiprocess=' . ($env->{'psgi.multiprocess'} ? 1 : 0),
            'guard=' . ref($env->{'psgix.exit_guard'}) ] ];
};

sub ask {
    my ($port) = @_;
    my $res = simple_request($port, request_bytes(GET => '/'));
    return $res->ok && $res->status == 200 ? $res->body : '';
}

subtest 'Plack::Loader->load(Twiggy::Prefork): HUP replaces every worker, TERM finishes requests' => sub {
    my $server = start_server(app => $app, stderr => 1, runner => sub {
        my ($args, $app) = @_;
        Plack::Loader->load('Twiggy::Prefork', %$args, max_workers => 3)->run($app);
    });
    my $port = $server->port;
    my $body = ask($port);
    like($body, qr/\Apid=\d+ multiprocess=1 guard=AnyEvent::CondVar\z/,
        'a worker answers; psgi.multiprocess is true and psgix.exit_guard is a condvar');
    my @workers;
    ok(wait_until(sub { @workers = child_pids($server->pid); @workers == 3 }), 'three workers')
        or diag("workers: @workers");
    my ($answering) = $body =~ /pid=(\d+)/;
    ok((grep { $_ == $answering } @workers), 'the answer came from one of them');
    like(process_title($server->pid) // '', qr/\Atwiggy master\b/, 'the master is titled "twiggy master"');
    like(process_title($workers[0]) // '', qr/\Atwiggy worker\b/, 'a worker is titled "twiggy worker"');

    my %old = map { $_ => 1 } @workers;
    ok($server->signal('HUP'), 'HUP to the master');
    my @new;
    ok(wait_until(sub { @new = child_pids($server->pid); @new == 3 && !grep { $old{$_} } @new }, 10),
        'three new workers replace the old ones') or diag("before: @workers, now: @new");
    my ($after) = ask($port) =~ /pid=(\d+)/;
    ok($after && !$old{$after}, 'a new worker answers');

    my $client = client($port);
    $client->send(request_bytes(GET => '/slow'));
    ok(wait_until(sub { -e "$dir/slow-started" }), 'a slow request is in progress');
    ok($server->signal('TERM'), 'TERM to the master');
    response_is($client->read_response, 200, 'slow done', 'the request in progress');
    is($server->wait_exit(10), 0, 'the master exits with status 0');
    ok(wait_until(sub { !grep { kill 0, $_ } @new }, 5), 'the workers are gone');
    unlike($server->stderr, qr/killing|failed/, 'nothing was killed') or diag($server->stderr);
};

subtest 'default: 10 workers' => sub {
    my $server = start_server(app => $app, class => 'Twiggy::Prefork::Server');
    my @workers;
    ok(wait_until(sub { @workers = child_pids($server->pid); @workers == 10 }), 'ten workers by default')
        or diag(scalar(@workers) . ' workers');
    like(ask($server->port), qr/\Apid=\d+/, 'and they answer');
    $server->stop;
};

SKIP: {
    my $plackup = perl_command('plackup') or skip 'plackup is not in PATH', 1;
    subtest 'plackup -s Twiggy::Prefork' => sub {
        my $app_file = "$dir/app.psgi";
        write_file($app_file, <<'APP');
sub { [ 200, [ 'Content-Type' => 'text/plain' ], [ "from the app file, pid=$$" ] ] };
APP
        my $port = empty_port();
        my $server = start_command(port => $port, command => [ @$plackup, '-s', 'Twiggy::Prefork',
            '-E', 'deployment', '--host', '127.0.0.1', '--port', $port,
            '--max-workers', 2, '--max-reqs-per-child', 0, $app_file ]);
        like(ask($port), qr/\Afrom the app file, pid=\d+\z/, 'the app answers');
        my @workers;
        ok(wait_until(sub { @workers = child_pids($server->pid); @workers == 2 }), '--max-workers 2: two workers');
        is($server->stop, 0, 'TERM: plackup exits with status 0') or diag($server->stderr);
    };
}

done_testing;
