# The POD of every module, of bin/twiggy and of README.pod is well formed (Test::Pod, when it
# is installed) and podchecker-clean: no errors and no warnings (Pod::Checker, always).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Find ();
use File::Spec;
use Pod::Checker ();
use TwiggyTest;

safety_alarm(60);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my @files = ("$root/bin/twiggy", "$root/README.pod");
File::Find::find({ no_chdir => 1, wanted => sub { push @files, $_ if /\.(?:pm|pod)\z/ } }, "$root/lib");
@files = sort grep { -f } @files;
ok(@files >= 12, 'found the POD files') or diag("@files");

my $have_test_pod = eval { require Test::Pod; Test::Pod->VERSION(1.41); 1 };
SKIP: {
    skip 'Test::Pod 1.41 is not installed (Debian: libtest-pod-perl)', scalar @files unless $have_test_pod;
    Test::Pod::pod_file_ok($_, "Test::Pod: $_") for @files;
}

for my $file (@files) {
    my $output = '';
    open my $out, '>', \$output or die $!;
    my $checker = Pod::Checker->new(-warnings => 2);
    $checker->parse_from_file($file, $out);
    close $out;
    my ($errors, $warnings) = ($checker->num_errors, $checker->num_warnings);
    ok($errors == 0 && $warnings == 0, "podchecker: $file")
        or diag("$errors errors, $warnings warnings:\n$output");
}

done_testing;
