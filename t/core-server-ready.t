# server_ready is called once per listener with { host, port, server_software => 'Twiggy' },
# as in Twiggy 0.1026 (Plack::Runner prints its "Accepting connections" line from it).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use AnyEvent;
use TwiggyTest;
use Twiggy::Server;

safety_alarm(60);

my $app = sub { [ 200, [ 'Content-Type' => 'text/plain' ], ['ready'] ] };

# Run the event loop until $condition holds (bounded).
sub spin_until {
    my ($condition, $seconds) = @_;
    my $done = AE::cv;
    my $poll = AE::timer(0, 0.01, sub { $done->send(1) if $condition->() });
    my $give_up = AE::timer(scaled($seconds), 0, sub { $done->send(0) });
    return $done->recv;
}

# First, before this process has any event loop state of its own to hand down to a fork.
subtest 'in a forked server' => sub {
    pipe(my $reader, my $writer) or die "pipe: $!";
    my $server = start_server(
        app => $app,
        server_ready => sub {
            my $args = shift;
            syswrite $writer, join(' ', map { "$_=" . ($args->{$_} // 'undef') } sort keys %$args) . "\n";
        },
    );
    close $writer;
    my $line = '';
    my $select = IO::Select->new($reader);
    if ($select->can_read(scaled(5))) {
        sysread $reader, $line, 1024;
    }
    my $port = $server->port;
    is($line, "host=127.0.0.1 port=$port server_software=Twiggy\n", 'reported through a pipe');
    response_is(simple_request($port, request_bytes(GET => '/')), 200, 'ready', 'then serves');
    $server->stop;
};

subtest 'host and port' => sub {
    my $port = empty_port();
    my @ready;
    my $server = Twiggy::Server->new(
        host => '127.0.0.1',
        port => $port,
        server_ready => sub { push @ready, { %{ $_[0] } } },
    );
    $server->register_service($app);
    ok(spin_until(sub { @ready >= 1 }, 5), 'server_ready was called');
    is(scalar @ready, 1, 'called once');
    is($ready[0]{host}, '127.0.0.1', 'host');
    is($ready[0]{port}, $port, 'port');
    is($ready[0]{server_software}, 'Twiggy', 'server_software is Twiggy');
};

subtest 'one call per listener' => sub {
    my ($first, $second) = (empty_port(), empty_port());
    for (1 .. 20) { last if $second != $first; $second = empty_port() }
    my @ready;
    my $server = Twiggy::Server->new(
        listen => [ "127.0.0.1:$first", "127.0.0.1:$second" ],
        server_ready => sub { push @ready, { %{ $_[0] } } },
    );
    $server->register_service($app);
    ok(spin_until(sub { @ready >= 2 }, 5), 'server_ready was called for both listeners');
    is_deeply([ sort { $a <=> $b } map { $_->{port} } @ready ], [ sort { $a <=> $b } $first, $second ],
        'each listener reported its port');
    is_deeply([ map { $_->{host} } @ready ], [ '127.0.0.1', '127.0.0.1' ], 'hosts');
    is_deeply([ map { $_->{server_software} } @ready ], [ 'Twiggy', 'Twiggy' ], 'server_software');
};

done_testing;
