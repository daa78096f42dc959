# Differential check of request parsing: over a corpus of valid requests (hand-picked cases
# plus seeded random ones), the env the server builds must hold exactly what
# HTTP::Parser::XS::parse_http_request (the parser of Starman and the original Twiggy) makes
# of the same bytes. Deliberate differences are kept out of the corpus and listed here:
# - absolute-form targets: we give PATH_INFO the path only (RFC 9112 3.2.2), XS the whole URI;
# - trailing whitespace in a field value: we drop it (RFC 9110 5.5), XS keeps it;
# - %00 in the path: XS truncates PATH_INFO at the NUL, we decode it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TwiggyTest;

BEGIN {
    eval { require HTTP::Parser::XS; 1 } or plan skip_all => 'HTTP::Parser::XS is not installed';
}

safety_alarm(120);

my @COMPARED = qw(REQUEST_METHOD REQUEST_URI PATH_INFO QUERY_STRING SERVER_PROTOCOL SCRIPT_NAME
    CONTENT_LENGTH CONTENT_TYPE);

# Length-prefixed "key value" pairs, so any byte survives the trip.
sub encode_env {
    my ($env) = @_;
    my @keys = sort grep { my $key = $_; $key =~ /^HTTP_/ || grep { $_ eq $key } @COMPARED } keys %$env;
    return join '', map { pack('N/a* N/a*', $_, $env->{$_}) } @keys;
}

sub decode_env {
    my ($bytes) = @_;
    my %env;
    while (length $bytes) {
        my ($key, $value) = unpack('N/a* N/a*', $bytes);
        substr($bytes, 0, 8 + length($key) + length($value), '');
        $env{$key} = $value;
    }
    return \%env;
}

my $app = sub {
    my $env = shift;
    if (my $length = $env->{CONTENT_LENGTH}) {
        $env->{'psgi.input'}->read(my $ignored, $length);
    }
    return [ 200, [ 'Content-Type' => 'application/octet-stream' ], [ encode_env($env) ] ];
};

my @cases = (
    "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "GET /a%20b/c%2Fd?x=1&y=%20#frag HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    "GET /%e3%81%82/%E3%81%82?%e3%81%82 HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /a+b? HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /?q=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET //double//slashes HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /dots/../and/./more HTTP/1.1\r\nHost: h\r\n\r\n",
    "get /lower HTTP/1.1\r\nHost: h\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /close HTTP/1.0\r\n\r\n",
    "GET /ten HTTP/1.0\r\nUser-Agent: x/1.0\r\nConnection: keep-alive\r\n\r\n",
    "POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2",
    "PUT /empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: lower\r\nCOOKIE: a=1\r\ncookie: b=2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX_Under: 1\r\nX-Under: 2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Spaces:    leading\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX-Inner:  a  b\tc\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX-Latin1: caf\xe9\r\nX-Utf8: \xe3\x81\x82\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n",
    "DELETE /resource/42?force=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /" . ('a' x 2000) . "?" . ('b=c&' x 200) . " HTTP/1.1\r\nHost: h\r\nX-Long: " . ('v' x 4000) . "\r\n\r\n",
);

# Seeded random requests from the grammar's safe alphabet.
srand(20261121);
my @path_chars  = ('a' .. 'z', 'A' .. 'Z', 0 .. 9, split //, "-._~!\$&'()*+,;=:@/");
my @query_chars = (@path_chars, '?', '%');
my @value_chars = (map { chr } 0x21 .. 0x7e, 0x80 .. 0xff);
my @methods     = qw(GET POST PUT DELETE PATCH OPTIONS PROPFIND X-CUSTOM);
sub pick { $_[ rand @_ ] }

sub random_escape { sprintf '%%%02X', pick(1 .. 255) }

for (1 .. 250) {
    my $path = '/' . join '', map { rand() < 0.1 ? random_escape() : pick(@path_chars) } 1 .. int(rand 30);
    my $query = rand() < 0.5 ? '?' . join('', map { rand() < 0.1 ? random_escape() : pick(@path_chars) } 1 .. int(rand 30)) : '';
    my $version = rand() < 0.8 ? '1.1' : '1.0';
    my @headers = $version eq '1.1' ? ('Host: h' . int(rand 100)) : ();
    for (1 .. int(rand 8)) {
        my $name  = pick('X-Test', 'Accept', 'X-' . join('', map { pick('a' .. 'z', '-', '_') } 1 .. 5), 'Referer');
        my $value = join '', map { rand() < 0.1 ? ' ' : pick(@value_chars) } 1 .. int(rand 40);
        $value =~ s/^\s+|\s+$//g;
        push @headers, "$name: $value";
    }
    my $method = pick(@methods);
    push @cases, "$method $path$query HTTP/$version\r\n" . join('', map {"$_\r\n"} @headers) . "\r\n";
}

my $server = start_server(app => $app);
my $client = client($server->port);
my $compared = 0;
for my $request (@cases) {
    my %expected;
    my $length = HTTP::Parser::XS::parse_http_request($request, \%expected);
    (my $shown = substr($request, 0, 120)) =~ s/\r\n/\\r\\n/g;
    if ($length < 0) {
        fail("HTTP::Parser::XS refused a request of the corpus: $shown");
        next;
    }
    $client = client($server->port) if !$client->connected || $client->eof;
    $client->send($request);
    my $response = $client->read_response;
    unless ($response->ok && $response->status == 200) {
        fail("the server answered the request: $shown") or diag($response->describe);
        $client = client($server->port);
        next;
    }
    my $got = decode_env($response->body);
    delete $expected{$_} for grep { !/^HTTP_/ && !do { my $k = $_; grep { $_ eq $k } @COMPARED } } keys %expected;
    $compared++;
    is_deeply($got, \%expected, "env matches HTTP::Parser::XS: $shown") or diag(explain({ got => $got, expected => \%expected }));
    $client = client($server->port) if $request =~ /HTTP\/1\.0\r\n/ && $request !~ /keep-alive/i;
}
cmp_ok($compared, '>=', 250, "compared $compared requests");

$server->stop;
done_testing;
