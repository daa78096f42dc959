# Under Server::Starter (start_server): the prefork master serves the TCP and UNIX sockets it
# is handed, and start_server's HUP (a new master, then QUIT or TERM to the old one) loses no
# request while clients keep asking: twiggy --workers with --signal-on-hup=QUIT, and
# plackup -s Twiggy::Prefork with the default TERM. The single-process server serves a UNIX
# socket from start_server too.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Test::Requires 'Server::Starter';
use File::Temp ();
use POSIX ();
use Time::HiRes ();
use TwiggyTest;
use TwiggyTest qw(perl_command child_pids write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);
my $app_file = "$dir/app.psgi";
write_file($app_file, <<'APP');
sub { [ 200, [ 'Content-Type' => 'text/plain' ], [ "pid=$$ master=" . getppid() ] ] };
APP

sub start_starter {
    my (%args) = @_;
    my $port = empty_port();
    my $path = "$dir/ss-" . $port . '.sock';
    my $command = $args{command}->($port);
    my $starter = start_server(
        stderr  => 1,
        port    => $port,
        no_wait => 1,
        runner  => sub {
            Server::Starter::start_server(
                port     => ["127.0.0.1:$port"],
                path     => [$path],
                interval => 1,
                ($args{signal_on_hup} ? (signal_on_hup => $args{signal_on_hup}) : ()),
                exec     => $command,
            );
        },
    );
    return ($starter, $port, $path);
}

sub ask {
    my (@target) = @_;
    my $client = client(@target);
    $client->send(request_bytes(GET => '/', 'HTTP/1.0'));
    my $res = $client->read_response(timeout => 5);
    $client->close;
    return $res->ok && $res->status == 200 && $res->body =~ /\Apid=(\d+) master=(\d+)\z/ ? ($1, $2) : ();
}

# Client processes asking in a loop (one per target) until stopped; returns a function that
# stops them and returns (answered, failed, {master => answers}, [first errors]).
sub client_loops {
    my (@targets) = @_;
    my $stop = "$dir/stop-" . Time::HiRes::time();
    my @loops;
    for my $target (@targets) {
        my $out = "$stop-loop" . @loops;
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            my ($answered, $failed, %masters, @errors) = (0, 0);
            my $deadline = Time::HiRes::time() + scaled(20);
            until (-e $stop || Time::HiRes::time() > $deadline) {
                my $client = client(@$target);
                $client->send(request_bytes(GET => '/', 'HTTP/1.0'));
                my $res = $client->read_response(timeout => 5);
                $client->close;
                if ($res->ok && $res->status == 200 && $res->body =~ /master=(\d+)/) {
                    $answered++;
                    $masters{$1}++;
                } else {
                    $failed++;
                    push @errors, $res->describe if @errors < 3;
                }
            }
            write_file($out, join "\n", $answered, $failed, join(',', %masters), @errors);
            POSIX::_exit(0);    # not the test's END blocks
        }
        push @loops, [ $pid, $out ];
    }
    return sub {
        write_file($stop, '');
        my ($answered, $failed, %masters, @errors) = (0, 0);
        for my $loop (@loops) {
            waitpid($loop->[0], 0);
            open my $fh, '<', $loop->[1] or do { $failed++; push @errors, 'a client loop died'; next };
            chomp(my @lines = <$fh>);
            my ($ok, $bad, $seen, @why) = @lines;
            $answered += $ok;
            $failed += $bad;
            my %seen = split /,/, $seen // '';
            $masters{$_} += $seen{$_} for keys %seen;
            push @errors, @why;
        }
        return ($answered, $failed, \%masters, \@errors);
    };
}

sub hot_deploy_without_loss {
    my ($name, %args) = @_;
    my ($starter, $port, $path) = start_starter(%args);
    ok($starter->wait_ready(timeout => 15), "$name: start_server and the master come up")
        or return diag($starter->stderr);
    my ($worker, $master) = ask(port => $port);
    ok($worker && $master != $starter->pid, "$name: a worker answers over TCP");
    my (undef, $master_unix) = ask(path => $path);
    is($master_unix, $master, "$name: and over the UNIX socket start_server passes");
    ok(wait_until(sub { child_pids($master) == 2 }), "$name: two workers");

    my $stop = client_loops(([ port => $port ]) x 3, [ path => $path ]);
    Time::HiRes::sleep(0.3);
    ok($starter->signal('HUP'), "$name: HUP to start_server while four clients keep asking");
    ok(wait_until(sub { !kill 0, $master }, 15), "$name: the old master exits");
    my $new_master;
    ok(wait_until(sub { my (undef, $m) = ask(port => $port); $new_master = $m if $m && $m != $master; $new_master }, 5),
        "$name: a new master answers");
    Time::HiRes::sleep(0.3);
    my ($answered, $failed, $masters, $errors) = $stop->();
    is($failed, 0, "$name: no request failed") or diag("errors: @$errors");
    cmp_ok($answered, '>', 20, "$name: $answered requests were answered");
    ok($masters->{$master} && $new_master && $masters->{$new_master}, "$name: by the old and the new master")
        or diag(join ' ', %$masters);

    $starter->signal('TERM');
    ok(defined $starter->wait_exit(10), "$name: start_server exits on TERM");
    ok(wait_until(sub { !kill 0, $new_master }, 5), "$name: the master is gone too") if $new_master;
    $starter->stop;
    return;
}

hot_deploy_without_loss('twiggy --workers 2, --signal-on-hup=QUIT',
    signal_on_hup => 'QUIT',
    command => sub { perl_command('bin/twiggy', '--workers', 2, $app_file) });

SKIP: {
    my $plackup = perl_command('plackup') or skip 'plackup is not in PATH', 1;
    hot_deploy_without_loss('plackup -s Twiggy::Prefork, default TERM',
        command => sub { [ @$plackup, '-s', 'Twiggy::Prefork', '-E', 'deployment', '--max-workers', 2, $app_file ] });
}

subtest 'single process: a UNIX socket from start_server' => sub {
    my ($starter, $port, $path) = start_starter(command => sub { perl_command('bin/twiggy', $app_file) });
    ok($starter->wait_ready(timeout => 15, unix => $path), 'start_server and twiggy come up');
    my (undef, $master) = ask(path => $path);
    ok($master && $master == $starter->pid, 'the single twiggy process answers over the UNIX socket');
    $starter->signal('TERM');
    ok(defined $starter->wait_exit(10), 'start_server exits on TERM');
};

done_testing;
