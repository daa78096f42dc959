package Twiggy::Prefork;
use strict;
use warnings;

# Same version as the distribution; above 0.08, so code asking for Twiggy::Prefork 0.08 gets us.
our $VERSION = '0.2000';

1;

__END__

=head1 NAME

Twiggy::Prefork - preforking Twiggy: a master and asynchronous workers

=head1 SYNOPSIS

  # Twiggy::Prefork 0.08, drop-in
  plackup -s Twiggy::Prefork --max-workers 8 --max-reqs-per-child 1000 app.psgi

  # Starman's operations
  twiggy --workers 8 --listen :5000 --listen /run/app.sock app.psgi
  plackup -s Twiggy --workers 8 --max-requests 10000 --graceful-timeout 30 app.psgi

  # hot deploy
  start_server --port 5000 --signal-on-hup=QUIT -- twiggy --workers 8 app.psgi

  # from Perl
  use Twiggy::Prefork::Server;
  Twiggy::Prefork::Server->new(listen => [':5000'], max_workers => 8)->run($app);

=head1 DESCRIPTION

A master process opens the listening sockets and forks workers. Each worker is a complete,
asynchronous Twiggy (L<Twiggy::Server> with its own reactor and AnyEvent loop, created after
the fork), so one worker serves many connections at once: slow clients, long polls and
streaming responses do not tie workers up the way they do in a one-request-per-process server.

The master reaps workers that exit and starts new ones, recycles workers after a number of
requests, restarts them on SIGHUP, adds or removes one on SIGTTIN or SIGTTOU, and stops
gracefully on SIGQUIT. It never runs an event loop and never serves a request itself.

There are two ways in, which differ only in defaults and in what SIGTERM means:

=over 4

=item L<Twiggy::Prefork::Server> and C<plackup -s Twiggy::Prefork>

A drop-in replacement for Twiggy::Prefork 0.08: options C<max_workers> (default 10),
C<max_reqs_per_child> (default 100), C<min_reqs_per_child>, the C<psgix.exit_guard>
extension; SIGTERM lets the workers finish what they are doing, as 0.08 did.

=item C<twiggy --workers N> and C<plackup -s Twiggy --workers N>

L<Plack::Handler::Twiggy> runs the same master when C<workers> is above 0, with Starman's
conventions: C<--max-requests> per worker (default: no limit), SIGTERM and SIGINT stop at
once. Without C<--workers> nothing changes: one process, as before.

=back

=head1 OPTIONS

Every option of L<Twiggy::Server> (C<timeout>, C<keepalive_timeout>, C<backlog>, ...) is
passed to each worker. On the C<twiggy> and C<plackup> command lines write options as
C<--option-name value>; a switch without a value must be written C<--enable-reuse-port> or
C<--reuse-port=1>, because L<Plack::Runner> takes the next word as the value otherwise.

=over 4

=item max_workers, workers

How many workers to run. C<max_workers> defaults to 10 (Twiggy::Prefork 0.08); C<workers> is
Starman's name for it, and is what turns the prefork mode on in L<Plack::Handler::Twiggy>.

=item max_reqs_per_child, max_requests

How many requests a worker serves before it is replaced (keep-alive requests count one by
one). When a worker reaches its limit it stops accepting, answers the last request with
C<Connection: close>, finishes what is in progress and exits; the master starts another. 0
means no limit. C<max_reqs_per_child> defaults to 100 (0.08); C<max_requests> is Starman's
name, and with C<--workers> the default is no limit. When both are given,
C<max_reqs_per_child> wins.

=item min_reqs_per_child

If set, each worker's limit is drawn at random between this value and C<max_reqs_per_child>
(both included), so workers are not all replaced at the same moment.

=item preload_app

Load the application in the master before forking (copy-on-write: the workers share its
memory), instead of in each worker after the fork. See L</LOADING THE APPLICATION>.

=item graceful_timeout

Seconds a worker may take to finish its requests after it was told to stop gracefully
(SIGQUIT to the master, a restart by SIGHUP or SIGTTOU). A worker still running then is
killed (SIGKILL), cutting its connections. Default 0: wait as long as it takes.

=item reuse_port

Bind TCP listeners with C<SO_REUSEPORT>, one socket per worker slot, so the kernel spreads
new connections evenly over the workers. Without it all workers share one socket per address
(see L</BALANCE>). UNIX sockets are always shared. The master binds the sockets at start-up
with the rights it started with; a worker added later by SIGTTIN that cannot get a socket of
its own shares another slot's.

=item socket_mode

The file mode of UNIX socket files the master creates, as an octal string (C<0660>). The
socket appears with no more rights than that (the umask is set while binding), then gets
exactly that mode.

=item pid

Write the master's process id to this file after the sockets are open; the file is removed
when the master exits.

=item user, group

Names or numbers. After binding the sockets and writing the pid file, the master changes to
this group (with the user's supplementary groups) and user, and checks that the change took
effect; the workers inherit it. A preloaded application was loaded before the change.

=item proctitle

Default 1: the master shows as C<twiggy master ...> and the workers as C<twiggy worker ...>
(followed by the command line's arguments) in C<ps>. C<--disable-proctitle> turns it off.

=item graceful_term

Whether SIGTERM means "stop gracefully" (as SIGQUIT) or "stop now". Default 1 with
L<Twiggy::Prefork::Server> (Twiggy::Prefork 0.08), 0 with C<--workers>.

=back

=head1 SIGNALS

Send them to the master.

=over 4

=item HUP

Restart the workers gracefully. The master starts a new generation of workers; each time one
of them is ready it tells an old one to finish its requests and exit. Without
C<preload_app> the new workers load the application again, so code changes are picked up; and
if the new version does not load, the old workers keep serving while the master retries (see
L</FAILURES>). With C<preload_app> the workers are forked from the master's copy: to reload
preloaded code, restart the master through L<Server::Starter>.

=item TTIN, TTOU

One worker more, one worker less (never fewer than one).

=item QUIT

Graceful shutdown: the master closes its sockets and tells every worker to stop accepting and
finish the requests in progress (delayed and streaming responses included; idle keep-alive
connections are closed). After C<graceful_timeout> seconds, if set, the remaining workers are
killed. The master exits when the last worker has.

=item INT, TERM

Stop now: the workers are told to exit at once, and killed if they are still there 5 seconds
later. With C<graceful_term> (the Twiggy::Prefork default) TERM is a graceful shutdown, as
QUIT.

=back

A worker itself stops gracefully on QUIT or HUP, exits on INT or TERM, and ignores TTIN and
TTOU. A worker whose master has gone away finishes its requests and exits.

=head1 GUARANTEES

Each with the test that checks it.

=over 4

=item *

Requests are served by the workers, never by the master; each worker builds its own server
(its own reactor and event loop) after the fork. F<t/prefork-dropin.t>

=item *

A worker at its request limit stops accepting, answers its last request with
C<Connection: close>, finishes its other requests, and is replaced at once: sequential clients
see no failed request while workers are replaced. C<min_reqs_per_child> draws each limit
between the two bounds. F<t/prefork-requests.t>

=item *

A worker does not exit before every C<< psgix.exit_guard->begin >> has had its C<end>, even
after its limit or QUIT; a replacement serves meanwhile. F<t/prefork-requests.t>

=item *

HUP starts the new workers before the old ones leave; without a preloaded app the new ones
load it again, and if it does not load the old ones keep serving. F<t/prefork-reload.t>,
F<t/prefork-dropin.t>

=item *

TTIN and TTOU add and remove one worker, never going below one. F<t/prefork-signals.t>

=item *

QUIT: new connections are refused at once, delayed and streaming responses in progress
complete, idle keep-alive connections are closed, and the master exits with status 0 when the
last worker has; with C<graceful_timeout>, what still runs after it is cut.
F<t/prefork-quit.t>

=item *

INT and TERM (with C<--workers>): the master and workers exit at once, connections in
progress are cut, the pid file is removed. TERM with L<Twiggy::Prefork::Server> lets requests
in progress finish. F<t/prefork-signals.t>, F<t/prefork-dropin.t>

=item *

A worker that dies is replaced, and the master logs how it ended. F<t/prefork-signals.t>

=item *

An application that does not load is reported with its error, and retried with backoff, one
worker at a time: no fork storm; it comes back once it loads. A preloaded one stops the
start-up with its error. F<t/prefork-reload.t>

=item *

IPv4, IPv6 and UNIX listeners at once, the socket file with C<socket_mode>; C<reuse_port>
gives each worker slot its own socket, following TTIN and TTOU; C<user> and C<group> apply to
the master and the workers. F<t/prefork-listen.t>

=item *

Under Server::Starter, the TCP and UNIX sockets it passes are served, and its HUP replaces
the master while clients keep asking, without a failed request. F<t/prefork-server-starter.t>

=item *

Slow clients (200 of them, sending slowly or not reading) do not block a 2-worker server.
F<t/prefork-slow-clients.t>

=back

=head1 LOADING THE APPLICATION

=over 4

=item C<twiggy --workers 8 app.psgi>

Each worker loads the application after it is forked (like C<starman> without
C<--preload-app>), and SIGHUP reloads it. Modules named with C<-M> are still loaded once in
the master and shared.

=item C<twiggy --workers 8 --preload-app app.psgi>, C<plackup -s Twiggy --workers 8 app.psgi>

The application is loaded once in the master (plackup always does so, unless its loader is
L<Plack::Loader::Delayed>, C<-L Delayed>). SIGHUP restarts the workers but does not reload
the code.

=back

With a delayed loader, C<preload_app> true loads the application in the master anyway.

=head1 FAILURES

A worker that exits before it is ready (its application died while loading, or it could not
serve) is reported by the master, with the application's error:

  Twiggy: worker 4242 could not load the application: Error while loading app.psgi: ...
  Twiggy: the workers failed to start 3 times in a row; next attempt in 2 s

and the master backs off: it waits 0.5 s, then 1, 2, 4 ... up to 30 s between attempts, and
starts only one worker at a time until one comes up. A broken application never causes a fork
storm. Each attempt loads F<app.psgi> afresh, so once the file is fixed the next attempt
brings the full number of workers back. After SIGHUP, the old generation keeps serving while
the new one fails.

A preloaded application that dies while loading stops the start-up with its error, before
anything is forked.

A worker that dies later (a crash, SIGKILL) is replaced at once, and the master logs how it
ended.

=head1 BALANCE

Without C<reuse_port>, all workers wait on the same listening sockets. Twiggy registers them
with C<EPOLLEXCLUSIVE>, so a new connection wakes one waiting worker, not all of them (no
thundering herd), but the spread is uneven: with 4 workers on 2 CPUs and one request per
connection, the busiest worker took 30% to 48% of the connections in our measurements and
the least busy as little as 4% (F<t/prefork-balance.t> prints the spread). With C<reuse_port> every worker slot has its own
socket and the kernel spreads connections by a hash of the client's address and port: 24% to
26% each in the same runs. The price: connections queued on a slot's socket wait for the
replacement of that slot's worker if it exits, and are reset if the slot is removed (TTOU).

=head1 PSGI EXTENSIONS

=over 4

=item psgix.exit_guard

An L<AnyEvent::CondVar>. Call C<< $env->{'psgix.exit_guard'}->begin >> before starting
background work and C<< ->end >> when it is done: a worker that was told to stop (or reached
its request limit) does not exit before every C<begin> has had its C<end>.

=item psgi.multiprocess

True in workers.

=back

=head1 HOT DEPLOY WITH SERVER::STARTER

When C<SERVER_STARTER_PORT> is set (the master runs under C<start_server>), the master serves
the TCP and UNIX sockets L<Server::Starter> passes instead of opening its own. To deploy new
code without dropping a request, send SIGHUP to C<start_server>, which starts a new master
and then signals the old one; tell it to send QUIT, so that the old workers finish their
requests:

  start_server --port 5000 --signal-on-hup=QUIT -- twiggy --workers 8 app.psgi

With C<plackup -s Twiggy::Prefork> the default TERM is graceful already.

=head1 COMPATIBILITY WITH TWIGGY::PREFORK 0.08

Same modules, options, defaults and extension. Differences: requests are counted one by one
on keep-alive connections (0.08 counted connections); a worker that reaches its limit stops
accepting, finishes its requests and says C<Connection: close> on the last response; SIGHUP
replaces the workers without a moment with fewer of them; the master also answers QUIT, TTIN,
TTOU and INT. L<Parallel::Prefork> is not used.

=head1 AUTHOR

Twiggy contributors. The original Twiggy::Prefork is by Masahiro Nagano and Shigeki Morimoto.

=head1 LICENSE

This library is free software; you can redistribute it and/or modify it under the same terms
as Perl itself.

=head1 SEE ALSO

L<Twiggy>, L<Twiggy::Prefork::Server>, L<Plack::Handler::Twiggy::Prefork>, L<twiggy>,
L<Server::Starter>, L<Starman>

=cut
