# Every public module documents every public function and method (Test::Pod::Coverage, when it
# is installed; Debian: libtest-pod-coverage-perl). Modules documented as internal are listed
# below with the module that documents what they do; they must still have a NAME and a
# DESCRIPTION.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Find ();
use File::Spec;
use TwiggyTest;

safety_alarm(60);

plan skip_all => 'Test::Pod::Coverage 1.08 is not installed (Debian: libtest-pod-coverage-perl)'
    unless eval { require Test::Pod::Coverage; Test::Pod::Coverage->VERSION(1.08); 1 };

my %internal = (
    'Twiggy::Server::Response' => 'Twiggy::Server',            # the Perl half of answering requests
    'Twiggy::Prefork::Worker'  => 'Twiggy::Prefork::Server',   # one worker process
);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");
my @modules;
File::Find::find({ no_chdir => 1, wanted => sub {
    return unless m{\A\Q$root\E/lib/(.+)\.pm\z};
    push @modules, $1 =~ s{/}{::}gr;
} }, "$root/lib");
@modules = sort @modules;
ok(@modules >= 10, 'found the modules') or diag("@modules");

my $have_server_starter = eval { require Server::Starter; 1 };
for my $module (@modules) {
    SKIP: {
        skip "$module needs Server::Starter", 1 if $module =~ /::SS\z/ && !$have_server_starter;
        if (my $documented_in = $internal{$module}) {
            my $file = "$root/lib/" . ($module =~ s{::}{/}gr) . '.pm';
            open my $fh, '<', $file or die "$file: $!";
            my $pod = do { local $/; <$fh> };
            ok($pod =~ /^=head1 NAME\n\n\Q$module\E - /m && $pod =~ /^=head1 DESCRIPTION\n\nInternal to /m,
                "$module: internal (see $documented_in), with NAME and DESCRIPTION");
            next;
        }
        Test::Pod::Coverage::pod_coverage_ok($module, "$module: every public function is documented");
    }
}

done_testing;
