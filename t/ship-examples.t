# The example apps in eg/, each started the way its header says (bin/twiggy --listen
# 127.0.0.1:PORT eg/NAME.psgi) and used the way a client would: hello; the tutorial's async
# echo (many delayed answers at once); server-sent events from the streaming writer (events
# arrive as they are written); the long-poll chat (pollers wait, a post wakes them all, a
# poller that leaves is forgotten at once through on_client_close, an idle poll times out); the
# WebSocket echo over psgix.io, driven by a real WebSocket client (AnyEvent::WebSocket::Client)
# and by raw frames from Protocol::WebSocket (RFC 6455: handshake, ping, fragments, close,
# message size limit). t/core-examples.t loads every eg/*.psgi in-process as well.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use AnyEvent;
use Encode ();
use File::Spec;
use JSON::PP ();
use Time::HiRes ();
use TwiggyTest qw(:DEFAULT start_command perl_command);

safety_alarm(90);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my $json = JSON::PP->new->utf8;

# Starts bin/twiggy on an example with some environment; returns the server (->port).
sub start_example {
    my ($name, %environment) = @_;
    my $port = empty_port();
    local @ENV{ keys %environment } = values %environment;
    my $command = perl_command('bin/twiggy', '--listen', "127.0.0.1:$port", "$root/eg/$name");
    return start_command(command => $command, port => $port);
}

sub get {
    my ($port, $target, @headers) = @_;
    return simple_request($port, request_bytes(GET => $target, 'HTTP/1.1', [ @headers, 'Connection: close' ]));
}

sub json_body {
    my ($res) = @_;
    my $data = eval { $json->decode($res->body // '') };
    return $data;
}

subtest 'hello.psgi' => sub {
    my $server = start_example('hello.psgi');
    my $res = get($server->port, '/');
    response_is($res, 200, 'Hello, World!', 'GET /');
    is($res->header('Content-Type'), 'text/plain', 'text/plain');
};

subtest 'async_echo.psgi: ten delayed answers at once' => sub {
    my $delay = 0.5;
    my $server = start_example('async_echo.psgi', ECHO_DELAY => $delay);
    my $port = $server->port;
    response_is(get($port, '/'), 200, undef, 'the form, at once');

    my $started = Time::HiRes::time();
    my @clients = map { client($port) } 1 .. 10;
    $clients[$_]->send(request_bytes(GET => "/?field=message+$_", 'HTTP/1.1', ['Connection: close']))
        for 0 .. $#clients;
    my @answered = grep {
        my $res = $clients[$_]->read_response(timeout => 5);
        $res->ok && $res->status == 200 && ($res->body // '') =~ /You said: message $_<br>/;
    } 0 .. $#clients;
    my $elapsed = Time::HiRes::time() - $started;
    is(scalar @answered, 10, 'every request got its own echo');
    cmp_ok($elapsed, '>=', $delay * 0.9, 'after the delay');
    cmp_ok($elapsed, '<', scaled($delay * 3), "all within one delay, not ten (${\ sprintf '%.2f', $elapsed} s)");
};

subtest 'streaming.psgi: server-sent events arrive as they are written' => sub {
    my $server = start_example('streaming.psgi');
    my $client = client($server->port);
    my $started = Time::HiRes::time();
    $client->send(request_bytes(GET => '/?events=3&interval=0.4'));
    ok($client->wait_for('data: event 1 of 3', 2), 'the first event arrives');
    my $first = Time::HiRes::time() - $started;
    my $res = $client->read_response(timeout => 5);
    my $all = Time::HiRes::time() - $started;
    response_is($res, 200, undef, 'the stream');
    cmp_ok($first, '<', 0.6, sprintf('first event before the second was written (%.2f s)', $first));
    cmp_ok($all, '>=', 0.7, sprintf('the stream ended after the last tick (%.2f s)', $all));
    is($res->framing, 'chunked', 'chunked to an HTTP/1.1 client');
    like($res->header('Content-Type') // '', qr{\Atext/event-stream}, 'text/event-stream');
    is($res->header('Cache-Control'), 'no-cache', 'not cached');
    # The event stream format (HTML Living Standard, "Server-sent events"): fields, blank line.
    my @events = map { +{ map { /\A(\w+): ?(.*)\z/ ? ($1 => $2) : () } split /\n/ } }
        split /\n\n/, $res->body // '';
    is_deeply(\@events, [ map { { id => $_, event => 'tick', data => "event $_ of 3" } } 1 .. 3 ],
        'three events with id, event and data');
};

subtest 'longpoll_chat.psgi' => sub {
    my $server = start_example('longpoll_chat.psgi', CHAT_POLL_TIMEOUT => 30);
    my $port = $server->port;
    my $waiting = sub { (json_body(get($port, '/stats')) // {})->{waiting} // -1 };

    my $page = get($port, '/');
    response_is($page, 200, undef, 'the page');
    like($page->body // '', qr{fetch\('/poll\?since='}, 'with its long-poll client');

    my @pollers = map { client($port) } 1 .. 2;
    $_->send(request_bytes(GET => '/poll?since=0')) for @pollers;
    ok(wait_until(sub { $waiting->() == 2 }, 5), 'two pollers wait');
    is($pollers[0]->read_for(0.2), '', 'and get nothing yet');

    my $text = "hello \x{2713}";
    my $form = 'nick=ann&text=' . join '', map { sprintf '%%%02X', ord } split //, Encode::encode('UTF-8', $text);
    my $post = simple_request($port, request_bytes(POST => '/post', 'HTTP/1.1',
        [ 'Content-Type: application/x-www-form-urlencoded', 'Content-Length: ' . length $form, 'Connection: close' ],
        $form));
    response_is($post, 200, '{"id":1}', 'POST /post');
    for my $number (0, 1) {
        my $res = $pollers[$number]->read_response(timeout => 3);
        response_is($res, 200, undef, "poller $number is woken");
        my $messages = json_body($res) || [];
        is_deeply([ map { [ @$_{qw(id nick text)} ] } @$messages ], [ [ 1, 'ann', $text ] ],
            "poller $number gets the message (UTF-8 text intact)");
    }
    is($waiting->(), 0, 'nobody waits any more');

    my $history = get($port, '/poll?since=0');
    is(scalar @{ json_body($history) || [] }, 1, 'a poller that missed it gets it at once');

    my $leaving = client($port);
    $leaving->send(request_bytes(GET => '/poll?since=1'));
    ok(wait_until(sub { $waiting->() == 1 }, 5), 'a third poller waits');
    my $left = Time::HiRes::time();
    $leaving->close;
    ok(wait_until(sub { $waiting->() == 0 }, 5), 'a poller that leaves is forgotten');
    cmp_ok(Time::HiRes::time() - $left, '<', scaled(3), 'at once, long before its poll timeout (on_client_close)');

    response_is(simple_request($port, request_bytes(POST => '/post', 'HTTP/1.1',
        [ 'Content-Type: application/x-www-form-urlencoded', 'Content-Length: 5', 'Connection: close' ], 'text=')),
        400, undef, 'an empty message is refused');
    response_is(get($port, '/nowhere'), 404, undef, 'unknown paths are 404');
};

subtest 'longpoll_chat.psgi: an idle poll ends with an empty list' => sub {
    my $server = start_example('longpoll_chat.psgi', CHAT_POLL_TIMEOUT => 0.5);
    my $started = Time::HiRes::time();
    my $res = get($server->port, '/poll?since=0');
    response_is($res, 200, '[]', 'empty list');
    cmp_ok(Time::HiRes::time() - $started, '>=', 0.45, 'after CHAT_POLL_TIMEOUT');
};

SKIP: {
    my $have_server_side = eval { require Protocol::WebSocket::Frame; 1 };
    skip 'Protocol::WebSocket is not installed (Debian: libprotocol-websocket-perl)', 3 unless $have_server_side;

    my $server = start_example('websocket_echo.psgi');
    my $port = $server->port;
    my $connections = sub { my $body = get($port, '/connections')->body // ''; $body =~ /\A(\d+)/ ? $1 : -1 };

    subtest 'websocket_echo.psgi with AnyEvent::WebSocket::Client' => sub {
        plan skip_all => 'AnyEvent::WebSocket::Client is not installed (Debian: libanyevent-websocket-client-perl)'
            unless eval { require AnyEvent::WebSocket::Client; require AnyEvent::WebSocket::Message; 1 };

        my $client = AnyEvent::WebSocket::Client->new(timeout => scaled(5));
        my $connected = AE::cv;
        $client->connect("ws://127.0.0.1:$port/echo")->cb(sub { $connected->send(eval { $_[0]->recv }, $@) });
        my $guard = AE::timer(scaled(10), 0, sub { $connected->send(undef, 'timed out') });
        my ($connection, $error) = $connected->recv;
        ok($connection, 'the handshake succeeds') or return diag($error);

        my @sent = ('hello', "caf\x{e9} \x{2713}", map { "message $_" } 1 .. 20);
        my $binary = join '', map { chr int rand 256 } 1 .. 60_000;
        my (@texts, @binaries);
        my $all_back = AE::cv;
        $connection->on(each_message => sub {
            my (undef, $message) = @_;
            if ($message->is_binary) { push @binaries, $message->body } else { push @texts, $message->decoded_body }
            $all_back->send if @texts == @sent && @binaries == 1;
        });
        my $finished = AE::cv;
        $connection->on(finish => sub { $finished->send });
        $connection->send($_) for @sent;
        $connection->send(AnyEvent::WebSocket::Message->new(opcode => 2, body => $binary));
        my $timeout = AE::timer(scaled(10), 0, sub { $all_back->send });
        $all_back->recv;
        is_deeply(\@texts, \@sent, 'every text message comes back, in order, as characters');
        ok(@binaries == 1 && $binaries[0] eq $binary, 'a 60000-byte binary message comes back intact');
        is($connections->(), 1, 'the app holds one connection');

        $connection->close(1000, 'done');
        $timeout = AE::timer(scaled(5), 0, sub { $finished->send });
        $finished->recv;
        is($connection->close_code, 1000, 'the server answers close with the same status');
        ok(wait_until(sub { $connections->() == 0 }, 5), 'and lets the connection go');
    };

    subtest 'websocket_echo.psgi with raw RFC 6455 frames' => sub {
        my $client = client($port);
        # RFC 6455 section 1.3: this key must be answered with this accept value.
        $client->send(request_bytes(GET => '/echo', 'HTTP/1.1', [
            'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
            'Sec-WebSocket-Version: 13', 'Origin: http://127.0.0.1' ]));
        my $head = $client->read_until("\r\n\r\n", 5) // '';
        like($head, qr{\AHTTP/1\.1 101 }, '101 Switching Protocols');
        like($head, qr{^Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r$}mi, 'the accept value of RFC 6455');
        like($head, qr{^Upgrade: websocket\r$}mi, 'Upgrade: websocket');

        my $reader = Protocol::WebSocket::Frame->new(max_payload_size => 0);
        my $next_frame = sub {
            my $deadline = Time::HiRes::time() + scaled(5);
            while (1) {
                my $payload = $reader->next_bytes;
                return ($reader->opcode, $payload) if defined $payload;
                my $more = $client->read_for(0.05);
                my $got = length $more;
                $reader->append($more) if $got;    # (append empties $more)
                return if $client->eof && !$got || Time::HiRes::time() > $deadline;
            }
        };
        my $frame = sub { Protocol::WebSocket::Frame->new(masked => 1, max_payload_size => 0, @_)->to_bytes };

        $client->send($frame->(type => 'ping', buffer => 'are you there'));
        is_deeply([ $next_frame->() ], [ 10, 'are you there' ], 'a ping gets its pong');

        $client->send($frame->(type => 'text', fin => 0, buffer => 'frag')
            . $frame->(opcode => 0, fin => 1, buffer => 'mented'));
        is_deeply([ $next_frame->() ], [ 1, 'fragmented' ], 'a fragmented message comes back whole');

        $client->send($frame->(type => 'binary', buffer => 'x' x 70_000));
        my ($opcode, $payload) = $next_frame->();
        is($opcode, 8, 'a message over 65536 bytes gets a close frame');
        is(defined $payload && length $payload >= 2 ? unpack('n', $payload) : undef, 1009, 'with status 1009');
        ok($client->closed_without_more_data(5), 'and the connection ends');
    };

    subtest 'websocket_echo.psgi refuses what is not a WebSocket handshake' => sub {
        response_is(get($port, '/echo'), 400, undef, 'a plain GET');
        my $res = get($port, '/echo', 'Upgrade: websocket', 'Connection: Upgrade',
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 8');
        response_is($res, 426, undef, 'an old protocol version');
        is($res->header('Sec-WebSocket-Version'), '13', 'names the version it speaks');
        response_is(get($port, '/'), 200, undef, 'the page');
    };
}

done_testing;
