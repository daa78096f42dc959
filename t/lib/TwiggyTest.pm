package TwiggyTest;

# Test helpers for the Twiggy distribution.
#
#   * timefactor / scaled / safety_alarm: every wait in the suite is bounded, and every bound is
#     multiplied by TWIGGY_TEST_TIMEFACTOR (default 1) so slow machines can stretch them.
#   * start_server: fork a child that runs Twiggy::Server (or a given runner) on a free
#     127.0.0.1 port, wait until it accepts, and stop it again when the handle goes away.
#   * TwiggyTest::Client: a raw-socket client that sends exact bytes and reads responses with
#     a bounded timeout, keeping unread bytes for the next (pipelined) response.
#   * parse_response: a small, strict HTTP/1.x response parser (RFC 9112 section 6.3 framing:
#     no body for HEAD/1xx/204/304, then chunked, then Content-Length, then close-delimited).
#   * For the prefork tests, imported by name: start_command (exec a command as the server),
#     perl_command (bin/twiggy or plackup with this distribution's modules), child_pids and
#     process_title (from /proc), write_file (atomic).
#
# Only processes started here are ever signalled, always by their pid.

use strict;
use warnings;

use Carp ();
use Errno ();
use Exporter 'import';
use File::Temp ();
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_NODELAY SOCK_STREAM SOL_SOCKET SO_LINGER);
use Test::TCP ();
use Time::HiRes ();

our @EXPORT = qw(
    timefactor scaled safety_alarm
    start_server empty_port wait_until
    client parse_response simple_request request_bytes response_is
);

# Helpers imported by name only: for the prefork tests, and /proc probes of a server process.
our @EXPORT_OK = qw(
    start_command perl_command child_pids process_title write_file
    process_cpu_seconds open_fd_count
    refuses_connections answered_then_closed
);

# The test process itself must survive writes to sockets the server has closed. Server children
# get the default disposition back (see _child_setup): how the server copes with SIGPIPE is part
# of what the suite checks.
$SIG{PIPE} = 'IGNORE';

# True once nothing accepts connections on $port any more (bounded: 5 s, scaled).
sub refuses_connections {
    my ($port) = @_;
    return wait_until(sub {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1);
        return 1 unless $sock;
        close $sock;
        return 0;
    }, 5);
}

# Sends $bytes on a new connection and checks what an automatic refusal must look like: one
# complete response with one of @$statuses, then the connection closed with nothing more.
sub answered_then_closed {
    my ($port, $bytes, $statuses) = @_;
    my $client = client($port);
    $client->send($bytes);
    my $res = $client->read_response;
    Test::More::ok($res->ok, 'a complete response') or Test::More::diag($res->describe);
    Test::More::ok((grep { $res->status == $_ } @$statuses), 'status ' . join(' or ', @$statuses))
        or Test::More::diag('got: ' . $res->describe);
    Test::More::ok($client->closed_without_more_data, 'connection closed right after it, nothing else answered')
        or Test::More::diag('after the response: ' . ($client->{extra} // '') . ($client->eof ? '' : ' (still open)'));
    return $res;
}

sub timefactor {
    my $factor = $ENV{TWIGGY_TEST_TIMEFACTOR};
    return 1 unless defined $factor && $factor =~ /\A[0-9]+(?:\.[0-9]+)?\z/ && $factor > 0;
    return $factor;
}

sub scaled { return $_[0] * timefactor() }

# A safety net only: a test that hangs is killed with a clear message instead of stalling the
# whole suite. Servers started by this process are killed first.
sub safety_alarm {
    my ($seconds) = @_;
    $seconds = 60 unless defined $seconds;
    $SIG{ALRM} = sub {
        TwiggyTest::Server->kill_all('KILL');
        print STDOUT "not ok - safety alarm: test file did not finish within "
            . scaled($seconds) . " s\n";
        POSIX::_exit(255);
    };
    alarm(int(scaled($seconds)) || 1);
    return;
}

sub empty_port { return Test::TCP::empty_port() }

# Poll a condition every 20 ms until it holds or the (scaled) timeout passes.
sub wait_until {
    my ($condition, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled(defined $timeout ? $timeout : 5);
    while (1) {
        my $value = $condition->();
        return $value if $value;
        return if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.02);
    }
}

# start_server(app => $app, %twiggy_options, [special options])
#   special options (not passed to Twiggy::Server):
#     class     => server class to instantiate (default Twiggy::Server)
#     runner    => sub { my ($args, $app) = @_; ... }   replaces "new(%args)->run($app)"
#     after_run => sub { ... }   called in the child after run() returned
#     stderr    => 1 (capture into a temp file, see ->stderr) or a file path
#     unix      => socket path to wait on instead of the TCP port
#     no_wait   => 1: do not wait for the server to accept
# host defaults to 127.0.0.1 and port to a free port; pass listen => [...] as usual (then
# port only says which TCP port to wait for, and unix which socket path).
sub start_server {
    my (%args) = @_;
    my $app       = delete $args{app};
    my $class     = delete $args{class} || 'Twiggy::Server';
    my $runner    = delete $args{runner};
    my $after_run = delete $args{after_run};
    my $stderr    = delete $args{stderr};
    my $unix      = delete $args{unix};
    my $no_wait   = delete $args{no_wait};

    Carp::croak('start_server needs app or runner') unless $app || $runner;

    # With listen => [...], host and port are not passed on (Twiggy::Server ignores them then);
    # port still names the TCP port to wait for.
    my $port = exists $args{port} ? $args{port} : $args{listen} ? undef : empty_port();
    if ($args{listen}) {
        delete @args{qw(host port)};
    } else {
        $args{port} = $port;
        $args{host} = '127.0.0.1' unless exists $args{host};
        delete $args{host} if !defined $args{host};
        delete $args{port} if !defined $args{port};
    }

    my $stderr_path;
    if ($stderr) {
        if ($stderr eq '1') {
            my ($fh, $path) = File::Temp::tempfile('twiggy-test-stderr-XXXXXX', TMPDIR => 1, UNLINK => 1);
            close $fh;
            $stderr_path = $path;
        } else {
            $stderr_path = $stderr;
        }
    }

    my $pid = fork;
    Carp::croak("fork failed: $!") unless defined $pid;
    if ($pid == 0) {
        _child_setup($stderr_path);
        my $ok = eval {
            if ($runner) {
                $runner->(\%args, $app);
            } else {
                eval "require $class; 1" or die $@;
                my $server = $class->new(%args);
                $server->run($app);
            }
            $after_run->() if $after_run;
            1;
        };
        if (!$ok) {
            print STDERR "TwiggyTest server child failed: $@";
            POSIX::_exit(1);
        }
        POSIX::_exit(0);
    }

    my $server = TwiggyTest::Server->_new(
        pid    => $pid,
        port   => $port,
        unix   => $unix,
        stderr => $stderr_path,
    );
    if (!$no_wait && !$server->wait_ready) {
        my $log = $server->stderr;
        $server->stop;
        Carp::croak("server did not start" . (defined $log && length $log ? ": $log" : ''));
    }
    return $server;
}

sub _child_setup {
    my ($stderr_path) = @_;
    $SIG{PIPE} = 'DEFAULT';
    $SIG{ALRM} = 'DEFAULT';
    $SIG{$_}   = 'DEFAULT' for qw(TERM INT QUIT HUP);
    # Never outlive the test by much, even if the test process is killed without cleanup.
    alarm(int(scaled(120)));
    if (defined $stderr_path) {
        open STDERR, '>>', $stderr_path or die "cannot redirect STDERR: $!";
        STDERR->autoflush(1);
    }
    open STDIN, '<', '/dev/null';
    TwiggyTest::Server->_forget_all;
    return;
}

# client(port => $port) or client(path => $unix_path) or client($port)
sub client {
    my @args = @_ == 1 ? (port => $_[0]) : @_;
    return TwiggyTest::Client->new(@args);
}

# One request on a fresh connection, closed afterwards: returns the parsed response (see
# read_response; it is never undef).
sub simple_request {
    my ($port, $request, %opts) = @_;
    my $client = TwiggyTest::Client->new(port => $port)
        or return TwiggyTest::Response->none("cannot connect: $!");
    $client->send($request);
    my $res = $client->read_response(%opts);
    $client->close;
    return $res;
}

# request_bytes('GET', '/path', 'HTTP/1.1', ['Header: value', ...], $body)
# Builds raw request bytes; HTTP/1.1 requests get "Host: 127.0.0.1" first unless the header
# list already has a Host line or the list starts with '-host' (no Host at all).
sub request_bytes {
    my ($method, $target, $protocol, $headers, $body) = @_;
    $protocol ||= 'HTTP/1.1';
    my @lines = @{ $headers || [] };
    my $no_host = @lines && $lines[0] eq '-host' ? shift @lines : 0;
    unshift @lines, 'Host: 127.0.0.1'
        if $protocol eq 'HTTP/1.1' && !$no_host && !grep { /\AHost:/i } @lines;
    return "$method $target $protocol\r\n" . join('', map { "$_\r\n" } @lines) . "\r\n"
        . (defined $body ? $body : '');
}

# response_is($res, $status, $body, $name): one test that the response is complete, well framed
# and has the status, and (when $body is defined) one test for the exact body.
sub response_is {
    my ($res, $status, $body, $name) = @_;
    require Test::More;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::ok($res->ok && $res->status == $status, "$name: complete $status response")
        or Test::More::diag('got: ' . $res->describe);
    Test::More::is($res->body, $body, "$name: body") if defined $body;
    return;
}

my $TOKEN = qr/[!#\$%&'*+\-.^_`|~0-9A-Za-z]+/;

# parse_response($bytes, head => 1 (response to HEAD), eof => 1 (no more bytes will come))
# Returns undef while the head is incomplete; otherwise a hashref:
#   complete (bool), consumed (bytes used when complete), error (string, when malformed),
#   protocol, status, reason, status_line, headers ([[name, value], ...]), raw_head,
#   framing ('none' | 'chunked' | 'length' | 'close'), body, chunks ([sizes]), trailers,
#   terminated (chunked: the 0-size chunk and final CRLF were seen), raw (bytes consumed)
# and methods header($name), header_count($name).
sub parse_response {
    my ($buf, %opt) = @_;
    my $head_end = index($buf, "\r\n\r\n");
    if ($head_end < 0) {
        return TwiggyTest::Response->new(
            complete => 0, error => 'incomplete head at EOF', partial => $buf,
        ) if $opt{eof} && length $buf;
        return;
    }
    my $head = substr($buf, 0, $head_end);
    my $head_length = $head_end + 4;
    my ($status_line, @lines) = split /\r\n/, $head, -1;
    my $res = TwiggyTest::Response->new(
        complete    => 0,
        raw_head    => substr($buf, 0, $head_length),
        status_line => $status_line,
        headers     => [],
        body        => '',
        chunks      => [],
        trailers    => [],
    );

    # RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    if ($status_line =~ m{\A(HTTP/[0-9]\.[0-9]) ([0-9]{3}) ([^\r\n]*)\z}) {
        @$res{qw(protocol status reason)} = ($1, $2, $3);
    } else {
        $res->{error} = "malformed status line: $status_line";
        return $res;
    }
    for my $line (@lines) {
        if ($line =~ /\A($TOKEN):[ \t]*(.*?)[ \t]*\z/) {
            push @{ $res->{headers} }, [ $1, $2 ];
        } else {
            $res->{error} = "malformed header line: $line";
            return $res;
        }
    }

    my $status = $res->{status};
    my $rest = substr($buf, $head_length);
    if ($opt{head} || $status =~ /\A1/ || $status == 204 || $status == 304) {
        $res->{framing}  = 'none';
        $res->{complete} = 1;
        $res->{consumed} = $head_length;
    } elsif ($res->header_count('Transfer-Encoding')) {
        my @codings = map { lc } grep { length } map { s/\A\s+|\s+\z//gr } split /,/,
            scalar $res->header('Transfer-Encoding');
        if (@codings && $codings[-1] eq 'chunked') {
            $res->{framing} = 'chunked';
            _parse_chunked($res, $rest, $head_length, $opt{eof});
        } else {
            $res->{framing} = 'close';
            _close_delimited($res, $rest, $head_length, $opt{eof});
        }
    } elsif ($res->header_count('Content-Length')) {
        my @lengths = $res->header('Content-Length');
        if (@lengths != 1 || $lengths[0] !~ /\A[0-9]+\z/) {
            $res->{error} = 'bad Content-Length: ' . join(' | ', @lengths);
            return $res;
        }
        $res->{framing} = 'length';
        my $length = $lengths[0];
        if (length($rest) >= $length) {
            $res->{body}     = substr($rest, 0, $length);
            $res->{complete} = 1;
            $res->{consumed} = $head_length + $length;
        } else {
            $res->{body} = $rest;    # partial, for inspection
        }
    } else {
        $res->{framing} = 'close';
        _close_delimited($res, $rest, $head_length, $opt{eof});
    }
    $res->{raw} = substr($buf, 0, $res->{consumed}) if $res->{complete};
    return $res;
}

sub _close_delimited {
    my ($res, $rest, $head_length, $eof) = @_;
    $res->{body} = $rest;
    if ($eof) {
        $res->{complete} = 1;
        $res->{consumed} = $head_length + length $rest;
    }
    return;
}

# RFC 9112 section 7.1: chunked-body = *chunk last-chunk trailer-section CRLF
sub _parse_chunked {
    my ($res, $rest, $head_length, $eof) = @_;
    my $pos = 0;
    my $body = '';
    while (1) {
        my $line_end = index($rest, "\r\n", $pos);
        if ($line_end < 0) {
            $res->{error} = 'chunk size line without CRLF' if length($rest) - $pos > 1024;
            last;
        }
        my $line = substr($rest, $pos, $line_end - $pos);
        if ($line !~ /\A([0-9A-Fa-f]{1,15})(?:[ \t]*;[^\r\n]*)?\z/) {
            $res->{error} = "malformed chunk size line: $line";
            last;
        }
        my $size = hex $1;
        if ($size == 0) {
            # trailer section, then the final CRLF
            my $trailer_pos = $line_end + 2;
            while (1) {
                my $end = index($rest, "\r\n", $trailer_pos);
                last if $end < 0;
                my $field = substr($rest, $trailer_pos, $end - $trailer_pos);
                if ($field eq '') {
                    $res->{terminated} = 1;
                    $res->{complete}   = 1;
                    $res->{consumed}   = $head_length + $end + 2;
                    last;
                }
                push @{ $res->{trailers} }, $field;
                $trailer_pos = $end + 2;
            }
            last;
        }
        my $data_start = $line_end + 2;
        last if length($rest) < $data_start + $size + 2;
        if (substr($rest, $data_start + $size, 2) ne "\r\n") {
            $res->{error} = 'chunk data not followed by CRLF';
            last;
        }
        $body .= substr($rest, $data_start, $size);
        push @{ $res->{chunks} }, $size;
        $pos = $data_start + $size + 2;
    }
    $res->{body} = $body;
    return;
}

# perl_command($script, @args): runs a script of this distribution (bin/twiggy) or one in PATH
# (plackup) with this distribution's modules first in @INC: blib when it was built, else lib.
sub perl_command {
    my ($script, @args) = @_;
    require File::Basename;
    require File::Spec;
    my $root = File::Spec->rel2abs(File::Basename::dirname(__FILE__) . '/../..');
    my @include = -d "$root/blib" ? ("-Mblib=$root") : ("-I$root/lib");
    my $path = $script =~ m{\A bin/ }x ? "$root/$script" : $script;
    if ($path !~ m{/}) {
        ($path) = grep { -f $_ } map { File::Spec->catfile($_, $script) } File::Spec->path;
        return undef unless $path;
    }
    return [ $^X, @include, $path, @args ];
}

# start_command(command => [...], %start_server_options): start_server, with the child
# exec()ing the command. Output goes to a temporary file (->stderr) unless stderr is given.
sub start_command {
    my (%args) = @_;
    my $command = delete $args{command};
    Carp::croak('start_command needs a command') unless $command && @$command;
    $args{stderr} = 1 unless exists $args{stderr};
    return start_server(
        %args,
        runner => sub {
            open STDOUT, '>&', \*STDERR;
            exec { $command->[0] } @$command or die "exec $command->[0]: $!";
        },
    );
}

# The pids of the living children of $pid (Linux /proc; an empty list elsewhere); in scalar
# context, how many there are.
sub child_pids {
    my ($pid) = @_;
    my @children;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh>;
        next unless defined $line;
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        my $after = substr($line, rindex($line, ')') + 2);
        my ($state, $ppid) = split / /, $after;
        push @children, $stat =~ m{/proc/(\d+)/} if $ppid == $pid && $state ne 'Z';
    }
    @children = sort { $a <=> $b } @children;
    return wantarray ? @children : scalar @children;
}

# User plus system CPU seconds a process has used so far (Linux /proc), or undef.
sub process_cpu_seconds {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my $line = <$fh>;
    return undef unless defined $line;
    # pid (comm) state ppid ... utime is field 14, stime field 15; comm may hold spaces
    my @fields = split / /, substr($line, rindex($line, ')') + 2);
    my $ticks_per_second = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
    return ($fields[11] + $fields[12]) / $ticks_per_second;
}

# How many file descriptors a process has open (Linux /proc), or undef.
sub open_fd_count {
    my ($pid) = @_;
    opendir my $dir, "/proc/$pid/fd" or return undef;
    my $count = grep { /\A[0-9]+\z/ } readdir $dir;
    closedir $dir;
    return $count;
}

# The command line a process shows in ps (its proctitle), or undef.
sub process_title {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return undef;
    local $/;
    my $text = <$fh>;
    return undef unless defined $text;
    $text =~ s/\0+\z//;
    $text =~ tr/\0/ /;
    return $text;
}

sub write_file {
    my ($path, $content) = @_;
    open my $fh, '>', "$path.tmp$$" or die "$path: $!";
    print {$fh} $content;
    close $fh or die "$path: $!";
    rename "$path.tmp$$", $path or die "rename $path: $!";
    return;
}

package TwiggyTest::Response;

sub new { my ($class, %fields) = @_; return bless {%fields}, $class }

# Stands for "no response at all", so tests can call methods without checking for undef.
sub none {
    my ($class, $why) = @_;
    return $class->new(complete => 0, error => $why, status => 0, headers => [], chunks => []);
}

sub ok { my ($self) = @_; return $self->{complete} && !$self->{error} ? 1 : 0 }

# In list context all values of the field, in scalar context the values joined with ", "
# (undef when absent).
sub header {
    my ($self, $name) = @_;
    my @values = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $self->{headers} || [] };
    return @values if wantarray;
    return @values ? join(', ', @values) : undef;
}

sub header_count {
    my ($self, $name) = @_;
    return scalar grep { lc $_->[0] eq lc $name } @{ $self->{headers} || [] };
}

sub status  { $_[0]{status} // 0 }
sub body    { $_[0]{body} }
sub framing { $_[0]{framing} }

# A one-line description for test diagnostics.
sub describe {
    my ($self) = @_;
    return 'no response' unless $self;
    return "[$self->{error}]" if !defined $self->{raw_head} && !defined $self->{partial};
    my $text = $self->{raw} // $self->{partial} // ($self->{raw_head} // '') . ($self->{body} // '');
    $text = substr($text, 0, 400) . '...' if length $text > 400;
    $text =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
    return ($self->{error} ? "[$self->{error}] " : '') . $text;
}

package TwiggyTest::Client;

use Errno ();
use IO::Select;
use Socket qw(IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_LINGER);
use Time::HiRes ();

# new(port => $port [, timeout => seconds] [, rcvbuf => bytes (SO_RCVBUF, set before connecting)])
# or new(path => $unix_socket_path)
sub new {
    my ($class, %args) = @_;
    my $timeout = TwiggyTest::scaled(defined $args{timeout} ? $args{timeout} : 5);
    my $sock;
    if (defined $args{path}) {
        $sock = IO::Socket::UNIX->new(Peer => $args{path}, Type => Socket::SOCK_STREAM());
    } else {
        if (defined $args{rcvbuf}) {
            # A small receive buffer must be set before connecting (it decides the window).
            $sock = IO::Socket::INET->new(Proto => 'tcp');
            if ($sock) {
                setsockopt($sock, SOL_SOCKET, Socket::SO_RCVBUF(), $args{rcvbuf});
                $sock->connect(Socket::pack_sockaddr_in($args{port}, Socket::inet_aton('127.0.0.1')))
                    or undef $sock;
            }
        } else {
            $sock = IO::Socket::INET->new(
                PeerAddr => '127.0.0.1',
                PeerPort => $args{port},
                Proto    => 'tcp',
                Timeout  => $timeout,
            );
        }
        setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1) if $sock;
    }
    if (!$sock) {
        # A client that failed to connect: every read reports the failure, every send fails.
        return bless { sock => undef, buf => '', eof => 1, reset => 0, timeout => $timeout,
            connect_error => "cannot connect: $!" }, $class;
    }
    binmode $sock;
    $sock->autoflush(1);
    return bless {
        sock    => $sock,
        buf     => '',
        eof     => 0,
        reset   => 0,
        timeout => $timeout,
    }, $class;
}

sub socket    { $_[0]{sock} }
sub connected { $_[0]{sock} ? 1 : 0 }
sub buffered { $_[0]{buf} }
sub eof      { $_[0]{eof} }

# Send all bytes (bounded). Returns true when everything was written.
sub send {
    my ($self, $bytes) = @_;
    my $deadline = Time::HiRes::time() + $self->{timeout};
    return 0 unless $self->{sock};
    my $offset = 0;
    my $select = IO::Select->new($self->{sock});
    while ($offset < length $bytes) {
        my $left = $deadline - Time::HiRes::time();
        return 0 if $left <= 0;
        next unless $select->can_write($left);
        my $n = syswrite($self->{sock}, $bytes, length($bytes) - $offset, $offset);
        if (!defined $n) {
            next if $! == Errno::EINTR || $! == Errno::EAGAIN;
            return 0;
        }
        $offset += $n;
    }
    return 1;
}

# Send bytes in small pieces with a short pause between them, so the server sees many reads.
sub send_slowly {
    my ($self, $bytes, $piece, $pause) = @_;
    $piece ||= 1;
    $pause = 0.002 unless defined $pause;
    for (my $offset = 0; $offset < length $bytes; $offset += $piece) {
        $self->send(substr($bytes, $offset, $piece)) or return 0;
        Time::HiRes::sleep($pause) if $pause;
    }
    return 1;
}

# Read once into the buffer, waiting at most $wait seconds. Returns the number of bytes read,
# 0 at EOF (or reset), undef on timeout.
sub _fill {
    my ($self, $wait) = @_;
    return 0 if $self->{eof};
    my $select = IO::Select->new($self->{sock});
    my $deadline = Time::HiRes::time() + $wait;
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        return undef if $left < 0;
        next unless $select->can_read($left);
        my $n = sysread($self->{sock}, $self->{buf}, 65536, length $self->{buf});
        if (!defined $n) {
            next if $! == Errno::EINTR || $! == Errno::EAGAIN;
            $self->{reset} = 1 if $! == Errno::ECONNRESET;
            $self->{read_error} = "$!";
            $self->{eof} = 1;
            return 0;
        }
        $self->{eof} = 1 if $n == 0;
        return $n;
    }
}

# Read one complete response (bounded). Options: head => 1 for a response to HEAD,
# timeout => seconds. Always returns a TwiggyTest::Response: check ->{complete}. When nothing
# parseable arrived it has status 0 and an error; a response cut short by EOF is returned with
# complete => 0 (and consumes the buffer); after a timeout, with complete => 0 and the bytes
# left in the buffer.
sub read_response {
    my ($self, %opt) = @_;
    my $deadline = Time::HiRes::time() + (defined $opt{timeout} ? TwiggyTest::scaled($opt{timeout}) : $self->{timeout});
    while (1) {
        my $res = TwiggyTest::parse_response($self->{buf}, head => $opt{head}, eof => $self->{eof});
        if ($res && ($res->{complete} || $res->{error} || $self->{eof})) {
            if ($res->{complete}) {
                substr($self->{buf}, 0, $res->{consumed}) = '';
            } else {
                $self->{buf} = '';
            }
            return $res;
        }
        return TwiggyTest::Response->none($self->{connect_error} || 'connection closed before any response byte')
            if $self->{eof};
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            $self->{timed_out} = 1;
            return $res || TwiggyTest::Response->none('timed out before a response head');
        }
        $self->_fill($left);
    }
}

# Read until the peer closes (bounded). Returns everything buffered plus what arrived, and
# empties the buffer. $self->eof tells whether the close was seen.
sub read_until_close {
    my ($self, $timeout) = @_;
    return $self->_take_until(Time::HiRes::time() + (defined $timeout ? TwiggyTest::scaled($timeout) : $self->{timeout}));
}

# Reads until EOF or $deadline (epoch seconds), then hands over everything buffered.
sub _take_until {
    my ($self, $deadline) = @_;
    while (!$self->{eof}) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        $self->_fill($left);
    }
    my $data = $self->{buf};
    $self->{buf} = '';
    return $data;
}

# True when the peer closes the connection within the timeout without sending anything more.
sub closed_without_more_data {
    my ($self, $timeout) = @_;
    return 0 unless $self->{sock};
    my $extra = $self->read_until_close($timeout);
    $self->{extra} = $extra;
    return $self->{eof} && $extra eq '';
}

# Wait for exactly $n bytes (bounded); returns them, or undef if they did not all arrive.
sub read_exact {
    my ($self, $n, $timeout) = @_;
    my $deadline = Time::HiRes::time() + (defined $timeout ? TwiggyTest::scaled($timeout) : $self->{timeout});
    while (length $self->{buf} < $n) {
        return undef if $self->{eof};
        my $left = $deadline - Time::HiRes::time();
        return undef if $left <= 0;
        $self->_fill($left);
    }
    return substr($self->{buf}, 0, $n, '');
}

# Wait until the buffer contains $marker (bounded); returns everything up to and including it.
sub read_until {
    my ($self, $marker, $timeout) = @_;
    my $deadline = Time::HiRes::time() + (defined $timeout ? TwiggyTest::scaled($timeout) : $self->{timeout});
    while (1) {
        my $at = index($self->{buf}, $marker);
        return substr($self->{buf}, 0, $at + length $marker, '') if $at >= 0;
        return undef if $self->{eof};
        my $left = $deadline - Time::HiRes::time();
        return undef if $left <= 0;
        $self->_fill($left);
    }
}

# Wait until the buffer contains $marker, without consuming anything (bounded). True if seen.
sub wait_for {
    my ($self, $marker, $timeout) = @_;
    my $deadline = Time::HiRes::time() + (defined $timeout ? TwiggyTest::scaled($timeout) : $self->{timeout});
    while (1) {
        return 1 if index($self->{buf}, $marker) >= 0;
        return 0 if $self->{eof};
        my $left = $deadline - Time::HiRes::time();
        return 0 if $left <= 0;
        $self->_fill($left);
    }
}

# The local port of this connection (what the server sees as REMOTE_PORT).
sub local_port { return $_[0]{sock} ? $_[0]{sock}->sockport : 0 }

# Keep reading for $seconds (not scaled) and return a copy of everything buffered, leaving the
# buffer in place for later reads.
sub peek_for {
    my ($self, $seconds) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    while (!$self->{eof}) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        $self->_fill($left);
    }
    return $self->{buf};
}

# Read whatever arrives within $seconds (not scaled: used to check that nothing arrives).
sub read_for {
    my ($self, $seconds) = @_;
    return $self->_take_until(Time::HiRes::time() + $seconds);
}

sub shutdown_write { my ($self) = @_; shutdown($self->{sock}, 1) if $self->{sock}; return }

sub close {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
    return;
}

# Close with SO_LINGER {on, 0}: the kernel sends RST instead of FIN.
sub abort {
    my ($self) = @_;
    return unless $self->{sock};
    setsockopt($self->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
    CORE::close($self->{sock});
    return;
}

package TwiggyTest::Server;

use POSIX ();
use Time::HiRes ();

my %LIVE;    # pid => 1 for children started by this process

sub _new {
    my ($class, %fields) = @_;
    my $self = bless { %fields, owner => $$ }, $class;
    $LIVE{ $self->{pid} } = 1;
    return $self;
}

sub pid  { $_[0]{pid} }
sub port { $_[0]{port} }

# Stop every child still running: TERM, a short bounded wait, then KILL.
sub kill_all {
    my ($class, $signal) = @_;
    my @pids = keys %LIVE or return;
    kill($signal || 'TERM', @pids);
    my $deadline = Time::HiRes::time() + 2;
    while (%LIVE && Time::HiRes::time() < $deadline) {
        for my $pid (keys %LIVE) {
            delete $LIVE{$pid} if waitpid($pid, POSIX::WNOHANG()) != 0;
        }
        Time::HiRes::sleep(0.02) if %LIVE;
    }
    for my $pid (keys %LIVE) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        delete $LIVE{$pid};
    }
    return;
}

sub _forget_all { %LIVE = (); return }

sub is_running {
    my ($self) = @_;
    return 0 if defined $self->{exit_status};
    my $got = waitpid($self->{pid}, POSIX::WNOHANG());
    if ($got == $self->{pid}) {
        $self->{exit_status} = $?;
        delete $LIVE{ $self->{pid} };
        return 0;
    }
    return $got == 0 ? 1 : 0;
}

# Wait until the server accepts connections (bounded). A successful probe connection is
# closed at once without sending anything.
# Options: timeout => seconds (default 15, scaled), unix => path, port => port (default: the
# server's own).
sub wait_ready {
    my ($self, %opt) = @_;
    my $deadline = Time::HiRes::time() + TwiggyTest::scaled(defined $opt{timeout} ? $opt{timeout} : 15);
    my $unix = exists $opt{unix} ? $opt{unix} : $self->{unix};
    my $port = defined $opt{port} ? $opt{port} : $self->{port};
    while (Time::HiRes::time() < $deadline) {
        return 0 unless $self->is_running;
        my $sock = defined $unix
            ? IO::Socket::UNIX->new(Peer => $unix, Type => Socket::SOCK_STREAM())
            : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1);
        if ($sock) {
            close $sock;
            return 1;
        }
        Time::HiRes::sleep(0.05);
    }
    return 0;
}

sub signal {
    my ($self, $signal) = @_;
    return 0 unless $self->is_running;
    return kill $signal, $self->{pid};
}

# Wait (bounded) for the child to exit; returns its wait status, or undef if it still runs.
sub wait_exit {
    my ($self, $timeout) = @_;
    my $deadline = Time::HiRes::time() + TwiggyTest::scaled(defined $timeout ? $timeout : 5);
    while (1) {
        return $self->{exit_status} unless $self->is_running;
        return undef if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.02);
    }
}

sub stop {
    my ($self) = @_;
    return $self->{exit_status} if defined $self->{exit_status};
    return unless $self->{owner} == $$;
    if ($self->is_running) {
        kill 'TERM', $self->{pid};
        if (!defined $self->wait_exit(5)) {
            kill 'KILL', $self->{pid};
            waitpid($self->{pid}, 0);
            $self->{exit_status} = $?;
            delete $LIVE{ $self->{pid} };
        }
    }
    return $self->{exit_status};
}

# Everything the child wrote to STDERR so far (when started with stderr => ...).
sub stderr {
    my ($self) = @_;
    return undef unless defined $self->{stderr};
    open my $fh, '<', $self->{stderr} or return '';
    local $/;
    my $text = <$fh>;
    return defined $text ? $text : '';
}

sub DESTROY {
    my ($self) = @_;
    return unless $self->{owner} && $self->{owner} == $$;
    local ($?, $!, $@);
    $self->stop;
    return;
}

END {
    # Only the process that started the servers cleans them up.
    local $?;
    TwiggyTest::Server->kill_all;
}

1;
