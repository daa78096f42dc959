package Twiggy::Prefork::Server;
use strict;
use warnings;
use parent 'Twiggy::Server';

# The master process: opens the listeners, forks workers (each an asynchronous Twiggy with its
# own reactor, see Twiggy::Prefork::Worker), reaps and replaces them, and answers signals.
# The master never runs an event loop and never serves a request: a plain select() loop on
# the workers' status pipe, with signal handlers that only queue the signal's name.

use Carp ();
use IO::Handle ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();
use Twiggy::Server ();
use Twiggy::Prefork::Worker ();

use constant DEBUG => $ENV{TWIGGY_DEBUG};

# Longest sleep of the master loop: a signal that arrives just before select() is acted on
# after this at the latest.
my $LOOP_WAIT = 0.5;

# After "stop now" (TERM, INT), workers still alive this many seconds later get SIGKILL.
my $STOP_NOW_GRACE = 5;

# Backoff after workers that exit before they are ready: 0.5 s, doubling, at most 30 s.
my $BACKOFF_FIRST = 0.5;
my $BACKOFF_MAX   = 30;

# The signals the master handles; they are blocked around fork() so that a new worker never
# runs the master's handlers.
my @MASTER_SIGNALS = qw(HUP TTIN TTOU QUIT TERM INT CHLD);

# Options only the master uses; the rest are passed to every worker's Twiggy::Server.
my @MASTER_ONLY = qw(
    workers max_workers max_reqs_per_child min_reqs_per_child max_requests graceful_timeout
    preload_app psgi_app_builder pid user group socket_mode proctitle graceful_term argv
    server_ready listen host port reuse_port daemonize socket prefork
);

sub new {
    my ($class, %args) = @_;
    my $self = $class->SUPER::new(%args);    # checks the server options every worker gets

    my $workers = defined $args{workers} && length $args{workers} ? $args{workers} : $args{max_workers};
    $self->{max_workers} = _whole_number(max_workers => $workers) || 10;
    my $max = defined $args{max_reqs_per_child} ? $args{max_reqs_per_child}
            : defined $args{max_requests}       ? $args{max_requests}
            :                                     100;
    $self->{max_reqs_per_child} = _whole_number(max_reqs_per_child => $max);
    $self->{min_reqs_per_child} = _whole_number(min_reqs_per_child => $args{min_reqs_per_child}) || 0;
    Carp::croak("Twiggy: min_reqs_per_child ($self->{min_reqs_per_child}) must not exceed "
        . "max_reqs_per_child ($self->{max_reqs_per_child})")
        if $self->{max_reqs_per_child} && $self->{min_reqs_per_child} > $self->{max_reqs_per_child};

    my $timeout = $args{graceful_timeout};
    Carp::croak("Twiggy: option 'graceful_timeout' must be a number of seconds, not '$timeout'")
        if defined $timeout && $timeout !~ /\A\s*(?:\d+(?:\.\d*)?|\.\d+)\s*\z/;
    $self->{graceful_timeout} = $timeout ? $timeout + 0 : 0;

    $self->{socket_mode} = _socket_mode($args{socket_mode}) if defined $args{socket_mode};
    for my $name (qw(user group pid)) {
        delete $self->{$name} if defined $self->{$name} && !length $self->{$name};
    }
    $self->{proctitle}     = 1 unless defined $args{proctitle};
    $self->{graceful_term} = 1 unless defined $args{graceful_term};
    return $self;
}

sub _whole_number {
    my ($name, $value) = @_;
    return undef unless defined $value && length $value;
    Carp::croak("Twiggy: option '$name' must be a whole number, not '$value'")
        unless $value =~ /\A\s*(\d+)\s*\z/;
    return $1 + 0;
}

# "0660", "660" (octal, as on a command line) or a number (0660 in Perl code).
sub _socket_mode {
    my ($mode) = @_;
    require B;
    my $is_string = B::svref_2object(\$mode)->FLAGS & B::SVp_POK();
    if ($is_string || !Scalar::Util::looks_like_number($mode)) {
        Carp::croak("Twiggy: option 'socket_mode' must be an octal file mode like 0660, not '$mode'")
            unless $mode =~ /\A\s*(?:0o?)?([0-7]{1,4})\s*\z/;
        return oct $1;
    }
    Carp::croak("Twiggy: option 'socket_mode' is out of range: $mode")
        unless $mode == int $mode && $mode >= 0 && $mode <= 07777;
    return $mode + 0;
}

# Serves $app with max_workers processes until QUIT (graceful), TERM or INT; returns then.
sub run {
    my ($self, $app) = @_;
    my $builder = $self->{psgi_app_builder};
    if ($builder && $self->{preload_app}) {
        $app = $builder->();
        undef $builder;
    }
    Carp::croak('Twiggy: run needs a PSGI application (a code reference)')
        unless $builder || ref $app;

    my $state = $self->{prefork} = {
        app          => $builder ? undef : $app,
        app_builder  => $builder,
        target       => $self->{max_workers},
        generation   => 1,
        workers      => {},     # pid => { pid slot generation started ready stop_sent cut_at }
        signals      => [],
        phase        => 'running',    # or 'quitting' (QUIT) or 'stopping' (TERM, INT)
        failures     => 0,
        last_failure => 0,
        next_spawn   => 0,
        shared       => [],     # listeners every worker serves
        slots        => [],     # SO_REUSEPORT: per slot, the TCP listeners of that slot
        reuse_specs  => [],     # SO_REUSEPORT: [host, port, label] of each TCP address
        master_pid   => $$,
    };

    my $set_up = eval {
        pipe(my $status_reader, my $status_writer) or die "Twiggy: cannot create a pipe: $!\n";
        $status_reader->blocking(0);
        @$state{qw(status_reader status_writer status_buffer)} = ($status_reader, $status_writer, '');
        $self->_open_listeners;
        $self->_write_pid_file if defined $self->{pid};
        $self->_drop_privileges if defined $self->{user} || defined $self->{group};
        1;
    };
    if (!$set_up) {
        my $error = $@;
        $self->_close_listeners;
        $self->_remove_pid_file if defined $self->{pid};
        delete $self->{prefork};
        die $error;
    }
    $self->_report_ready;
    local $0 = $self->_title('master') if $self->{proctitle};

    my $queue = $state->{signals};
    local $SIG{HUP}  = sub { push @$queue, 'HUP' };
    local $SIG{TTIN} = sub { push @$queue, 'TTIN' };
    local $SIG{TTOU} = sub { push @$queue, 'TTOU' };
    local $SIG{QUIT} = sub { push @$queue, 'QUIT' };
    local $SIG{TERM} = sub { push @$queue, 'TERM' };
    local $SIG{INT}  = sub { push @$queue, 'INT' };
    local $SIG{CHLD} = sub { };    # only to wake select() up
    local $SIG{PIPE} = 'IGNORE' if !$SIG{PIPE} || $SIG{PIPE} eq 'DEFAULT';

    DEBUG && warn "Twiggy: master $$ starts $state->{target} workers\n";
    my $ok = eval { $self->_master_loop; 1 };
    my $error = $@;
    if (!$ok) {
        # Never leave workers behind: stop them now, then report.
        kill $self->_stop_now_signal, keys %{ $state->{workers} };
        $self->_reap_all_within($STOP_NOW_GRACE);
    }
    $self->_close_listeners;
    $self->_remove_pid_file if defined $self->{pid};
    delete $self->{prefork};
    die $error unless $ok;
    return;
}

sub _master_loop {
    my $self = shift;
    my $state = $self->{prefork};
    while (1) {
        $self->_handle_signals;
        $self->_reap;
        last if $state->{phase} ne 'running' && !%{ $state->{workers} };
        $self->_manage if $state->{phase} eq 'running';
        $self->_enforce_deadlines;
        $self->_wait_for_events;
    }
    DEBUG && warn "Twiggy: master $$: every worker has exited\n";
    return;
}

sub _handle_signals {
    my $self = shift;
    my $state = $self->{prefork};
    while (defined(my $signal = shift @{ $state->{signals} })) {
        DEBUG && warn "Twiggy: master $$ got SIG$signal\n";
        if ($signal eq 'TERM' && $self->{graceful_term}) {
            $signal = 'QUIT';    # Twiggy::Prefork 0.08: TERM lets the workers finish
        }
        if ($signal eq 'QUIT') {
            next unless $state->{phase} eq 'running';
            $state->{phase} = 'quitting';
            $self->_close_listeners;
            $self->_stop_worker($_, 'QUIT') for values %{ $state->{workers} };
        } elsif ($signal eq 'TERM' || $signal eq 'INT') {
            next if $state->{phase} eq 'stopping';
            $state->{phase} = 'stopping';
            $self->_close_listeners;
            my $now_signal = $self->_stop_now_signal;
            my $kill_at = _now() + $STOP_NOW_GRACE;
            for my $worker (values %{ $state->{workers} }) {
                kill $now_signal, $worker->{pid};
                $worker->{stop_sent} = 'TERM';
                $worker->{cut_at} = $kill_at;
            }
        } elsif ($state->{phase} ne 'running') {
            next;    # HUP, TTIN, TTOU mean nothing once shutting down
        } elsif ($signal eq 'HUP') {
            $state->{generation}++;
            warn "Twiggy: SIGHUP: replacing the workers with a new generation\n";
        } elsif ($signal eq 'TTIN') {
            $state->{target}++;
            DEBUG && warn "Twiggy: SIGTTIN: $state->{target} workers\n";
        } elsif ($signal eq 'TTOU') {
            if ($state->{target} > 1) {
                $state->{target}--;
                DEBUG && warn "Twiggy: SIGTTOU: $state->{target} workers\n";
            } else {
                warn "Twiggy: SIGTTOU ignored: at least one worker is kept\n";
            }
        }
    }
    return;
}

# What tells a worker to exit at once: TERM, or INT where TERM means "finish first".
sub _stop_now_signal { return $_[0]{graceful_term} ? 'INT' : 'TERM' }

# Collects exited workers. The status pipe is read after waitpid, so a message a worker wrote
# before it exited is always seen before its exit is handled.
sub _reap {
    my $self = shift;
    my $state = $self->{prefork};
    my @exited;
    for my $pid (keys %{ $state->{workers} }) {
        # Only our own workers: a preloaded app may have children of its own to wait for.
        push @exited, [ $pid, $? ] if waitpid($pid, POSIX::WNOHANG()) == $pid;
    }
    $self->_read_status;
    for my $exit (@exited) {
        my ($pid, $status) = @$exit;
        my $worker = delete $state->{workers}{$pid};
        DEBUG && warn "Twiggy: worker $pid exited (" . _describe_status($status) . ")\n";
        next if $worker->{stop_sent};
        if (!$worker->{ready}) {
            $self->_startup_failed($worker, $status);
        } elsif ($status != 0) {
            warn "Twiggy: worker $pid " . _describe_status($status) . "; starting another\n"
                if $state->{phase} eq 'running';
        }
    }
    return;
}

# A worker that exits before it is ready (its app did not load, or it could not serve) puts
# the master into backoff: one worker at a time, waiting longer after each failure, until one
# becomes ready. Workers started before the previous failure do not count again, so a whole
# generation failing at once is one failure, not max_workers of them.
sub _startup_failed {
    my ($self, $worker, $status) = @_;
    my $state = $self->{prefork};
    my $counts = $worker->{started} >= $state->{last_failure};
    $state->{last_failure} = _now();
    return unless $counts;
    $state->{failures}++;
    my $delay = $BACKOFF_FIRST * 2**($state->{failures} - 1);
    $delay = $BACKOFF_MAX if $delay > $BACKOFF_MAX;
    $state->{next_spawn} = _now() + $delay;
    my $why = defined $worker->{error}
        ? "could not load the application: $worker->{error}"
        : 'exited before it was ready (' . _describe_status($status) . ')';
    $why .= "\n" unless $why =~ /\n\z/;
    warn "Twiggy: worker $worker->{pid} $why";
    warn "Twiggy: the workers failed to start $state->{failures} time"
        . ($state->{failures} == 1 ? '' : 's') . " in a row; next attempt in $delay s\n"
        if $state->{phase} eq 'running';
    return;
}

sub _read_status {
    my $self = shift;
    my $state = $self->{prefork};
    while (1) {
        my $got = sysread($state->{status_reader}, my $chunk, 65536);
        last unless $got;
        $state->{status_buffer} .= $chunk;
    }
    while ($state->{status_buffer} =~ s/\A([^\n]*)\n//) {
        my ($type, $pid, $text) = split / /, $1, 3;
        my $worker = $state->{workers}{ $pid // 0 } or next;
        if ($type eq 'ready') {
            $worker->{ready} = 1;
            DEBUG && warn "Twiggy: worker $pid is ready\n";
            if ($state->{failures}) {
                warn "Twiggy: worker $pid started; back to $state->{target} workers\n";
                $state->{failures} = 0;
                $state->{next_spawn} = 0;
            }
        } elsif ($type eq 'retiring') {
            # It reached its request limit and no longer accepts: replace it now.
            DEBUG && warn "Twiggy: worker $pid reached its request limit\n";
            next if $worker->{stop_sent};
            $worker->{stop_sent} = 'retiring';
            $worker->{cut_at} = _now() + $self->{graceful_timeout} if $self->{graceful_timeout};
        } elsif ($type eq 'failed') {
            $worker->{error} = Twiggy::Prefork::Worker::decode_text($text // '');
        }
    }
    return;
}

# Keeps the pool at its target: retires the old generation as new workers become ready,
# stops extra workers after TTOU, and starts missing ones (subject to backoff).
sub _manage {
    my $self = shift;
    my $state = $self->{prefork};
    my (@current, @old);
    for my $worker (values %{ $state->{workers} }) {
        next if $worker->{stop_sent};
        if ($worker->{generation} == $state->{generation}) {
            push @current, $worker;
        } else {
            push @old, $worker;
        }
    }

    # After HUP the old generation keeps serving until its replacements are ready: a new
    # version of the app that does not load leaves the old one running.
    my $ready = grep { $_->{ready} } @current;
    my $keep_old = $state->{target} - $ready;
    $keep_old = 0 if $keep_old < 0;
    @old = sort { $a->{started} <=> $b->{started} } @old;
    $self->_stop_worker(shift @old, 'QUIT') while @old > $keep_old;

    # TTOU: the workers in slots beyond the target go, and (SO_REUSEPORT) so do those slots'
    # sockets, so that the kernel stops sending connections there.
    $self->_stop_worker($_, 'QUIT') for grep { $_->{slot} >= $state->{target} } @current;
    @current = grep { $_->{slot} < $state->{target} } @current;
    $self->_close_slot($_) for $state->{target} .. $#{ $state->{slots} };

    my %taken = map { $_->{slot} => 1 } @current;
    my $slot = 0;
    while (@current < $state->{target} && _now() >= $state->{next_spawn}) {
        last if $state->{failures} && grep { !$_->{ready} } @current;    # one probe at a time
        $slot++ while $taken{$slot};
        my $worker = $self->_spawn($slot) or last;
        $taken{$slot} = 1;
        push @current, $worker;
    }
    return;
}

sub _stop_worker {
    my ($self, $worker, $signal) = @_;
    return if $worker->{stop_sent};
    DEBUG && warn "Twiggy: SIG$signal to worker $worker->{pid}\n";
    kill $signal, $worker->{pid};
    $worker->{stop_sent} = $signal;
    $worker->{cut_at} = _now() + $self->{graceful_timeout} if $self->{graceful_timeout};
    return;
}

# Workers still running past their graceful timeout (or the grace after TERM) are killed.
sub _enforce_deadlines {
    my $self = shift;
    my $now = _now();
    for my $worker (values %{ $self->{prefork}{workers} }) {
        next unless $worker->{cut_at} && $now >= $worker->{cut_at} && !$worker->{killed};
        if ($worker->{stop_sent} eq 'TERM') {
            warn "Twiggy: worker $worker->{pid} is still running $STOP_NOW_GRACE s after it was told to exit; killing it\n";
        } else {
            warn "Twiggy: worker $worker->{pid} did not finish within the graceful timeout "
                . "($self->{graceful_timeout} s); killing it\n";
        }
        kill 'KILL', $worker->{pid};
        $worker->{killed} = 1;
    }
    return;
}

sub _wait_for_events {
    my $self = shift;
    my $state = $self->{prefork};
    return if @{ $state->{signals} };
    my $now = _now();
    my $wait = $LOOP_WAIT;
    my @deadlines = grep { $_ } map { $_->{killed} ? undef : $_->{cut_at} } values %{ $state->{workers} };
    push @deadlines, $state->{next_spawn} if $state->{phase} eq 'running' && $state->{next_spawn} > $now;
    for my $deadline (@deadlines) {
        $wait = $deadline - $now if $deadline - $now < $wait;
    }
    $wait = 0.001 if $wait < 0.001;
    my $bits = '';
    vec($bits, fileno $state->{status_reader}, 1) = 1;
    select(my $ready = $bits, undef, undef, $wait);    # EINTR (a signal) just ends the wait
    return;
}

sub _spawn {
    my ($self, $slot) = @_;
    my $state = $self->{prefork};
    my @listeners = $self->_listeners_for_slot($slot);
    my %served = map { $_->{fd} => 1 } @listeners;
    my @close = grep { !$served{$_} } map { $_->{fd} } $self->_all_listeners;

    my $limit = $self->{max_reqs_per_child};
    if ($limit && $self->{min_reqs_per_child}) {
        my $min = $self->{min_reqs_per_child};
        $limit = $min + int rand($limit - $min + 1);
    }

    my $blocked = POSIX::SigSet->new(map { POSIX->can("SIG$_")->() } @MASTER_SIGNALS);
    my $previous = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $blocked, $previous);
    my $pid = fork;
    if (!defined $pid) {
        my $error = $!;
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), $previous);
        warn "Twiggy: cannot fork a worker: $error\n";
        $state->{next_spawn} = _now() + 1;
        return;
    }
    if ($pid == 0) {
        my %options = %$self;
        delete @options{@MASTER_ONLY};
        Twiggy::Prefork::Worker->serve(
            options       => \%options,
            app           => $state->{app},
            app_builder   => $state->{app_builder},
            listeners     => \@listeners,
            close_fds     => \@close,
            max_requests  => $limit,
            status_reader => $state->{status_reader},
            status_writer => $state->{status_writer},
            signal_mask   => $previous,
            graceful_term => $self->{graceful_term},
            title         => $self->{proctitle} ? $self->_title('worker') : undef,
            master_pid    => $state->{master_pid},
        );    # never returns
    }
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $previous);
    DEBUG && warn "Twiggy: started worker $pid (slot $slot, generation $state->{generation}"
        . ($limit ? ", $limit requests" : '') . ")\n";
    return $state->{workers}{$pid} = {
        pid        => $pid,
        slot       => $slot,
        generation => $state->{generation},
        started    => _now(),
        ready      => 0,
    };
}

# --- listeners ----------------------------------------------------------------------------

sub _listen_specs {
    my $self = shift;
    return @{ $self->{listen} } if $self->{listen} && @{ $self->{listen} };
    my $host = defined $self->{host} ? $self->{host} : '';
    $host = "[$host]" if $host =~ /:/ && $host !~ /\A\[/;
    return $host . ':' . ($self->{port} || 0);
}

sub _open_listeners {
    my $self = shift;
    my $state = $self->{prefork};
    for my $spec ($self->_listen_specs) {
        my ($host, $port, $path) = Twiggy::Server::_parse_listen($spec);
        if (defined $path) {
            push @{ $state->{shared} }, { fd => $self->_listen_unix($path), host => 'unix/', port => $path, is_unix => 1 };
            next;
        }
        my ($fd, $bound_host, $bound_port)
            = Twiggy::Reactor->listen_tcp($host, $port, $self->{backlog}, $self->{reuse_port} ? 1 : 0);
        my $listener = { fd => $fd, host => $host eq '' ? $bound_host : $host, port => $bound_port, is_unix => 0 };
        if ($self->{reuse_port}) {
            push @{ $state->{reuse_specs} }, [ $host, $bound_port, $listener->{host} ];
            push @{ $state->{slots}[0] }, $listener;
        } else {
            push @{ $state->{shared} }, $listener;
        }
    }
    # With SO_REUSEPORT each worker slot gets sockets of its own, bound now, while the master
    # still has the rights it started with.
    $self->_bind_slot($_) for 1 .. $self->{max_workers} - 1;
    return;
}

sub _listen_unix {
    my ($self, $path) = @_;
    my $mode = $self->{socket_mode};
    return Twiggy::Reactor->listen_unix($path, $self->{backlog}) unless defined $mode;
    # The umask makes the socket file appear with no more rights than asked; chmod then gives
    # exactly the asked ones.
    my $umask = umask(0777 & ~$mode);
    my $fd = eval { Twiggy::Reactor->listen_unix($path, $self->{backlog}) };
    my $error = $@;
    umask $umask;
    die $error unless defined $fd;
    chmod $mode, $path or Carp::croak(sprintf "Twiggy: cannot chmod %04o %s: %s", $mode, $path, $!);
    return $fd;
}

sub _bind_slot {
    my ($self, $slot) = @_;
    my $state = $self->{prefork};
    return if !$self->{reuse_port} || $state->{slots}[$slot];
    my @listeners;
    for my $spec (@{ $state->{reuse_specs} }) {
        my ($host, $port, $label) = @$spec;
        my ($fd) = eval { Twiggy::Reactor->listen_tcp($host, $port, $self->{backlog}, 1) };
        if (!defined $fd) {
            # Sharing another slot's sockets still works (EPOLLEXCLUSIVE); only the kernel's
            # spreading is lost for this slot.
            DEBUG && warn "Twiggy: slot $slot shares sockets: $@";
            POSIX::close($_->{fd}) for @listeners;
            return;
        }
        push @listeners, { fd => $fd, host => $label, port => $port, is_unix => 0 };
    }
    $state->{slots}[$slot] = \@listeners;
    return;
}

sub _close_slot {
    my ($self, $slot) = @_;
    my $listeners = $self->{prefork}{slots}[$slot] or return;
    return if $slot == 0;
    POSIX::close($_->{fd}) for @$listeners;
    $self->{prefork}{slots}[$slot] = undef;
    return;
}

sub _listeners_for_slot {
    my ($self, $slot) = @_;
    my $state = $self->{prefork};
    my @own;
    if ($self->{reuse_port} && @{ $state->{reuse_specs} }) {
        $self->_bind_slot($slot);
        my $listeners = $state->{slots}[$slot];
        if (!$listeners) {
            my @bound = grep { $_ } @{ $state->{slots} };
            $listeners = $bound[ $slot % @bound ];
        }
        @own = @$listeners;
    }
    return (@{ $state->{shared} }, @own);
}

sub _all_listeners {
    my $self = shift;
    my $state = $self->{prefork};
    return (@{ $state->{shared} }, map { $_ ? @$_ : () } @{ $state->{slots} });
}

sub _close_listeners {
    my $self = shift;
    my $state = $self->{prefork};
    POSIX::close($_->{fd}) for $self->_all_listeners;
    $state->{shared} = [];
    $state->{slots}  = [];
    return;
}

sub _report_ready {
    my $self = shift;
    return unless $self->{server_ready};
    my $state = $self->{prefork};
    my @listeners = (@{ $state->{shared} }, @{ $state->{slots}[0] || [] });
    my @names;
    for my $listener (@listeners) {
        push @names, "$listener->{host}:$listener->{port}";
        $self->{server_ready}->({ host => $listener->{host}, port => $listener->{port}, server_software => 'Twiggy' });
    }
    $self->{listening} = \@names;
    return;
}

# --- process details ----------------------------------------------------------------------

sub _title {
    my ($self, $role) = @_;
    my @words = $self->{argv} ? @{ $self->{argv} } : @ARGV ? @ARGV : $self->_listen_specs;
    return join ' ', "twiggy $role", @words;
}

sub _write_pid_file {
    my $self = shift;
    my $path = $self->{pid};
    open my $fh, '>', $path or Carp::croak("Twiggy: cannot write the pid file $path: $!");
    print {$fh} "$$\n";
    close $fh or Carp::croak("Twiggy: cannot write the pid file $path: $!");
    $self->{prefork}{pid_written} = 1;
    return;
}

sub _remove_pid_file {
    my $self = shift;
    return unless $self->{prefork}{pid_written};
    my $path = $self->{pid};
    open my $fh, '<', $path or return;
    my $content = <$fh>;
    close $fh;
    unlink $path if defined $content && $content =~ /\A\Q$$\E\s*\z/;
    return;
}

# setgid (with the user's supplementary groups) before setuid, and check that both stuck.
sub _drop_privileges {
    my $self = shift;
    my ($user, $group) = @$self{qw(user group)};
    my ($uid, $gid, $name);
    if (defined $user) {
        my @entry = $user =~ /\A\d+\z/ ? getpwuid($user) : getpwnam($user);
        Carp::croak("Twiggy: unknown user '$user'") unless @entry || $user =~ /\A\d+\z/;
        ($name, $uid, $gid) = @entry ? @entry[ 0, 2, 3 ] : (undef, $user, undef);
    }
    if (defined $group) {
        my @entry = $group =~ /\A\d+\z/ ? getgrgid($group) : getgrnam($group);
        Carp::croak("Twiggy: unknown group '$group'") unless @entry || $group =~ /\A\d+\z/;
        $gid = @entry ? $entry[2] : $group;
    }
    if (defined $gid) {
        my @groups = ($gid);
        if (defined $name) {
            while (my @entry = getgrent) {
                push @groups, $entry[2] if grep { $_ eq $name } split ' ', $entry[3];
            }
            endgrent();
        }
        POSIX::setgid($gid) or Carp::croak("Twiggy: cannot change the group to $gid: $!");
        $) = join ' ', $gid, @groups;
        Carp::croak("Twiggy: cannot change the group to $gid") unless $( == $gid && $) == $gid;
    }
    if (defined $uid) {
        POSIX::setuid($uid) or Carp::croak("Twiggy: cannot change the user to $uid: $!");
        Carp::croak("Twiggy: cannot change the user to $uid") unless $< == $uid && $> == $uid;
    }
    return;
}

sub _reap_all_within {
    my ($self, $seconds) = @_;
    my $workers = $self->{prefork}{workers};
    my $deadline = _now() + $seconds;
    while (%$workers && _now() < $deadline) {
        for my $pid (keys %$workers) {
            delete $workers->{$pid} if waitpid($pid, POSIX::WNOHANG()) != 0;
        }
        Time::HiRes::sleep(0.05) if %$workers;
    }
    for my $pid (keys %$workers) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        delete $workers->{$pid};
    }
    return;
}

sub _describe_status {
    my ($status) = @_;
    return 'killed by signal ' . ($status & 127) if $status & 127;
    return 'exit status ' . ($status >> 8);
}

sub _now { return Time::HiRes::time() }

1;

__END__

=head1 NAME

Twiggy::Prefork::Server - the preforking master of Twiggy

=head1 SYNOPSIS

  use Twiggy::Prefork::Server;

  my $server = Twiggy::Prefork::Server->new(
      host               => '127.0.0.1',
      port               => 5000,
      max_workers        => 10,
      max_reqs_per_child => 1000,
  );
  $server->run($app);    # returns after QUIT or TERM

=head1 DESCRIPTION

Opens the listening sockets, forks C<max_workers> workers that each serve them with their own
L<Twiggy::Server> (its own reactor and event loop), and manages them until it is told to stop.
See L<Twiggy::Prefork> for the options, the signals and what the master guarantees.

=head1 METHODS

=over 4

=item new(%options)

The options of L<Twiggy::Server> (given to every worker) and the prefork options described in
L<Twiggy::Prefork/OPTIONS>. Bad values croak.

=item run($app)

Serves C<$app> with the workers until SIGQUIT (graceful), SIGTERM or SIGINT, then returns in
the master. With a C<psgi_app_builder> (L<Plack::Loader::Delayed>) and no C<preload_app>, each
worker builds the application itself after it is forked.

=back

=head1 SEE ALSO

L<Twiggy::Prefork>, L<Twiggy::Prefork::Server::SS>, L<Twiggy::Server>

=cut
