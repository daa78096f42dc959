# register_service($app) starts serving inside the calling program's own AnyEvent loop and
# returns at once; the program's own watchers keep running while requests are served. Here the
# program's periodic timer is what answers the delayed requests, so every answer proves that
# timer fired while the server was busy.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use AnyEvent;
use AnyEvent::Handle;
use POSIX ();
use TwiggyTest;
use Twiggy::Server;

safety_alarm(60);

my @queue;        # responders waiting for the program's timer
my $ticks = 0;    # how often the program's timer fired

my $app = sub {
    my $env = shift;
    if ($env->{PATH_INFO} eq '/queued') {
        my $query = $env->{QUERY_STRING};
        return sub { push @queue, [ shift, $query ] };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["direct $env->{QUERY_STRING}"] ];
};

my $port = empty_port();
my $server = Twiggy::Server->new(host => '127.0.0.1', port => $port);
$server->register_service($app);
pass('register_service returned to the caller');

my $program_timer = AE::timer(0.02, 0.02, sub {
    $ticks++;
    while (my $item = shift @queue) {
        my ($responder, $query) = @$item;
        $responder->([ 200, [ 'Content-Type' => 'text/plain' ], ["queued $query answered at tick $ticks"] ]);
    }
});

# Run the loop until $cv is sent, or give up.
sub run_loop {
    my ($cv, $seconds) = @_;
    my $give_up = AE::timer(scaled($seconds), 0, sub { $cv->send('timeout') });
    return $cv->recv;
}

subtest 'requests from another process' => sub {
    pipe(my $reader, my $writer) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $reader;
        alarm(int(scaled(30)));
        my @lines;
        for my $request ('/queued?n=1', '/direct?n=2', '/queued?n=3', '/queued?n=4', '/direct?n=5') {
            my $res = simple_request($port, request_bytes(GET => $request));
            push @lines, $res->status . ' ' . ($res->body // '(none)');
        }
        my $client = client($port);
        for my $n (6 .. 8) {
            $client->send(request_bytes(GET => "/queued?n=$n"));
            my $res = $client->read_response;
            push @lines, $res->status . ' ' . ($res->body // '(none)');
        }
        syswrite $writer, join('', map { "$_\n" } @lines);
        close $writer;
        POSIX::_exit(0);
    }
    close $writer;

    my $output = '';
    my $done = AE::cv;
    my $watcher = AE::io($reader, 0, sub {
        my $n = sysread $reader, $output, 65536, length $output;
        $done->send('eof') unless $n;
    });
    my $ticks_before = $ticks;
    is(run_loop($done, 20), 'eof', 'client process finished');
    undef $watcher;
    waitpid($pid, 0);

    my @lines = split /\n/, $output;
    is(scalar @lines, 8, 'eight answers');
    like($lines[0] // '', qr/\A200 queued n=1 answered at tick \d+\z/, 'queued request answered by the program timer');
    is($lines[1], '200 direct n=2', 'direct request');
    like($lines[2] // '', qr/\A200 queued n=3 answered at tick \d+\z/, 'queued request');
    like($lines[3] // '', qr/\A200 queued n=4 answered at tick \d+\z/, 'queued request');
    is($lines[4], '200 direct n=5', 'direct request');
    like($lines[$_ - 1] // '', qr/\A200 queued n=$_ answered at tick \d+\z/, "queued request $_ on a kept-alive connection")
        for 6 .. 8;
    cmp_ok($ticks, '>', $ticks_before, 'the program timer kept firing');
};

subtest 'requests from this same process' => sub {
    my %responses;
    my $pending = AE::cv;
    my $done = AE::cv;
    $pending->begin(sub { $done->send('all') });
    my @handles;
    for my $target ('/queued?n=a', '/direct?n=b', '/queued?n=c') {
        $pending->begin;
        my $buffer = '';
        my $finished;
        my $finish = sub {
            return if $finished++;
            $responses{$target} = parse_response($buffer, eof => 1);
            $pending->end;
        };
        push @handles, AnyEvent::Handle->new(
            connect  => [ '127.0.0.1', $port ],
            on_error => $finish,
            on_eof   => $finish,
            on_read  => sub { $buffer .= delete $_[0]{rbuf} },
        );
        $handles[-1]->push_write(request_bytes(GET => $target, 'HTTP/1.1', ['Connection: close']));
    }
    $pending->end;
    my $ticks_before = $ticks;
    is(run_loop($done, 10), 'all', 'three responses arrived');
    $_->destroy for @handles;
    my %body = map { $_ => ($responses{$_} && $responses{$_}->ok ? $responses{$_}->body : '(none)') } keys %responses;
    like($body{'/queued?n=a'} // '', qr/\Aqueued n=a answered at tick \d+\z/, 'queued request');
    is($body{'/direct?n=b'}, 'direct n=b', 'direct request');
    like($body{'/queued?n=c'} // '', qr/\Aqueued n=c answered at tick \d+\z/, 'queued request');
    cmp_ok($ticks, '>', $ticks_before, 'the program timer kept firing');
};

undef $program_timer;
done_testing;
