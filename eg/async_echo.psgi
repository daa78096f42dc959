# A delayed-response echo: the form posts a "field", and the answer comes back
# after a timer fires, without blocking the server for other clients.
#
#   twiggy --listen 127.0.0.1:5000 eg/async_echo.psgi
#   curl 'http://127.0.0.1:5000/?field=hello'      # answers after 2 s
#   ECHO_DELAY=0.1 twiggy eg/async_echo.psgi        # a shorter delay
#
# On a non-blocking server (psgi.nonblocking) many requests wait at once in a
# single process. A blocking server (Starman, HTTP::Server::PSGI) has no event
# loop running, so there the app waits for its own timer with a condition
# variable, which holds the worker for the whole delay.
use strict;
use warnings;

use AnyEvent;
use Plack::Request;

my $delay = $ENV{ECHO_DELAY} // 2;
$delay = 2 unless $delay =~ /\A[0-9]+(?:\.[0-9]+)?\z/;

sub get_html {
    return <<'HTML';
<!DOCTYPE html>
<html>
<head><title>Echo</title></head>
<body>
<form>
  <input name="field">
  <input type="submit" value="Echo">
</form>
HTML
}

sub html_escape {
    my ($text) = @_;
    my %entity = ( '&' => '&amp;', '<' => '&lt;', '>' => '&gt;', '"' => '&quot;', "'" => '&#39;' );
    $text =~ s/([&<>"'])/$entity{$1}/g;
    return $text;
}

my $app = sub {
    my $env = shift;

    my $html    = get_html();
    my $request = Plack::Request->new($env);
    my $field   = $request->param('field');

    if ( defined $field && length $field ) {
        return sub {
            my $responder = shift;
            my $done      = AE::cv;
            my $timer;
            $timer = AE::timer $delay, 0, sub {
                undef $timer;
                $html .= 'You said: ' . html_escape($field) . "<br>\n</body>\n</html>\n";
                $responder->( [ 200, [ 'Content-Type' => 'text/html; charset=utf-8' ], [$html] ] );
                $done->send;
            };
            $done->recv unless $env->{'psgi.nonblocking'};
        };
    }

    $html .= "</body>\n</html>\n";
    return [ 200, [ 'Content-Type' => 'text/html; charset=utf-8' ], [$html] ];
};
