package Twiggy::Server::SS;
use strict;
use warnings;
use parent 'Twiggy::Server';

use Carp ();
use Server::Starter ();

# Under Server::Starter the listening sockets are inherited: SERVER_STARTER_PORT names them
# ("host:port=fd", "port=fd" or "path=fd", separated by ";").
sub start_listen {
    my ($self, $app) = @_;
    warn "Twiggy: the 'listen' option is ignored under Server::Starter\n"
        if Twiggy::Server::DEBUG() && $self->{listen};
    my $ports = Server::Starter::server_ports();
    Carp::croak("Twiggy: SERVER_STARTER_PORT names no sockets") unless %$ports;
    my @listening;
    for my $name (sort keys %$ports) {
        my $fd = $ports->{$name};
        my ($host, $port, $is_unix);
        if ($name =~ /\A(?:\[(.*)\]|(.*)):(\d+)\z/) {
            ($host, $port) = (defined $1 ? $1 : $2, $3);
        } elsif ($name =~ /\A\d+\z/) {
            ($host, $port) = ($self->{host} || '0.0.0.0', $name);
        } else {
            ($host, $port, $is_unix) = ('unix/', $name, 1);
        }
        $self->_add_listener($fd, $host, $port, $is_unix);
        push @listening, $name;
    }
    $self->{listen} = \@listening;
    return;
}

1;

__END__

=head1 NAME

Twiggy::Server::SS - Twiggy under Server::Starter

=head1 SYNOPSIS

  start_server --port 127.0.0.1:5000 -- plackup -s Twiggy app.psgi

=head1 DESCRIPTION

Used by L<Plack::Handler::Twiggy> when C<SERVER_STARTER_PORT> is set: serves the sockets
L<Server::Starter> passes (TCP and UNIX), so C<start_server --signal-on-hup=QUIT> restarts the
app without dropping a connection.

=head1 METHODS

=over 4

=item start_listen

Serves every socket named in C<SERVER_STARTER_PORT>; the C<listen> option is ignored.

=back

=cut
