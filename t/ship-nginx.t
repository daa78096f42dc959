# Twiggy behind nginx, as DEPLOYMENT in Twiggy's manual describes it: two Twiggy instances in
# one nginx upstream, with keep-alive connections from nginx to them (proxy_http_version 1.1,
# an empty Connection header, `keepalive` in the upstream block). Checks that requests are
# spread over both instances and reuse the upstream connections, that a streaming response
# reaches the client while it is being written, that large uploads (a few MB, with a length
# and chunked) and a large download arrive intact, and that Plack::Middleware::ReverseProxy
# restores REMOTE_ADDR from the X-Forwarded-For header nginx sends.
#
# nginx runs as this user, in the foreground and as a single process, from a configuration
# in a temporary directory that also holds its pid file, logs and temporary files; it listens
# on 127.0.0.1 only and is stopped by its pid. Skipped when nginx is not installed (Debian:
# nginx).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use AnyEvent;
use Digest::MD5 ();
use File::Spec;
use File::Temp ();
use JSON::PP ();
use Plack::Builder;
use Time::HiRes ();
use TwiggyTest qw(:DEFAULT start_command);

my ($nginx) = grep { -x $_ }
    map { File::Spec->catfile($_, 'nginx') } File::Spec->path, qw(/usr/sbin /usr/local/sbin /usr/local/nginx/sbin);
plan skip_all => 'nginx is not installed (Debian: nginx)' unless $nginx;

safety_alarm(90);

my $have_reverse_proxy = eval { require Plack::Middleware::ReverseProxy; 1 };
my $json = JSON::PP->new->utf8->canonical;

# The app each instance serves: who am I, who is calling, and a few workloads.
sub instance_app {
    my ($name) = @_;
    my $inner = sub {
        my $env = shift;
        my $path = $env->{PATH_INFO};
        if ($path eq '/whoami') {
            return [ 200, [ 'Content-Type' => 'application/json' ], [ $json->encode({
                instance    => $name,
                remote_addr => $env->{REMOTE_ADDR},
                remote_port => $env->{REMOTE_PORT},
                protocol    => $env->{SERVER_PROTOCOL},
                connection  => $env->{HTTP_CONNECTION},
                forwarded   => $env->{HTTP_X_FORWARDED_FOR},
                scheme      => $env->{'psgi.url_scheme'},
            }) ] ];
        }
        if ($path eq '/upload') {
            my $digest = Digest::MD5->new;
            my $length = 0;
            while ((my $read = $env->{'psgi.input'}->read(my $chunk, 65536)) > 0) {
                $digest->add($chunk);
                $length += $read;
            }
            return [ 200, [ 'Content-Type' => 'application/json' ],
                [ $json->encode({ length => $length, md5 => $digest->hexdigest, instance => $name }) ] ];
        }
        if ($path eq '/download') {
            my $body = join '', map { sprintf "%07d %s\n", $_, 'x' x 55 } 1 .. 80_000;    # 64-byte lines, 5 MB
            return [ 200, [ 'Content-Type' => 'text/plain', 'Content-MD5-Hex' => Digest::MD5::md5_hex($body) ], [$body] ];
        }
        if ($path eq '/stream') {
            return sub {
                my $responder = shift;
                # X-Accel-Buffering: no tells nginx to pass this response on as it comes.
                my $writer = $responder->([ 200, [ 'Content-Type' => 'text/plain', 'X-Accel-Buffering' => 'no' ] ]);
                my $tick = 0;
                my $timer;
                $timer = AE::timer 0, 0.3, sub {
                    $writer->write('tick ' . ++$tick . " at " . Time::HiRes::time() . "\n");
                    return if $tick < 4;
                    undef $timer;
                    $writer->close;
                };
            };
        }
        return [ 404, [ 'Content-Type' => 'text/plain' ], ["not found\n"] ];
    };
    return builder {
        mount '/raw'  => $inner;
        mount '/real' => builder {
            enable 'ReverseProxy' if $have_reverse_proxy;
            $inner;
        };
    };
}

my @instances = map { start_server(app => instance_app($_)) } qw(first second);
my $nginx_port = empty_port();

my $dir = File::Temp->newdir('twiggy-nginx-XXXXXX', TMPDIR => 1);
my $user = getpwuid($>);
my $group = getgrgid((split ' ', $))[0]);
my $upstream_servers = join '', map { "        server 127.0.0.1:" . $_->port . ";\n" } @instances;
# Running as root, nginx would switch to an unprivileged user; keep it as ourselves instead.
my $user_line = $> == 0 ? "user $user $group;" : '';
write_config("$dir/nginx.conf", <<"CONF");
# A test configuration: in the foreground, one process, everything under $dir.
$user_line
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 256; }

http {
    access_log $dir/access.log;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    default_type application/octet-stream;

    upstream twiggy {
$upstream_servers        keepalive 8;             # idle connections kept open to the instances
        keepalive_timeout 20s;   # below Twiggy's keepalive_timeout (30 s)
    }

    server {
        listen 127.0.0.1:$nginx_port;
        client_max_body_size 16m;

        # Only for this test: nginx takes the client's X-Forwarded-For as the client's address
        # (as behind a CDN or load balancer), so the client has an address other than
        # 127.0.0.1 to restore.
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;

        location / {
            proxy_pass http://twiggy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
CONF

my $proxy = start_command(
    command => [ $nginx, '-p', "$dir/", '-c', "$dir/nginx.conf", '-e', "$dir/error.log" ],
    port    => $nginx_port,
);
# The safety alarm kills servers with KILL; stop nginx first so nothing of it outlives us.
my $safety = $SIG{ALRM};
$SIG{ALRM} = sub { $proxy->stop; $safety->() };

sub write_config {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print {$fh} $text;
    close $fh or die "$path: $!";
    return;
}

sub nginx_log {
    open my $fh, '<', "$dir/error.log" or return '';
    local $/;
    my $log = <$fh>;
    return join "\n", grep { /\[(?:error|crit|alert|emerg)\]/ } split /\n/, $log // '';
}

sub json_of {
    my ($res) = @_;
    return eval { $json->decode($res->body // '') } || {};
}

subtest 'requests are spread over both instances, on kept-alive upstream connections' => sub {
    my $client = client($nginx_port);
    my (%ports, %served);
    for (1 .. 8) {
        $client->send(request_bytes(GET => '/raw/whoami'));
        my $res = $client->read_response;
        response_is($res, 200, undef, "request $_");
        my $who = json_of($res);
        $served{ $who->{instance} // '?' }++;
        $ports{ $who->{instance} // '?' }{ $who->{remote_port} // '?' }++;
        is($who->{protocol}, 'HTTP/1.1', 'nginx speaks HTTP/1.1 to Twiggy') if $_ == 1;
        is($who->{connection}, undef, 'with no Connection: close') if $_ == 1;
    }
    is_deeply([ sort keys %served ], [qw(first second)], 'both instances served requests')
        or diag(explain(\%served));
    for my $name (sort keys %ports) {
        my $connections = keys %{ $ports{$name} };
        cmp_ok($connections, '<', $served{$name}, "$name: $served{$name} requests on $connections connection(s)");
    }
};

subtest 'a streaming response arrives while it is written' => sub {
    my $client = client($nginx_port);
    my $started = Time::HiRes::time();
    $client->send(request_bytes(GET => '/raw/stream'));
    ok($client->wait_for('tick 1 ', 3), 'the first tick arrives');
    my $first = Time::HiRes::time() - $started;
    my $res = $client->read_response(timeout => 5);
    my $all = Time::HiRes::time() - $started;
    response_is($res, 200, undef, 'the stream');
    my @ticks = ($res->body // '') =~ /^tick (\d+) /mg;
    is_deeply(\@ticks, [ 1 .. 4 ], 'four ticks, in order');
    cmp_ok($first, '<', 0.6, sprintf('the first tick came before the second was written (%.2f s)', $first));
    cmp_ok($all, '>=', 0.85, sprintf('the last one after 0.9 s (%.2f s)', $all));
};

subtest 'large uploads and downloads' => sub {
    my $body = join '', map { pack 'N*', map { int rand 2**32 } 1 .. 1024 } 1 .. 1024;    # 4 MiB
    my $md5 = Digest::MD5::md5_hex($body);

    my $client = client(port => $nginx_port, timeout => 20);
    $client->send(request_bytes(POST => '/raw/upload', 'HTTP/1.1',
        [ 'Content-Type: application/octet-stream', 'Content-Length: ' . length $body ], $body));
    my $res = $client->read_response(timeout => 20);
    response_is($res, 200, undef, '4 MiB with a Content-Length');
    my $got = json_of($res);
    is($got->{length}, length $body, 'every byte arrived');
    is($got->{md5}, $md5, 'unchanged');

    my $chunked = '';
    for (my $offset = 0; $offset < length $body; $offset += 300_000) {
        my $piece = substr($body, $offset, 300_000);
        $chunked .= sprintf("%x\r\n", length $piece) . $piece . "\r\n";
    }
    $client->send(request_bytes(POST => '/raw/upload', 'HTTP/1.1',
        [ 'Content-Type: application/octet-stream', 'Transfer-Encoding: chunked' ], "${chunked}0\r\n\r\n"));
    $res = $client->read_response(timeout => 20);
    response_is($res, 200, undef, '4 MiB chunked');
    $got = json_of($res);
    is($got->{length}, length $body, 'every byte arrived');
    is($got->{md5}, $md5, 'unchanged');

    $client->send(request_bytes(GET => '/raw/download'));
    $res = $client->read_response(timeout => 20);
    response_is($res, 200, undef, 'a 5 MB download');
    is(length($res->body // ''), 80_000 * 64, 'every byte arrived');
    is(Digest::MD5::md5_hex($res->body // ''), $res->header('Content-MD5-Hex'), 'unchanged');
};

subtest 'REMOTE_ADDR restored from X-Forwarded-For with Plack::Middleware::ReverseProxy' => sub {
    plan skip_all => 'Plack::Middleware::ReverseProxy is not installed (Debian: libplack-middleware-reverseproxy-perl)'
        unless $have_reverse_proxy;
    my $client = client($nginx_port);
    # nginx sees the client as 192.0.2.10 (set_real_ip_from above) and says so in X-Forwarded-For.
    $client->send(request_bytes(GET => '/raw/whoami', 'HTTP/1.1', ['X-Forwarded-For: 192.0.2.10']));
    my $raw = json_of($client->read_response);
    is($raw->{remote_addr}, '127.0.0.1', 'without the middleware the app sees nginx');
    like($raw->{forwarded} // '', qr/(?:\A|[ ,])192\.0\.2\.10\z/, 'nginx sent X-Forwarded-For');
    $client->send(request_bytes(GET => '/real/whoami', 'HTTP/1.1', ['X-Forwarded-For: 192.0.2.10']));
    my $real = json_of($client->read_response);
    is($real->{remote_addr}, '192.0.2.10', 'with ReverseProxy it sees the client');
    is($real->{scheme}, 'http', 'psgi.url_scheme from X-Forwarded-Proto');
};

is(nginx_log(), '', 'nginx logged no errors');
$proxy->stop;
ok(!$proxy->is_running, 'nginx stopped');
$_->stop for @instances;

done_testing;
