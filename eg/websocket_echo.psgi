# A WebSocket echo server on psgix.io: the app answers the upgrade request
# itself, then owns the client socket and speaks WebSocket frames on it, inside
# the server's event loop. Needs Protocol::WebSocket (Debian:
# libprotocol-websocket-perl) for the handshake and the framing.
#
#   twiggy --listen 127.0.0.1:5000 eg/websocket_echo.psgi
#   open http://127.0.0.1:5000/ in a browser, or use any WebSocket client on
#   ws://127.0.0.1:5000/echo
#
# Every text or binary message comes back as it was sent; a ping gets its
# pong; a close gets a close and the connection ends. Messages are limited to
# WS_MAX_MESSAGE bytes (default 65536); a bigger one closes the connection
# with status 1009.
#
# How the takeover works: the app returns a delayed response and never calls
# the responder. Twiggy then lets go of the connection (its own descriptor is
# closed, keep-alive ends) and the app's handle on psgix.io is the only one
# left. Behind nginx, pass the Upgrade and Connection headers on (see
# DEPLOYMENT in Twiggy's manual).
use strict;
use warnings;

use AnyEvent;
use AnyEvent::Handle;

my $have_websocket = eval {
    require Protocol::WebSocket::Handshake::Server;
    require Protocol::WebSocket::Frame;
    1;
};

my $max_message = $ENV{WS_MAX_MESSAGE} // 65536;
$max_message = 65536 unless $max_message =~ /\A[0-9]+\z/ && $max_message > 0;

my %connections;    # connection number => { handle, handshake, frame, closing, linger }
my $next_connection = 0;

# Close status codes (RFC 6455 section 7.4.1).
use constant {
    CLOSE_NORMAL   => 1000,
    CLOSE_PROTOCOL => 1002,
    CLOSE_TOO_BIG  => 1009,
    CLOSE_WAIT     => 5,       # seconds a closing client gets to close its side
};

sub plain {
    my ($status, $text, @headers) = @_;
    return [ $status, [ 'Content-Type' => 'text/plain', @headers ], ["$text\n"] ];
}

sub send_frame {
    my ($connection, $type, $payload) = @_;
    my $frame = $connection->{handshake}->build_frame(
        type => $type, buffer => $payload, max_payload_size => $max_message);
    $connection->{handle}->push_write($frame->to_bytes);
    return;
}

# Forgets a connection and closes its socket.
sub finish {
    my ($connection) = @_;
    delete $connections{ $connection->{number} } or return;
    delete $connection->{linger};
    my $socket = $connection->{handle}->fh;
    $connection->{handle}->destroy;
    close $socket if $socket;
    return;
}

# Sends a close frame and half-closes the socket once it is written, then drops whatever the
# client still sends until it closes too (or CLOSE_WAIT seconds pass): closing at once with
# unread data would reset the connection and the client might never see the close frame.
sub close_connection {
    my ($connection, $status) = @_;
    return if $connection->{closing}++;
    send_frame($connection, close => pack('n', $status));
    my $handle = $connection->{handle};
    $handle->push_shutdown;
    $handle->on_read(sub { $_[0]->{rbuf} = '' });
    $connection->{linger} = AE::timer CLOSE_WAIT, 0, sub { finish($connection) };
    return;
}

# Answers every complete message in the buffer.
sub serve_messages {
    my ($connection) = @_;
    my $frame = $connection->{frame};
    while (!$connection->{closing}) {
        my $message = eval { $frame->next_bytes };
        if (!defined $message) {
            close_connection($connection, $@ =~ /too big/i ? CLOSE_TOO_BIG : CLOSE_PROTOCOL) if $@;
            return;
        }
        if ($frame->is_text || $frame->is_binary) {
            send_frame($connection, ($frame->is_text ? 'text' : 'binary') => $message);
        } elsif ($frame->is_ping) {
            send_frame($connection, pong => $message);
        } elsif ($frame->is_close) {
            close_connection($connection, length $message >= 2 ? unpack('n', $message) : CLOSE_NORMAL);
        }
        # A pong needs no answer.
    }
    return;
}

sub websocket {
    my ($env) = @_;
    return plain(501, 'This example needs Protocol::WebSocket.') unless $have_websocket;
    return plain(501, 'This app needs psgix.io and a psgi.nonblocking server.')
        unless $env->{'psgix.io'} && $env->{'psgi.nonblocking'};
    return plain(400, 'This is a WebSocket endpoint: ws://host/echo')
        unless lc($env->{HTTP_UPGRADE} // '') eq 'websocket';
    return plain(426, 'Only WebSocket version 13 (RFC 6455) is spoken here.', 'Sec-WebSocket-Version' => 13)
        unless ($env->{HTTP_SEC_WEBSOCKET_VERSION} // '') eq '13';

    my $handshake = Protocol::WebSocket::Handshake::Server->new_from_psgi($env);
    return plain(400, 'Bad WebSocket handshake: ' . ($handshake->error // 'incomplete'))
        unless $handshake->parse('') && $handshake->is_done;

    my $socket = $env->{'psgix.io'};
    return sub {
        # The responder is never called: the connection now belongs to this app.
        my $connection = {
            number    => ++$next_connection,
            handshake => $handshake,
            frame     => $handshake->build_frame(max_payload_size => $max_message),
        };
        $connection->{handle} = AnyEvent::Handle->new(
            fh       => $socket,
            on_error => sub { finish($connection) },
            on_eof   => sub { finish($connection) },
            on_read  => sub {
                my ($handle) = @_;
                $connection->{frame}->append($handle->{rbuf});
                serve_messages($connection);
            },
        );
        $connections{ $connection->{number} } = $connection;
        $connection->{handle}->push_write($handshake->to_string);
    };
}

sub page {
    return <<'HTML';
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>WebSocket echo</title></head>
<body>
<form id="say"><input id="text" size="50" autofocus> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = document.getElementById('log');
const socket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/echo');
socket.onopen = () => { log.textContent += 'connected\n'; };
socket.onmessage = event => { log.textContent += 'echo: ' + event.data + '\n'; };
socket.onclose = event => { log.textContent += 'closed (' + event.code + ')\n'; };
document.getElementById('say').addEventListener('submit', event => {
  event.preventDefault();
  const text = document.getElementById('text');
  socket.send(text.value);
  text.value = '';
});
</script>
</body>
</html>
HTML
}

my $app = sub {
    my $env  = shift;
    my $path = $env->{PATH_INFO};
    return websocket($env) if $path eq '/echo';
    return [ 200, [ 'Content-Type' => 'text/html; charset=utf-8' ], [ page() ] ] if $path eq '/';
    return [ 200, [ 'Content-Type' => 'text/plain' ], [ scalar(keys %connections) . "\n" ] ]
        if $path eq '/connections';
    return plain(404, 'Not found');
};
