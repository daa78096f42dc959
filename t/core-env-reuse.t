# The env hash is refilled in place for the next request when the app left it untouched and kept
# no reference to it (rust/src/perl/env_reuse.rs). Whatever an app does to its env must never
# show in a later request's env, and whatever an app keeps must never change under it.
#
# Each case sends "GET /act/NAME" (the app does NAME to its env) and then "GET /report" on the
# same keep-alive connection; the report must equal the baseline taken before any action. (Each
# check was seen to fail with the matching safeguard of env_reuse.rs switched off.)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP ();
use Scalar::Util ();
use Tie::Scalar ();
use AnyEvent;
use TwiggyTest;

safety_alarm(120);

my $json = JSON::PP->new->latin1->canonical;

# Kept across requests by the app (the server runs it in its own process).
my ($kept_env, $weak_env, @kept_refs, @kept_copies, %kept_uri);

# A description of the env that reads values without disturbing them (psgix.io is only checked
# for presence: reading it opens the connection's handle). Keys are counted with `each`, so a
# loop left half done by an earlier request would show.
sub report {
    my ($env) = @_;
    my %report = (ref => ref($env), keys_by_each => 0);
    $report{keys_by_each}++ while my ($key) = each %$env;
    for my $key (sort keys %$env) {
        next if $key eq 'psgix.io';
        my $value = $env->{$key};
        my $shown = !defined $value ? 'undef'
            : ref $value eq 'ARRAY' ? 'ARRAY:' . join(',', @$value)
            : ref $value ? 'ref:' . ref($value)
            : "$value";
        my @flags;
        push @flags, 'utf8' if !ref $value && defined $value && utf8::is_utf8($value);
        push @flags, 'readonly' if Internals::SvREADONLY($env->{$key});
        $report{env}{$key} = join ' ', $shown, @flags;
    }
    $report{has_io} = exists $env->{'psgix.io'} ? 1 : 0;
    my $input = $env->{'psgi.input'};
    $input->seek(0, 0) if $input->can('seek');
    $input->read(my $body, 100);
    $report{input} = $body;
    return $report{env}, \%report;
}

my %actions = (
    add_key         => sub { $_[0]{'x.added'} = 1 },
    delete_static   => sub { delete $_[0]{SCRIPT_NAME} },
    delete_fixed    => sub { delete $_[0]{QUERY_STRING} },
    delete_header   => sub { delete $_[0]{HTTP_HOST} },
    delete_and_add  => sub { delete $_[0]{SERVER_NAME}; $_[0]{'x.other'} = 'same count' },
    clear           => sub { %{ $_[0] } = () },
    static_in_place => sub { $_[0]{SERVER_NAME} =~ tr/0-9./a-j_/ },
    static_assigned => sub { $_[0]{'psgi.url_scheme'} = 'https'; $_[0]{SERVER_PORT} = 1 },
    static_new_ref  => sub { $_[0]{'psgi.version'} = [ 9, 9 ] },
    static_numeric  => sub { my $sum = $_[0]{SERVER_PORT} + $_[0]{'psgi.run_once'} },
    utf8_values     => sub { utf8::upgrade($_[0]{REQUEST_METHOD}); utf8::upgrade($_[0]{HTTP_HOST}) },
    readonly_value  => sub { Internals::SvREADONLY($_[0]{REQUEST_METHOD}, 1) },
    readonly_static => sub { Internals::SvREADONLY($_[0]{SCRIPT_NAME}, 1) },
    tied_value      => sub { tie $_[0]{HTTP_HOST}, 'Tie::StdScalar', 'tied' },
    glob_value      => sub { $_[0]{QUERY_STRING} = *STDOUT },
    ref_value       => sub { $_[0]{REQUEST_URI} = [1] },
    blessed         => sub { bless $_[0], 'Some::Class' },
    each_half_done  => sub { my ($first) = each %{ $_[0] } },
    localized       => sub { local $_[0]{PATH_INFO} = '/localized'; local $_[0]{'x.local'} = 1 },
    read_io         => sub { my $io = $_[0]{'psgix.io'} },
    # Objects whose DESTROY runs the event loop, left where the server must drop them: the
    # core must not be in the middle of anything when that happens.
    object_value    => sub { $_[0]{REQUEST_URI} = LoopingDestroy->new },
    object_static   => sub { $_[0]{'psgi.errors'} = LoopingDestroy->new },
    keep_env        => sub { $kept_env = $_[0]; $kept_uri{env} = $_[0]{REQUEST_URI} },
    keep_weak       => sub { $weak_env = $_[0]; Scalar::Util::weaken($weak_env) },
    keep_value_ref  => sub { push @kept_refs, \$_[0]{REQUEST_URI} },
    keep_copy       => sub { push @kept_copies, $_[0]{REQUEST_URI}, $_[0]{HTTP_HOST} },
);

{
    package LoopingDestroy;
    sub new { return bless {}, shift }
    sub DESTROY {
        my $cv = AE::cv;
        my $timer = AE::timer(0.01, 0, sub { $cv->send });
        $cv->recv;
    }
}

my $app = sub {
    my $env = $_[0];
    my $path = $env->{PATH_INFO};
    if ($path eq '/report') {
        my (undef, $report) = report($env);
        return [ 200, [ 'Content-Type' => 'application/json' ], [ $json->encode($report) ] ];
    }
    if ($path eq '/kept') {
        my %kept = (
            env_uri      => $kept_env ? $kept_env->{REQUEST_URI} : 'none',
            env_distinct => $kept_env && Scalar::Util::refaddr($kept_env) != Scalar::Util::refaddr($env) ? 1 : 0,
            weak_gone    => defined $weak_env ? 0 : 1,
            refs         => [ map { $$_ } @kept_refs ],
            copies       => \@kept_copies,
        );
        return [ 200, [ 'Content-Type' => 'application/json' ], [ $json->encode(\%kept) ] ];
    }
    if ($path eq '/clobber-arg') {
        $_[0] = undef;
        return [ 200, [], ['ok'] ];
    }
    if (my ($name) = $path =~ m{\A/act/(\w+)\z}) {
        my $action = $actions{$name} or return [ 404, [], ['no such action'] ];
        $action->($env);
        return [ 200, [], ['ok'] ];
    }
    return [ 404, [], ['unknown'] ];
};

my $server = start_server(app => $app);
my $client = client($server->port);

sub get {
    my ($target, @headers) = @_;
    $client->send(request_bytes(GET => $target, 'HTTP/1.1', \@headers));
    my $res = $client->read_response;
    return $res->ok && $res->status == 200 ? $res->body : "failed: " . $res->describe;
}

sub get_report {
    my $body = get('/report', @_);
    my $report = eval { $json->decode($body) } or return { error => $body };
    return $report;
}

my $baseline = get_report();
ok($baseline->{env}{REQUEST_METHOD}, 'the baseline report has an env') or diag explain $baseline;
is($baseline->{keys_by_each}, scalar(keys %{ $baseline->{env} }) + 1, 'each sees every key (psgix.io too)');
my $again = get_report();
is_deeply($again, $baseline, 'the next request sees the same env');

for my $name (sort keys %actions) {
    is(get("/act/$name"), 'ok', "action $name ran");
    my $report = get_report();
    is_deeply($report, $baseline, "after $name, the next request sees a clean env") or diag explain $report;
}

is(get('/clobber-arg'), 'ok', 'an app may overwrite the $env argument itself');
my $after_clobber = get_report();
is_deeply($after_clobber, $baseline, 'and the next env is clean');

subtest 'header fields come and go between requests on one connection' => sub {
    my $with = get_report('X-Custom: one', 'X-Rep: a', 'X-Rep: b', 'Content-Type: text/x-test');
    is($with->{env}{HTTP_X_CUSTOM}, 'one', 'a custom header');
    is($with->{env}{HTTP_X_REP}, 'a, b', 'a repeated header, joined');
    is($with->{env}{CONTENT_TYPE}, 'text/x-test', 'CONTENT_TYPE');
    my $same_names = get_report('X-Custom: two', 'X-Rep: c', 'X-Rep: d', 'Content-Type: text/y');
    is($same_names->{env}{HTTP_X_CUSTOM}, 'two', 'the same fields with new values');
    is($same_names->{env}{HTTP_X_REP}, 'c, d', 'repeated again');
    is($same_names->{env}{CONTENT_TYPE}, 'text/y', 'new CONTENT_TYPE');
    my $fewer = get_report('x-rep: e');
    is($fewer->{env}{HTTP_X_REP}, 'e', 'one field, other case');
    ok(!exists $fewer->{env}{HTTP_X_CUSTOM}, 'a header the request lacks is gone');
    ok(!exists $fewer->{env}{CONTENT_TYPE}, 'CONTENT_TYPE is gone');
    my $none = get_report();
    is_deeply($none, $baseline, 'back to the baseline');
};

subtest 'a body, then none' => sub {
    $client->send(request_bytes(POST => '/report', 'HTTP/1.1', ['Content-Length: 5'], 'hello'));
    my $res = $client->read_response;
    my $with_body = eval { $json->decode($res->body) } || {};
    is($with_body->{env}{CONTENT_LENGTH}, '5', 'CONTENT_LENGTH');
    is($with_body->{input}, 'hello', 'psgi.input holds the body');
    my $without = get_report();
    ok(!exists $without->{env}{CONTENT_LENGTH}, 'no CONTENT_LENGTH on the next GET');
    is($without->{input}, '', 'and its psgi.input is empty');
    $client->send(request_bytes(POST => '/report', 'HTTP/1.1', ['Content-Length: 0']));
    $res = $client->read_response;
    my $empty = eval { $json->decode($res->body) } || {};
    is($empty->{env}{CONTENT_LENGTH}, '0', '"Content-Length: 0" still shows');
};

subtest 'what the app kept is never changed by later requests' => sub {
    my $kept = eval { $json->decode(get('/kept')) } || {};
    is($kept->{env_uri}, '/act/keep_env', 'a kept env keeps its values');
    ok($kept->{env_distinct}, 'and later requests get another hash');
    ok($kept->{weak_gone}, 'a weak reference to an env ends with its request');
    is_deeply($kept->{refs}, ['/act/keep_value_ref'], 'a reference to a value keeps that value');
    is_deeply($kept->{copies}, [ '/act/keep_copy', '127.0.0.1' ], 'copies of values are unchanged');
};

$client->close;
$server->stop;
done_testing;
