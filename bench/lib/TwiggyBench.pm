package TwiggyBench;
# Helpers shared by bench/run and its clients (bench/clients/*, bench/idle-connections):
# file descriptor limits, non-blocking connects, telling when an HTTP response is complete,
# and the memory and descriptors of a process group. Nothing here starts or stops a process.
use strict;
use warnings;

use Exporter 'import';
use Fcntl ();
use POSIX ();
use Socket qw(PF_INET SOCK_STREAM IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_ERROR inet_aton pack_sockaddr_in);

our @EXPORT_OK = qw(
    fd_limits raise_fd_limit
    connect_nonblocking connect_error
    response_extent
    group_members group_rss_kb group_fd_count process_fd_limit
);

# ----------------------------------------------------------------------------
# File descriptor limits
# ----------------------------------------------------------------------------

# (soft, hard) RLIMIT_NOFILE of a process (default: this one); undef for "unlimited".
sub fd_limits {
    my ($pid) = @_;
    $pid //= 'self';
    open my $limits, '<', "/proc/$pid/limits" or return;
    while ( my $line = <$limits> ) {
        next unless $line =~ /^Max open files\s+(\S+)\s+(\S+)/;
        return ( map { $_ eq 'unlimited' ? undef : $_ } $1, $2 );
    }
    return;
}

sub process_fd_limit { ( fd_limits(@_) )[0] }

# Raises this process's soft limit so that $needed descriptors fit, never above the hard limit
# (raising that needs privileges this suite does not ask for). Returns the soft limit now in
# force, which may be below $needed: the caller decides what fits.
sub raise_fd_limit {
    my ($needed) = @_;
    my ( $soft, $hard ) = fd_limits();
    return $needed unless defined $soft;    # unlimited
    return $soft if $soft >= $needed;
    my $target = defined $hard && $hard < $needed ? $hard : $needed;
    return $soft if $target <= $soft;
    # prlimit(1) from util-linux sets the limit of a running process, here our own.
    system( 'prlimit', "--pid=$$", "--nofile=$target:" . ( $hard // 'unlimited' ) ) == 0 or return $soft;
    ( $soft, $hard ) = fd_limits();
    return $soft;
}

# ----------------------------------------------------------------------------
# Sockets
# ----------------------------------------------------------------------------

# A non-blocking TCP socket with a connect under way (or done). Returns the handle, or undef
# with $! set when the connect failed at once.
sub connect_nonblocking {
    my ( $host, $port ) = @_;
    socket( my $socket, PF_INET, SOCK_STREAM, 0 ) or return;
    my $flags = fcntl( $socket, Fcntl::F_GETFL(), 0 ) or return;
    fcntl( $socket, Fcntl::F_SETFL(), $flags | Fcntl::O_NONBLOCK() ) or return;
    setsockopt( $socket, IPPROTO_TCP, TCP_NODELAY, 1 );
    my $address = inet_aton($host) or do { $! = POSIX::EINVAL(); return };
    return $socket if connect( $socket, pack_sockaddr_in( $port, $address ) );
    return $socket if $! == POSIX::EINPROGRESS();
    return;
}

# After a non-blocking connect reports writable: '' when it succeeded, else the error text.
sub connect_error {
    my ($socket) = @_;
    my $packed = getsockopt( $socket, SOL_SOCKET, SO_ERROR ) or return "getsockopt: $!";
    my $error  = unpack 'i', $packed;
    return '' unless $error;
    local $! = $error;
    return "$!";
}

# ----------------------------------------------------------------------------
# HTTP responses
# ----------------------------------------------------------------------------

# Where the first response in $buffer ends. Returns undef while it is incomplete, else a hash:
#   length      bytes of head + body (undef: the body runs until the server closes)
#   status      the status code
#   keep_alive  whether the connection may carry another request afterwards
# Dies on something that is not an HTTP/1.x response.
sub response_extent {
    my ($buffer) = @_;
    my $head_end = index $buffer, "\r\n\r\n";
    if ( $head_end < 0 ) {
        die "not an HTTP response\n" if length $buffer >= 5 && substr( $buffer, 0, 5 ) ne 'HTTP/';
        return undef;
    }
    my $head = substr $buffer, 0, $head_end;
    $head =~ m{\AHTTP/1\.([01]) ([0-9]{3})} or die "not an HTTP response\n";
    my ( $minor, $status ) = ( $1, $2 );
    my $body_start = $head_end + 4;

    my $connection = $head =~ /^Connection:[ \t]*([^\r\n]*)/mi ? lc $1 : '';
    my $keep_alive = $minor ? $connection !~ /\bclose\b/ : $connection =~ /\bkeep-alive\b/;

    # RFC 9112 6.3: no body for 1xx, 204, 304 (and HEAD, which these clients never send).
    if ( $status =~ /\A1/ || $status == 204 || $status == 304 ) {
        return { length => $body_start, status => $status, keep_alive => $keep_alive };
    }
    if ( $head =~ /^Transfer-Encoding:[ \t]*[^\r\n]*chunked/mi ) {
        my $end = chunked_end( $buffer, $body_start );
        return undef unless defined $end;
        return { length => $end, status => $status, keep_alive => $keep_alive };
    }
    if ( $head =~ /^Content-Length:[ \t]*([0-9]+)/mi ) {
        my $length = $body_start + $1;
        return undef if length $buffer < $length;
        return { length => $length, status => $status, keep_alive => $keep_alive };
    }
    return { length => undef, status => $status, keep_alive => 0 };
}

# The offset just past a chunked body that starts at $offset, or undef if it is incomplete.
# Trailer fields are skipped.
sub chunked_end {
    my ( $buffer, $offset ) = @_;
    my $guard = 0;
    while ( $guard++ < 1_000_000 ) {
        my $line_end = index $buffer, "\r\n", $offset;
        return undef if $line_end < 0;
        my ($size) = substr( $buffer, $offset, $line_end - $offset ) =~ /\A([0-9A-Fa-f]+)/
            or die "bad chunk size line\n";
        die "chunk size too large\n" if length $size > 8;
        $size   = hex $size;
        $offset = $line_end + 2;
        if ( $size == 0 ) {
            while (1) {    # trailer fields, then an empty line
                my $end = index $buffer, "\r\n", $offset;
                return undef if $end < 0;
                return $end + 2 if $end == $offset;
                $offset = $end + 2;
            }
        }
        return undef if length $buffer < $offset + $size + 2;
        $offset += $size + 2;
    }
    die "too many chunks\n";
}

# ----------------------------------------------------------------------------
# Process groups
# ----------------------------------------------------------------------------

# [pid, [fields after "pid (comm) "]] for every live process of the group.
# Fields: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14)
sub group_members {
    my ($pgid) = @_;
    my @members;
    opendir my $proc, '/proc' or die "/proc: $!\n";
    for my $pid ( grep {/\A[0-9]+\z/} readdir $proc ) {
        open my $stat_file, '<', "/proc/$pid/stat" or next;
        my $stat = <$stat_file> // next;
        $stat =~ s/\A.*\) //s;
        my @field = split ' ', $stat;
        next unless @field > 14 && $field[2] == $pgid && $field[0] ne 'Z';
        push @members, [ $pid, \@field ];
    }
    closedir $proc;
    return @members;
}

# Resident memory of every process in the group, summed, in kB. Pages shared between a
# prefork master and its workers count once per process, as in ps and top.
sub group_rss_kb {
    my ($pgid) = @_;
    my $total = 0;
    for my $member ( group_members($pgid) ) {
        open my $status, '<', "/proc/$member->[0]/status" or next;
        while (<$status>) {
            if (/^VmRSS:\s+([0-9]+)/) { $total += $1; last }
        }
    }
    return $total;
}

# Open file descriptors of every process in the group.
sub group_fd_count {
    my ($pgid) = @_;
    my $total = 0;
    for my $member ( group_members($pgid) ) {
        opendir my $fds, "/proc/$member->[0]/fd" or next;
        $total += grep { !/\A\./ } readdir $fds;
    }
    return $total;
}

1;
