package Plack::Handler::Twiggy;
use strict;
use warnings;

sub new {
    my $class = shift;
    return bless {@_}, $class;
}

sub run {
    my ($self, $app) = @_;
    my $class = $ENV{SERVER_STARTER_PORT} ? 'Twiggy::Server::SS' : 'Twiggy::Server';
    eval "require $class; 1" or die $@;
    $class->new(%$self)->run($app);
}

1;

__END__

=head1 NAME

Plack::Handler::Twiggy - plackup adapter for Twiggy

=head1 SYNOPSIS

  plackup -s Twiggy --port 9090 app.psgi

  # with Server::Starter
  start_server --port 9090 -- plackup -s Twiggy app.psgi

=head1 DESCRIPTION

Runs a PSGI app on L<Twiggy::Server>, or on L<Twiggy::Server::SS> when C<SERVER_STARTER_PORT>
is set.

=head1 METHODS

=over 4

=item new(%options), run($app)

As L<Plack::Handler> expects; the options are those of L<Twiggy::Server>.

=back

=head1 SEE ALSO

L<Twiggy>, L<plackup>

=cut
