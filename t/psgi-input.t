# psgi.input holds the whole request body before the app is called (psgix.input.buffered), in
# memory or in a temporary file for big bodies; either way it reads back exactly, is seekable,
# and reads the same bytes again after seek(0, 0). Plack::Request can parse it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::MD5 qw(md5_hex);
use JSON::PP ();
use Plack::Request;
use TwiggyTest;

safety_alarm(90);

my $json = JSON::PP->new->canonical;

sub read_all {
    my ($input, $piece) = @_;
    my $data = '';
    for (1 .. 100_000) {
        my $read = $input->read(my $buffer, $piece);
        last unless $read;
        $data .= $buffer;
    }
    return $data;
}

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    my $input = $env->{'psgi.input'};
    if ($path eq '/form') {
        my $request = Plack::Request->new($env);
        my $params = $request->body_parameters;
        my $upload = $request->uploads->{file};
        my $upload_md5 = '';
        if ($upload) {
            open my $fh, '<', $upload->path or die $!;
            binmode $fh;
            local $/;
            $upload_md5 = md5_hex(scalar <$fh>);
        }
        my %report = (
            a => $params->get('a'),
            b => $params->get('b'),
            content_twice => ($request->content eq $request->content ? 1 : 0),
            upload_name => ($upload ? $upload->filename : ''),
            upload_size => ($upload ? $upload->size : 0),
            upload_md5 => $upload_md5,
        );
        return [ 200, [ 'Content-Type' => 'application/json' ], [ $json->encode(\%report) ] ];
    }
    my $first = read_all($input, 8192);
    my $at_end = $input->read(my $nothing, 10);
    my $seek_ok = $input->seek(0, 0) ? 1 : 0;
    my $second = read_all($input, 100_000);
    $input->seek(0, 0);
    my $with_offset = 'XYZ';
    $input->read($with_offset, 5, 3);
    my $fileno = eval { fileno $input };
    my %report = (
        content_length => $env->{CONTENT_LENGTH},
        length         => length $first,
        md5            => md5_hex($first),
        at_end         => $at_end,
        seek_ok        => $seek_ok,
        reread_md5     => md5_hex($second),
        with_offset    => $with_offset,
        storage        => (defined $fileno && $fileno >= 0 ? 'file' : 'memory'),
    );
    return [ 200, [ 'Content-Type' => 'application/json' ], [ $json->encode(\%report) ] ];
};

my $server = start_server(app => $app);
my $port = $server->port;

sub body_of_size {
    my ($size) = @_;
    my $unit = join '', map { chr(($_ * 37 + 11) % 256) } 0 .. 1023;
    return substr($unit x (int($size / 1024) + 1), 0, $size);
}

sub check_input {
    my ($name, $request, $data) = @_;
    my $client = client(port => $port, timeout => 30);
    $client->send($request);
    my $res = $client->read_response;
    ok($res->ok && $res->status == 200, "$name: answered") or return diag($res->describe);
    my $report = eval { $json->decode($res->body) } || {};
    is($report->{length}, length $data, "$name: whole body read");
    is($report->{content_length}, length $data, "$name: CONTENT_LENGTH") if length $data;
    is($report->{md5}, md5_hex($data), "$name: content");
    is($report->{at_end}, 0, "$name: read at the end returns 0");
    is($report->{seek_ok}, 1, "$name: seek(0, 0) succeeds");
    is($report->{reread_md5}, md5_hex($data), "$name: same content after seek(0, 0)");
    is($report->{with_offset}, 'XYZ' . substr($data, 0, 5), "$name: read with an offset") if length $data >= 5;
    note("$name: body stored in $report->{storage}") if $report->{storage};
    return;
}

for my $size (0, 1, 11, 8191, 8192, 65536, 65537, 1024 * 1024 - 1, 1024 * 1024, 1024 * 1024 + 1) {
    my $data = body_of_size($size);
    subtest "Content-Length body of $size bytes" => sub {
        check_input("$size bytes", request_bytes(POST => '/input', 'HTTP/1.1',
            [ 'Content-Length: ' . length $data ], $data), $data);
    };
}

subtest 'five megabytes with Content-Length' => sub {
    my $data = body_of_size(5 * 1024 * 1024);
    check_input('5 MB', request_bytes(POST => '/input', 'HTTP/1.1',
        [ 'Content-Length: ' . length $data ], $data), $data);
};

subtest 'five megabytes chunked' => sub {
    my $data = body_of_size(5 * 1024 * 1024 + 3);
    my $chunked = join('', map { sprintf("%x\r\n", length) . $_ . "\r\n" } unpack '(a100000)*', $data) . "0\r\n\r\n";
    check_input('5 MB chunked', request_bytes(POST => '/input', 'HTTP/1.1',
        ['Transfer-Encoding: chunked'], $chunked), $data);
};

subtest 'GET without a body' => sub {
    check_input('no body', request_bytes(GET => '/input'), '');
};

subtest 'urlencoded form through Plack::Request' => sub {
    my $res = simple_request($port, request_bytes(POST => '/form', 'HTTP/1.1',
        [ 'Content-Type: application/x-www-form-urlencoded', 'Content-Length: 15' ], 'a=1&b=two+words'));
    my $report = eval { $json->decode($res->body // '') } || {};
    is($report->{a}, '1', 'a');
    is($report->{b}, 'two words', 'b');
    is($report->{content_twice}, 1, 'content can be read twice');
};

subtest 'multipart upload through Plack::Request' => sub {
    my $file = body_of_size(300_000);
    my $boundary = 'twiggy-test-boundary-0123456789';
    my $body = join "\r\n",
        "--$boundary",
        'Content-Disposition: form-data; name="a"',
        '',
        'field value',
        "--$boundary",
        'Content-Disposition: form-data; name="file"; filename="data.bin"',
        'Content-Type: application/octet-stream',
        '',
        $file,
        "--$boundary--",
        '';
    my $client = client(port => $port, timeout => 20);
    $client->send(request_bytes(POST => '/form', 'HTTP/1.1',
        [ "Content-Type: multipart/form-data; boundary=$boundary", 'Content-Length: ' . length $body ], $body));
    my $res = $client->read_response;
    my $report = eval { $json->decode($res->body // '') } || {};
    is($report->{a}, 'field value', 'form field');
    is($report->{upload_name}, 'data.bin', 'upload file name');
    is($report->{upload_size}, length $file, 'upload size');
    is($report->{upload_md5}, md5_hex($file), 'upload content');
};

ok($server->is_running, 'server still running');
$server->stop;
done_testing;
