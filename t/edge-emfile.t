# Resource exhaustion (issue 3, item 4): when accept fails with EMFILE (the process is out of
# file descriptors: here `ulimit -n 64`), the server keeps serving the connections it has, does
# not spin on the still-readable listener (its CPU time stays low while connections wait in the
# backlog), does not crash, and accepts the waiting connections once descriptors are free again;
# afterwards its descriptor count is back where it started.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Spec;
use IO::Select;
use Time::HiRes ();
use TwiggyTest qw(:DEFAULT start_command process_cpu_seconds open_fd_count);

safety_alarm(60);

plan skip_all => 'needs Linux /proc' unless -r "/proc/$$/stat" && -d "/proc/$$/fd";

my $fd_limit = 64;
my $connections = 90;

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my @include = -d "$root/blib" ? ("-Mblib=$root") : ("-I$root/lib");
my $server_code = <<'CODE';
use strict;
use Twiggy::Server;
my $port = shift;
my $app = sub {
    my $env = shift;
    my $body = '';
    while ($env->{'psgi.input'}->read(my $buffer, 65536)) { $body .= $buffer }
    my $text = "hello $env->{PATH_INFO}" . (length $body ? ' ' . length $body : '');
    return [ 200, [ 'Content-Type' => 'text/plain' ], [$text] ];
};
Twiggy::Server->new(host => '127.0.0.1', port => $port)->run($app);
CODE

my $port = empty_port();
my $server = start_command(port => $port,
    command => [ 'sh', '-c', "ulimit -n $fd_limit && exec \"\$@\"", 'sh', $^X, @include, '-e', $server_code, $port ]);
my $pid = $server->pid;

{
    my $soft = '';
    if (open my $limits, '<', "/proc/$pid/limits") {
        my ($line) = grep { /\AMax open files/ } <$limits>;
        ($soft) = ($line // '') =~ /\AMax open files\s+(\d+)/;
    }
    if (($soft // '') ne $fd_limit) {
        $server->stop;
        plan skip_all => "could not run the server with ulimit -n $fd_limit (limit: " . ($soft // 'unknown') . ')';
    }
    pass("the server runs with a limit of $fd_limit descriptors");
}

response_is(simple_request($port, request_bytes(GET => '/warm-up')), 200, 'hello /warm-up', 'served before the test');
Time::HiRes::sleep(0.3);
my $base_fds = open_fd_count($pid);
note("server descriptors at rest: $base_fds of $fd_limit");

# More connections than descriptors, each with a request. Some are accepted and answered; the
# rest wait in the kernel's backlog.
my @clients = map { client(port => $port, timeout => 10) } 1 .. $connections;
is(scalar(grep { $_->connected } @clients), $connections, "$connections connections made (the backlog takes them)");
$clients[$_]->send(request_bytes(GET => "/first-$_")) for 0 .. $#clients;

my %answered;    # index => 1 once its response arrived
sub collect {
    my ($seconds, $stop_when) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    while (Time::HiRes::time() < $deadline) {
        my @waiting = grep { !$answered{$_} && !$clients[$_]->eof } 0 .. $#clients;
        last if !@waiting || ($stop_when && $stop_when->());
        my %index_of = map { fileno($clients[$_]->socket) => $_ } @waiting;
        my @ready = IO::Select->new(map { $clients[$_]->socket } @waiting)->can_read(0.05);
        for my $socket (@ready) {
            my $index = $index_of{ fileno $socket };
            my $res = $clients[$index]->read_response(timeout => 0.01);
            next unless $res->{complete} || $clients[$index]->eof;
            $answered{$index} = $res->ok && $res->status == 200 && $res->body eq "hello /first-$index" ? 1 : 'bad';
        }
    }
    return;
}

collect(scaled(2));
my @served = grep { $answered{$_} } 0 .. $#clients;
my @waiting = grep { !$answered{$_} } 0 .. $#clients;
note(scalar(@served) . ' connections answered, ' . scalar(@waiting) . ' waiting');
ok(@waiting > 0, 'some connections wait: the descriptor limit was reached');
ok(@served >= 10, 'the server answered the connections it could accept');
is(scalar(grep { $answered{$_} eq 'bad' } @served), 0, 'every answer is a complete, correct 200');
ok(!grep({ $clients[$_]->eof } @waiting), 'the waiting connections were not closed');

subtest 'no busy loop while connections wait' => sub {
    my $before = process_cpu_seconds($pid);
    my $started = Time::HiRes::time();
    Time::HiRes::sleep(2);
    my $cpu = process_cpu_seconds($pid) - $before;
    my $wall = Time::HiRes::time() - $started;
    ok($cpu < 0.3 * $wall, sprintf('server used %.2f s of CPU in %.2f s (limit 30%%)', $cpu, $wall));
};

subtest 'the open connections are still served' => sub {
    my $good = 0;
    for my $index (@served) {
        $clients[$index]->send(request_bytes(GET => "/again-$index"));
        my $res = $clients[$index]->read_response;
        $good++ if $res->ok && $res->status == 200 && $res->body eq "hello /again-$index";
    }
    is($good, scalar @served, 'a second request on every accepted connection is answered');
    ok($server->is_running, 'server process still running');
};

subtest 'a body that needs a temporary file while no descriptor is free' => sub {
    # Bodies over body_in_memory (1 MB) are spooled to a temporary file, which needs a descriptor.
    my $client = $clients[ $served[0] ];
    $client->send(request_bytes(POST => '/spool', 'HTTP/1.1', ['Content-Length: 2000000'], 's' x 2_000_000));
    my $res = $client->read_response;
    ok($res->ok && ($res->status == 500 || $res->status == 503
            || ($res->status == 200 && $res->body eq 'hello /spool 2000000')),
        'a complete answer: the body, or a 5xx') or diag($res->describe);
    note('got ' . $res->status);
    ok($server->is_running, 'server process still running');
};

subtest 'waiting connections are accepted once descriptors are free' => sub {
    $clients[$_]->close for @served;
    # Each answered connection is closed at once, freeing its descriptors for the next ones.
    my $deadline = Time::HiRes::time() + scaled(15);
    while (Time::HiRes::time() < $deadline) {
        my @open = grep { !$answered{$_} } @waiting;
        last unless @open;
        collect(0.5);
        $clients[$_]->close for grep { $answered{$_} } @open;
    }
    my @late = grep { $answered{$_} } @waiting;
    is(scalar @late, scalar @waiting, 'every waiting connection was answered in the end');
    is(scalar(grep { $answered{$_} eq 'bad' } @late), 0, 'with a complete, correct 200');
};

subtest 'afterwards' => sub {
    $_->close for @clients;
    response_is(simple_request($port, request_bytes(GET => '/after')), 200, 'hello /after', 'a new client is served');
    ok(wait_until(sub { open_fd_count($pid) <= $base_fds }, 5), 'descriptor count back to its start')
        or diag('now ' . open_fd_count($pid) . ", at the start $base_fds");
    ok($server->is_running, 'server process still running');
    unlike($server->stderr // '', qr/panic|Segmentation|Too many open files/i, 'nothing alarming logged')
        or diag($server->stderr);
};

$server->stop;
done_testing;
