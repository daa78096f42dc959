package Plack::Handler::Twiggy::Prefork;
use strict;
use warnings;

sub new {
    my $class = shift;
    return bless {@_}, $class;
}

sub run {
    my ($self, $app) = @_;
    my $class = $ENV{SERVER_STARTER_PORT} ? 'Twiggy::Prefork::Server::SS' : 'Twiggy::Prefork::Server';
    eval "require $class; 1" or die $@;
    $class->new(%$self)->run($app);
}

1;

__END__

=head1 NAME

Plack::Handler::Twiggy::Prefork - plackup adapter for the preforking Twiggy

=head1 SYNOPSIS

  plackup -s Twiggy::Prefork --max-workers 8 --max-reqs-per-child 1000 app.psgi

  # with Server::Starter
  start_server --port 5000 -- plackup -s Twiggy::Prefork app.psgi

=head1 DESCRIPTION

Runs a PSGI app on L<Twiggy::Prefork::Server>, or on L<Twiggy::Prefork::Server::SS> when
C<SERVER_STARTER_PORT> is set, as Twiggy::Prefork 0.08 did.

=head1 METHODS

=over 4

=item new(%options), run($app)

As L<Plack::Handler> expects; the options are those of L<Twiggy::Prefork>.

=back

=head1 SEE ALSO

L<Twiggy::Prefork>, L<plackup>

=cut
