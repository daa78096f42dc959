package Plack::Handler::Twiggy;
use strict;
use warnings;

sub new {
    my $class = shift;
    return bless {@_}, $class;
}

sub run {
    my ($self, $app) = @_;
    # Plack::Runner announces the server only in the development environment; a server
    # started for deployment says where it listens too (as Starman does).
    $self->{server_ready} ||= \&_banner;
    return $self->_run_workers($app)
        if defined $self->{workers} && length $self->{workers} && $self->{workers} !~ /\A\s*0*\s*\z/;
    my $class = $ENV{SERVER_STARTER_PORT} ? 'Twiggy::Server::SS' : 'Twiggy::Server';
    eval "require $class; 1" or die $@;
    $class->new(%$self)->run($app);
}

# --workers N: the preforking master, with Starman's conventions (TERM and INT stop at once,
# max_requests is a per-worker limit, no limit by default).
sub _run_workers {
    my ($self, $app) = @_;
    my $class = $ENV{SERVER_STARTER_PORT} ? 'Twiggy::Prefork::Server::SS' : 'Twiggy::Prefork::Server';
    eval "require $class; 1" or die $@;
    $class->new(graceful_term => 0, max_requests => 0, %$self)->run($app);
}

sub _banner {
    my ($args) = @_;
    my $where = $args->{host} eq 'unix/' ? "unix:$args->{port}" : "http://$args->{host}:$args->{port}/";
    print STDERR "$args->{server_software}: Accepting connections at $where\n";
}

1;

__END__

=head1 NAME

Plack::Handler::Twiggy - plackup adapter for Twiggy

=head1 SYNOPSIS

  plackup -s Twiggy --port 9090 app.psgi
  plackup -s Twiggy --workers 8 --port 9090 app.psgi

  # with Server::Starter
  start_server --port 9090 -- plackup -s Twiggy app.psgi

=head1 DESCRIPTION

Runs a PSGI app on L<Twiggy::Server>, or on L<Twiggy::Server::SS> when C<SERVER_STARTER_PORT>
is set.

With C<--workers N> (N E<gt> 0) it runs the preforking master instead,
L<Twiggy::Prefork::Server> (or L<Twiggy::Prefork::Server::SS>), with Starman's conventions:
C<--max-requests> is each worker's limit (none by default), SIGTERM and SIGINT stop at once,
SIGQUIT stops gracefully. See L<Twiggy::Prefork>.

=head1 METHODS

=over 4

=item new(%options), run($app)

As L<Plack::Handler> expects; the options are those of L<Twiggy::Server>, and with
C<workers> those of L<Twiggy::Prefork>.

=back

=head1 SEE ALSO

L<Twiggy>, L<Twiggy::Prefork>, L<plackup>

=cut
