# The CPAN tarball, end to end, from a clean directory: copy the files MANIFEST names, run
# `perl Makefile.PL && make dist` there (which vendors the Rust crates), check what the tarball
# holds and what its META says, then `cpanm` it into a local directory with no network for Rust
# (an empty CARGO_HOME, CARGO_NET_OFFLINE=true): it builds, runs its whole test suite and
# installs. Finally `plackup -s Twiggy` and the installed `twiggy`, run from an empty
# directory, serve from the installed copy.
#
# Slow (a clean Rust build and the suite twice: several minutes) and it needs cpanm (Debian:
# cpanminus) and crates.io (to vendor the crates), so it only runs with TWIGGY_TEST_DIST=1;
# .ci/run sets it. The tarball's own copy of this test skips itself.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Config;
use Cwd ();
use ExtUtils::Manifest ();
use File::Spec;
use File::Temp ();
use JSON::PP ();
use TwiggyTest qw(:DEFAULT start_command);

plan skip_all => 'set TWIGGY_TEST_DIST=1 to build the tarball and install it with cpanm (slow)'
    unless $ENV{TWIGGY_TEST_DIST};
my ($cpanm) = grep { -x $_ } map { File::Spec->catfile($_, 'cpanm') } File::Spec->path;
plan skip_all => 'cpanm is not installed (Debian: cpanminus)' unless $cpanm;
my ($plackup) = grep { -x $_ } map { File::Spec->catfile($_, 'plackup') } File::Spec->path;

safety_alarm(2400);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my $work = File::Temp->newdir('twiggy-dist-XXXXXX', TMPDIR => 1);
# t/prefork-listen.t (when run as root) switches workers to "nobody", who must be able to read
# the build directory.
chmod 0755, "$work" or die "chmod $work: $!";
END {
    # Keep the logs of a failed run.
    if ($work && !Test::More->builder->is_passing) {
        $work->unlink_on_destroy(0);
        diag("kept $work (logs in $work/logs)");
    }
}
my $make = $Config{make} || 'make';
my $log_dir = "$work/logs";
mkdir $log_dir or die "$log_dir: $!";

# Runs a command in a directory with some environment changes; its output goes to a log. True
# when it exits with 0; otherwise the end of the log is shown.
sub run_logged {
    my ($name, $dir, $environment, @command) = @_;
    my $log = "$log_dir/$name.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        chdir $dir or die "$dir: $!";
        for my $key (keys %$environment) {
            if (defined $environment->{$key}) { $ENV{$key} = $environment->{$key} } else { delete $ENV{$key} }
        }
        open STDIN, '<', File::Spec->devnull;
        open STDOUT, '>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT;
        exec { $command[0] } @command or die "exec $command[0]: $!";
    }
    waitpid $pid, 0;
    my $status = $?;
    return 1 if $status == 0;
    open my $fh, '<', $log;
    my @lines = $fh ? <$fh> : ();
    diag("$name failed (status $status): @command\n", @lines > 80 ? @lines[-80 .. -1] : @lines);
    return 0;
}

# A build outside this checkout: nothing of the developer's environment may leak in.
my %clean = map { $_ => undef }
    qw(PERL5LIB PERL5OPT PERL_MM_OPT PERL_MB_OPT PERL_LOCAL_LIB_ROOT TWIGGY_TEST_DIST LIBPERL_APIDOC_URL),
    grep { /\AHARNESS_|\ATEST_/ } keys %ENV;

# 1. The tarball, made from exactly the files MANIFEST names.
my $source = "$work/source";
{
    my $cwd = Cwd::getcwd();
    chdir $root or die "$root: $!";
    my $manifest = ExtUtils::Manifest::maniread();
    my @missing = grep { !-e $_ } sort keys %$manifest;
    is_deeply(\@missing, [], 'every file MANIFEST names exists');
    local $ExtUtils::Manifest::Verbose = 0;
    ExtUtils::Manifest::manicopy($manifest, $source, 'cp');
    chdir $cwd or die "$cwd: $!";
}
ok(run_logged('configure', $source, \%clean, $^X, 'Makefile.PL'), 'perl Makefile.PL in a copy of MANIFEST')
    or BAIL_OUT('cannot configure the copy');
ok(run_logged('dist', $source, \%clean, $make, 'dist'), 'make dist') or BAIL_OUT('make dist failed');
my ($tarball) = glob "$source/Twiggy-*.tar.gz";
ok($tarball && -s $tarball, 'it made ' . ($tarball ? (File::Spec->splitpath($tarball))[2] : 'no tarball'))
    or BAIL_OUT('no tarball');
my ($distname) = $tarball =~ m{/(Twiggy-[^/]+)\.tar\.gz\z};
diag(sprintf 'tarball: %.1f MB', (-s $tarball) / 1e6);

subtest 'what the tarball holds' => sub {
    my %files = map { chomp; s{\A\Q$distname\E/}{}r => 1 } `tar -tzf '$tarball'`;
    ok($files{'.cargo/config.toml'}, '.cargo/config.toml');
    ok((grep { m{\Avendor/libperl-sys[^/]*/Cargo\.toml\z} } keys %files), 'vendor/libperl-sys');
    ok((grep { m{\Avendor/libperl-macrogen[^/]*/apidoc\.tar\.gz\z} } keys %files),
        "libperl-macrogen's bundled API data (its build downloads nothing)");
    ok((grep { m{\Avendor/[^/]+/\.cargo-checksum\.json\z} } keys %files) > 50, 'every crate with its checksums');
    ok($files{$_}, $_) for qw(MANIFEST META.json META.yml Makefile.PL Cargo.lock rust/src/lib.rs tools/vendor-crates);
    ok(!(grep { m{\A(?:target|blib)/} } keys %files), 'no build products');

    my $config = `tar -xzOf '$tarball' '$distname/.cargo/config.toml'`;
    like($config, qr/replace-with = "vendored-sources"/, 'cargo is pointed at vendor/');
    like($config, qr/directory = "vendor"/, 'a relative directory');
    my $manifest = `tar -xzOf '$tarball' '$distname/MANIFEST'`;
    unlike($manifest, qr{^vendor/}m, 'the vendored crates are not in MANIFEST');

    my $meta = eval { JSON::PP->new->decode(scalar `tar -xzOf '$tarball' '$distname/META.json'`) } || {};
    for my $phase (qw(configure build test runtime)) {
        ok(scalar keys %{ $meta->{prereqs}{$phase}{requires} || {} }, "META lists $phase requirements");
    }
    ok($meta->{prereqs}{runtime}{requires}{AnyEvent} && $meta->{prereqs}{runtime}{requires}{Plack},
        'runtime: AnyEvent and Plack');
    ok($meta->{prereqs}{configure}{requires}{'ExtUtils::MakeMaker'}, 'configure: ExtUtils::MakeMaker');
    ok($meta->{prereqs}{test}{requires}{'Test::TCP'}, 'test: Test::TCP');
    is_deeply([ grep { $_ eq 'vendor' } @{ $meta->{no_index}{directory} || [] } ], ['vendor'], 'vendor/ is not indexed');
};

# 2. cpanm installs it, building the Rust core from the vendored crates only.
my $local = "$work/local";
my $empty_cargo_home = "$work/cargo-home";
mkdir $empty_cargo_home or die "$empty_cargo_home: $!";
ok(run_logged('cpanm', $work, {
        %clean,
        PERL_CPANM_HOME   => "$work/cpanm",
        CARGO_HOME        => $empty_cargo_home,    # no registry cache to fall back on
        CARGO_NET_OFFLINE => 'true',
    }, $cpanm, '--verbose', '--local-lib', $local, $tarball),
    'cpanm builds, tests and installs the tarball with no network for Rust')
    or BAIL_OUT('cpanm failed: see above');
{
    open my $fh, '<', "$log_dir/cpanm.log";
    my $output = $fh ? do { local $/; <$fh> } : '';
    like($output, qr/^Result: PASS$/m, "the tarball's tests passed");
    like($output, qr/\bCompiling libperl-sys\b/, 'libperl-sys was built from source');
    unlike($output, qr/\b(?:Downloading|Updating crates\.io index|Downloaded) /, 'cargo downloaded nothing');
    my ($summary) = $output =~ /^(Files=\d+, Tests=\d+.*)$/m;
    diag("the tarball's suite: $summary") if $summary;
}

# 3. The installed copy serves, from an empty directory.
my $app = "$work/app.psgi";
{
    open my $fh, '>', $app or die "$app: $!";
    print {$fh} <<'APP';
sub {
    require DynaLoader;
    my ($object) = grep { m{/Twiggy\.so\z} } @DynaLoader::dl_shared_objects;
    [ 200, [ 'Content-Type' => 'text/plain' ], [ "pm=$INC{'Twiggy.pm'}\nso=" . ($object // '?') . "\n" ] ];
};
APP
    close $fh or die "$app: $!";
}
my $installed_lib = "$local/lib/perl5";
my %installed = (%clean, PERL5LIB => $installed_lib, PATH => "$local/bin:$ENV{PATH}");

for my $case (
    [ 'plackup -s Twiggy', $plackup && [ $plackup, '-s', 'Twiggy', '--host', '127.0.0.1', '--port', 'PORT', $app ] ],
    [ 'the installed twiggy', [ "$local/bin/twiggy", '--listen', '127.0.0.1:PORT', $app ] ],
) {
    my ($name, $command) = @$case;
    subtest $name => sub {
        plan skip_all => 'plackup is not in PATH' unless $command;
        my $port = empty_port();
        local @ENV{ keys %installed } = values %installed;
        delete $ENV{$_} for grep { !defined $installed{$_} } keys %installed;
        my $cwd = Cwd::getcwd();
        chdir $work or die "$work: $!";    # no lib/ or blib/ nearby
        my $server = start_command(command => [ $^X, map { s/PORT/$port/r } @$command ], port => $port);
        chdir $cwd or die "$cwd: $!";
        my $res = simple_request($port, request_bytes(GET => '/'));
        response_is($res, 200, undef, 'serves');
        like($res->body // '', qr{^pm=\Q$installed_lib\E/}m, 'Twiggy.pm from the installed copy');
        like($res->body // '', qr{^so=\Q$installed_lib\E/.*/Twiggy\.so$}m, 'Twiggy.so from the installed copy');
        $server->stop;
    };
}

{
    local $ENV{PERL5LIB} = $installed_lib;
    chomp(my $version = `'$^X' '$local/bin/twiggy' -v 2>&1`);
    like($version, qr/\ATwiggy \d+\.\d+\z/, "the installed twiggy -v: $version");
}

done_testing;
