package AnyEvent::Server::PSGI;
use strict;
use warnings;
use parent 'Twiggy::Server';

1;

__END__

=head1 NAME

AnyEvent::Server::PSGI - the longer name of Twiggy::Server

=head1 SYNOPSIS

  use AnyEvent::Server::PSGI;
  AnyEvent::Server::PSGI->new(port => 5000)->run($app);

=head1 DESCRIPTION

An empty subclass of L<Twiggy::Server>, for those who search CPAN for "PSGI Server AnyEvent".

=cut
