package Twiggy::Server::Response;
use strict;
use warnings;

# The Perl half of answering a request: everything the Rust fast path does not take (delayed
# responses, streaming writers, handle bodies, values that need stringifying) and the small
# factories the core calls for psgi.input and psgix.io. The core calls these under G_EVAL; a
# die here becomes a 500 (or a cut connection) and a message on psgi.errors.

use AnyEvent ();
use Scalar::Util ();

my $BODY_READ_SIZE = 65536;

open my $null_input, '<', \(my $empty = '') or die "cannot open the empty input: $!";

sub null_input { $null_input }

sub input_from_string {
    open my $input, '<', \$_[0] or die "cannot open the request body: $!";
    return $input;
}

sub input_from_fd {
    my ($fd) = @_;
    open my $input, '<&=', $fd or die "cannot open the spooled request body (fd $fd): $!";
    binmode $input;
    return $input;
}

# psgix.io: a handle owning a duplicate of the client socket, so an app may keep it (WebSocket)
# after the server has let go of its own descriptor. It remembers its connection, for
# Twiggy::Server::on_client_close.
sub make_io {
    my ($fd, $is_unix, $reactor, $id) = @_;
    open my $handle, '+<&=', $fd or die "cannot wrap the client socket (fd $fd): $!";
    binmode $handle;
    my $class = $is_unix ? 'IO::Socket::UNIX' : 'IO::Socket::INET';
    require IO::Socket::INET;
    require IO::Socket::UNIX;
    bless $handle, $class;
    ${*$handle}{'twiggy.reactor'}    = $reactor;
    ${*$handle}{'twiggy.connection'} = $id;
    Scalar::Util::weaken(${*$handle}{'twiggy.reactor'});
    return $handle;
}

# See Twiggy::Server::on_client_close.
sub on_client_close {
    my ($env, $callback) = @_;
    return 0 unless ref $env eq 'HASH';
    # Asking the lazy psgix.io value directly does not make the handle.
    my ($reactor, $id) = Twiggy::Reactor::connection_of($env->{'psgix.io'});
    return $reactor->on_close($id, $callback) if $reactor;
    my $io = $env->{'psgix.io'};
    return 0 unless $io && Scalar::Util::reftype($io) eq 'GLOB';
    $reactor = ${*$io}{'twiggy.reactor'} or return 0;
    return $reactor->on_close(${*$io}{'twiggy.connection'}, $callback);
}

sub log_error {
    my ($env, $error) = @_;
    my $message = defined $error ? "$error" : 'unknown error';
    $message .= "\n" unless $message =~ /\n\z/;
    my $errors = ref $env eq 'HASH' && $env->{'psgi.errors'} ? $env->{'psgi.errors'} : \*STDERR;
    $errors->print("Twiggy: $message");
    return;
}

# Called by the core: ($reactor, $id, $response, $env).
sub respond {
    my ($reactor, $id, $response, $env) = @_;
    if (ref $response eq 'CODE') {
        return delayed($reactor, $id, $response, $env);
    }
    if (Scalar::Util::blessed($response) && $response->isa('AnyEvent::CondVar')) {
        # Deprecated in the original but still accepted there.
        my $responder = Twiggy::Server::Responder->new($reactor, $id, $env);
        $response->cb(sub {
            my $result = eval { $_[0]->recv };
            $responder->respond(defined $result ? $result : $@);
        });
        return;
    }
    my ($status, $headers, $body) = checked_response($response, 3);
    return send_response($reactor, $id, $status, $headers, $body);
}

sub delayed {
    my ($reactor, $id, $code, $env) = @_;
    my $responder = Twiggy::Server::Responder->new($reactor, $id, $env);
    $code->(sub { $responder->respond(@_) }, $env->{'psgix.io'});
    return;
}

# Validates a PSGI response and returns (status, plain header list, body). Dies with a message
# naming the problem.
sub checked_response {
    my ($response, $size) = @_;
    die "the app returned " . describe($response) . " instead of a PSGI response\n"
        unless ref $response eq 'ARRAY';
    die "the PSGI response has " . scalar(@$response) . " elements instead of $size\n"
        unless @$response == $size || ($size == 3 && @$response == 4);
    my ($status, $headers, $body) = @$response;
    die "invalid status " . describe($status) . " in the PSGI response\n"
        unless defined $status && !ref $status && $status =~ /\A[1-9][0-9][0-9]\z/;
    die "the PSGI response headers are " . describe($headers) . " instead of an array reference\n"
        unless ref $headers eq 'ARRAY';
    die "the PSGI response headers have an odd number of elements\n" if @$headers % 2;
    my @plain = map { byte_string($_) } @$headers;
    if ($size == 3) {
        die "the PSGI response body is " . describe($body) . "\n"
            unless ref $body eq 'ARRAY' || (ref $body && (Scalar::Util::reftype($body) eq 'GLOB' || Scalar::Util::blessed($body)));
    }
    return ("$status", \@plain, $body);
}

sub describe {
    my ($value) = @_;
    return 'undef' unless defined $value;
    return ref $value ? "a " . ref($value) . " reference" : "'$value'";
}

sub byte_string {
    my $copy = defined $_[0] ? "$_[0]" : '';
    utf8::downgrade($copy, 1) or utf8::encode($copy) if utf8::is_utf8($copy);
    return $copy;
}

sub send_response {
    my ($reactor, $id, $status, $headers, $body) = @_;
    if (ref $body eq 'ARRAY') {
        return $reactor->respond($id, $status, $headers, [ map { byte_string($_) } @$body ]);
    }
    my $length = file_length($body);
    if ($length) {
        push @$headers, 'Content-Length', $length
            unless grep { lc $headers->[ $_ * 2 ] eq 'content-length' } 0 .. $#$headers / 2;
    }
    unless ($reactor->start_stream($id, $status, $headers)) {
        close_body($body);
        return;
    }
    if ($length) {
        # A real file: the core sends it with sendfile(2); the body is closed once it is out.
        my $position = tell $body;
        my $taken = $reactor->send_file($id, fileno($body), $position < 0 ? 0 : $position, $length);
        if ($taken == 1) {
            $reactor->on_drain($id, sub { close_body($body); $reactor->close_stream($id) })
                or close_body($body);
            return;
        }
        if ($taken == 0) {
            close_body($body);
            return;
        }
    }
    return pump($reactor, $id, $body);
}

# The remaining size of a real file handle, so it can be sent with a Content-Length.
sub file_length {
    my ($body) = @_;
    return undef unless Scalar::Util::reftype($body) eq 'GLOB' && defined fileno($body) && fileno($body) >= 0;
    return undef unless -f $body;
    my $size = -s _;
    my $position = tell $body;
    $position = 0 if $position < 0;
    my $length = $size - $position;
    return $length > 0 ? $length : undef;
}

# Copies an IO-like body to the client, pausing while the output buffer is full.
sub pump {
    my ($reactor, $id, $body) = @_;
    my $finished = eval {
        local $/ = \$BODY_READ_SIZE;
        while (1) {
            my $chunk = $body->getline;
            if (!defined $chunk) {
                close_body($body);
                $reactor->close_stream($id);
                last;
            }
            next unless length $chunk;
            my $state = $reactor->write($id, byte_string($chunk));
            if ($state == 0) {    # the client is gone
                close_body($body);
                last;
            }
            if ($state == 2) {    # wait until the socket drains
                $reactor->on_drain($id, sub { pump($reactor, $id, $body) });
                last;
            }
        }
        1;
    };
    return if $finished;
    my $error = $@;
    close_body($body);
    die $error;
}

sub close_body {
    my ($body) = @_;
    eval { $body->close if Scalar::Util::blessed($body) || Scalar::Util::reftype($body) eq 'GLOB'; 1 }
        or log_error(undef, "closing the response body failed: $@");
    return;
}

package Twiggy::Server::Responder;

# The state behind the responder code ref of a delayed response. When the app lets go of the
# responder without answering (for example after taking over psgix.io), the core closes its
# own descriptor of the connection and nothing more.

sub new {
    my ($class, $reactor, $id, $env) = @_;
    return bless { reactor => $reactor, id => $id, env => $env, answered => 0 }, $class;
}

sub respond {
    my ($self, $response) = @_;
    my $reactor = $self->{reactor};
    if ($self->{answered}++) {
        Twiggy::Server::Response::log_error($self->{env}, "the responder was called more than once");
        return;
    }
    my $writer;
    my $ok = eval {
        if (ref $response eq 'ARRAY' && @$response == 2) {
            my ($status, $headers) = Twiggy::Server::Response::checked_response($response, 2);
            my $alive = $reactor->start_stream($self->{id}, $status, $headers);
            $writer = Twiggy::Writer->new($reactor, $self->{id}, $alive);
        } else {
            my ($status, $headers, $body) = Twiggy::Server::Response::checked_response($response, 3);
            Twiggy::Server::Response::send_response($reactor, $self->{id}, $status, $headers, $body);
        }
        1;
    };
    unless ($ok) {
        Twiggy::Server::Response::log_error($self->{env}, $@);
        $reactor->fail($self->{id});
        return Twiggy::Writer->new($reactor, $self->{id}, 0);
    }
    return $writer;
}

# Deferred to the next loop turn: when the app dies, Perl frees the responder while unwinding,
# before the server sees the error and answers 500; a deferred `forget` then finds the request
# answered and does nothing.
sub DESTROY {
    my $self = shift;
    return if $self->{answered} || !$self->{reactor};
    my ($reactor, $id) = @$self{qw(reactor id)};
    AnyEvent::postpone(sub { $reactor->forget($id) });
}

package Twiggy::Writer;

# The streaming writer handed to the app by `$responder->([$status, $headers])`.

use Scalar::Util ();

sub new {
    my ($class, $reactor, $id, $alive) = @_;
    return bless { reactor => $reactor, id => $id, closed => $alive ? 0 : 1 }, $class;
}

# Returns true while the client is still there.
sub write {
    my ($self, $data) = @_;
    return 0 if $self->{closed};
    return 1 unless defined $data && length $data;
    my $state = $self->{reactor}->write($self->{id}, $data);
    return 1 if $state;
    $self->{closed} = 1;
    return 0;
}

sub close {
    my $self = shift;
    return if $self->{closed}++;
    $self->{reactor}->close_stream($self->{id});
    return;
}

# Calls $callback->() if the client goes away before `close`. Returns false (and calls it at
# once) when the client is already gone.
sub on_close {
    my ($self, $callback) = @_;
    return $self->{reactor}->on_close($self->{id}, $callback);
}

# Calls $callback->($writer) once the output written so far has reached the client's socket
# (or the client is gone, when `write` then returns false): a producer can wait for it
# instead of filling memory.
sub poll_cb {
    my ($self, $callback) = @_;
    my $writer = $self;
    Scalar::Util::weaken($writer);
    my $ok = $self->{reactor}->on_drain($self->{id}, sub { $callback->($writer) if $writer });
    $callback->($self) unless $ok;
    return;
}

# A writer dropped without `close` is closed on the next loop turn, as the original did at once.
# Deferred because an app that dies drops its writer while unwinding, before the server cuts the
# connection; a clean close must not win that race and make a broken response look complete.
sub DESTROY {
    my $self = shift;
    return if $self->{closed}++;
    my ($reactor, $id) = @$self{qw(reactor id)};
    AnyEvent::postpone(sub { $reactor->close_stream($id) });
}

1;

__END__

=head1 NAME

Twiggy::Server::Response - answering requests: delayed responses, writers, handle bodies

=head1 DESCRIPTION

Internal to L<Twiggy>. The Rust core answers plain array responses itself and hands every
other kind of response to this module. C<Twiggy::Writer> is the streaming writer an app gets
from C<< $responder->([$status, $headers]) >>: C<write> returns false once the client is gone,
C<close> ends the body.

=cut
