# The command-line front ends: plackup -s Twiggy and bin/twiggy serve an app file, and in the
# development environment Plack's runner prints its "Accepting connections" line through
# server_ready.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Spec;
use File::Temp ();
use TwiggyTest;

safety_alarm(60);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my @include = -d "$root/blib" ? ("-Mblib=$root") : ("-I$root/lib");
my $dir = File::Temp->newdir('twiggy-XXXXXX', TMPDIR => 1);

my $app_file = "$dir/app.psgi";
{
    open my $fh, '>', $app_file or die $!;
    print {$fh} <<'APP';
my $app = sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ], ["app file says $env->{PATH_INFO}"] ];
};
APP
    close $fh;
}

my ($plackup) = grep { -f $_ } map { File::Spec->catfile($_, 'plackup') } File::Spec->path;

# Start a command line (a list for exec) as a server process.
sub start_command {
    my (%args) = @_;
    my $command = $args{command};
    return start_server(
        stderr => 1,
        port   => $args{port},
        unix   => $args{unix},
        runner => sub { exec { $command->[0] } @$command or die "exec $command->[0]: $!" },
    );
}

SKIP: {
    skip 'plackup is not in PATH', 4 unless $plackup;
    my $port = empty_port();
    my $server = start_command(port => $port,
        command => [ $^X, @include, $plackup, '-s', 'Twiggy', '--host', '127.0.0.1', '--port', $port, $app_file ]);
    my $res = simple_request($port, request_bytes(GET => '/via-plackup'));
    response_is($res, 200, 'app file says /via-plackup', 'plackup -s Twiggy');
    ok(wait_until(sub { ($server->stderr // '') =~ m{Twiggy: Accepting connections at http://127\.0\.0\.1:$port/} }, 5),
        'plackup reports "Twiggy: Accepting connections at http://127.0.0.1:<port>/"')
        or diag($server->stderr);
    $server->stop;
}

{
    my $port = empty_port();
    my $server = start_command(port => $port,
        command => [ $^X, @include, "$root/bin/twiggy", '--listen', "127.0.0.1:$port", $app_file ]);
    my $client = client($port);
    $client->send(request_bytes(GET => '/via-twiggy'));
    response_is($client->read_response, 200, 'app file says /via-twiggy', 'bin/twiggy --listen host:port');
    $client->send(request_bytes(GET => '/again'));
    response_is($client->read_response, 200, 'app file says /again', 'keep-alive through bin/twiggy');
    $server->stop;
}

{
    my $path = "$dir/app.sock";
    my $server = start_command(unix => $path,
        command => [ $^X, @include, "$root/bin/twiggy", '--listen', $path, $app_file ]);
    my $client = client(path => $path);
    $client->send(request_bytes(GET => '/via-unix'));
    response_is($client->read_response, 200, 'app file says /via-unix', 'bin/twiggy --listen /path/to/socket');
    $server->stop;
}

{
    my $port = empty_port();
    my $server = start_command(port => $port,
        command => [ $^X, @include, '-MPlack::Runner', '-e', 'Plack::Runner->run(@ARGV)', '--',
            '-s', 'Twiggy', '-E', 'deployment', '--listen', "127.0.0.1:$port", $app_file ]);
    response_is(simple_request($port, request_bytes(GET => '/via-runner')), 200,
        'app file says /via-runner', 'Plack::Runner with -s Twiggy');
    $server->stop;
}

done_testing;
