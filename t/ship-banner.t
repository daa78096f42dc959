# The start-up banner, "Twiggy: Accepting connections at http://127.0.0.1:PORT/", on standard
# error: printed once, and only when the socket accepts (a script may wait for the line and
# connect at once), by plackup -s Twiggy and by twiggy, in one process and with --workers.
# In the development environment Plack::Runner prints it from server_ready; in the deployment
# environment (twiggy's default) Plack::Handler::Twiggy does.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Spec;
use File::Temp ();
use IO::Socket::INET;
use Time::HiRes ();
use TwiggyTest qw(:DEFAULT start_command perl_command);

safety_alarm(90);

my $dir = File::Temp->newdir('twiggy-banner-XXXXXX', TMPDIR => 1);
my $app = "$dir/app.psgi";
{
    open my $fh, '>', $app or die "$app: $!";
    print {$fh} "sub { [ 200, [ 'Content-Type' => 'text/plain' ], ['banner test'] ] };\n";
    close $fh or die "$app: $!";
}

my @cases = (
    [ 'plackup -s Twiggy',             'plackup',    [ '-s', 'Twiggy', '--host', '127.0.0.1', '--port', 'PORT' ] ],
    [ 'plackup -s Twiggy --workers 2', 'plackup',    [ '-s', 'Twiggy', '--workers', 2, '--host', '127.0.0.1', '--port', 'PORT' ] ],
    [ 'twiggy -E development',         'bin/twiggy', [ '-E', 'development', '--listen', '127.0.0.1:PORT' ] ],
    [ 'twiggy',                        'bin/twiggy', [ '--listen', '127.0.0.1:PORT' ], 'deployment' ],
    [ 'twiggy --workers 2',            'bin/twiggy', [ '--workers', 2, '--listen', '127.0.0.1:PORT' ], 'deployment' ],
);

sub accepts {
    my ($port) = @_;
    my $socket = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or return 0;
    close $socket;
    return 1;
}

for my $case (@cases) {
    my ($name, $script, $arguments) = @$case;
    subtest $name => sub {
        my $port = empty_port();
        my $command = perl_command($script, (map { s/PORT/$port/r } @$arguments), $app);
        plan skip_all => "$script is not in PATH" unless $command;
        local $ENV{PLACK_ENV};    # the runner decides
        my $server = start_command(command => $command, port => $port, no_wait => 1);
        my $banner = "Twiggy: Accepting connections at http://127.0.0.1:$port/\n";
        # Wait for the banner; once the socket accepts, a banner still missing a second later
        # will not come.
        my $accepting_since;
        my $seen;
        wait_until(sub {
            return $seen = 1 if index($server->stderr // '', $banner) >= 0;
            $accepting_since //= Time::HiRes::time() if accepts($port);
            return defined $accepting_since && Time::HiRes::time() - $accepting_since > scaled(1);
        }, 15);
        {
            ok($seen, 'prints the banner') or diag($server->stderr);
            if ($seen) {
                response_is(simple_request($port, request_bytes(GET => '/')), 200, 'banner test',
                    'the socket accepts as soon as the banner is out');
            }
            # Workers must not repeat it; give them a moment to come up.
            Time::HiRes::sleep(0.3) if $seen && $name =~ /workers/;
            my $count = () = ($server->stderr // '') =~ /\Q$banner\E/g;
            is($count, 1, 'exactly once');
        }
        $server->stop;
    };
}

done_testing;
