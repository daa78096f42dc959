# Response hygiene (issue 3, item 5; Twiggy POD, FAILURES): a header name or value from the app
# holding CR, LF or NUL (response splitting, RFC 9110 section 5.5 and RFC 9112 section 2.2), a
# header name that is not a token (RFC 9110 section 5.1), a status that is not three digits
# from 100 to 999 (RFC 9110 section 15), or a header list that is not an array of pairs is
# refused with a 500 and a message on psgi.errors; none of the app's bad bytes reach the wire.
# This holds for plain array responses (answered by the core without Perl), for values that
# need Perl to stringify them, for delayed responses and for streaming writers (whose write then
# returns false). A body whose getline or close dies cuts the connection cleanly (or, for a
# close after the whole body, still ends it properly) and the server keeps serving.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

safety_alarm(60);

{
    package Local::Stringy;
    use overload '""' => sub { $_[0]{text} }, fallback => 1;
    sub new { my ($class, $text) = @_; return bless { text => $text }, $class }
}
{
    package Local::Body;
    # An IO::Handle-like body: `lines` pieces, then undef; dies in getline after `die_after`
    # pieces, or in close, as asked.
    sub new { my ($class, %args) = @_; return bless { sent => 0, %args }, $class }
    sub getline {
        my ($self) = @_;
        die "getline-dies-marker\n" if defined $self->{die_after} && $self->{sent} >= $self->{die_after};
        return undef if $self->{sent} >= $self->{lines};
        return 'line ' . ++$self->{sent} . "\n";
    }
    sub close {
        my ($self) = @_;
        die "close-dies-marker\n" if $self->{die_in_close};
        return 1;
    }
}

# [ name, status, headers, what the log must mention ]
my @bad = (
    [ 'header value with CRLF',          200, [ 'X-Split' => "a\r\nInjected: yes" ],    qr/header value/ ],
    [ 'header value with a bare LF',     200, [ 'X-Split' => "a\nInjected: yes" ],      qr/header value/ ],
    [ 'header value with a bare CR',     200, [ 'X-Split' => "a\rInjected: yes" ],      qr/header value/ ],
    [ 'header value with NUL',           200, [ 'X-Split' => "a\0Injected" ],           qr/header value/ ],
    [ 'header value ending in CRLFCRLF', 200, [ 'X-Split' => "a\r\n\r\nInjected body" ], qr/header value/ ],
    [ 'header name with CRLF',           200, [ "X-Split\r\nInjected" => 'yes' ],       qr/header name/ ],
    [ 'header name with NUL',            200, [ "X-Split\0Injected" => 'yes' ],         qr/header name/ ],
    [ 'header name with a colon',        200, [ 'Injected: yes' => 'x' ],               qr/header name/ ],
    [ 'header name with a space',        200, [ 'Injected yes' => 'x' ],                qr/header name/ ],
    [ 'empty header name',               200, [ '' => 'Injected' ],                     qr/header name/ ],
    [ 'stringified header value with CRLF', 200,
      [ 'X-Split' => Local::Stringy->new("a\r\nInjected: yes") ], qr/header value/ ],
    [ 'stringified header name with CRLF', 200,
      [ Local::Stringy->new("X-Split\r\nInjected") => 'yes' ], qr/header name/ ],
    [ 'status 99',                       99,     [], qr/status/ ],
    [ 'status 1000',                     1000,   [], qr/status/ ],
    [ 'status 0',                        0,      [], qr/status/ ],
    [ 'status -200',                     -200,   [], qr/status/ ],
    [ "status 'abc'",                    'abc',  [], qr/status/ ],
    [ "status '20'",                     '20',   [], qr/status/ ],
    [ "status '200 OK'",                 '200 OK', [], qr/status/ ],
    [ 'status with CRLF',                "200\r\nInjected: yes", [], qr/status/ ],
    [ 'status undef',                    undef,  [], qr/status/ ],
    [ 'headers as a hash',               200, { 'X-Injected' => 'yes' }, qr/header/ ],
    [ 'headers as a string',             200, "X-Injected: yes",         qr/header/ ],
    [ 'headers undef',                   200, undef,                     qr/header/ ],
    [ 'odd number of header elements',   200, [ 'X-Injected' ],          qr/header/ ],
);

my %writes;    # streaming case => what $writer->write returned after a refused head

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path =~ m{\A/bad/(\d+)/(plain|delayed|streaming)\z}) {
        my ($index, $mode) = ($1, $2);
        my (undef, $status, $headers) = @{ $bad[$index] };
        return [ $status, $headers, ['Injected body'] ] if $mode eq 'plain';
        return sub { shift->([ $status, $headers, ['Injected body'] ]) } if $mode eq 'delayed';
        return sub {
            my $writer = shift->([ $status, $headers ]);
            my $alive = $writer ? $writer->write('Injected body') : 'no writer';
            $writes{$index} = $alive ? 'true' : 'false';
            $writer->close if $writer;
        };
    }
    if ($path =~ m{\A/good/(plain|delayed|streaming)\z}) {
        my @headers = ('X-Allowed' => "tab\there, obs-text \x80\xff, punctuation !#\$%&'*+-.^_`|~", 'X-Empty' => '');
        return [ 200, \@headers, ['fine'] ] if $1 eq 'plain';
        return sub { shift->([ 200, \@headers, ['fine'] ]) } if $1 eq 'delayed';
        return sub { my $writer = shift->([ 200, \@headers ]); $writer->write('fine'); $writer->close };
    }
    if ($path eq '/writes') {
        return [ 200, [], [ join ' ', map { "$_=$writes{$_}" } sort { $a <=> $b } keys %writes ] ];
    }
    my %bodies = (
        '/getline-dies-at-once'  => sub { Local::Body->new(lines => 3, die_after => 0) },
        '/getline-dies-later'    => sub { Local::Body->new(lines => 3, die_after => 2) },
        '/close-dies'            => sub { Local::Body->new(lines => 3, die_in_close => 1) },
        '/getline-and-close-die' => sub { Local::Body->new(lines => 3, die_after => 1, die_in_close => 1) },
    );
    if (my $make = $bodies{$path}) {
        my @length = $env->{QUERY_STRING} eq 'length' ? ('Content-Length' => 21) : ();
        return [ 200, [ 'Content-Type' => 'text/plain', @length ], $make->() ] unless $env->{QUERY_STRING} eq 'delayed';
        return sub { shift->([ 200, [ 'Content-Type' => 'text/plain' ], $make->() ]) };
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['hello'] ];
};

my $server = start_server(app => $app, stderr => 1);
my $port = $server->port;

# Sends one request that asks the server to close after it, and returns all bytes that came back
# (bounded), plus whether the connection closed.
sub exchange {
    my ($path) = @_;
    my $client = client($port);
    $client->send(request_bytes(GET => $path, 'HTTP/1.1', ['Connection: close']));
    my $bytes = $client->read_until_close(5);
    my $closed = $client->eof;
    $client->close;
    return ($bytes, $closed);
}

sub log_since {
    my ($offset) = @_;
    return substr($server->stderr // '', $offset);
}

for my $index (0 .. $#bad) {
    my ($name, undef, undef, $log_pattern) = @{ $bad[$index] };
    subtest $name => sub {
        return fail('server is not running any more') unless $server->is_running;
        for my $mode (qw(plain delayed streaming)) {
            my $log_before = length($server->stderr // '');
            my ($bytes, $closed) = exchange("/bad/$index/$mode");
            my $res = parse_response($bytes, eof => 1);
            ok($res && $res->ok && $res->status == 500, "$mode: complete 500")
                or diag('got: ' . ($res ? $res->describe : 'nothing'));
            ok($res && $res->{consumed} == length $bytes, "$mode: exactly one response, nothing else")
                or diag('got: ' . ($res ? $res->describe : 'nothing'));
            unlike($bytes, qr/Injected|\0/, "$mode: none of the app's bytes on the wire");
            ok($closed, "$mode: connection closed as asked");
            ok(wait_until(sub { log_since($log_before) =~ $log_pattern }, 5), "$mode: the problem is logged")
                or diag('log: ' . log_since($log_before));
        }
    };
}

subtest 'field values with HTAB and obs-text are not refused (RFC 9110 section 5.5)' => sub {
    for my $mode (qw(plain delayed streaming)) {
        my $res = simple_request($port, request_bytes(GET => "/good/$mode"));
        response_is($res, 200, 'fine', $mode);
        is($res->header('X-Allowed'), "tab\there, obs-text \x80\xff, punctuation !#\$%&'*+-.^_`|~",
            "$mode: value intact");
        is($res->header_count('X-Empty'), 1, "$mode: empty value kept");
    }
};

subtest 'write returns false on a writer whose head was refused' => sub {
    my $res = simple_request($port, request_bytes(GET => '/writes'));
    my %seen = map { split /=/ } split / /, ($res->body // '');
    is(scalar(keys %seen), scalar(@bad), 'every streaming case reported');
    my @true = grep { $seen{$_} ne 'false' } sort { $a <=> $b } keys %seen;
    is("@true", '', 'write returned false in every case') or diag(map { "$bad[$_][0]: $seen{$_}\n" } @true);
};

subtest 'a refused response on a kept-alive connection: the next request is still answered properly' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/bad/0/plain') . request_bytes(GET => '/hello'));
    my $first = $client->read_response;
    ok($first->ok && $first->status == 500, 'first: 500') or diag($first->describe);
    my $second = $client->read_response;
    if ($second->{complete}) {
        response_is($second, 200, 'hello', 'second, on the same connection');
    } else {
        ok($client->eof && !length($client->buffered), 'or the connection was closed cleanly after the 500')
            or diag($second->describe);
    }
};

for my $variant ('', '?length', '?delayed') {
    subtest "getline dies before any data$variant: the response is cut" => sub {
        my $log_before = length($server->stderr // '');
        my ($bytes, $closed) = exchange("/getline-dies-at-once$variant");
        my $res = parse_response($bytes, eof => 1);
        ok($closed, 'connection closed');
        ok($res && !$res->{complete}, 'the response does not look complete') or diag($res ? $res->describe : '');
        ok(!$res || !$res->status || $res->status == 200, 'no other status was sent');
        is($res ? $res->body // '' : '', '', 'no body bytes');
        ok(wait_until(sub { log_since($log_before) =~ /getline-dies-marker/ }, 5), 'the error is logged');
    };

    subtest "getline dies after two lines$variant: the response is cut after them" => sub {
        my $log_before = length($server->stderr // '');
        my ($bytes, $closed) = exchange("/getline-dies-later$variant");
        my $res = parse_response($bytes, eof => 1);
        ok($closed, 'connection closed');
        ok($res && $res->status == 200, 'the head had been sent') or diag($res ? $res->describe : 'nothing');
        ok($res && !$res->{complete} && !$res->{error}, 'the body is cut, not malformed')
            or diag($res ? $res->describe : '');
        like($res ? $res->body // '' : '', qr/\A(?:line 1\n(?:line 2\n)?)?\z/, 'only the lines before the die');
        ok(wait_until(sub { log_since($log_before) =~ /getline-dies-marker/ }, 5), 'the error is logged');
    };

    subtest "close dies after the whole body$variant: logged, response ended properly" => sub {
        my $log_before = length($server->stderr // '');
        my ($bytes, $closed) = exchange("/close-dies$variant");
        my $res = parse_response($bytes, eof => 1);
        ok($closed, 'connection closed');
        ok($res && $res->status == 200 && !$res->{error}, 'a well-formed 200')
            or diag($res ? $res->describe : 'nothing');
        if ($res && $res->{complete}) {
            is($res->body, "line 1\nline 2\nline 3\n", 'complete, with the whole body');
            is($res->{consumed}, length $bytes, 'nothing after it');
        } else {
            like($res ? $res->body // '' : '', qr/\A(?:line \d\n)*\z/, 'or cut cleanly between lines');
        }
        ok(wait_until(sub { log_since($log_before) =~ /close-dies-marker/ }, 5), 'the error is logged');
    };

    subtest "getline and close both die$variant" => sub {
        my $log_before = length($server->stderr // '');
        my ($bytes, $closed) = exchange("/getline-and-close-die$variant");
        my $res = parse_response($bytes, eof => 1);
        ok($closed, 'connection closed');
        ok($res && !$res->{complete} && !$res->{error}, 'the response is cut, not malformed')
            or diag($res ? $res->describe : '');
        my $both_logged = sub {
            my $log = log_since($log_before);
            return $log =~ /getline-dies-marker/ && $log =~ /close-dies-marker/;
        };
        ok(wait_until($both_logged, 5),
            'both errors are logged') or diag('log: ' . log_since($log_before));
    };
}

subtest 'still serving' => sub {
    my $client = client($port);
    for my $round (1 .. 3) {
        $client->send(request_bytes(GET => '/hello'));
        response_is($client->read_response, 200, 'hello', "keep-alive request $round");
    }
    ok($server->is_running, 'server process still running');
    unlike($server->stderr // '', qr/panic|Segmentation|double free|attempt to free/i, 'no crash messages');
};

$server->stop;
done_testing;
