# A long-poll chat room: every browser keeps one request open on /poll, and a
# message posted to /post answers all of them at once. One process holds any
# number of waiting clients, because waiting costs a delayed response, not a
# worker.
#
#   twiggy --listen 127.0.0.1:5000 eg/longpoll_chat.psgi
#   open http://127.0.0.1:5000/ in two browser windows, or:
#   curl 'http://127.0.0.1:5000/poll?since=0'          # waits for a message
#   curl -d nick=ann -d text=hello http://127.0.0.1:5000/post
#   curl http://127.0.0.1:5000/stats                    # who is waiting
#
# GET  /poll?since=N  the messages after id N as JSON; waits up to
#                     CHAT_POLL_TIMEOUT seconds (default 25) for one, then
#                     answers an empty list so proxies never time out first
# POST /post          nick and text (form fields); answers {"id": N}
# GET  /stats         {"waiting": clients holding a poll, "messages": kept}
#
# Twiggy tells the app when a waiting client goes away
# (Twiggy::Server::on_client_close), so a closed browser tab is forgotten at
# once instead of at its next timeout. On other servers the waiter stays until
# its timer fires or a message arrives.
use strict;
use warnings;

use AnyEvent;
use Encode ();
use JSON::PP ();
use Plack::Request;

my $poll_timeout = $ENV{CHAT_POLL_TIMEOUT} // 25;
$poll_timeout = 25 unless $poll_timeout =~ /\A[0-9]+(?:\.[0-9]+)?\z/ && $poll_timeout > 0;

use constant HISTORY  => 100;     # messages kept for clients that come back
use constant MAX_NICK => 32;      # characters
use constant MAX_TEXT => 1000;

my $json = JSON::PP->new->utf8->canonical;

my @messages;       # { id, nick, text, time }, oldest first, at most HISTORY
my $last_id = 0;
my %waiting;        # waiter number => code that answers it with a list of messages
my $next_waiter = 0;

sub json_response {
    my ($status, $data) = @_;
    return [ $status,
        [ 'Content-Type' => 'application/json; charset=utf-8', 'Cache-Control' => 'no-store' ],
        [ $json->encode($data) ] ];
}

sub messages_after {
    my ($id) = @_;
    return [ grep { $_->{id} > $id } @messages ];
}

# Answer every waiting client: each one gets the messages it has not seen yet.
sub wake_everyone {
    my @answer = values %waiting;
    %waiting = ();
    $_->() for @answer;
    return;
}

sub post_message {
    my ($request) = @_;
    my ($nick, $text) = map { Encode::decode('UTF-8', $request->body_parameters->get($_) // '') } qw(nick text);
    for ($nick, $text) { s/[\x00-\x1f\x7f]+/ /g; s/\A\s+|\s+\z//g }
    return json_response(400, { error => 'text is empty' }) unless length $text;
    $nick = 'anonymous' unless length $nick;
    push @messages, {
        id   => ++$last_id,
        nick => substr($nick, 0, MAX_NICK),
        text => substr($text, 0, MAX_TEXT),
        time => time,
    };
    shift @messages while @messages > HISTORY;
    wake_everyone();
    return json_response(200, { id => $last_id });
}

sub poll {
    my ($env, $request) = @_;
    my $since = $request->query_parameters->get('since') // 0;
    $since = 0 unless $since =~ /\A[0-9]{1,15}\z/;
    $since = $last_id if $since > $last_id;    # the server restarted: wait for what comes next
    my $ready = messages_after($since);
    return json_response(200, $ready) if @$ready;

    # Nothing new: hold the request until a message arrives, the timeout passes,
    # or the client goes away.
    return sub {
        my $responder = shift;
        my $number = ++$next_waiter;
        my ($timer, $done);
        my $finish = sub {
            my ($list) = @_;
            return if $done++;
            undef $timer;
            delete $waiting{$number};
            $responder->(json_response(200, $list)) if $list;
        };
        $waiting{$number} = sub { $finish->(messages_after($since)) };
        $timer = AE::timer $poll_timeout, 0, sub { $finish->([]) };
        if (defined &Twiggy::Server::on_client_close) {
            Twiggy::Server::on_client_close($env, sub { $finish->(undef) });
        }
    };
}

sub page {
    return <<'HTML';
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Long-poll chat</title></head>
<body>
<ul id="log"></ul>
<form id="say">
  <input id="nick" placeholder="nick" size="10">
  <input id="text" placeholder="message" size="50" autofocus>
  <button>Send</button>
</form>
<script>
let since = 0;
const log = document.getElementById('log');
function show(message) {
  const item = document.createElement('li');
  item.textContent = message.nick + ': ' + message.text;
  log.appendChild(item);
}
async function listen() {
  for (;;) {
    try {
      const response = await fetch('/poll?since=' + since);
      for (const message of await response.json()) { show(message); since = message.id; }
    } catch (error) {
      await new Promise(resolve => setTimeout(resolve, 2000));
    }
  }
}
document.getElementById('say').addEventListener('submit', event => {
  event.preventDefault();
  const text = document.getElementById('text');
  fetch('/post', { method: 'POST', body: new URLSearchParams({
    nick: document.getElementById('nick').value, text: text.value }) });
  text.value = '';
});
listen();
</script>
</body>
</html>
HTML
}

my $app = sub {
    my $env     = shift;
    my $request = Plack::Request->new($env);
    my $path    = $request->path_info;
    my $method  = $request->method;

    return [ 501, [ 'Content-Type' => 'text/plain' ], ["This app needs a psgi.nonblocking server.\n"] ]
        if $path ne '/' && !$env->{'psgi.nonblocking'};

    return post_message($request) if $path eq '/post' && $method eq 'POST';
    return poll($env, $request)   if $path eq '/poll' && $method eq 'GET';
    return json_response(200, { waiting => scalar(keys %waiting), messages => scalar(@messages) })
        if $path eq '/stats';
    return [ 200, [ 'Content-Type' => 'text/html; charset=utf-8' ], [ page() ] ]
        if $path eq '/';
    return [ 404, [ 'Content-Type' => 'text/plain' ], ["Not found\n"] ];
};
