package Twiggy::Prefork::Server::SS;
use strict;
use warnings;
use parent 'Twiggy::Prefork::Server';

use Carp ();
use Server::Starter ();

# Under Server::Starter the master serves the sockets start_server passes down
# (SERVER_STARTER_PORT: "host:port=fd", "port=fd" or "path=fd", separated by ";") instead of
# opening its own; every worker inherits them. start_server keeps its own copies, so the next
# generation of masters takes over the same sockets.
sub _open_listeners {
    my $self = shift;
    my $state = $self->{prefork};
    warn "Twiggy: the 'listen' and 'reuse_port' options are ignored under Server::Starter\n"
        if Twiggy::Prefork::Server::DEBUG() && ($self->{listen} || $self->{reuse_port});
    my $ports = Server::Starter::server_ports();
    Carp::croak("Twiggy: SERVER_STARTER_PORT names no sockets") unless %$ports;
    my @names;
    for my $name (sort keys %$ports) {
        my $listener = { fd => $ports->{$name}, is_unix => 0 };
        if ($name =~ /\A(?:\[(.*)\]|(.*)):(\d+)\z/) {
            @$listener{qw(host port)} = (defined $1 ? $1 : $2, $3);
        } elsif ($name =~ /\A\d+\z/) {
            @$listener{qw(host port)} = ($self->{host} || '0.0.0.0', $name);
        } else {
            @$listener{qw(host port is_unix)} = ('unix/', $name, 1);
        }
        push @{ $state->{shared} }, $listener;
        push @names, $name;
    }
    $self->{reuse_port} = 0;
    $self->{listen} = \@names;
    return;
}

1;

__END__

=head1 NAME

Twiggy::Prefork::Server::SS - the Twiggy prefork master under Server::Starter

=head1 SYNOPSIS

  start_server --port 127.0.0.1:5000 --signal-on-hup=QUIT -- twiggy --workers 8 app.psgi
  start_server --port 127.0.0.1:5000 -- plackup -s Twiggy::Prefork app.psgi

=head1 DESCRIPTION

Used by L<Plack::Handler::Twiggy::Prefork>, and by L<Plack::Handler::Twiggy> with C<workers>,
when C<SERVER_STARTER_PORT> is set: the master serves the TCP and UNIX sockets that
L<Server::Starter> passes, instead of opening its own. The C<listen>, C<host>, C<port>,
C<socket_mode> and C<reuse_port> options are then ignored. See
L<Twiggy::Prefork/"HOT DEPLOY WITH SERVER::STARTER">.

=head1 SEE ALSO

L<Twiggy::Prefork>, L<Twiggy::Prefork::Server>, L<Server::Starter>

=cut
