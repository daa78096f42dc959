# RFC 9112 section 4 (status line) and RFC 9110 section 6.6.1 (Date): an HTTP/1.1 request gets
# "HTTP/1.1 <code> <reason>" and exactly one Date header in IMF-fixdate form.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::Local ();
use TwiggyTest;

safety_alarm(60);

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path =~ m{\A/status/(\d+)\z}) {
        return [ $1, [ 'Content-Type' => 'text/plain' ], ["status $1"] ];
    }
    if ($path eq '/own-date') {
        return [ 200, [ 'Content-Type' => 'text/plain', 'Date' => 'Tue, 15 Nov 1994 08:12:31 GMT' ], ['own date'] ];
    }
    if ($path eq '/stream') {
        return sub {
            my $writer = shift->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
            $writer->write('streamed');
            $writer->close;
        };
    }
    if ($path eq '/headers') {
        return [ 200, [ 'Content-Type' => 'text/plain', 'X-Custom' => 'value 1', 'Set-Cookie' => 'a=1',
            'Set-Cookie' => 'b=2' ], ['headers'] ];
    }
    return [ 200, [ 'Content-Type' => 'text/plain' ], ['ok'] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

# RFC 9110 section 5.6.7: IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT
my @MONTHS = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
my $MONTH = join '|', @MONTHS;
my $IMF_FIXDATE = qr/\A(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ($MONTH) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT\z/;

sub imf_fixdate_to_epoch {
    my ($date) = @_;
    my ($day, $month_name, $year, $hour, $minute, $second) = $date =~ $IMF_FIXDATE or return undef;
    my ($month) = grep { $MONTHS[$_] eq $month_name } 0 .. 11;
    return eval { Time::Local::timegm($second, $minute, $hour, $day, $month, $year) };
}

sub check_date {
    my ($res, $name) = @_;
    is($res->header_count('Date'), 1, "$name: exactly one Date header");
    my $date = $res->header('Date') // '';
    like($date, $IMF_FIXDATE, "$name: Date is an IMF-fixdate");
    my $epoch = imf_fixdate_to_epoch($date);
    ok(defined $epoch && abs($epoch - time) < 3600, "$name: Date is the current time")
        or diag("Date: $date");
}

my @status_lines = (
    [ '/',            'HTTP/1.1 200 OK' ],
    [ '/status/201',  'HTTP/1.1 201 Created' ],
    [ '/status/302',  'HTTP/1.1 302 Found' ],
    [ '/status/404',  'HTTP/1.1 404 Not Found' ],
    [ '/status/500',  'HTTP/1.1 500 Internal Server Error' ],
    [ '/status/503',  'HTTP/1.1 503 Service Unavailable' ],
);

for my $case (@status_lines) {
    my ($path, $line) = @$case;
    my $res = simple_request($port, request_bytes(GET => $path));
    ok($res->ok, "$path: complete response") or diag($res->describe);
    is($res->{status_line}, $line, "$path: status line");
    check_date($res, $path);
}

subtest 'status code without a registered reason phrase' => sub {
    my $res = simple_request($port, request_bytes(GET => '/status/599'));
    ok($res->ok, 'complete response') or diag($res->describe);
    like($res->{status_line}, qr{\AHTTP/1\.1 599 [^\r\n]*\z}, 'HTTP/1.1 599 with an optional reason');
};

subtest 'every response on a persistent connection' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/') . request_bytes(GET => '/stream') . request_bytes(GET => '/status/404'));
    for my $name ('array', 'streamed', '404') {
        my $res = $client->read_response;
        ok($res->ok, "$name: complete") or diag($res->describe);
        like($res->{status_line}, qr{\AHTTP/1\.1 }, "$name: HTTP/1.1 status line");
        check_date($res, $name);
    }
};

subtest 'app-provided Date is not duplicated' => sub {
    my $res = simple_request($port, request_bytes(GET => '/own-date'));
    response_is($res, 200, 'own date', 'response');
    is($res->header_count('Date'), 1, 'exactly one Date header');
};

subtest 'app headers are passed through, repeated ones kept separate and in order' => sub {
    my $res = simple_request($port, request_bytes(GET => '/headers'));
    response_is($res, 200, 'headers', 'response');
    is($res->header('X-Custom'), 'value 1', 'X-Custom');
    is_deeply([ $res->header('Set-Cookie') ], [ 'a=1', 'b=2' ], 'two Set-Cookie lines, in order');
    is($res->header('Content-Type'), 'text/plain', 'Content-Type');
};

subtest 'automatic 400 has a proper status line' => sub {
    my $res = simple_request($port, request_bytes(GET => '/', 'HTTP/1.1', ['-host']));
    is($res->{status_line}, 'HTTP/1.1 400 Bad Request', 'HTTP/1.1 400 Bad Request') or diag($res->describe);
};

subtest 'HTTP/1.0 request' => sub {
    my $res = simple_request($port, request_bytes(GET => '/status/404', 'HTTP/1.0'));
    ok($res->ok, 'complete response') or diag($res->describe);
    like($res->{status_line}, qr{\AHTTP/1\.[01] 404 Not Found\z}, 'status line with reason');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
