# Every module of the distribution loads, the aliases are wired as in Twiggy 0.1026, and the
# twiggy script prints its version.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

my @modules = qw(
    Twiggy
    Twiggy::Server
    Plack::Handler::Twiggy
    AnyEvent::Server::PSGI
);

for my $module (@modules) {
    use_ok($module) or BAIL_OUT("$module does not load");
}

# Twiggy::Server::SS needs Server::Starter, an optional dependency (as in Twiggy 0.1026).
my $have_server_starter = eval { require Server::Starter; 1 };
SKIP: {
    skip 'Server::Starter is not installed', 2 unless $have_server_starter;
    use_ok('Twiggy::Server::SS') or BAIL_OUT('Twiggy::Server::SS does not load');
    ok(Twiggy::Server::SS->isa('Twiggy::Server'), 'Twiggy::Server::SS is a Twiggy::Server');
}

ok(defined $Twiggy::VERSION && length $Twiggy::VERSION, 'Twiggy has a $VERSION')
    or diag('Twiggy::VERSION is undefined');
diag("Testing Twiggy $Twiggy::VERSION, Perl $], AnyEvent model: "
    . ($ENV{PERL_ANYEVENT_MODEL} || '(auto)'));

ok(AnyEvent::Server::PSGI->isa('Twiggy::Server'), 'AnyEvent::Server::PSGI is a Twiggy::Server');

for my $method (qw(new register_service run)) {
    can_ok('Twiggy::Server', $method);
}
can_ok('Plack::Handler::Twiggy', qw(new run));

{
    my $server = Twiggy::Server->new(host => '127.0.0.1', port => empty_port());
    isa_ok($server, 'Twiggy::Server', 'Twiggy::Server->new');
    my $alias = AnyEvent::Server::PSGI->new(host => '127.0.0.1', port => empty_port());
    isa_ok($alias, 'Twiggy::Server', 'AnyEvent::Server::PSGI->new');
}

{
    require Plack::Loader;
    my $handler = Plack::Loader->load('Twiggy', host => '127.0.0.1', port => empty_port());
    isa_ok($handler, 'Plack::Handler::Twiggy', q{Plack::Loader->load('Twiggy')});
}

SKIP: {
    my $script = "$FindBin::Bin/../bin/twiggy";
    skip 'bin/twiggy is missing', 2 unless -f $script;
    my $output = qx{"$^X" -Mblib "$script" -v 2>&1};
    is($? >> 8, 0, 'twiggy -v exits with status 0');
    is($output, "Twiggy $Twiggy::VERSION\n", 'twiggy -v prints "Twiggy <version>"');
}

done_testing;
