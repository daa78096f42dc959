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

  twiggy --listen :8080 app.psgi
  plackup -s Twiggy --port 8080 app.psgi

  use Twiggy::Server;
  my $server = Twiggy::Server->new(host => $host, port => $port);
  $server->register_service($app);
  AE::cv->recv;

=head1 DESCRIPTION

Twiggy is a non-blocking PSGI web server that lives inside your program's AnyEvent loop (EV or
the pure-Perl loop), so timers, condvars and other watchers of the app keep working while it
serves. This release keeps the modules, options and behaviour of the original Twiggy (0.1026)
and moves the hot path into Rust: a mio reactor accepts, reads, parses (httparse), frames and
writes; the env hash is built and the app's response read without Perl-level code. Perl keeps
the options, listeners, signals and the public API.

It fully supports C<psgi.nonblocking> and C<psgi.streaming>: delayed responses, streaming
writers, long-poll, server push, and WebSocket through C<psgix.io>.

=head1 OPTIONS

Options of L<Twiggy::Server/new>; with C<twiggy> or C<plackup> write them as
C<--option-name value>.

=over 4

=item host, port, listen

Where to listen. C<listen> takes a list of C<host:port>, C<:port>, C<[ipv6]:port> or a UNIX
socket path. Default: port 0 on every IPv4 address (plackup's default is 5000).

=item backlog

The listen queue length. Default 0, meaning the kernel's maximum (C<net.core.somaxconn>).

=item no_delay

TCP_NODELAY on accepted sockets. Default 1.

=item read_timeout (alias: timeout)

Seconds allowed to receive a request head, counted from its first byte (from the accept for a
connection's first request). A client that is too slow gets C<408 Request Timeout> and the
connection closes; one that sent nothing is closed quietly. C<timeout> is the original's name
for it. Default 300; 0 means no limit.

=item body_timeout

Longest silence, in seconds, while a request body arrives; then C<408> and close. Default 60.

=item write_timeout

Seconds output may stay stuck on a client that reads nothing before the connection is cut.
Default 60.

=item keepalive_timeout

Seconds an idle keep-alive connection stays open. Default 30; 0 means no limit.

=item read_chunk_size

Bytes read from a socket per read call. Default 65536.

=item max_request_line

Longest request line in bytes; longer ones get C<414 URI Too Long>. Default 8190.

=item max_head_size

Largest request head (request line and header fields) in bytes; larger ones get C<431>.
Default 65536.

=item max_headers

Most header fields in one request (at most 128); more get C<431>. Default 100.

=item max_body

Largest request body in bytes; a larger declared body gets C<413> before it is read, a larger
chunked body as soon as it grows past the limit. Default 0: no limit.

=item body_in_memory

Request bodies up to this size are kept in memory for C<psgi.input>; larger ones go to an
unlinked temporary file in C<$TMPDIR>. Default 1048576.

=item max_requests

After serving this many requests the server stops accepting, answers the last one with
C<Connection: close>, finishes what is in progress, and C<run> returns (prefork workers use
this to recycle themselves). Default 0: no limit.

=item reuse_port

Bind TCP listeners with C<SO_REUSEPORT>, so several processes can each have their own socket
on one address and the kernel balances connections over them. Default 0.

=item server_ready

A code reference called with C<< { host, port, server_software } >> once each listener is open.

=item workers

With L<Plack::Handler::Twiggy> (C<twiggy>, C<plackup -s Twiggy>): run a preforking master
with this many workers instead of one process. C<--max-requests>, C<--graceful-timeout>,
C<--pid>, C<--user>, C<--group>, C<--socket-mode>, C<--preload-app> and the signals it answers
are described in L<Twiggy::Prefork>.

=back

Unknown options are ignored, as L<Plack::Runner> expects. Invalid values croak.

=head1 SIGNALS

For one process (the preforking master's signals are in L<Twiggy::Prefork/SIGNALS>):

=over 4

=item QUIT

Stop accepting at once, let every request in progress finish (including streaming and delayed
responses), close idle connections, then C<run> returns.

=item INT, TERM

Stop now (Perl's default action).

=back

=head1 PSGI EXTENSIONS

=over 4

=item psgix.io

The client socket as an L<IO::Socket::INET> (or L<IO::Socket::UNIX>). An app may take the
connection over: write to it directly inside a delayed response and drop the responder without
calling it; the server then lets go of its own descriptor and leaves the socket to the app.

=item psgix.input.buffered

True: C<psgi.input> holds the whole body before the app is called, and is always seekable.

=back

The responder of a delayed response gets the client socket as its second argument, as in the
original. A streaming writer's C<write> returns false once the client has gone away.

=head1 HTTP

Requests are parsed from a buffer, never line by line. HTTP/1.1 requests get HTTP/1.1 answers
with a C<Date> header; keep-alive is the default on 1.1 and honoured on 1.0 when asked for.
Pipelined requests are answered in order. Chunked request bodies are decoded (the app sees
C<CONTENT_LENGTH>); C<Expect: 100-continue> is answered. Responses without a known length are
chunked to 1.1 clients and close-delimited to 1.0 clients. HEAD, 1xx, 204 and 304 responses
carry no body.

Refused before the app is called, with the connection closed afterwards: conflicting or
malformed framing (400), a missing Host on HTTP/1.1 (400), too long a request line (414), too
large a head (431), a stacked transfer coding (501), a client that is too slow (408).

=head1 FAILURES

An app that dies or returns something that is not a PSGI response gets a C<500> and a message
on C<psgi.errors>; once the head is sent, the connection is cut instead. The server keeps
serving. A client that disconnects costs only its own connection. An empty or incomplete
request that ends gets no response bytes.

=head1 COMPATIBILITY WITH THE ORIGINAL TWIGGY

Same module names, options, C<server_ready> arguments, C<register_service>/C<run>,
L<Twiggy::Server::SS> under Server::Starter, and the C<AnyEvent::Server::PSGI> alias.
Changed: answers use the request's HTTP version (the original always said HTTP/1.0 and closed
the connection), keep-alive and pipelining are supported, C<psgi.version> is C<[1, 1]>,
slow clients time out with a 408, and C<read_chunk_size> defaults to 64 KiB.

=head1 ENVIRONMENT

=over 4

=item TWIGGY_DEBUG

Set to true to print debug lines on STDERR.

=back

=head1 AUTHOR

Twiggy contributors. The original Twiggy is by Tatsuhiko Miyagawa.

=head1 LICENSE

This library is free software; you can redistribute it and/or modify it under the same terms
as Perl itself.

=head1 SEE ALSO

L<Twiggy::Server>, L<Twiggy::Prefork>, L<Plack::Handler::Twiggy>, L<twiggy>, L<AnyEvent>, L<Plack>

=cut
