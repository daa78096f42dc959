# When the app fails: a die or an invalid PSGI response before anything was sent becomes a 500
# plus a message on psgi.errors (STDERR), and the server keeps serving. Once the response head
# has been sent, a failure cuts the connection without a proper end (for chunked: no 0-size
# chunk), so the client can tell the body is incomplete.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

{
    package Local::DyingBody;
    # getline returns big pieces, then dies: the response head is long sent by then.
    sub new { my ($class, $pieces) = @_; return bless { left => $pieces }, $class }
    sub getline {
        my ($self) = @_;
        die "getline-die-marker\n" if $self->{left}-- <= 0;
        return 'x' x 65536;
    }
    sub close { return }
}

my %apps = (
    '/die'          => sub { die "plain-die-marker\n" },
    '/die-object'   => sub { die { code => 42 } },
    '/string'       => sub { return 'just a string' },
    '/hash'         => sub { return { status => 200 } },
    '/short'        => sub { return [200] },
    '/bad-status'   => sub { return [ 'abc', [], [] ] },
    '/undef'        => sub { return undef },
    '/headers-hash' => sub { return [ 200, {}, ['x'] ] },
    '/body-string'  => sub { return [ 200, [], 'body as a plain string' ] },
    '/delayed-die'  => sub { return sub { die "delayed-die-marker\n" } },
    '/writer-die'   => sub {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('partial');
            die "writer-die-marker\n";
        };
    },
    '/writer-die-length' => sub {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain', 'Content-Length' => 100 ] ]);
            $writer->write('partial');
            die "writer-die-length-marker\n";
        };
    },
    '/getline-die'  => sub { return [ 200, [ 'Content-Type' => 'text/plain' ], Local::DyingBody->new(16) ] },
    '/ok'           => sub { return [ 200, [ 'Content-Type' => 'text/plain' ], ['ok'] ] },
);

my $app = sub {
    my $env = shift;
    my $handler = $apps{ $env->{PATH_INFO} } or return [ 404, [], ['not found'] ];
    return $handler->($env);
};

my $server = start_server(app => $app, stderr => 1);
my $port = $server->port;

sub still_serving {
    my ($name) = @_;
    my $res = simple_request($port, request_bytes(GET => '/ok'));
    response_is($res, 200, 'ok', "server still serves after $name");
}

my @before_head = (
    [ '/die',          'plain-die-marker' ],
    [ '/die-object',   undef ],
    [ '/string',       undef ],
    [ '/hash',         undef ],
    [ '/short',        undef ],
    [ '/bad-status',   undef ],
    [ '/undef',        undef ],
    [ '/headers-hash', undef ],
    [ '/body-string',  undef ],
    [ '/delayed-die',  'delayed-die-marker' ],
);

for my $case (@before_head) {
    my ($path, $marker) = @$case;
    subtest "500 for $path" => sub {
        return fail('server is not running any more') unless $server->is_running;
        my $log_before = length($server->stderr // '');
        my $res = simple_request($port, request_bytes(GET => $path));
        ok($res->ok, 'complete response') or diag($res->describe);
        is($res->status, 500, 'status 500');
        ok(wait_until(sub { length($server->stderr // '') > $log_before }, 5), 'a message on STDERR');
        if ($marker) {
            like(substr($server->stderr, $log_before), qr/\Q$marker\E/, 'the message includes the error');
        }
        still_serving($path);
    };
}

subtest 'writer: die after the head was sent cuts the chunked body' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/writer-die'));
    my $res = $client->read_response;
    is($res->status, 200, 'head with status 200 was sent') or diag($res->describe);
    is($res->framing, 'chunked', 'chunked');
    ok(!$res->{complete} && !$res->{terminated}, 'no terminating 0-size chunk');
    ok($client->eof, 'connection closed');
    like($res->body // '', qr/\A(?:partial)?\z/, 'only the data written before the die');
    still_serving('/writer-die');
};

subtest 'writer: die after the head was sent cuts a Content-Length body' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/writer-die-length'));
    my $res = $client->read_response;
    is($res->status, 200, 'head with status 200 was sent') or diag($res->describe);
    is($res->framing, 'length', 'framed by Content-Length');
    ok(!$res->{complete}, 'fewer bytes than Content-Length');
    ok($client->eof, 'connection closed');
    still_serving('/writer-die-length');
};

subtest 'getline dies after the body started' => sub {
    my $client = client(port => $port, timeout => 10);
    $client->send(request_bytes(GET => '/getline-die'));
    my $res = $client->read_response;
    is($res->status, 200, 'head with status 200 was sent') or diag($res->describe);
    is($res->framing, 'chunked', 'chunked');
    ok(!$res->{complete} && !$res->{terminated}, 'no terminating 0-size chunk');
    ok($client->eof, 'connection closed');
    ok(length($res->body // '') <= 16 * 65536, 'no more than the data returned before the die');
    ok(wait_until(sub { ($server->stderr // '') =~ /getline-die-marker/ }, 5), 'the error is logged');
    still_serving('/getline-die');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
