# In a git checkout: MANIFEST names every file git tracks (unless MANIFEST.SKIP leaves it out)
# and nothing that is missing, so `make dist` ships every Rust source, test and example; the
# vendored crates never go through it (see tools/vendor-crates). When this fails after adding a
# file, add it to MANIFEST (`make manifest` adds everything found; review the result).
# Skipped in an unpacked tarball, where there is no git.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Cwd ();
use ExtUtils::Manifest ();
use File::Spec;
use TwiggyTest;

safety_alarm(60);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
plan skip_all => 'not a git checkout' unless -e "$root/.git";
my $cwd = Cwd::getcwd();
chdir $root or die "$root: $!";
my @tracked = grep { -e $_ } split /\n/, `git ls-files 2>/dev/null`;
plan skip_all => 'git ls-files lists nothing (is git installed?)' unless @tracked;

my $manifest = ExtUtils::Manifest::maniread();
my $skip = ExtUtils::Manifest::maniskip();

my @missing = grep { !exists $manifest->{$_} && !$skip->($_) } @tracked;
is_deeply(\@missing, [], 'every file git tracks is in MANIFEST or MANIFEST.SKIP') or diag("add to MANIFEST:\n@missing");

my @gone = grep { !-e $_ } sort keys %$manifest;
is_deeply(\@gone, [], 'every file in MANIFEST exists');

my @skipped = grep { $skip->($_) } sort keys %$manifest;
is_deeply(\@skipped, [], 'MANIFEST.SKIP leaves out nothing MANIFEST names');

my @vendored = grep { m{\A(?:vendor|\.cargo|target)/} } sort keys %$manifest;
is_deeply(\@vendored, [], 'no vendored crate, cargo configuration or build product in MANIFEST');

for my $needed (qw(Makefile.PL Cargo.toml Cargo.lock rust/src/lib.rs xs/Twiggy.xs tools/vendor-crates
    lib/Twiggy.pm bin/twiggy)) {
    ok(exists $manifest->{$needed}, "MANIFEST has $needed");
}

chdir $cwd;
done_testing;
