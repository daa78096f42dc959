# The master's listeners: several at once (IPv4, IPv6 [::1], a UNIX socket with socket_mode),
# server_ready called once per listener in the master, SO_REUSEPORT giving each worker slot a
# socket of its own (following TTIN and TTOU), and --user/--group (when run as root).
use strict;
use warnings;
use FindBin;
use POSIX ();
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp ();
use IO::Socket::IP;
use TwiggyTest;
use TwiggyTest qw(child_pids write_file);

safety_alarm(60);

my $dir = File::Temp->newdir('twiggy-prefork-XXXXXX', TMPDIR => 1);

my $app = sub {
    my $env = shift;
    return [ 200, [ 'Content-Type' => 'text/plain' ],
        [ "pid=$$ uid=$< euid=$> gid=" . ($( + 0) . " egid=" . ($) + 0) . " port=$env->{SERVER_PORT} name=$env->{SERVER_NAME}" ] ];
};

my $have_ipv6 = IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0, Listen => 1) ? 1 : 0;

# One request over IPv6 (the test client only speaks IPv4).
sub ask_ipv6 {
    my ($port) = @_;
    my $sock = IO::Socket::IP->new(PeerHost => '::1', PeerPort => $port, Timeout => scaled(3)) or return '';
    print {$sock} "GET / HTTP/1.0\r\n\r\n";
    local $/;
    my $text = <$sock> // '';
    return $text =~ /\AHTTP\/1\.[01] 200 .*?\r\n\r\n(.*)\z/s ? $1 : '';
}

# How many TCP sockets listen on 127.0.0.1:$port (SO_REUSEPORT gives one per worker slot).
sub listening_sockets {
    my ($port) = @_;
    open my $fh, '<', '/proc/net/tcp' or return undef;
    my $hex = sprintf ':%04X', $port;
    return scalar grep { (split ' ')[1] eq "0100007F$hex" && (split ' ')[3] eq '0A' } <$fh>;
}

subtest 'IPv4, IPv6 and a UNIX socket at once' => sub {
    my $port4 = empty_port();
    my $port6 = $have_ipv6 ? empty_port() : undef;
    my $path = "$dir/app.sock";
    my $ready_log = "$dir/ready";
    my $server = start_server(
        app          => $app,
        class        => 'Twiggy::Prefork::Server',
        port         => $port4,
        listen       => [ "127.0.0.1:$port4", ($have_ipv6 ? "[::1]:$port6" : ()), $path ],
        socket_mode  => '0660',
        max_workers  => 2,
        server_ready => sub {
            my ($info) = @_;
            open my $fh, '>>', $ready_log or die $!;
            print {$fh} "$$ $info->{host} $info->{port}\n";
        },
    );
    my $res = simple_request($port4, request_bytes(GET => '/'));
    response_is($res, 200, undef, 'IPv4');
    like($res->body, qr/port=$port4 name=127\.0\.0\.1\z/, 'SERVER_NAME and SERVER_PORT of the IPv4 listener');
    SKIP: {
        skip 'no IPv6 on this machine', 1 unless $have_ipv6;
        like(ask_ipv6($port6), qr/\Apid=\d+ .* port=$port6 name=::1\z/, 'IPv6 [::1]');
    }
    my $unix = client(path => $path);
    $unix->send(request_bytes(GET => '/'));
    response_is($unix->read_response, 200, undef, 'the UNIX socket');
    is((stat $path)[2] & 07777, 0660, 'the socket file has mode 0660');

    open my $fh, '<', $ready_log or die $!;
    my @ready = <$fh>;
    is(scalar @ready, $have_ipv6 ? 3 : 2, 'server_ready was called once per listener');
    ok(!grep({ !/\A${\ $server->pid } / } @ready), 'in the master');
    is($server->stop, 0, 'the master exits with status 0');
};

subtest 'reuse_port: a socket per worker slot' => sub {
    my $server = start_server(app => $app, class => 'Twiggy::Prefork::Server', max_workers => 3, reuse_port => 1,
        stderr => 1);
    my $port = $server->port;
    ok(wait_until(sub { child_pids($server->pid) == 3 }), 'three workers');
    is(listening_sockets($port), 3, 'three sockets listen on the port');
    my %answered;
    $answered{ simple_request($port, request_bytes(GET => '/'))->body =~ s/ .*//r }++ for 1 .. 90;
    is(scalar(keys %answered), 3, 'every worker answers some of 90 connections') or diag(join ' ', %answered);

    ok($server->signal('TTIN'), 'TTIN');
    ok(wait_until(sub { child_pids($server->pid) == 4 && listening_sockets($port) == 4 }), 'a fourth worker, with a fourth socket');
    ok($server->signal('TTOU'), 'TTOU');
    ok(wait_until(sub { child_pids($server->pid) == 3 && listening_sockets($port) == 3 }), 'back to three of each');
    my $failed = grep { !simple_request($port, request_bytes(GET => '/'))->ok } 1 .. 40;
    is($failed, 0, 'no connection lands on a socket nobody serves');
    is($server->stop, 0, 'the master exits with status 0') or diag($server->stderr);
};

SKIP: {
    skip 'changing the user needs root', 1 unless $> == 0;
    my ($uid, $gid) = (getpwnam 'nobody')[ 2, 3 ];
    my $group_gid = getgrnam('nogroup') // $gid;
    skip 'no user "nobody"', 1 unless defined $uid;
    # After dropping to nobody the worker still loads modules (from blib and the test's own
    # directories); under cpanm those sit in /root, which nobody cannot read.
    skip 'user "nobody" cannot read the build directory', 1 unless readable_as($uid, $gid, 'blib/lib', $FindBin::Bin);
    subtest 'user and group' => sub {
        my $path = "$dir/nobody.sock";
        my $port = empty_port();
        my $server = start_server(app => $app, class => 'Twiggy::Prefork::Server', max_workers => 1,
            listen => [ "127.0.0.1:$port", $path ], port => $port, user => 'nobody', group => $group_gid,
            pid => "$dir/nobody.pid");
        like(simple_request($port, request_bytes(GET => '/'))->body,
            qr/\Apid=\d+ uid=$uid euid=$uid gid=$group_gid egid=$group_gid /, 'the worker runs as nobody');
        open my $status, '<', '/proc/' . $server->pid . '/status' or die $!;
        my ($uids) = map { /\AUid:\s+(.*)/ ? $1 : () } <$status>;
        is($uids, join("\t", ($uid) x 4), 'and so does the master (real, effective, saved)');
        is($server->stop, 0, 'the master exits with status 0');
    };
}

# Whether a process running as $uid:$gid can read every one of @paths.
sub readable_as {
    my ($user, $group, @paths) = @_;
    my $pid = fork;
    return 0 unless defined $pid;
    if ($pid == 0) {
        $) = "$group $group";
        $( = $group;
        $> = $< = $user;
        POSIX::_exit((grep { !-r $_ || !-x $_ } @paths) ? 1 : 0);
    }
    waitpid $pid, 0;
    return $? == 0;
}

done_testing;
