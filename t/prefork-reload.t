# Loading the app and HUP: with a delayed loader each worker loads app.psgi and HUP picks up a
# changed file; preloaded (plackup's default, or preload_app) HUP replaces the workers with the
# same code. A broken app.psgi makes the master log the error and retry with backoff (no fork
# storm) until the file loads again; after HUP, a broken new version leaves the old workers
# serving; with --preload-app a broken app stops the start-up with its error.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use Time::HiRes ();
use TwiggyTest;
use TwiggyTest qw(start_command perl_command child_pids write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);
my $app_file = "$dir/app.psgi";
my $loads = "$dir/loads";

# Each load of the app appends "<pid>\n" to $loads.
sub write_app {
    my ($version, $broken) = @_;
    write_file($app_file, <<"APP");
open my \$log, '>>', '$loads' or die \$!; print {\$log} "\$\$\\n"; close \$log;
@{[ $broken ? "die 'version $version is broken on purpose';" : '' ]}
sub { [ 200, [ 'Content-Type' => 'text/plain' ], [ "version $version pid=\$\$" ] ] };
APP
    return;
}

sub loaded_by {
    open my $fh, '<', $loads or return ();
    return map { chomp; $_ } <$fh>;
}

sub ask {
    my ($port) = @_;
    my $res = simple_request($port, request_bytes(GET => '/'), timeout => 2);
    return $res->ok && $res->status == 200 && $res->body =~ /\Aversion (\d+) pid=(\d+)\z/ ? ($1, $2) : ();
}

# Every worker answers with $version (several requests, fresh connections).
sub all_answer {
    my ($port, $version) = @_;
    for (1 .. 6) {
        my ($got) = ask($port);
        return 0 unless $got && $got == $version;
    }
    return 1;
}

sub twiggy {
    my ($port, @options) = @_;
    return perl_command('bin/twiggy', '--workers', 2, '--listen', "127.0.0.1:$port", @options, $app_file);
}

subtest 'delayed loader: each worker loads the app, HUP reloads it' => sub {
    unlink $loads;
    write_app(1);
    my $port = empty_port();
    my $server = start_command(port => $port, command => twiggy($port, '-L', 'Delayed'));
    ok(wait_until(sub { all_answer($port, 1) }), 'version 1 answers');
    my @workers = child_pids($server->pid);
    my @loaded = loaded_by();
    ok(!grep({ $_ == $server->pid } @loaded), 'the master did not load the app');
    is_deeply([ sort @loaded ], [ sort @workers ], 'each worker loaded it');

    write_app(2);
    ok($server->signal('HUP'), 'app.psgi changed; HUP to the master');
    ok(wait_until(sub { all_answer($port, 2) }, 10), 'version 2 answers');
    ok(wait_until(sub { !grep { kill 0, $_ } @workers }, 5), 'the old workers are gone');
    is($server->stop, 0, 'TERM: the master exits with status 0');
};

subtest 'preloaded: HUP restarts the workers with the same code' => sub {
    my $plackup = perl_command('plackup');
    my @commands = (
        [ '--preload-app=1 with a delayed loader', sub { twiggy($_[0], '-L', 'Delayed', '--preload-app=1') } ],
        ($plackup ? [ 'plackup -s Twiggy --workers 2', sub {
            [ @$plackup, '-s', 'Twiggy', '-E', 'deployment', '--workers', 2, '--listen', "127.0.0.1:$_[0]", $app_file ] } ] : ()),
    );
    for my $case (@commands) {
        my ($name, $command) = @$case;
        unlink $loads;
        write_app(1);
        my $port = empty_port();
        my $server = start_command(port => $port, command => $command->($port));
        ok(wait_until(sub { all_answer($port, 1) }), "$name: version 1 answers");
        is_deeply([ loaded_by() ], [ $server->pid ], "$name: only the master loaded the app");
        my @workers = child_pids($server->pid);
        write_app(2);
        ok($server->signal('HUP'), "$name: app.psgi changed; HUP to the master");
        my @new;
        ok(wait_until(sub { @new = child_pids($server->pid); @new == 2 && !grep { my $n = $_; grep { $_ == $n } @workers } @new }, 10),
            "$name: two new workers");
        ok(all_answer($port, 1), "$name: still version 1");
        is($server->stop, 0, "$name: the master exits with status 0");
    }
};

subtest 'a broken app: backoff, a clear error, and recovery' => sub {
    unlink $loads;
    write_app(1, 'broken');
    my $port = empty_port();
    my $started = Time::HiRes::time();
    my $server = start_command(port => $port, command => twiggy($port, '-L', 'Delayed'), no_wait => 1);
    ok(wait_until(sub { $server->stderr =~ /next attempt in/ }), 'the master reports the failure');
    like($server->stderr, qr/^Twiggy: worker \d+ could not load the application: .*version 1 is broken on purpose at /m,
        'with the error');
    Time::HiRes::sleep(2.5 - (Time::HiRes::time() - $started)) if Time::HiRes::time() - $started < 2.5;
    my $attempts = () = loaded_by();
    ok($attempts >= 3 && $attempts <= 6, "2.5 s: $attempts attempts to load, not a fork storm")
        or diag($server->stderr);
    ok($server->is_running, 'the master keeps running');

    write_app(3);
    ok(wait_until(sub { all_answer($port, 3) }, 10), 'once app.psgi is fixed, the next attempt brings the workers up');
    ok(wait_until(sub { child_pids($server->pid) == 2 }), 'both of them');
    like($server->stderr, qr/started; back to 2 workers/, 'the master says so');
    my $errors = () = $server->stderr =~ /could not load the application/g;
    cmp_ok($errors, '<=', $attempts, 'each failure is logged at most once') or diag($server->stderr);
    is($server->stop, 0, 'the master exits with status 0');
};

subtest 'HUP with a broken new version: the old workers keep serving' => sub {
    write_app(1);
    my $port = empty_port();
    my $server = start_command(port => $port, command => twiggy($port, '-L', 'Delayed'));
    ok(wait_until(sub { all_answer($port, 1) }), 'version 1 answers');
    my @workers = child_pids($server->pid);

    write_app(2, 'broken');
    ok($server->signal('HUP'), 'app.psgi broken; HUP to the master');
    ok(wait_until(sub { $server->stderr =~ /version 2 is broken on purpose/ }), 'the new version fails to load');
    ok(all_answer($port, 1), 'version 1 still answers');
    ok(!grep({ !kill 0, $_ } @workers), 'from the old workers');

    write_app(3);
    ok(wait_until(sub { all_answer($port, 3) }, 10), 'fixed: version 3 answers');
    ok(wait_until(sub { !grep { kill 0, $_ } @workers }, 5), 'and the old workers are gone');
    is($server->stop, 0, 'the master exits with status 0');
};

subtest 'a broken app with --preload-app: start-up stops with the error' => sub {
    write_app(1, 'broken');
    my $port = empty_port();
    my $server = start_command(port => $port, command => twiggy($port, '--preload-app=1'), no_wait => 1);
    my $status = $server->wait_exit(10);
    ok(defined $status && $status != 0, 'the command exits with an error status');
    like($server->stderr, qr/version 1 is broken on purpose/, 'and the error');
    unlike($server->stderr, qr/worker/, 'before any worker was started');
};

done_testing;
