package Twiggy;
use strict;
use warnings;
use 5.010;

our $VERSION = '0.2000';

require XSLoader;
XSLoader::load('Twiggy', $VERSION);

1;

__END__

=head1 NAME

Twiggy - AnyEvent HTTP server for PSGI, with a Rust core

=head1 SYNOPSIS

  # the command line
  twiggy --listen :8080 app.psgi
  twiggy --workers 8 --listen 127.0.0.1:8080 --access-log /var/log/app/access.log app.psgi
  plackup -s Twiggy --port 8080 app.psgi
  start_server --port 127.0.0.1:8080 --signal-on-hup=QUIT -- twiggy --workers 8 app.psgi

  # inside your own AnyEvent program
  use AnyEvent;
  use Twiggy::Server;

  my $server = Twiggy::Server->new(host => '127.0.0.1', port => 8080);
  $server->register_service($app);
  AE::cv->recv;

=head1 DESCRIPTION

Twiggy is a non-blocking PSGI web server that lives inside your program's AnyEvent loop (EV or
the pure-Perl loop), so timers, condvars and other watchers of the app keep working while it
serves. This release keeps the modules, options and behaviour of the original Twiggy (0.1026)
and moves the hot path into Rust: a mio reactor accepts, reads, parses (httparse), frames and
writes; the env hash is built and the app's response read without Perl-level code. Perl keeps
the options, listeners, signals, process management and the public API.

It fully supports C<psgi.nonblocking> and C<psgi.streaming>: delayed responses, streaming
writers, long-poll, server-sent events, and WebSocket through C<psgix.io>. The examples in
F<eg/> show each of them, and each is run by a test.

This page is the manual. The modules document their own interfaces: L<Twiggy::Server> (the
server object; its L<DEFAULTS|Twiggy::Server/DEFAULTS> and
L<GUARANTEES|Twiggy::Server/GUARANTEES>), L<Twiggy::Prefork> (a master and asynchronous
workers), L<Plack::Handler::Twiggy> (plackup), L<twiggy> (the command).

=head1 OPTIONS

Options of L<Twiggy::Server/new>. On the C<twiggy> and C<plackup> command lines write them as
C<--option-name value> (C<--read-timeout 10>); C<twiggy --help> prints the same list. Times
are in seconds and may have fractions; sizes are in bytes.

=over 4

=item host, port, listen

Where to listen. C<listen> takes a list of C<host:port>, C<:port>, C<[ipv6]:port> or a UNIX
socket path; on the command line repeat C<--listen>. C<host> and C<port> are used when
C<listen> is not given. Default: C<:5000> (every IPv4 address, port 5000) with C<twiggy> and
C<plackup>; C<< Twiggy::Server->new >> alone listens on a free port (port 0).

=item backlog

The listen queue length. Default: 0, meaning the kernel's maximum (C<net.core.somaxconn>).

=item no_delay

TCP_NODELAY on accepted sockets; C<--disable-no-delay> turns it off. Default: 1.

=item read_timeout (alias: timeout)

Seconds allowed to receive a request head, counted from its first byte (from the accept for a
connection's first request). A client that is too slow gets C<408 Request Timeout> and the
connection closes; one that sent nothing is closed quietly. C<timeout> is the original's name
for it. 0 means no limit. Default: 300.

=item body_timeout

Longest silence, in seconds, while a request body arrives; then C<408> and close. 0 means no
limit. Default: 60.

=item write_timeout

Seconds output may stay stuck on a client that reads nothing before the connection is cut.
0 means no limit. Default: 60.

=item keepalive_timeout

Seconds an idle keep-alive connection stays open. 0 means no limit. Default: 30.

=item read_chunk_size

Bytes read from a socket per read call. Default: 65536.

=item max_request_line

Longest request line in bytes; longer ones get C<414 URI Too Long>. Default: 8190.

=item max_head_size

Largest request head (request line and header fields) in bytes; larger ones get C<431>.
Default: 65536.

=item max_headers

Most header fields in one request (at most 128); more get C<431>. Default: 100.

=item max_body

Largest request body in bytes; a larger declared body gets C<413> before it is read, a larger
chunked body as soon as it grows past the limit. 0 means no limit. Default: 0.

=item body_in_memory

Request bodies up to this size are kept in memory for C<psgi.input>; larger ones go to an
unlinked temporary file in C<$TMPDIR>. Default: 1048576.

=item max_requests

After serving this many requests the server stops accepting, answers the last one with
C<Connection: close>, finishes what is in progress, and C<run> returns (prefork workers use
this to recycle themselves). 0 means no limit. Default: 0.

=item reuse_port

Bind TCP listeners with C<SO_REUSEPORT>, so several processes can each have their own socket
on one address and the kernel balances connections over them. Default: 0.

=item access_log

A file to which the server appends one line per response in the combined log format:

  127.0.0.1 - - [21/Nov/2026:01:40:00 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/8.0"

with the status and the body bytes actually sent. The Rust core writes it off the request
path: lines collect in a buffer that is written when it fills, at least once a second, and
when the server stops. Request fields are escaped, so a client cannot forge lines. With
C<--workers>, every worker appends to the same file. Default: none (no log).

C<twiggy --access-log FILE> uses this native log. C<plackup> keeps C<--access-log FILE> for
itself (L<Plack::Middleware::AccessLog>, written by Perl for every request); there, spell it
C<--access_log FILE> to get the native log instead. In its C<development> environment plackup
also logs every request on standard error through that middleware, unless given
C<-E deployment> or C<--no-default-middleware>; C<twiggy> runs in C<deployment> by default.

=item server_ready

A code reference called with C<< { host, port, server_software } >> once each listener is
open. L<Plack::Runner> uses it to print the start-up banner, see L</"START-UP BANNER">.
Default: none.

=item workers

With L<Plack::Handler::Twiggy> (C<twiggy>, C<plackup -s Twiggy>): run a preforking master
with this many workers instead of one process. C<--max-requests>, C<--min-reqs-per-child>,
C<--graceful-timeout>, C<--preload-app>, C<--pid>, C<--user>, C<--group>, C<--socket-mode>,
C<--disable-proctitle> and the signals the master answers are described in
L<Twiggy::Prefork>. Default: 0 (one process).

=back

Unknown options are ignored, as L<Plack::Runner> expects. Invalid values croak. Every
L<plackup> option (C<-E>, C<-I>, C<-M>, C<-r>, C<-D>, ...) works with C<twiggy> too.

=head1 START-UP BANNER

  Twiggy: Accepting connections at http://127.0.0.1:5000/

L<Plack::Runner> prints this line on standard error for each listener, from C<server_ready>,
once the socket accepts connections: with C<plackup -s Twiggy> (also with C<--workers>, once,
from the master) and with C<twiggy -E development>. Scripts can wait for it before they
connect. In the C<deployment> environment, C<twiggy>'s default, Plack prints nothing.

=head1 SIGNALS

For one process (the preforking master's signals are in L<Twiggy::Prefork/SIGNALS>):

=over 4

=item QUIT

Stop accepting at once, let every request in progress finish (including streaming and delayed
responses), close idle connections, write out the access log, then C<run> returns.

=item INT, TERM

Stop now (Perl's default action). Access log lines of the last second that were not written
yet are lost: use QUIT to stop cleanly.

=back

=head1 PSGI EXTENSIONS

=over 4

=item psgi.nonblocking, psgi.streaming

Both true: an app may return a code reference (a delayed response), call the responder later
from a timer or another watcher, and stream the body through the writer it gets back.

=item psgix.io

The client socket as an L<IO::Socket::INET> (or L<IO::Socket::UNIX>), made when the app first
reads the key. An app may take the connection over, for WebSocket and other upgrades: return
a delayed response, write to the socket directly and drop the responder without calling it;
the server then lets go of its own descriptor and leaves the socket to the app. See
F<eg/websocket_echo.psgi>.

=item psgix.input.buffered

True: C<psgi.input> holds the whole body before the app is called, and is always seekable.

=item psgix.exit_guard

With L<Twiggy::Prefork>: an L<AnyEvent::CondVar> a worker waits on before it exits. See
L<Twiggy::Prefork/"PSGI EXTENSIONS">.

=back

The responder of a delayed response gets the client socket as its second argument, as in the
original. The streaming writer (C<< $responder->([$status, $headers]) >>) has, besides C<write>
and C<close>:

=over 4

=item $writer->write($data)

Returns false once the client has gone away: a producer can stop.

=item $writer->on_close($callback)

Calls C<< $callback->() >> if the client goes away before C<close>.

=item $writer->poll_cb($callback)

Calls C<< $callback->($writer) >> once the output written so far has reached the socket, so a
producer can wait for a slow client instead of filling memory.

=back

For a delayed response that has not started yet (a long poll),
C<Twiggy::Server::on_client_close($env, $callback)> calls back when the client disconnects;
see F<eg/longpoll_chat.psgi>.

=head1 HTTP

Requests are parsed from a buffer, never line by line. HTTP/1.1 requests get HTTP/1.1 answers
with a C<Date> header; keep-alive is the default on 1.1 and honoured on 1.0 when asked for.
Pipelined requests are answered in order. Chunked request bodies are decoded (the app sees
C<CONTENT_LENGTH>); C<Expect: 100-continue> is answered. Responses without a known length are
chunked to 1.1 clients and close-delimited to 1.0 clients. HEAD, 1xx, 204 and 304 responses
carry no body.

Refused before the app is called, with the connection closed afterwards: conflicting or
malformed framing (400), a missing Host on HTTP/1.1 (400), too long a request line (414), too
large a head (431), too large a body (413, with C<max_body>), a stacked transfer coding
(501), a client that is too slow (408).

=head1 FAILURES

An app that dies or returns something that is not a PSGI response gets a C<500> and a message
on C<psgi.errors>; once the head is sent, the connection is cut instead. The server keeps
serving. A client that disconnects costs only its own connection. An empty or incomplete
request that ends gets no response bytes.

=head1 GUARANTEES

What the server promises about HTTP framing, refusals, failures, resources and life inside the
caller's loop is listed in L<Twiggy::Server/GUARANTEES>, and what the preforking master
promises in L<Twiggy::Prefork/GUARANTEES>, each with the test that proves it. Around them:

=over 4

=item *

The tarball made by C<make dist> carries every Rust crate it needs: C<cpanm Twiggy-X.tar.gz>
builds with no network, runs the tests, and C<plackup -s Twiggy> then serves from the
installed copy. F<t/ship-dist.t> (with C<TWIGGY_TEST_DIST=1>; F<.ci/run> sets it)

=item *

Two instances behind nginx, with keep-alive connections from nginx: requests are spread and
reuse the upstream connections, streaming responses reach the client as they are written,
uploads and downloads of several MB arrive intact, and
L<Plack::Middleware::ReverseProxy> restores C<REMOTE_ADDR>. F<t/ship-nginx.t>

=item *

Plack's Deflater (also on streaming responses), ConditionalGET and ContentLength middleware
work through the server. F<t/ship-middleware.t>

=item *

Every example in F<eg/> works as its header describes: hello, the async echo, server-sent
events, the long-poll chat (a client that leaves is forgotten at once), the WebSocket echo
(with a real WebSocket client). F<t/ship-examples.t>, F<t/core-examples.t>

=item *

C<plackup -s Twiggy> (with or without C<--workers>) and C<twiggy -E development> print the
start-up banner once, when the socket accepts. F<t/ship-banner.t>

=item *

C<twiggy --help> lists every option of this page with the same default, and every public
module has POD. F<t/ship-options.t>, F<t/ship-pod.t>, F<t/ship-pod-coverage.t>

=back

=head1 COMPATIBILITY WITH THE ORIGINAL TWIGGY

What is the same: the module names (L<Twiggy::Server>, L<Twiggy::Server::SS>,
L<Plack::Handler::Twiggy>, the C<AnyEvent::Server::PSGI> alias, and L<Twiggy::Prefork> for
Twiggy::Prefork 0.08), the C<twiggy> command, the options and their meaning (C<host>,
C<port>, C<listen> with UNIX sockets, C<backlog>, C<no_delay>, C<timeout>,
C<read_chunk_size>, C<server_ready> and its arguments), C<register_service> and C<run>, the
server living in the caller's AnyEvent loop, Server::Starter support, C<psgix.io> with the
socket as the responder's second argument, the deprecated L<AnyEvent::CondVar> response, and
SIGQUIT for a graceful stop. Apps written for the original run unchanged.

What changed, and why:

=over 4

=item HTTP/1.1 and the status line

The original answered every request with an C<HTTP/1.0> status line, whatever the client
spoke. Twiggy answers in the request's version: C<HTTP/1.1 200 OK> to HTTP/1.1 clients, with a
C<Date> header as RFC 9110 requires of origin servers. Proxies and clients then know they may
keep the connection and that chunked framing is allowed.

=item Keep-alive and pipelining

The original closed the connection after every response, so each request paid for a TCP
handshake, and nginx could not keep connections to it. Twiggy keeps connections open (the
default on HTTP/1.1, on request on 1.0) for C<keepalive_timeout> seconds, answers pipelined
requests in order, and closes only when the client asks or framing requires it. This is where
most of the speed-up on short requests comes from (see L</PERFORMANCE>).

=item Framing

Streaming responses without a length are chunked to HTTP/1.1 clients (the original ended them
by closing); chunked request bodies are decoded; C<Expect: 100-continue> is answered; HEAD,
1xx, 204 and 304 responses never carry a body. Ambiguous or malformed requests are refused with
C<400> before the app sees them, instead of being guessed at: they are how request smuggling
through proxies works.

=item Limits and timeouts

The original's C<timeout> is kept (as C<read_timeout>); new options bound what a client can
make the server hold: C<body_timeout>, C<write_timeout>, C<keepalive_timeout>,
C<max_request_line>, C<max_head_size>, C<max_headers>, C<max_body>. A client that is too slow
gets C<408>; oversized requests get C<413>, C<414> or C<431>.

=item Smaller differences

C<psgi.version> is C<[1, 1]>; C<psgi.input> is always seekable and
C<psgix.input.buffered> is true (large bodies are spooled to a temporary file);
C<read_chunk_size> defaults to 64 KiB instead of 4 KiB; the listen backlog defaults to the
kernel's maximum instead of 128 (a burst of connections no longer waits for SYN retransmits);
a response with a bad status or a header holding CR, LF or NUL gets a C<500> instead of being
sent.

=item New

C<access_log>, C<max_requests>, C<reuse_port>, C<--workers>, C<on_client_close> and the
writer's C<on_close> and C<poll_cb>.

=back

Building needs Rust (see L</INSTALLATION>); the original was pure Perl.

=head1 DEPLOYMENT

=head2 Behind nginx

Let nginx face the clients (TLS, slow clients, static files) and pass requests to Twiggy on
loopback over kept-alive connections:

  upstream app {
      server 127.0.0.1:5000;
      server 127.0.0.1:5001;
      keepalive 16;               # idle connections nginx keeps to the instances
      keepalive_timeout 20s;      # below Twiggy's keepalive_timeout (30 s)
  }

  server {
      listen 80;
      client_max_body_size 16m;

      location / {
          proxy_pass http://app;
          proxy_http_version 1.1;             # keep-alive to the upstream needs 1.1 ...
          proxy_set_header Connection "";     # ... and no "Connection: close"
          proxy_set_header Host $host;
          proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
          proxy_set_header X-Forwarded-Proto $scheme;
      }

      location /events/ {                     # long polls and server-sent events
          proxy_pass http://app;
          proxy_http_version 1.1;
          proxy_set_header Connection "";
          proxy_buffering off;
          proxy_read_timeout 1h;
      }

      location /ws/ {                         # WebSocket
          proxy_pass http://app;
          proxy_http_version 1.1;
          proxy_set_header Upgrade $http_upgrade;
          proxy_set_header Connection "upgrade";
          proxy_read_timeout 1h;
      }
  }

Notes:

=over 4

=item *

Without C<proxy_http_version 1.1> and an empty C<Connection> header nginx opens a new
connection for every request. Keep nginx's upstream C<keepalive_timeout> below Twiggy's
C<keepalive_timeout>, so that nginx, not Twiggy, closes idle connections: otherwise a request
can be sent on a connection Twiggy is closing at that moment, and nginx answers 502.

=item *

nginx buffers responses. For streaming, server-sent events and long polls turn buffering off
for their location (C<proxy_buffering off>) or send C<X-Accel-Buffering: no> from the app,
and raise C<proxy_read_timeout> above the longest wait.

=item *

The app sees nginx's address in C<REMOTE_ADDR>. L<Plack::Middleware::ReverseProxy> restores
the client's from C<X-Forwarded-For> (and the scheme from C<X-Forwarded-Proto>); enable it
only when Twiggy listens where only nginx can reach it, since a client could send the header
itself:

  use Plack::Builder;
  builder {
      enable 'ReverseProxy';
      $app;
  };

=item *

nginx reads request bodies completely before it passes them on (C<client_max_body_size>
limits them), and passes chunked request bodies on with a length. Twiggy's C<max_body> then
only guards against clients that bypass nginx.

=back

F<t/ship-nginx.t> runs this setup (two instances, keep-alive, streaming, uploads,
ReverseProxy) against a real nginx.

=head2 Scaling out

One Twiggy process serves many connections at once but uses one CPU core. To use more, run
several: either C<twiggy --workers N> (one master, N workers sharing the sockets; see
L<Twiggy::Prefork>), or N independent instances on different ports listed in one nginx
C<upstream>, as above. The same upstream can list instances on other machines
(C<server 10.0.0.2:5000;>); nginx spreads requests over them and, with C<max_fails> and
C<fail_timeout>, stops sending to one that fails. Each instance, and each worker, is a
separate process: state an app keeps in memory (the long-poll chat's messages, WebSocket
connections) is per process. Share it through a store every process can reach (a database,
Redis publish/subscribe), or pin each client to one instance (nginx C<ip_hash> or C<hash>).

=head2 Server::Starter

L<Server::Starter> holds the listening socket and restarts the server on SIGHUP without
refusing a connection:

  start_server --port 127.0.0.1:5000 --signal-on-hup=QUIT --pid-file /run/app.pid \
      -- twiggy --workers 4 app.psgi

  kill -HUP $(cat /run/app.pid)     # deploy: new workers start, old ones finish and exit

With C<--signal-on-hup=QUIT> the old server finishes the requests it has (see
L<Twiggy::Server::SS> and L<Twiggy::Prefork/"HOT DEPLOY WITH SERVER::STARTER">).

=head2 systemd

A unit for the preforking server; C<systemctl reload> restarts the workers with the new code,
C<systemctl stop> stops gracefully:

  # /etc/systemd/system/app.service
  [Unit]
  Description=app on Twiggy
  After=network.target

  [Service]
  User=www-data
  Group=www-data
  WorkingDirectory=/srv/app
  Environment=PLACK_ENV=deployment
  ExecStart=/usr/local/bin/twiggy --workers 4 --listen 127.0.0.1:5000 \
      --access-log /var/log/app/access.log app.psgi
  ExecReload=/bin/kill -HUP $MAINPID
  KillSignal=SIGQUIT
  TimeoutStopSec=60
  Restart=on-failure

  [Install]
  WantedBy=multi-user.target

C<KillSignal=SIGQUIT> lets requests in progress finish; systemd kills what is left after
C<TimeoutStopSec>. To keep the socket open across restarts as well, run C<start_server> as
the C<ExecStart> command instead (as above) and send it SIGHUP in C<ExecReload>.

=head1 PERFORMANCE

To be filled in from the benchmark suite: see F<bench/README.md> for how the numbers are
made (C<bench/run>: Twiggy against Starman and HTTP::Server::PSGI, interleaved rounds of
C<wrk> on 127.0.0.1, with the CPU each server spends per request) and for the latest table.

=head1 INSTALLATION

  cpanm Twiggy-0.2000.tar.gz

Building needs a C compiler, Rust (cargo and rustc 1.85 or newer; L<https://rustup.rs/>),
libclang (Debian: C<libclang-dev>) and, for the Rust unit tests, libperl.so (Debian:
C<libperl-dev>). F<Makefile.PL> checks for them and stops with a clear message when one is
missing. The tarball carries every Rust crate the build needs (in F<vendor/>), so the build
does not use the network; cargo, rustc and libclang must be installed already. Set C<CARGO>,
C<RUSTC> or C<LIBCLANG_PATH> to use others than those in C<PATH>.

From a checkout, C<perl Makefile.PL && make test> builds and runs every test (under both the
EV and the pure-Perl AnyEvent loop, then the Rust unit tests); C<make dist> makes the tarball,
which needs crates.io once, to vendor the crates.

=head1 ENVIRONMENT

=over 4

=item TWIGGY_DEBUG

Set to true to print debug lines on STDERR.

=item PLACK_ENV

As with every Plack server: C<development> (plackup's default) adds Plack's development
middleware and the start-up banner; C<twiggy> defaults to C<deployment>.

=item TMPDIR

Where request bodies larger than C<body_in_memory> are spooled.

=back

=head1 AUTHOR

Twiggy contributors. The original Twiggy is by Tatsuhiko Miyagawa.

=head1 LICENSE

This library is free software; you can redistribute it and/or modify it under the same terms
as Perl itself.

=head1 SEE ALSO

L<Twiggy::Server>, L<Twiggy::Prefork>, L<Plack::Handler::Twiggy>, L<twiggy>, L<AnyEvent>,
L<Plack>, L<PSGI>, L<Server::Starter>

=cut
