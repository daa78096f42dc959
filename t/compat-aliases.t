# The other ways in, as in Twiggy 0.1026: AnyEvent::Server::PSGI (an empty subclass of
# Twiggy::Server) and Plack::Loader->load('Twiggy', ...) (Plack::Handler::Twiggy), with
# host/port or listen options.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["alias $env->{PATH_INFO}"] ];
};

subtest 'AnyEvent::Server::PSGI' => sub {
    my $server = start_server(app => $app, class => 'AnyEvent::Server::PSGI');
    response_is(simple_request($server->port, request_bytes(GET => '/ae')), 200, 'alias /ae', 'served');
    $server->stop;
};

subtest q{Plack::Loader->load('Twiggy', host => ..., port => ...)} => sub {
    my $server = start_server(app => $app, runner => sub {
        my ($args, $app) = @_;
        delete local $ENV{SERVER_STARTER_PORT};
        require Plack::Loader;
        Plack::Loader->load('Twiggy', host => $args->{host}, port => $args->{port})->run($app);
    });
    my $client = client($server->port);
    $client->send(request_bytes(GET => '/loader'));
    response_is($client->read_response, 200, 'alias /loader', 'served');
    $client->send(request_bytes(GET => '/again'));
    response_is($client->read_response, 200, 'alias /again', 'same connection');
    $server->stop;
};

subtest q{Plack::Loader->load('Twiggy', listen => [...])} => sub {
    my $port = empty_port();
    my $server = start_server(app => $app, port => $port, runner => sub {
        my ($args, $app) = @_;
        delete local $ENV{SERVER_STARTER_PORT};
        require Plack::Loader;
        Plack::Loader->load('Twiggy', listen => ["127.0.0.1:$port"])->run($app);
    });
    response_is(simple_request($port, request_bytes(GET => '/listen')), 200, 'alias /listen', 'served');
    $server->stop;
};

done_testing;
