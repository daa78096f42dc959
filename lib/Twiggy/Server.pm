package Twiggy::Server;
use strict;
use warnings;

use AnyEvent;
use Carp ();
use Scalar::Util ();
use Twiggy ();
use Twiggy::Server::Response ();

use constant DEBUG => $ENV{TWIGGY_DEBUG};

# Options of the original Twiggy keep their names and meaning (`timeout` is the original's name
# for read_timeout); the rest are ours. Every default is listed in Twiggy's POD (OPTIONS).
# Timeouts are seconds, fractions allowed; 0 turns a timeout off.
my %TIMEOUTS = (
    read_timeout      => 300,    # a request head, from its first byte (or from the accept)
    body_timeout      => 60,     # silence while a request body arrives
    write_timeout     => 60,     # output stuck on a client that reads nothing
    keepalive_timeout => 30,     # idle between requests
);

# Sizes are whole numbers; 0 means "no limit" for max_body and max_requests, and "the kernel's
# maximum" for backlog.
my %SIZES = (
    read_chunk_size  => 65536,
    max_request_line => 8190,
    max_head_size    => 65536,
    max_headers      => 100,
    max_body         => 0,
    body_in_memory   => 1024 * 1024,
    backlog          => 0,
    max_requests     => 0,
);

# The most header fields the parser can hold.
use constant MAX_HEADERS_LIMIT => 128;

sub new {
    my ($class, %args) = @_;
    $args{read_timeout} = $args{timeout} if defined $args{timeout} && !defined $args{read_timeout};
    my $self = bless { no_delay => 1, %args }, $class;
    $self->_check_options;
    return $self;
}

sub _check_options {
    my $self = shift;
    for my $name (sort keys %TIMEOUTS) {
        my $value = $self->{$name};
        if (!defined $value || $value eq '') {
            $self->{$name} = $TIMEOUTS{$name};
            next;
        }
        Carp::croak("Twiggy: option '$name' must be a number of seconds, not '$value'")
            unless $value =~ /\A\s*(?:\d+(?:\.\d*)?|\.\d+)\s*\z/;
        $self->{$name} = 0 + $value;
    }
    $self->{timeout} = $self->{read_timeout};
    for my $name (sort keys %SIZES) {
        my $value = $self->{$name};
        if (!defined $value || $value eq '') {
            $self->{$name} = $SIZES{$name};
            next;
        }
        Carp::croak("Twiggy: option '$name' must be a whole number, not '$value'")
            unless $value =~ /\A\s*\d+\s*\z/;
        $self->{$name} = 0 + $value;
    }
    Carp::croak("Twiggy: option 'max_headers' can be at most " . MAX_HEADERS_LIMIT)
        if $self->{max_headers} > MAX_HEADERS_LIMIT;
    if (defined $self->{port}) {
        Carp::croak("Twiggy: option 'port' must be a number from 0 to 65535, not '$self->{port}'")
            unless $self->{port} =~ /\A\d+\z/ && $self->{port} <= 65535;
    }
    if (defined $self->{listen} && ref $self->{listen} ne 'ARRAY') {
        $self->{listen} = [ $self->{listen} ];
    }
    if (defined $self->{server_ready} && ref $self->{server_ready} ne 'CODE') {
        Carp::croak("Twiggy: option 'server_ready' must be a code reference");
    }
    return;
}

# The numbers the Rust core reads (see limits::Config::from_options).
sub _core_options {
    my $self = shift;
    my %options = map { $_ => $self->{$_} } keys %TIMEOUTS, grep { $_ ne 'backlog' } keys %SIZES;
    $options{no_delay} = $self->{no_delay} ? 1 : 0;
    $options{access_log_fd} = $self->_open_access_log if defined $self->{access_log} && length $self->{access_log};
    return \%options;
}

# The access log file, opened for appending; the core gets its own descriptor and writes
# combined-format lines itself, off the request path.
sub _open_access_log {
    my $self = shift;
    my $path = $self->{access_log};
    open my $log, '>>', $path or Carp::croak("Twiggy: cannot open the access log '$path': $!");
    require POSIX;
    my $fd = POSIX::dup(fileno $log);
    Carp::croak("Twiggy: cannot use the access log '$path': $!") unless defined $fd;
    close $log;
    return $fd;
}

# Starts serving $app inside the caller's AnyEvent loop and returns.
sub register_service {
    my ($self, $app) = @_;
    Carp::croak("Twiggy: register_service needs a PSGI application (a code reference)")
        unless ref $app;

    my $weak_self = $self;
    Scalar::Util::weaken($weak_self);
    my $reactor = Twiggy::Reactor->_new(
        [
            $app,
            \&Twiggy::Server::Response::respond,
            \&Twiggy::Server::Response::log_error,
            \&Twiggy::Server::Response::make_io,
            \&Twiggy::Server::Response::input_from_string,
            \&Twiggy::Server::Response::input_from_fd,
            sub { $weak_self->_drained if $weak_self },
            Twiggy::Server::Response::null_input(),
        ],
        $self->_core_options,
    );
    $self->{reactor} = $reactor;

    $self->{exit_guard} = AE::cv;
    $self->{exit_guard}->begin;

    $self->start_listen($app);

    # Level-triggered from the outside: the callback handles everything ready, and anything
    # left over keeps the poll fd readable for the next round. The callback is an XSUB bound
    # to the reactor: no Perl code runs between the event loop and the Rust core.
    $self->{poll_watcher} = AE::io $reactor->fd, 0, $reactor->poll_callback;
    $self->{tick_timer}   = AE::timer 1, 1, sub { $reactor->tick };
    return;
}

# Opens every listener named by `listen` (or host/port).
sub start_listen {
    my ($self, $app) = @_;
    my @listen = @{ $self->{listen} || [ ($self->{host} || '') . ':' . ($self->{port} || 0) ] };
    for my $spec (@listen) {
        my ($host, $port, $path) = _parse_listen($spec);
        if (defined $path) {
            my $fd = Twiggy::Reactor->listen_unix($path, $self->{backlog});
            $self->_add_listener($fd, 'unix/', $path, 1);
        } else {
            my ($fd, $bound_host, $bound_port)
                = Twiggy::Reactor->listen_tcp($host, $port, $self->{backlog}, $self->{reuse_port} ? 1 : 0);
            $self->_add_listener($fd, $host eq '' ? $bound_host : $host, $bound_port, 0);
        }
    }
    return;
}

sub _parse_listen {
    my ($spec) = @_;
    Carp::croak("Twiggy: empty listen address") unless defined $spec && length $spec;
    if ($spec =~ /\A\[([^\]]*)\]:(\d+)\z/ || $spec =~ /\A([^:]*):(\d+)\z/) {
        my ($host, $port) = ($1, $2);
        Carp::croak("Twiggy: port $port in '$spec' is out of range") if $port > 65535;
        $host = '' if $host eq '*';
        return ($host, $port, undef);
    }
    Carp::croak("Twiggy: cannot understand listen address '$spec' (want host:port, :port or a socket path)")
        if $spec =~ /\A[^\/.]*:/;
    return (undef, undef, $spec);
}

# Serves an already listening socket; used for our own sockets and Server::Starter's.
sub _add_listener {
    my ($self, $fd, $host, $port, $is_unix) = @_;
    $self->{reactor}->add_listener($fd, $self->_env_template($host, $port), $is_unix ? 1 : 0);
    push @{ $self->{listening} }, "$host:$port";
    DEBUG && warn "Twiggy: listening on $host:$port (fd $fd)\n";
    $self->{server_ready}->({ host => $host, port => $port, server_software => 'Twiggy' })
        if $self->{server_ready};
    return;
}

# The static part of every env on one listener; the core copies it into each env it makes
# (and puts back any value an app changed before it reuses an env).
sub _env_template {
    my ($self, $host, $port) = @_;
    return {
        SERVER_NAME            => $host,
        SERVER_PORT            => $port,
        SCRIPT_NAME            => '',
        'psgi.version'         => [ 1, 1 ],
        'psgi.errors'          => \*STDERR,
        'psgi.url_scheme'      => 'http',
        'psgi.nonblocking'     => !!1,
        'psgi.streaming'       => !!1,
        'psgi.run_once'        => !!0,
        'psgi.multithread'     => !!0,
        'psgi.multiprocess'    => $self->{psgi_multiprocess} ? !!1 : !!0,
        'psgix.input.buffered' => !!1,
        ($self->{psgix_exit_guard} ? ('psgix.exit_guard' => $self->{exit_guard}) : ()),
    };
}

# Stops accepting; in-flight requests finish, then `run` returns.
sub graceful_stop {
    my $self = shift;
    return unless $self->{reactor};
    DEBUG && warn "Twiggy: stopping gracefully\n";
    $self->{reactor}->drain;
    return;
}

sub _drained {
    my $self = shift;
    DEBUG && warn "Twiggy: all connections finished\n";
    delete $self->{poll_watcher};
    delete $self->{tick_timer};
    $self->{exit_guard}->end if $self->{exit_guard};
    return;
}

# Calls $callback->() if the client of the request behind $env goes away before its response
# is complete (long-poll and server-push apps stop producing then). Returns false, and calls
# it at once, when the client is already gone.
sub on_client_close { Twiggy::Server::Response::on_client_close(@_) }

sub run {
    my ($self, $app) = @_;
    # An app writing to a socket its client has closed (psgix.io) must get EPIPE, not die of
    # SIGPIPE; the core itself never raises it. A handler the app installed is left alone.
    local $SIG{PIPE} = 'IGNORE' if !$SIG{PIPE} || $SIG{PIPE} eq 'DEFAULT';
    $self->register_service($app);
    # AnyEvent's pure-Perl signal code keeps a handler already in %SIG (even 'DEFAULT'),
    # which would swallow QUIT; the watcher must own it.
    local $SIG{QUIT};
    my $quit; $quit = AE::signal QUIT => sub { undef $quit; $self->graceful_stop };
    _wait_for($self->{exit_guard});
    delete $self->{reactor};
    return;
}

# Waits for the condvar $guard. Under EV the loop runs inside EV::run itself: AnyEvent's own
# wait returns to Perl after every wake-up (a hash lookup and a call each time, a measurable
# share of a small request). The guard's callback breaks out; a once-a-second check covers a
# guard sent while some nested wait had EV's attention. recv then returns as usual.
sub _wait_for {
    my ($guard) = @_;
    if (AnyEvent::detect() eq 'AnyEvent::Impl::EV' && !$guard->ready) {
        my $done;
        $guard->cb(sub { $done = 1; EV::break(EV::BREAK_ALL()) });
        my $check = EV::timer(1, 1, sub { EV::break(EV::BREAK_ALL()) if $done });
        EV::run() until $done;
    }
    $guard->recv;
    return;
}

1;

__END__

=head1 NAME

Twiggy::Server - the Twiggy PSGI server object

=head1 SYNOPSIS

  use Twiggy::Server;

  my $server = Twiggy::Server->new(host => '127.0.0.1', port => 5000);
  $server->register_service($app);    # serve inside your own AnyEvent loop
  AE::cv->recv;

  # or: serve until SIGQUIT
  Twiggy::Server->new(listen => [':5000', '/tmp/app.sock'])->run($app);

=head1 DESCRIPTION

The API of the original Twiggy::Server, served by a Rust core. See L<Twiggy> for the full
manual: options, guarantees, and what changed.

=head1 METHODS

=over 4

=item new(%options)

Takes every option in L<Twiggy/OPTIONS> (their defaults are listed under L</DEFAULTS>).
Unknown options
are ignored, as L<Plack::Runner> expects. Bad values croak.

=item register_service($app)

Opens the listeners and starts serving C<$app> inside the running AnyEvent loop; returns at once.

=item run($app)

C<register_service>, then serves until SIGQUIT: the listeners close at once, requests in
progress finish, then C<run> returns.

=item graceful_stop

What SIGQUIT does, for programs that drive the server themselves.

=item Twiggy::Server::on_client_close($env, $callback)

A function: calls C<< $callback->() >> if the client of the request behind C<$env> disconnects
before its response is complete, so a long-poll or server-push app can stop producing.
Returns false, and calls it at once, when the client is already gone. The streaming writer has
the same as a method, C<< $writer->on_close($callback) >>, and C<< $writer->poll_cb($callback) >>
calls back once written data has drained to the socket.

=item start_listen($app)

Opens the listeners. L<Twiggy::Server::SS> overrides it to use Server::Starter's sockets.

=back

=head1 DEFAULTS

Every option and its default (see L<Twiggy/OPTIONS> for what each does):

  host                 (every IPv4 address)    port           0 (plackup: 5000)
  listen               [ "host:port" ]         backlog        0 = net.core.somaxconn
  no_delay             1                       server_ready   (none)
  read_timeout         300 s (alias: timeout)  body_timeout   60 s
  write_timeout        60 s                    keepalive_timeout  30 s
  read_chunk_size      65536 bytes             body_in_memory 1048576 bytes
  max_request_line     8190 bytes              max_head_size  65536 bytes
  max_headers          100 (at most 128)       max_body       0 = no limit
  max_requests         0 = no limit            reuse_port     0
  access_log           (none)

Timeouts are checked about once a second, so one may fire up to a second late.

=head1 GUARANTEES

What the server promises, each with the test that proves it.

=head2 HTTP/1.1 framing (RFC 9112)

=over 4

=item *

Requests are parsed from a buffer, whatever the read boundaries (a CR and its LF may arrive
apart); the env matches what HTTP::Parser::XS makes of the same bytes.
F<t/h1-pipeline.t>, F<t/edge-differential.t>

=item *

HTTP/1.1 requests get an HTTP/1.1 status line and one Date header. F<t/h1-status-date.t>

=item *

Keep-alive is the default on 1.1 and honoured on 1.0 when asked for; C<Connection: close>
closes after the response. F<t/h1-keepalive.t>

=item *

Pipelined requests are answered in order, also behind a delayed or streaming response.
F<t/h1-pipeline.t>

=item *

Chunked request bodies are decoded and the app sees C<CONTENT_LENGTH>.
F<t/h1-chunked-request.t>

=item *

Streaming responses without a length are chunked to 1.1 clients and close-delimited to 1.0
clients; array bodies get a C<Content-Length>. F<t/h1-chunked-response.t>,
F<t/psgi-responses.t>

=item *

C<Expect: 100-continue> gets C<100 Continue> before the body is read (never for a body over
C<max_body>). F<t/h1-continue.t>, F<t/edge-limits.t>

=item *

HEAD, 1xx, 204 and 304 responses carry no body, whatever the app returns. F<t/h1-nobody.t>

=back

=head2 Refused before the app is called

Each of these is answered by the server alone, and the connection closes after it.

=over 4

=item *

400: Content-Length with Transfer-Encoding, differing or malformed Content-Length, a final
transfer coding that is not chunked, a malformed or overflowing chunk size, a missing Host on
HTTP/1.1, a malformed percent-escape in the path. F<t/h1-bad-framing.t>, F<t/edge-limits.t>

=item *

414 beyond C<max_request_line>, 431 beyond C<max_head_size> or C<max_headers>, 413 beyond
C<max_body>: each exactly at its limit. F<t/edge-limits.t>, F<t/h1-limits.t>

=item *

408 when a head takes longer than C<read_timeout> or a body is silent for C<body_timeout>; a
connection that sent nothing, or an idle keep-alive connection past C<keepalive_timeout>, is
closed without a byte; a client that reads nothing for C<write_timeout> is cut.
F<t/edge-timeouts.t>

=back

=head2 Failures

=over 4

=item *

An app that dies, or returns something that is not a PSGI response, gets a 500 and a message
on C<psgi.errors>; the server keeps serving. Once the head is sent, the connection is cut
(no final chunk). F<t/core-failures.t>

=item *

A header name or value with CR, LF or NUL, a bad status or a malformed header list is never
sent: 500 and a message instead (no response splitting). Bodies whose C<getline> or C<close>
dies cut the connection cleanly. F<t/edge-hygiene.t>

=item *

Every request gets an env of its own as far as the app can tell: the server reuses an env hash
only when the app kept no reference to it, or to any value in it, and left it as the server
made it (values it changed in place are put back); anything else (keys added or deleted,
values replaced, made read-only or tied, the hash blessed or weakly referenced) gets a fresh
hash. What an app keeps never changes under it. F<t/core-env-reuse.t>

=item *

A client that disconnects at any point costs only its own connection; an empty or incomplete
request that ends gets no response bytes. F<t/core-disconnect.t>

=item *

The app learns that its client left: C<on_client_close>, C<< $writer->on_close >>,
C<< $writer->poll_cb >>, and C<< $writer->write >> returning false. A FIN with nothing left to
read while the app works counts as leaving, as with nginx. F<t/edge-client-gone.t>

=back

=head2 Resources

=over 4

=item *

Slow clients (heads trickled a byte at a time, responses read a byte at a time) do not slow
the others. F<t/edge-slow-clients.t>

=item *

When accept fails for lack of file descriptors the server stops watching the listener until
the next tick (no busy loop), keeps serving its connections, and accepts again once
descriptors free up. F<t/edge-emfile.t>

=item *

Request bodies over C<body_in_memory> go to an unlinked temporary file; C<psgi.input> is
always seekable. F<t/psgi-input.t>

=item *

A million keep-alive requests over every body type and failure path leave RSS within a few MB
of where it was after warm-up, and the fd count where it was: F<bench/soak/run>.

=back

=head2 Inside the caller's loop

=over 4

=item *

The server lives in the app's AnyEvent loop (EV or the pure-Perl loop): the app's timers and
watchers keep running, and 200 concurrent requests to a 2-second timer app finish in about
2 seconds in one process. F<t/core-register-service.t>, F<t/core-tutorial.t>

=item *

QUIT stops accepting, lets requests in progress finish (including delayed and streaming
ones), and C<run> returns. F<t/core-quit.t>, F<t/core-max-requests.t>

=back

=head1 SEE ALSO

L<Twiggy>, L<Twiggy::Server::SS>, L<Plack::Handler::Twiggy>

=cut
