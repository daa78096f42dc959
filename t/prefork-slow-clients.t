# 200 slow clients do not block a 2-worker server: every worker is asynchronous, so 100 clients
# sending their request head a few bytes at a time and 100 clients not reading a large
# response tie up no worker; other requests keep being answered at once, and every slow client
# gets its complete answer in the end.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use TwiggyTest;
use TwiggyTest qw(child_pids);

safety_alarm(60);

my $big = 'x' x (256 * 1024);
my $app = sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ], [$big] ] if $env->{PATH_INFO} eq '/big';
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["hello $env->{PATH_INFO}"] ];
};

my $server = start_server(app => $app, class => 'Twiggy::Prefork::Server', max_workers => 2,
    max_reqs_per_child => 0, graceful_term => 0);
my $port = $server->port;
ok(wait_until(sub { child_pids($server->pid) == 2 }), 'two workers');

# The slowest of $count requests on fresh connections, in seconds.
sub slowest_answer {
    my ($count, $name) = @_;
    my $slowest = 0;
    for my $n (1 .. $count) {
        my $started = Time::HiRes::time();
        my $res = simple_request($port, request_bytes(GET => "/$name$n"), timeout => 5);
        return 99 unless $res->ok && $res->body eq "hello /$name$n";
        my $took = Time::HiRes::time() - $started;
        $slowest = $took if $took > $slowest;
    }
    return $slowest;
}

my @senders = map { client($port) } 1 .. 100;
my $head = request_bytes(GET => '/slow-sender', 'HTTP/1.1', ['X-Slow: yes']);
my $first_part = substr($head, 0, 20, '');
ok(!grep({ !$_->send($first_part) } @senders), '100 clients have sent the first 20 bytes of their request');

my @readers = map { client($port) } 1 .. 100;
ok(!grep({ !$_->send(request_bytes(GET => '/big')) } @readers), '100 clients asked for 256 KiB and do not read it');

ok(wait_until(sub { slowest_answer(1, 'probe') < 1 }), 'the server answers');
my $slowest = slowest_answer(20, 'other');
cmp_ok($slowest, '<', scaled(0.5), "meanwhile 20 other requests are answered at once (slowest: ${\ sprintf '%.3f', $slowest} s)");

# The senders finish their heads a few bytes at a time, all of them in turn.
while (length $head) {
    my $piece = substr($head, 0, 4, '');
    $_->send($piece) for @senders;
    Time::HiRes::sleep(0.01);
}
my $answered = grep { my $res = $_->read_response(timeout => 5); $res->ok && $res->body eq 'hello /slow-sender' } @senders;
is($answered, 100, 'every slow sender gets its answer');
my $complete = grep { my $res = $_->read_response(timeout => 5); $res->ok && length($res->body) == length $big } @readers;
is($complete, 100, 'every slow reader gets all of its response when it reads');
cmp_ok(slowest_answer(5, 'after'), '<', scaled(0.5), 'and the server still answers at once');

is($server->stop, 0, 'the master exits with status 0');
done_testing;
