# How new connections spread over the workers: 4 workers, 800 connections (one request each,
# 8 at a time), once with all workers sharing one listening socket (EPOLLEXCLUSIVE: one worker
# woken per connection) and once with reuse_port (a socket per worker, spread by the kernel).
# The spread is printed; with reuse_port every worker must get a fair share (at least 10%).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes ();
use TwiggyTest;
use TwiggyTest qw(child_pids);

safety_alarm(60);

my $WORKERS     = 4;
my $CONNECTIONS = 800;
my $CONCURRENCY = 8;

my $app = sub { [ 200, [ 'Content-Type' => 'text/plain' ], [$$] ] };

# Runs $CONNECTIONS requests, $CONCURRENCY at a time; returns { worker pid => answers } and the
# number of failures.
sub spread {
    my ($port) = @_;
    my $request = request_bytes(GET => '/', 'HTTP/1.0');
    my $select = IO::Select->new;
    my (%buffer, %answers);
    my ($started, $finished, $failed) = (0, 0, 0);
    my $open = sub {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
        $started++;
        if (!$sock) { $failed++; $finished++; return }
        syswrite $sock, $request;
        $select->add($sock);
        $buffer{$sock} = '';
    };
    $open->() for 1 .. $CONCURRENCY;
    my $deadline = Time::HiRes::time() + scaled(20);
    while ($finished < $CONNECTIONS && Time::HiRes::time() < $deadline) {
        for my $sock ($select->can_read(1)) {
            my $got = sysread $sock, $buffer{$sock}, 4096, length $buffer{$sock};
            next if $got;
            my ($pid) = $buffer{$sock} =~ /\AHTTP\/1\.[01] 200 .*\r\n\r\n(\d+)\z/s;
            if ($pid) { $answers{$pid}++ } else { $failed++ }
            $finished++;
            $select->remove($sock);
            delete $buffer{$sock};
            close $sock;
            $open->() if $started < $CONNECTIONS;
        }
    }
    $failed += $CONNECTIONS - $finished;
    return (\%answers, $failed);
}

for my $reuse_port (0, 1) {
    my $name = $reuse_port ? 'reuse_port' : 'one shared socket';
    my $server = start_server(app => $app, class => 'Twiggy::Prefork::Server', max_workers => $WORKERS,
        max_reqs_per_child => 0, reuse_port => $reuse_port);
    my @workers;
    ok(wait_until(sub { @workers = child_pids($server->pid); @workers == $WORKERS }), "$name: $WORKERS workers");
    Time::HiRes::sleep(0.2);    # every worker in its event loop
    my ($answers, $failed) = spread($server->port);
    is($failed, 0, "$name: all $CONNECTIONS connections answered");
    my @counts = map { $answers->{$_} // 0 } @workers;
    diag(sprintf '%s: %d connections over %d workers: %s', $name, $CONNECTIONS, $WORKERS,
        join ' ', sort { $b <=> $a } @counts);
    if ($reuse_port) {
        ok(!grep({ $_ < $CONNECTIONS / $WORKERS * 0.4 } @counts), "$name: every worker gets at least 10%")
            or diag("per worker: @counts");
    }
    $server->stop;
}

done_testing;
