# Plack middleware that is commonly stacked on Twiggy works through the server, with the
# response kinds Twiggy serves (array, filehandle, delayed, streaming writer):
#   * Deflater (Plack::Middleware::Deflater): gzip and deflate over a streaming writer whose
#     filter returns empty strings mid-stream (which must not end the chunked body), over a
#     getline body, and over an array; identity when the client does not ask.
#   * ConditionalGET: 304 without a body for If-None-Match and If-Modified-Since, on
#     a keep-alive connection that goes on working (RFC 9110 section 15.4.5, RFC 9112 6.3).
#   * ContentLength: a filehandle body gets a Content-Length and goes out length-delimited
#     instead of chunked.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use AnyEvent;
use Compress::Zlib ();
use File::Temp ();
use IO::Uncompress::Gunzip ();
use Plack::Builder;
use TwiggyTest;

safety_alarm(60);

my $have_deflater = eval { require Plack::Middleware::Deflater; 1 };

# A text that compresses, in pieces a streaming app writes one by one.
my @pieces = map { "line $_: " . ('twiggy ' x ($_ % 7 + 1)) . "\n" } 1 .. 2000;
my $text = join '', @pieces;
my $last_modified = 'Tue, 14 Nov 2023 22:13:20 GMT';

my $file = File::Temp->new;
print {$file} $text;
close $file;

sub open_file {
    open my $fh, '<', $file->filename or die "$file: $!";
    return $fh;
}

my $stream_app = sub {
    my $env = shift;
    return sub {
        my $responder = shift;
        my $writer = $responder->([ 200, [ 'Content-Type' => 'text/plain' ] ]);
        my @left = @pieces;
        my $timer;
        $timer = AE::timer 0, 0.001, sub {
            $writer->write(join '', splice @left, 0, 100);
            return if @left;
            undef $timer;
            $writer->close;
        };
    };
};

my $app = builder {
    mount '/deflate' => builder {
        enable 'Deflater', content_type => [ 'text/plain', 'text/html' ] if $have_deflater;
        mount '/stream' => $stream_app;
        mount '/handle' => sub { [ 200, [ 'Content-Type' => 'text/plain' ], open_file() ] };
        mount '/array'  => sub { [ 200, [ 'Content-Type' => 'text/plain' ], [@pieces] ] };
        mount '/image'  => sub { [ 200, [ 'Content-Type' => 'image/png' ], ['not compressed'] ] };
    };
    mount '/conditional' => builder {
        enable 'ConditionalGET';
        mount '/etag' => sub { [ 200, [ 'Content-Type' => 'text/plain', 'ETag' => '"same-1"' ], ['the same bytes'] ] };
        mount '/date' => sub {
            [ 200, [ 'Content-Type' => 'text/plain', 'Last-Modified' => $last_modified ], ['the same bytes'] ];
        };
        mount '/delayed' => sub {
            my $env = shift;
            return sub {
                my $responder = shift;
                my $timer; $timer = AE::timer 0.01, 0, sub {
                    undef $timer;
                    $responder->([ 200, [ 'Content-Type' => 'text/plain', 'ETag' => '"v1"' ], ['delayed'] ]);
                };
            };
        };
    };
    mount '/length' => builder {
        enable 'ContentLength';
        mount '/handle' => sub { [ 200, [ 'Content-Type' => 'text/plain' ], open_file() ] };
    };
    mount '/plain-handle' => sub { [ 200, [ 'Content-Type' => 'text/plain' ], open_file() ] };
};

my $server = start_server(app => $app);
my $port = $server->port;

sub decode_body {
    my ($res) = @_;
    my $encoding = $res->header('Content-Encoding') // 'identity';
    my $body = $res->body // '';
    return $body if $encoding eq 'identity';
    if ($encoding eq 'gzip') {
        my $out;
        IO::Uncompress::Gunzip::gunzip(\$body => \$out) or return "[gunzip failed: $IO::Uncompress::Gunzip::GunzipError]";
        return $out;
    }
    return Compress::Zlib::uncompress($body) // '[inflate failed]' if $encoding eq 'deflate';
    return "[unknown encoding $encoding]";
}

SKIP: {
    skip 'Plack::Middleware::Deflater is not installed (Debian: libplack-middleware-deflater-perl)', 4
        unless $have_deflater;

    for my $kind (qw(stream handle array)) {
        subtest "Deflater: $kind body" => sub {
            my $client = client($port);
            for my $encoding (qw(gzip deflate)) {
                $client->send(request_bytes(GET => "/deflate/$kind", 'HTTP/1.1', ["Accept-Encoding: $encoding"]));
                my $res = $client->read_response(timeout => 10);
                response_is($res, 200, undef, $encoding);
                is($res->header('Content-Encoding'), $encoding, "Content-Encoding: $encoding");
                like($res->header('Vary') // '', qr/Accept-Encoding/, 'Vary: Accept-Encoding');
                if ($kind eq 'array') {
                    is($res->framing, 'length', 'an array body gets a Content-Length');
                } else {
                    is($res->framing, 'chunked', 'chunked (the length is not known in advance)');
                    ok($res->{terminated}, 'the chunked body ends with its last chunk');
                }
                cmp_ok(length($res->body // ''), '<', length($text) / 3, 'compressed');
                ok(decode_body($res) eq $text, 'decompresses to exactly what the app sent');
            }
            $client->send(request_bytes(GET => "/deflate/$kind"));
            my $res = $client->read_response(timeout => 10);
            response_is($res, 200, undef, 'no Accept-Encoding');
            ok(!defined $res->header('Content-Encoding'), 'identity');
            ok(($res->body // '') eq $text, 'the body as sent');
        };
    }

    subtest 'Deflater leaves other content types alone' => sub {
        my $res = simple_request($port, request_bytes(GET => '/deflate/image', 'HTTP/1.1', ['Accept-Encoding: gzip']));
        response_is($res, 200, 'not compressed', 'image/png');
        ok(!defined $res->header('Content-Encoding'), 'no Content-Encoding');
    };
}

subtest 'ConditionalGET' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/conditional/etag'));
    my $res = $client->read_response;
    response_is($res, 200, 'the same bytes', 'first GET');
    my $etag = $res->header('ETag');
    is($etag, '"same-1"', 'with its ETag');
    $client->send(request_bytes(GET => '/conditional/date'));
    $res = $client->read_response;
    response_is($res, 200, 'the same bytes', 'another resource');
    is($res->header('Last-Modified'), $last_modified, 'with its Last-Modified');

    for my $case ([ etag => "If-None-Match: $etag" ], [ date => "If-Modified-Since: $last_modified" ]) {
        my ($resource, $header) = @$case;
        my ($name) = $header =~ /\A([^:]+)/;
        $client->send(request_bytes(GET => "/conditional/$resource", 'HTTP/1.1', [$header]));
        $res = $client->read_response;
        response_is($res, 304, undef, $name);
        is($res->framing, 'none', "$name: 304 carries no body");
        is($res->header('Content-Length'), undef, "$name: no Content-Length");
        is($client->read_for(0.1), '', "$name: and nothing follows it");
    }

    $client->send(request_bytes(GET => '/conditional/etag', 'HTTP/1.1', ['If-None-Match: "something-else"']));
    response_is($client->read_response, 200, 'the same bytes', 'a different ETag gets the body');

    $client->send(request_bytes(HEAD => '/conditional/etag', 'HTTP/1.1', ["If-None-Match: $etag"]));
    response_is($client->read_response(head => 1), 304, undef, 'HEAD with If-None-Match');

    $client->send(request_bytes(GET => '/conditional/delayed', 'HTTP/1.1', ['If-None-Match: "v1"']));
    $res = $client->read_response;
    response_is($res, 304, undef, 'a delayed response');
    is($res->framing, 'none', 'delayed 304 carries no body');

    $client->send(request_bytes(GET => '/conditional/delayed'));
    response_is($client->read_response, 200, 'delayed', 'the keep-alive connection still works');
};

subtest 'ContentLength' => sub {
    my $client = client($port);
    $client->send(request_bytes(GET => '/plain-handle'));
    my $res = $client->read_response(timeout => 10);
    response_is($res, 200, undef, 'a filehandle body without the middleware');

    $client->send(request_bytes(GET => '/length/handle'));
    $res = $client->read_response(timeout => 10);
    response_is($res, 200, undef, 'with ContentLength');
    is($res->header('Content-Length'), length $text, 'Content-Length is the file size');
    is($res->framing, 'length', 'sent length-delimited, not chunked');
    ok(($res->body // '') eq $text, 'the whole file');

    my $old = client($port);
    $old->send(request_bytes(GET => '/length/handle', 'HTTP/1.0', ['Connection: keep-alive']));
    $res = $old->read_response(timeout => 10);
    response_is($res, 200, undef, 'HTTP/1.0 with keep-alive');
    is($res->header('Content-Length'), length $text, 'Content-Length');
    $old->send(request_bytes(GET => '/length/handle', 'HTTP/1.0', ['Connection: keep-alive']));
    response_is($old->read_response(timeout => 10), 200, undef, 'the connection stays open for the next request');
};

done_testing;
