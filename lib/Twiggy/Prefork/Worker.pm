package Twiggy::Prefork::Worker;
use strict;
use warnings;
use parent 'Twiggy::Server';

# One worker process, from just after fork() to exit: it builds the app (unless the master
# preloaded it), serves the listening sockets it inherited with a Twiggy::Server of its own
# (a new reactor, created after the fork), tells the master it is ready, and exits when the
# server has drained (max requests, QUIT, HUP) or when the master goes away.

use AnyEvent ();
use POSIX ();

use constant DEBUG => $ENV{TWIGGY_DEBUG};

# The longest failure text sent to the master: with the line around it, one write stays under
# PIPE_BUF (4096 on Linux), so messages from several workers never interleave.
my $MAX_MESSAGE = 3000;

# Serves the inherited sockets instead of opening new ones. The server takes ownership of each
# descriptor; after the fork they are this process's own copies.
sub start_listen {
    my ($self) = @_;
    my @names;
    for my $listener (@{ $self->{inherited_listeners} }) {
        $self->_add_listener(@$listener{qw(fd host port is_unix)});
        push @names, "$listener->{host}:$listener->{port}";
    }
    $self->{listen} = \@names;
    return;
}

# Called in the child right after fork(), with the master's signals still blocked. Never
# returns.
sub serve {
    my ($class, %args) = @_;
    my $ready;
    my $status = eval { $class->_serve(\%args, \$ready) };
    if (!defined $status) {
        my $error = $@;
        if ($ready) {
            warn "Twiggy: worker $$: $error";
        } else {
            _tell_master($args{status_writer}, failed => $error);
        }
        $status = 1;
    }
    exit $status;
}

sub _serve {
    my ($class, $args, $ready) = @_;
    my %args = %$args;
    my $stop_requested;
    my $stop = sub { $stop_requested = 1 };
    # Until the event loop runs, stop requests are only noted (a worker loading its app can
    # be told to stop; it then drains at once). TTIN and TTOU would suspend a process by
    # default: a worker does nothing on them (with a handler, not IGNORE, which programs the
    # app runs would inherit).
    $SIG{$_} = 'DEFAULT' for qw(CHLD INT);
    $SIG{$_} = sub { } for qw(TTIN TTOU);
    $SIG{QUIT} = $SIG{HUP} = $stop;
    $SIG{TERM} = $args{graceful_term} ? $stop : 'DEFAULT';
    $SIG{PIPE} = 'IGNORE' if !$SIG{PIPE} || $SIG{PIPE} eq 'DEFAULT';

    close $args{status_reader};
    POSIX::close($_) for @{ $args{close_fds} };
    my $writer = $args{status_writer};
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $args{signal_mask});
    srand();
    $0 = $args{title} if defined $args{title};

    my $app = $args{app};
    if (!$app) {
        DEBUG && warn "Twiggy: worker $$ loads the application\n";
        $app = eval { $args{app_builder}->() };
        if (!ref $app) {
            my $error = $@ || 'the application builder did not return a code reference';
            _tell_master($writer, failed => $error);
            return 1;
        }
    }

    # The core stops accepting when it hands the app its last request; counting the calls
    # here tells the master at that moment, so a replacement starts while this worker still
    # finishes its requests (and the jobs held by psgix.exit_guard).
    if (my $limit = $args{max_requests}) {
        my $inner = $app;
        my $count = 0;
        $app = sub {
            _tell_master($writer, retiring => '') if ++$count == $limit;
            return $inner->(@_);
        };
    }

    my $server = $class->new(
        %{ $args{options} },
        inherited_listeners => $args{listeners},
        max_requests        => $args{max_requests} || 0,
        psgix_exit_guard    => 1,
        psgi_multiprocess   => 1,
    );
    $server->register_service($app);

    # From the noting handlers to AnyEvent's watchers. The signals are blocked meanwhile: a
    # QUIT in between is neither lost nor met by the default action (a core dump). AnyEvent's
    # pure-Perl signal code keeps a handler already in %SIG, so ours must go first.
    my @graceful = ('QUIT', 'HUP', $args{graceful_term} ? 'TERM' : ());
    my $switching = POSIX::SigSet->new(map { POSIX->can("SIG$_")->() } @graceful);
    my $mask = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $switching, $mask);
    $SIG{$_} = undef for @graceful;
    my @watchers = map { AE::signal($_ => sub { $server->graceful_stop }) } @graceful;
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $mask);
    # An orphaned worker (the master was killed) finishes its work and goes.
    my $master = $args{master_pid};
    push @watchers, AE::timer(1, 1, sub { $server->graceful_stop if getppid() != $master });
    $server->graceful_stop if $stop_requested;

    _tell_master($writer, ready => '');
    $$ready = 1;
    DEBUG && warn "Twiggy: worker $$ serves\n";

    Twiggy::Server::_wait_for($server->{exit_guard});
    @watchers = ();
    delete $server->{reactor};
    DEBUG && warn "Twiggy: worker $$ exits\n";
    return 0;
}

sub _tell_master {
    my ($writer, $type, $text) = @_;
    $text = encode_text($text);
    $text = substr($text, 0, $MAX_MESSAGE) . '...' if length $text > $MAX_MESSAGE;
    syswrite($writer, "$type $$ $text\n");
    return;
}

# One line per message: backslashes and newlines are escaped.
sub encode_text {
    my ($text) = @_;
    $text = defined $text ? "$text" : '';
    utf8::encode($text) if utf8::is_utf8($text);
    $text =~ s/([\\\n])/$1 eq "\n" ? '\\n' : '\\\\'/ge;
    return $text;
}

sub decode_text {
    my ($text) = @_;
    $text =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
    return $text;
}

1;

__END__

=head1 NAME

Twiggy::Prefork::Worker - one worker process of the Twiggy prefork master

=head1 DESCRIPTION

Internal to L<Twiggy::Prefork::Server>: a L<Twiggy::Server> that serves the listening sockets
it inherited from the master, and the code a worker runs from C<fork> to C<exit>. Each worker
builds its own server object, and so its own reactor, after the fork.

=head1 SEE ALSO

L<Twiggy::Prefork>

=cut
