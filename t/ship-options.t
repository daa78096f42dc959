# The option list agrees everywhere a user meets it: every option of Twiggy's manual (OPTIONS in
# lib/Twiggy.pm) is in `twiggy --help` (bin/twiggy's OPTIONS, printed by Plack::Runner through
# Pod::Usage) with the same default, and in Twiggy::Server's DEFAULTS; every server option
# `twiggy --help` lists is in the manual; and the numeric defaults are the ones
# Twiggy::Server->new really sets.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Spec;
use TwiggyTest qw(:DEFAULT perl_command);
use Twiggy::Server;

safety_alarm(60);

my $root = File::Spec->rel2abs("$FindBin::Bin/..");

sub read_text {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    local $/;
    return scalar <$fh>;
}

sub pod_section {
    my ($text, $title) = @_;
    return $text =~ /^=head1 \Q$title\E\n(.*?)^=head1 /ms ? $1 : '';
}

# name => default (the first word after "Default:", markup removed), from the manual.
my (%manual, %alias_of);
{
    my $options = pod_section(read_text("$root/lib/Twiggy.pm"), 'OPTIONS');
    ok(length $options, 'the manual has an OPTIONS section');
    my (undef, @items) = split /^=item /m, $options;
    for my $item (@items) {
        my ($names, $text) = $item =~ /\A([^\n]*)\n(.*)\z/s or next;
        my ($default) = $text =~ /Default: (?:[A-Z]<)?([^\s.,;>]+)/;
        ok(defined $default, "manual: '$names' states its default") or next;
        my @aliases = $names =~ /\(alias: (\w+)\)/g;
        $names =~ s/\s*\(alias:[^)]*\)//g;
        for my $name (split /\s*,\s*/, $names) {
            $manual{$name} = $default;
            $alias_of{$_} = $name for @aliases;
        }
    }
}
ok(scalar(keys %manual) >= 15, 'the manual lists the options') or diag(explain(\%manual));

my $command = perl_command('bin/twiggy', '--help');
my $help = qx{@{[ join ' ', map { "'$_'" } @$command ]} 2>&1};
is($? >> 8, 0, 'twiggy --help exits with status 0');
like($help, qr/^Usage:/m, 'it prints the usage');
like($help, qr/^\s*Server options:/m, 'and the server options');

# The help entry of --name: its lines up to the next option or blank line.
sub help_entry {
    my ($name) = @_;
    (my $flag = $name) =~ tr/_/-/;
    my @lines = split /\n/, $help;
    for my $at (0 .. $#lines) {
        next unless $lines[$at] =~ /^\s+(?:-\w, )?--(?:enable-|disable-)?\Q$flag\E(?![\w-])/;
        my $entry = $lines[$at];
        for my $next ($at + 1 .. $#lines) {
            last if $lines[$next] =~ /^\s*(?:-|$)/;
            $entry .= "\n$lines[$next]";
        }
        return $entry;
    }
    return undef;
}

my $server = Twiggy::Server->new;
for my $name (sort keys %manual) {
    next if $name eq 'server_ready';    # a code reference: not on the command line
    my $entry = help_entry($name);
    ok(defined $entry, "twiggy --help lists --$name") or next;
    my $default = $manual{$name};
    next unless $default =~ /\A[0-9]+\z/;
    my ($help_default) = $entry =~ /(?:\(default |Default: )([0-9]+)/;
    is($help_default, $default, "--$name: the same default ($default)");
    is($server->{$name}, $default, "$name: Twiggy::Server->new sets $default") if exists $server->{$name};
}

# Every server option the help lists is in the manual.
my ($server_block) = $help =~ /^\s*Server options:\n(.*?)(?=^\S|^  \S)/ms;
my @listed = ($server_block // '') =~ /^\s+--(?:enable-|disable-)?([a-z][a-z-]*)/mg;
ok(@listed >= 10, 'the server options block lists options');
for my $flag (@listed) {
    (my $name = $flag) =~ tr/-/_/;
    ok(exists $manual{$name} || exists $alias_of{$name}, "--$flag is in the manual");
}

# Twiggy::Server's DEFAULTS table names every server option of the manual.
{
    my $defaults = pod_section(read_text("$root/lib/Twiggy/Server.pm"), 'DEFAULTS');
    for my $name (sort grep { $_ ne 'workers' } keys %manual) {
        like($defaults, qr/(?:^|\s)\Q$name\E\s/m, "Twiggy::Server DEFAULTS lists $name");
    }
}

done_testing;
