# The async echo tutorial: an app that answers after a 2-second AnyEvent timer. 200 requests
# opened at the same moment are all answered in about 2 seconds by one server process.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use TwiggyTest;

safety_alarm(60);

# The tutorial's app, completed where the tutorial text elides it.
my $app = do {
    use AnyEvent;
    use Plack::Request;

    my $get_html = sub {
        return q{
<form>
  <input name="field">
  <input type="submit" value="Echo">
</form>
};
    };

    sub {
        my $env = shift;

        my $html = $get_html->();

        my $request = Plack::Request->new($env);
        if ($request->param('field')) {
            return sub {
                my $response = shift;
                my $t;
                $t = AnyEvent->timer(after => 2, cb => sub {
                    undef $t;
                    $html .= 'You said: ' . $request->param('field') . '<br>';
                    return $response->([
                        200,
                        [ 'Content-Type' => 'text/html' ],
                        [ $html ],
                    ]);
                });
            };
        }

        return [
            200,
            [ 'Content-Type' => 'text/html' ],
            [ $html ],
        ];
    };
};

my $server = start_server(app => $app);
my $port = $server->port;

subtest 'form without a field is answered at once' => sub {
    my $res = simple_request($port, request_bytes(GET => '/'));
    response_is($res, 200, undef, 'GET /');
    like($res->body // '', qr/<input name="field">/, 'the form');
    unlike($res->body // '', qr/You said/, 'no echo');
};

subtest '200 concurrent delayed requests in one process' => sub {
    require AnyEvent::Handle;
    my $concurrency = 200;
    my %responses;
    my $all_done = AE::cv;
    my $pending = AE::cv;
    $pending->begin(sub { $all_done->send('done') });
    my $give_up = AE::timer(scaled(30), 0, sub { $all_done->send('timeout') });

    my $started = Time::HiRes::time();
    my @handles;
    for my $i (1 .. $concurrency) {
        $pending->begin;
        my $buffer = '';
        my $finished;
        my $finish = sub {
            my ($why) = @_;
            return if $finished++;
            $responses{$i} = { bytes => $buffer, why => $why };
            $pending->end;
        };
        my $handle;
        $handle = AnyEvent::Handle->new(
            connect  => [ '127.0.0.1', $port ],
            on_read  => sub { $buffer .= delete $_[0]{rbuf} },
            on_eof   => sub { $finish->('eof'); $handle->destroy },
            on_error => sub { $finish->("error: $_[2]"); $handle->destroy },
        );
        $handle->push_write("GET /?field=hello HTTP/1.0\r\nHost: 127.0.0.1:$port\r\n\r\n");
        push @handles, $handle;
    }
    $pending->end;
    my $outcome = $all_done->recv;
    my $elapsed = Time::HiRes::time() - $started;
    undef $give_up;
    @handles = ();

    is($outcome, 'done', 'all connections finished');
    my ($good, @bad) = (0);
    for my $i (1 .. $concurrency) {
        my $entry = $responses{$i} or do { push @bad, "$i: no response"; next };
        my $res = parse_response($entry->{bytes}, eof => 1);
        if ($res && $res->ok && $res->status == 200 && $res->body =~ /You said: hello/) {
            $good++;
        } else {
            push @bad, "$i ($entry->{why}): " . ($res ? $res->describe : 'nothing');
        }
    }
    is($good, $concurrency, "all $concurrency responses are 200 with 'You said: hello'")
        or diag(join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    cmp_ok($elapsed, '>=', 1.5, 'the responses waited for the 2 s timer');
    cmp_ok($elapsed, '<', scaled(4), "all answered in about 2 s (took ${\ sprintf '%.2f', $elapsed} s)");
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
