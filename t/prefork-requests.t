# Request limits per worker: max_reqs_per_child (default 100, 0 for none), min_reqs_per_child
# drawing each worker's limit, keep-alive requests counted one by one with Connection: close on
# a worker's last response, no request lost while a worker is replaced; and psgix.exit_guard
# keeping a worker alive until the app's background job ends.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use TwiggyTest;
use TwiggyTest qw(child_pids write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);

my $app = sub {
    my $env = shift;
    if ($env->{PATH_INFO} eq '/job') {
        my $guard = $env->{'psgix.exit_guard'};
        my $name = $env->{QUERY_STRING};
        $guard->begin;
        my $timer; $timer = AE::timer(1.5, 0, sub {
            undef $timer;
            write_file("$dir/job-$name", $$);
            $guard->end;
        });
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["pid=$$"] ];
};

sub start {
    return start_server(app => $app, class => 'Twiggy::Prefork::Server', max_workers => 1, @_);
}

sub pid_of {
    my ($res) = @_;
    return $res->ok && $res->status == 200 && $res->body =~ /\Apid=(\d+)\z/ ? $1 : 0;
}

# Lengths of the runs of equal values: (1,1,2,2,2) gives (2,3).
sub runs {
    my @runs;
    my $last = '';
    for my $value (@_) {
        if ($value eq $last) { $runs[-1]++ } else { push @runs, 1; $last = $value }
    }
    return @runs;
}

subtest 'max_reqs_per_child 3: keep-alive requests count, the last says Connection: close' => sub {
    my $server = start(max_reqs_per_child => 3);
    my $client = client($server->port);
    my @pids;
    for my $n (1 .. 3) {
        $client->send(request_bytes(GET => "/$n"));
        my $res = $client->read_response;
        push @pids, pid_of($res);
        my $connection = lc($res->header('Connection') // '');
        if ($n < 3) {
            isnt($connection, 'close', "response $n keeps the connection");
        } else {
            is($connection, 'close', 'response 3 says Connection: close');
        }
    }
    ok($pids[0] && $pids[0] == $pids[1] && $pids[1] == $pids[2], 'one worker answered all three');
    ok($client->closed_without_more_data, 'then it closes the connection');
    my $next = pid_of(simple_request($server->port, request_bytes(GET => '/4')));
    ok($next && $next != $pids[0], 'the fourth request is answered by a new worker');

    my @sequence = map { pid_of(simple_request($server->port, request_bytes(GET => "/more$_"))) } 1 .. 14;
    ok(!grep({ !$_ } @sequence), 'no request fails while workers are replaced');
    my @runs = runs($next, @sequence);
    pop @runs;
    is_deeply(\@runs, [ (3) x @runs ], 'each worker answers exactly 3') or diag("runs: @runs");
};

subtest 'min_reqs_per_child 2, max_reqs_per_child 4' => sub {
    my $server = start(min_reqs_per_child => 2, max_reqs_per_child => 4);
    my @sequence = map { pid_of(simple_request($server->port, request_bytes(GET => "/$_"))) } 1 .. 45;
    ok(!grep({ !$_ } @sequence), 'every request is answered');
    my @runs = runs(@sequence);
    pop @runs;
    cmp_ok(scalar @runs, '>=', 10, 'by many workers in turn');
    ok(!grep({ $_ < 2 || $_ > 4 } @runs), 'each between 2 and 4 requests') or diag("runs: @runs");
    my %lengths = map { $_ => 1 } @runs;
    cmp_ok(scalar keys %lengths, '>', 1, 'not all the same number') or diag("runs: @runs");
};

subtest 'max_reqs_per_child: 100 by default, 0 for no limit' => sub {
    for my $case ([ 'default', [], 100 ], [ '0', [ max_reqs_per_child => 0 ], 0 ]) {
        my ($name, $options, $limit) = @$case;
        my $server = start(@$options);
        my $client = client($server->port);
        my @pids;
        for my $n (1 .. 110) {
            $client = client($server->port) if $client->eof;
            $client->send(request_bytes(GET => "/$n"));
            my $res = $client->read_response;
            push @pids, pid_of($res);
            $client->read_until_close(1) if lc($res->header('Connection') // '') eq 'close';
        }
        ok(!grep({ !$_ } @pids), "$name: 110 requests answered");
        if ($limit) {
            is_deeply([ (runs(@pids))[0] ], [$limit], "$name: the first worker answers $limit");
        } else {
            is(scalar(runs(@pids)), 1, "$name: one worker answers them all");
        }
        $server->stop;
    }
};

subtest 'psgix.exit_guard: a worker at its limit is replaced at once but lives until its job ends' => sub {
    my $server = start(max_reqs_per_child => 1);
    my $first = pid_of(simple_request($server->port, request_bytes(GET => '/job?limit')));
    ok($first, 'a worker answers /job (its only request) and starts a job');
    my $second = pid_of(simple_request($server->port, request_bytes(GET => '/')));
    ok($second && $second != $first, 'a new worker answers the next request at once');
    ok(!-e "$dir/job-limit" && kill(0, $first), 'while the first one is still running its job');
    ok(wait_until(sub { !kill 0, $first }, 5), 'the first worker exits');
    ok(-e "$dir/job-limit", 'after its job ended');
};

subtest 'psgix.exit_guard: QUIT waits for the job' => sub {
    my $server = start(max_reqs_per_child => 0);
    ok(pid_of(simple_request($server->port, request_bytes(GET => '/job?quit'))), '/job answered, job started');
    ok($server->signal('QUIT'), 'QUIT to the master');
    ok(!defined $server->wait_exit(0.5), 'the master is still waiting');
    is($server->wait_exit(5), 0, 'then exits with status 0');
    ok(-e "$dir/job-quit", 'after the job ended');
};

done_testing;
