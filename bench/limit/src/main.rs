//! twiggy-bench-limit: the ceiling of `bench/run`. A minimal HTTP/1.1 server with no Perl in
//! it, so the gap between it and Twiggy is what the Perl side costs. One thread, one mio
//! `Poll`, httparse for request heads, keep-alive and pipelining, `Connection: close`.
//!
//! It answers the bytes of the benchmark apps, so that both serve the same responses:
//! - a path starting with `/1mib`: 1 MiB of `bench/apps/1mib.psgi`'s pattern;
//! - a path starting with `/post`: the request body's length in bytes (`bench/apps/post.psgi`);
//! - anything else: `Hello, World!` (`eg/hello.psgi`).
//!
//! It has no timeouts and no streaming or timer endpoints: `bench/run` skips those workloads.
//!
//!   twiggy-bench-limit --listen 127.0.0.1:5000

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes read per read call, into one buffer shared by every connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A request head larger than this closes the connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 64;
/// Unsent response bytes above this stop the parsing of further pipelined requests.
const MAX_UNSENT_BYTES: usize = 256 * 1024;
/// Poll events handled per `poll` call.
const EVENTS_PER_POLL: usize = 1024;
/// The listen backlog when `net.core.somaxconn` cannot be read (mio's own is 128, too small
/// for 1,000 connects at once).
const FALLBACK_BACKLOG: i32 = 4096;
/// The large response: 16,384 lines of 63 `x` and a newline.
const LARGE_BODY_LINE: &[u8] = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
const LARGE_BODY_LINES: usize = 16 * 1024;

const HELLO_BODY: &[u8] = b"Hello, World!";
const LISTENER: Token = Token(usize::MAX);

/// What a request asked for.
enum Answer {
    Hello,
    Large,
    /// The length of the request body.
    BodyLength(usize),
}

/// How a response ends its connection.
#[derive(Clone, Copy)]
struct Reply {
    keep_alive: bool,
    /// An HTTP/1.0 client asked for keep-alive, so the response must say so.
    announce_keep_alive: bool,
}

/// One client connection.
struct Connection {
    stream: TcpStream,
    /// Input kept between events: a partial head, or requests pipelined behind a blocked response.
    unparsed: Vec<u8>,
    /// Request body bytes still to arrive, and the whole body's length.
    body_remaining: usize,
    body_length: usize,
    /// How to answer once the body has arrived.
    body_reply: Reply,
    /// Response bytes the socket has not taken yet, from `unsent_start`.
    unsent: Vec<u8>,
    unsent_start: usize,
    /// A large body follows `unsent`, sent from the shared copy starting at this offset.
    large_offset: Option<usize>,
    /// The last response said `Connection: close`: close once it is sent, parse nothing more.
    close_after_write: bool,
    peer_closed: bool,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            unparsed: Vec::new(),
            body_remaining: 0,
            body_length: 0,
            body_reply: Reply { keep_alive: true, announce_keep_alive: false },
            unsent: Vec::new(),
            unsent_start: 0,
            large_offset: None,
            close_after_write: false,
            peer_closed: false,
        }
    }

    fn has_output(&self) -> bool {
        self.unsent_start < self.unsent.len() || self.large_offset.is_some()
    }

    /// Further requests wait until the output before them is written.
    fn may_parse(&self) -> bool {
        !self.close_after_write
            && self.large_offset.is_none()
            && self.unsent.len() - self.unsent_start < MAX_UNSENT_BYTES
    }
}

/// The `Date` header's value, formatted at most once per second.
struct DateCache {
    second: u64,
    text: Vec<u8>,
}

impl DateCache {
    fn new() -> Self {
        let mut cache = DateCache { second: u64::MAX, text: Vec::with_capacity(29) };
        cache.refresh();
        cache
    }

    fn refresh(&mut self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
        if now != self.second {
            self.second = now;
            self.text = http_date(now).into_bytes();
        }
    }
}

/// RFC 9110 5.6.7 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(seconds_since_epoch: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = (seconds_since_epoch / 86_400) as i64;
    let second_of_day = seconds_since_epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic Gregorian calendar,
/// counting in 400-year eras that start on March 1st so that leap days fall at an era's end.
fn civil_from_days(days_since_epoch: i64) -> (i64, u32, u32) {
    let days = days_since_epoch + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    read_buffer: Box<[u8]>,
    large_body: Box<[u8]>,
    date: DateCache,
}

/// The connection failed or broke the protocol: close it.
struct Broken;

impl Server {
    fn new(address: SocketAddr) -> io::Result<Self> {
        let mut listener = TcpListener::bind(address)?;
        // mio listens with a backlog of 128; listening again raises it (Linux allows this).
        let backlog = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .filter(|&value| value > 0)
            .unwrap_or(FALLBACK_BACKLOG);
        // SAFETY: the descriptor is the listener's own, open for the whole call.
        if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            connections: Vec::new(),
            free_slots: Vec::new(),
            read_buffer: vec![0u8; READ_BUFFER_BYTES].into_boxed_slice(),
            large_body: LARGE_BODY_LINE.repeat(LARGE_BODY_LINES).into_boxed_slice(),
            date: DateCache::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            if let Err(error) = self.poll.poll(&mut events, None) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            self.date.refresh();
            for event in events.iter() {
                if event.token() == LISTENER {
                    self.accept_all();
                } else {
                    self.service(event.token().0);
                }
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Small responses go out at once rather than after Nagle's delay.
                    let _ = stream.set_nodelay(true);
                    self.add(stream);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // EMFILE and the like: the connection stays queued, try again on the next event.
                Err(_) => return,
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream) {
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.connections.push(None);
                self.connections.len() - 1
            }
        };
        // Edge-triggered (mio always is): register once for both directions.
        if self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE).is_err() {
            self.free_slots.push(slot);
            return;
        }
        self.connections[slot] = Some(Connection::new(stream));
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut connection) = self.connections[slot].take() {
            let _ = self.poll.registry().deregister(&mut connection.stream);
            self.free_slots.push(slot);
        }
    }

    /// Reads, parses, answers and writes until nothing more can happen on this connection.
    fn service(&mut self, slot: usize) {
        let Server { connections, read_buffer, large_body, date, .. } = self;
        let Some(Some(connection)) = connections.get_mut(slot) else { return };
        let outcome = pump(connection, read_buffer, large_body, &date.text);
        let finished = match outcome {
            Err(Broken) => true,
            Ok(()) => !connection.has_output() && (connection.peer_closed || connection.close_after_write),
        };
        if finished {
            self.close(slot);
        }
    }
}

fn pump(connection: &mut Connection, read_buffer: &mut [u8], large_body: &[u8], date: &[u8]) -> Result<(), Broken> {
    let mut may_read = true;
    loop {
        if connection.has_output() && !flush(connection, large_body)? {
            return Ok(()); // the socket is full: the next writable event continues
        }
        let mut progress = false;
        if !connection.unparsed.is_empty() && connection.may_parse() {
            let input = std::mem::take(&mut connection.unparsed);
            let consumed = consume(connection, &input, date)?;
            connection.unparsed = input;
            connection.unparsed.drain(..consumed);
            progress = consumed > 0;
        }
        if may_read && !connection.peer_closed && connection.may_parse() {
            match connection.stream.read(read_buffer) {
                Ok(0) => {
                    connection.peer_closed = true;
                    progress = true;
                }
                Ok(count) => {
                    // A short read emptied the socket; new data raises a new edge.
                    may_read = count == read_buffer.len();
                    let fresh = &read_buffer[..count];
                    if connection.unparsed.is_empty() {
                        let consumed = consume(connection, fresh, date)?;
                        connection.unparsed.extend_from_slice(&fresh[consumed..]);
                    } else {
                        connection.unparsed.extend_from_slice(fresh);
                    }
                    progress = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => may_read = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Broken),
            }
        }
        if !progress && !connection.has_output() {
            return Ok(());
        }
        if !progress && connection.has_output() {
            continue; // flush what the requests just read produced
        }
    }
}

/// Parses and answers the requests in `input`; returns how many bytes it used.
fn consume(connection: &mut Connection, input: &[u8], date: &[u8]) -> Result<usize, Broken> {
    let mut position = 0;
    while position < input.len() {
        if connection.body_remaining > 0 {
            let taken = connection.body_remaining.min(input.len() - position);
            position += taken;
            connection.body_remaining -= taken;
            if connection.body_remaining == 0 {
                let reply = connection.body_reply;
                queue_response(connection, Answer::BodyLength(connection.body_length), reply, date);
            }
            continue;
        }
        if !connection.may_parse() {
            break;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_length = match request.parse(&input[position..]) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if input.len() - position > MAX_HEAD_BYTES => return Err(Broken),
            Ok(httparse::Status::Partial) => break,
            Err(_) => return Err(Broken),
        };
        position += head_length;

        let is_http_1_0 = request.version == Some(0);
        let mut keep_alive = !is_http_1_0;
        let mut content_length = 0usize;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("connection") {
                if header.value.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if header.value.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            } else if header.name.eq_ignore_ascii_case("content-length") {
                content_length =
                    std::str::from_utf8(header.value).ok().and_then(|text| text.trim().parse().ok()).ok_or(Broken)?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(Broken); // chunked request bodies are not part of the ceiling
            }
        }
        let path = request.path.unwrap_or("/").as_bytes();
        let reply = Reply { keep_alive, announce_keep_alive: keep_alive && is_http_1_0 };
        if content_length > 0 {
            // The answer goes out once the whole body has arrived.
            connection.body_remaining = content_length;
            connection.body_length = content_length;
            connection.body_reply = reply;
            continue;
        }
        let answer = if path.starts_with(b"/1mib") {
            Answer::Large
        } else if path.starts_with(b"/post") {
            Answer::BodyLength(0)
        } else {
            Answer::Hello
        };
        queue_response(connection, answer, reply, date);
    }
    Ok(position)
}

fn queue_response(connection: &mut Connection, answer: Answer, reply: Reply, date: &[u8]) {
    let out = &mut connection.unsent;
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
    match answer {
        Answer::Hello => {
            out.extend_from_slice(b"text/plain\r\nContent-Length: ");
            append_decimal(out, HELLO_BODY.len());
        }
        Answer::Large => {
            out.extend_from_slice(b"application/octet-stream\r\nContent-Length: ");
            append_decimal(out, LARGE_BODY_LINE.len() * LARGE_BODY_LINES);
        }
        Answer::BodyLength(length) => {
            out.extend_from_slice(b"text/plain\r\nContent-Length: ");
            append_decimal(out, decimal_digits(length));
        }
    }
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    if !reply.keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
        connection.close_after_write = true;
    } else if reply.announce_keep_alive {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    out.extend_from_slice(b"\r\n\r\n");
    match answer {
        Answer::Hello => out.extend_from_slice(HELLO_BODY),
        Answer::Large => connection.large_offset = Some(0),
        Answer::BodyLength(length) => append_decimal(out, length),
    }
}

fn decimal_digits(mut value: usize) -> usize {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

/// Appends `value` in decimal without allocating.
fn append_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes pending output; `Ok(true)` when all of it went out, `Ok(false)` when the socket is full.
fn flush(connection: &mut Connection, large_body: &[u8]) -> Result<bool, Broken> {
    loop {
        let head = &connection.unsent[connection.unsent_start..];
        let body = connection.large_offset.map_or(&[][..], |offset| &large_body[offset..]);
        if head.is_empty() && body.is_empty() {
            connection.unsent.clear();
            connection.unsent_start = 0;
            connection.large_offset = None;
            return Ok(true);
        }
        let result = if body.is_empty() {
            connection.stream.write(head)
        } else {
            connection.stream.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
        };
        match result {
            Ok(0) => return Err(Broken),
            Ok(written) => {
                let from_head = written.min(head.len());
                connection.unsent_start += from_head;
                if let Some(offset) = connection.large_offset.as_mut() {
                    *offset += written - from_head;
                }
                if connection.large_offset == Some(large_body.len()) {
                    connection.large_offset = None;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Broken),
        }
    }
}

fn parse_arguments() -> Result<SocketAddr, String> {
    let mut arguments = std::env::args().skip(1);
    let mut listen = None;
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--listen" => listen = arguments.next(),
            "--help" | "-h" => return Err("usage: twiggy-bench-limit --listen 127.0.0.1:PORT".into()),
            other if other.starts_with("--listen=") => listen = Some(other["--listen=".len()..].to_string()),
            other => listen = Some(other.to_string()),
        }
    }
    let listen = listen.ok_or("usage: twiggy-bench-limit --listen 127.0.0.1:PORT")?;
    listen.parse().map_err(|error| format!("--listen {listen}: {error}"))
}

fn main() {
    let address = match parse_arguments() {
        Ok(address) => address,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let mut server = match Server::new(address) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("twiggy-bench-limit: cannot listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    eprintln!("twiggy-bench-limit: listening on http://{address}/");
    if let Err(error) = server.run() {
        eprintln!("twiggy-bench-limit: {error}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn decimals_are_written_without_allocation() {
        let mut out = Vec::new();
        for value in [0usize, 7, 10, 65_536, usize::MAX] {
            out.clear();
            append_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
            assert_eq!(decimal_digits(value), out.len());
        }
    }

    #[test]
    fn the_large_body_is_one_mebibyte() {
        assert_eq!(LARGE_BODY_LINE.len() * LARGE_BODY_LINES, 1 << 20);
    }
}
