# twiggy --workers N: the master's signals (TTIN, TTOU, TERM and INT stopping at once), a
# worker killed with SIGKILL being replaced, --pid, and the process titles (or not, with
# --disable-proctitle). QUIT and HUP have
# their own files (prefork-quit.t, prefork-reload.t).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use Time::HiRes ();
use TwiggyTest;
use TwiggyTest qw(start_command perl_command child_pids process_title write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);
my $app_file = "$dir/app.psgi";
write_file($app_file, <<"APP");
use AnyEvent;
sub {
    my \$env = shift;
    if (\$env->{PATH_INFO} eq '/slow') {
        open my \$fh, '>', '$dir/slow-started' or die \$!; close \$fh;
        return sub {
            my \$responder = shift;
            my \$timer; \$timer = AE::timer(5, 0, sub { undef \$timer; \$responder->([ 200, [], ['slow done'] ]) });
        };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], [ "pid=\$\$" ] ];
};
APP

sub worker_pid {
    my ($port) = @_;
    my $res = simple_request($port, request_bytes(GET => '/'));
    return $res->ok && $res->status == 200 && $res->body =~ /\Apid=(\d+)\z/ ? $1 : 0;
}

sub start_twiggy {
    my ($port, @options) = @_;
    return start_command(port => $port,
        command => perl_command('bin/twiggy', '--workers', 2, '--listen', "127.0.0.1:$port", @options, $app_file));
}

my $port = empty_port();
my $pid_file = "$dir/twiggy.pid";
my $server = start_twiggy($port, '--pid', $pid_file);
my $master = $server->pid;
ok(worker_pid($port), 'a worker answers');

subtest '--pid and process titles' => sub {
    open my $fh, '<', $pid_file or die "$pid_file: $!";
    is(scalar <$fh>, "$master\n", 'the pid file holds the master\'s pid');
    my @workers;
    ok(wait_until(sub { @workers = child_pids($master); @workers == 2 }), 'two workers');
    like(process_title($master) // '', qr/\Atwiggy master --workers 2 --listen 127\.0\.0\.1:$port .*app\.psgi\z/,
        'master: "twiggy master" and the arguments');
    like(process_title($_) // '', qr/\Atwiggy worker --workers 2 /, "worker $_: \"twiggy worker\"") for @workers;
};

subtest 'TTIN and TTOU' => sub {
    ok($server->signal('TTIN'), 'TTIN');
    ok(wait_until(sub { child_pids($master) == 3 }), 'three workers');
    ok($server->signal('TTOU'), 'TTOU');
    ok(wait_until(sub { child_pids($master) == 2 }), 'two workers again');
    ok($server->signal('TTOU'), 'TTOU');
    ok(wait_until(sub { child_pids($master) == 1 }), 'one worker');
    ok($server->signal('TTOU'), 'TTOU once more');
    ok(wait_until(sub { $server->stderr =~ /TTOU ignored/ }), 'is refused: at least one worker is kept');
    is(scalar(() = child_pids($master)), 1, 'still one worker');
    ok(worker_pid($port), 'it answers');
    ok($server->signal('TTIN'), 'TTIN');
    ok(wait_until(sub { child_pids($master) == 2 }), 'two workers again');
};

subtest 'a worker killed with SIGKILL is replaced' => sub {
    my @before = child_pids($master);
    is(scalar @before, 2, 'two workers');
    ok(kill('KILL', $before[0]), "SIGKILL to worker $before[0]");
    my @after;
    ok(wait_until(sub { @after = child_pids($master); @after == 2 && !grep { $_ == $before[0] } @after }),
        'a new worker takes its place') or diag("before: @before, after: @after");
    ok(wait_until(sub { $server->stderr =~ /worker $before[0] killed by signal 9; starting another/ }),
        'the master says so') or diag($server->stderr);
    my %answered = map { worker_pid($port) => 1 } 1 .. 5;
    ok(!$answered{0} && !$answered{ $before[0] }, 'requests are answered by living workers');
};

subtest 'TERM stops at once' => sub {
    my @workers = child_pids($master);
    my $client = client($port);
    $client->send(request_bytes(GET => '/slow'));
    ok(wait_until(sub { -e "$dir/slow-started" }), 'a slow request is in progress');
    my $started = Time::HiRes::time();
    ok($server->signal('TERM'), 'TERM to the master');
    my $res = $client->read_response(timeout => 4);
    ok(!$res->ok && $client->eof, 'the request in progress is cut: the connection closes without an answer')
        or diag($res->describe);
    is($server->wait_exit(4), 0, 'the master exits with status 0');
    cmp_ok(Time::HiRes::time() - $started, '<', scaled(3), 'at once, without waiting for the request');
    ok(wait_until(sub { !grep { kill 0, $_ } @workers }, 3), 'the workers are gone');
    ok(!-e $pid_file, 'the pid file is removed');
};

subtest 'INT stops at once (and --disable-proctitle)' => sub {
    my $port = empty_port();
    my $server = start_twiggy($port, '--disable-proctitle');
    ok(worker_pid($port), 'a worker answers');
    my @workers;
    ok(wait_until(sub { @workers = child_pids($server->pid); @workers == 2 }), 'two workers');
    unlike(process_title($_) // '', qr/\Atwiggy (?:master|worker)/, "--disable-proctitle: process $_ keeps its title")
        for $server->pid, @workers;
    ok($server->signal('INT'), 'INT to the master');
    is($server->wait_exit(4), 0, 'the master exits with status 0');
    ok(wait_until(sub { !grep { kill 0, $_ } @workers }, 3), 'the workers are gone');
};

done_testing;
