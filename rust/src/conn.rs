//! One client connection: its socket, buffers, and an explicit phase. Input handling here is
//! pure bytes (read, parse, decode, spool); the reactor decides what to do with a complete
//! request. No Perl value is touched in this module, except the two SVs it keeps for the
//! reactor to release.

use crate::access_log::PendingEntry;
use crate::deadline::Entry;
use crate::h1::decode::ChunkedDecoder;
use crate::h1::encode::{self, OutFraming, RequestFacts};
use crate::h1::parse::{parse_head_reusing, BodyFraming, HeadLimits, Parsed, RequestHead, Span};
use crate::limits::{Config, LINGER_SECONDS, WRITE_HIGH_WATER};
use crate::perl::SV;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const LINGER: Duration = Duration::from_secs(LINGER_SECONDS);

/// Which timeout a connection's deadline belongs to; it decides what happens when it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Output has been stuck for `write_timeout`: cut the connection.
    Write,
    /// A request head or body did not arrive in time: 408, then close.
    Request,
    /// Nothing was sent (idle keep-alive, or a connect without a request): close quietly.
    Idle,
    /// The linger after the last response is over: close.
    Linger,
}

#[derive(Debug)]
pub enum BodyReader {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Where a request body collects: memory up to the configured size, then an unlinked temp file.
#[derive(Debug)]
pub enum BodySink {
    Memory(Vec<u8>),
    File(File, u64),
}

impl BodySink {
    pub fn length(&self) -> u64 {
        match self {
            BodySink::Memory(bytes) => bytes.len() as u64,
            BodySink::File(_, length) => *length,
        }
    }

    fn append(&mut self, bytes: &[u8], in_memory_limit: usize) -> io::Result<()> {
        match self {
            BodySink::Memory(buffer) if buffer.len() + bytes.len() <= in_memory_limit => {
                buffer.extend_from_slice(bytes);
            }
            BodySink::Memory(buffer) => {
                let mut file = anonymous_temp_file()?;
                file.write_all(buffer)?;
                file.write_all(bytes)?;
                let length = (buffer.len() + bytes.len()) as u64;
                *self = BodySink::File(file, length);
            }
            BodySink::File(file, length) => {
                file.write_all(bytes)?;
                *length += bytes.len() as u64;
            }
        }
        Ok(())
    }
}

/// An unlinked, read-write temporary file in $TMPDIR (or /tmp).
fn anonymous_temp_file() -> io::Result<File> {
    let directory = std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into());
    let mut template =
        std::path::PathBuf::from(directory).join("twiggy-body-XXXXXX").into_os_string().into_encoded_bytes();
    template.push(0);
    // SAFETY: mkstemp writes into the NUL-terminated template we own and returns a new fd.
    let fd = unsafe { libc::mkstemp(template.as_mut_ptr() as *mut libc::c_char) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the template now names the file just created; unlinking it keeps the fd valid.
    unsafe { libc::unlink(template.as_ptr() as *const libc::c_char) };
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Most iovecs handed to one sendmsg (IOV_MAX is 1024 on Linux).
const MAX_IOVECS: usize = 1024;

/// Bytes per sendfile call, so one big file does not hold the loop for long.
const SENDFILE_CHUNK: u64 = 1024 * 1024;

/// The rest of a file body: its descriptor (a duplicate of Perl's), where to read next, and
/// how much is left.
struct FileBody {
    file: OwnedFd,
    offset: libc::off_t,
    remaining: u64,
}

/// The client's address as text (REMOTE_ADDR), kept inline: copying it per request allocates
/// nothing. 45 bytes hold the longest IPv6 text form.
#[derive(Clone, Copy)]
pub struct RemoteAddr {
    text: [u8; 46],
    length: u8,
}

impl RemoteAddr {
    pub fn of(address: std::net::IpAddr) -> RemoteAddr {
        let mut remote = RemoteAddr { text: [0; 46], length: 0 };
        let mut cursor = std::io::Cursor::new(&mut remote.text[..]);
        if write!(cursor, "{address}").is_ok() {
            remote.length = cursor.position() as u8;
        }
        remote
    }

    /// What the original Twiggy reported for UNIX-socket clients (AnyEvent's "unix/").
    pub fn unix() -> RemoteAddr {
        let mut remote = RemoteAddr { text: [0; 46], length: 5 };
        remote.text[..5].copy_from_slice(b"unix/");
        remote
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.length)]
    }
}

/// A request whose head and body are complete, waiting for the app.
#[derive(Debug)]
pub struct CompleteRequest {
    pub head: RequestHead,
    pub body: Option<BodySink>,
}

#[derive(Debug)]
pub enum Phase {
    /// Waiting for (the rest of) a request head; idle between keep-alive requests.
    Head,
    /// Reading the body of `request`.
    Body(BodyReader),
    /// Complete, queued for dispatch.
    Queued,
    /// The app has the request and has not started a response.
    App,
    /// The response head is out; the body follows with this framing.
    Sending { framing: OutFraming, remaining: u64 },
    /// Last response flushed, write side shut: discarding input until EOF or the linger time.
    Lingering,
}

/// What reading made of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// Nothing complete yet (or not reading in this phase).
    Nothing,
    /// A request is complete; `take_request` returns it.
    Request,
    /// The peer closed or failed: drop the connection without a response.
    Gone,
    /// Refused with this automatic status; a response is queued and the connection will close.
    Refused(u16),
}

pub struct Conn {
    pub fd: OwnedFd,
    pub listener: usize,
    pub phase: Phase,
    pub read_buffer: Vec<u8>,
    /// How much of `read_buffer` was already scanned for the end of a head.
    scanned: usize,
    pub write_buffer: Vec<u8>,
    written: usize,
    /// A short read or EAGAIN was seen and no readiness edge arrived since.
    pub read_blocked: bool,
    /// The poller reported the peer's write side closed: read on to the EOF even after a
    /// short read, since data and FIN can arrive in one edge.
    pub hangup_reported: bool,
    pub peer_closed: bool,
    pub close_after_flush: bool,
    /// Drop the connection at the next opportunity (error or peer gone).
    pub dead: bool,
    /// When the connection last became idle (accepted, or finished a response).
    pub idle_since: Instant,
    /// Responses completed on this connection.
    pub requests_finished: u64,
    /// When the first byte of the current request head arrived.
    head_started: Option<Instant>,
    /// When body bytes last arrived.
    body_progress: Instant,
    /// Since when output has been waiting on a socket that takes nothing.
    output_stalled_since: Option<Instant>,
    linger_until: Option<Instant>,
    /// While the server drains: close the connection if it is still idle at this time.
    idle_close_at: Option<Instant>,
    /// Where this connection is filed in the deadline wheel, if anywhere.
    pub scheduled: Option<Entry>,
    pub head: Option<RequestHead>,
    /// The bytes `head` points into (kept apart from the read buffer so pipelined input can follow).
    pub head_bytes: Vec<u8>,
    /// The header list of the last request, handed back after it for the next parse.
    pub spare_headers: Vec<(Span, Span)>,
    body: Option<BodySink>,
    pub request: Option<CompleteRequest>,
    pub facts: RequestFacts,
    pub remote_addr: RemoteAddr,
    pub remote_port: u16,
    pub is_unix: bool,
    /// `psgix.io` for this connection (a reference we own), made at its first request.
    pub io_handle: *mut SV,
    /// A Perl callback to run when the output buffer has drained (pull bodies).
    pub drain_callback: *mut SV,
    /// A Perl callback to run if the connection closes before the current response is done.
    pub close_callback: *mut SV,
    /// A file being sent as the response body (sendfile), after the write buffer.
    file_body: Option<FileBody>,
    /// The access-log entry of the current request (only with an access log).
    pub log_entry: Option<PendingEntry>,
    /// The status of the current response, once its head is encoded.
    pub status_sent: u16,
    /// Body bytes of the current response put on the wire (after framing decisions).
    pub body_bytes_sent: u64,
}

impl Conn {
    pub fn new(fd: OwnedFd, listener: usize, remote_addr: RemoteAddr, remote_port: u16, is_unix: bool) -> Conn {
        let now = Instant::now();
        Conn {
            fd,
            listener,
            phase: Phase::Head,
            read_buffer: Vec::new(),
            scanned: 0,
            write_buffer: Vec::new(),
            written: 0,
            read_blocked: false,
            hangup_reported: false,
            peer_closed: false,
            close_after_flush: false,
            dead: false,
            idle_since: now,
            requests_finished: 0,
            head_started: None,
            body_progress: now,
            output_stalled_since: None,
            linger_until: None,
            idle_close_at: None,
            scheduled: None,
            head: None,
            head_bytes: Vec::new(),
            spare_headers: Vec::new(),
            body: None,
            request: None,
            facts: RequestFacts { minor_version: 1, keep_alive: false, is_head_method: false },
            remote_addr,
            remote_port,
            is_unix,
            io_handle: std::ptr::null_mut(),
            drain_callback: std::ptr::null_mut(),
            close_callback: std::ptr::null_mut(),
            file_body: None,
            log_entry: None,
            status_sent: 0,
            body_bytes_sent: 0,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Output not yet on the wire: buffered bytes plus what is left of a file being sent.
    pub fn pending_output(&self) -> usize {
        let file = self.file_body.as_ref().map_or(0, |file| file.remaining.min(usize::MAX as u64) as usize);
        self.write_buffer.len() - self.written + file
    }

    /// Sends the buffered head and `body` in one sendmsg, copying into the buffer only what the
    /// socket did not take. For large bodies of a `Length` response whose length is exactly
    /// the body's; anything else goes through `push_body`.
    pub fn send_with_body<B: AsRef<[u8]>>(&mut self, body: &[B]) {
        let mut vectors: Vec<libc::iovec> = Vec::with_capacity(body.len().min(MAX_IOVECS) + 1);
        let head = &self.write_buffer[self.written..];
        vectors.push(libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() });
        for chunk in body.iter().take(MAX_IOVECS - 1) {
            let chunk = chunk.as_ref();
            vectors.push(libc::iovec { iov_base: chunk.as_ptr() as *mut libc::c_void, iov_len: chunk.len() });
        }
        // SAFETY: msghdr is plain data; zeroed is valid, then it points at our iovecs.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = vectors.as_mut_ptr();
        message.msg_iovlen = vectors.len();
        // SAFETY: the iovecs point into the write buffer and into body slices that outlive
        // this call; MSG_NOSIGNAL as in `flush`.
        let sent = unsafe { libc::sendmsg(self.raw_fd(), &message, libc::MSG_NOSIGNAL) };
        let mut unsent = if sent > 0 { sent as usize } else { 0 };
        let from_head = unsent.min(head.len());
        self.written += from_head;
        unsent -= from_head;
        for chunk in body {
            let chunk = chunk.as_ref();
            let direct = unsent.min(chunk.len());
            unsent -= direct;
            if let Phase::Sending { remaining, .. } = &mut self.phase {
                *remaining = remaining.saturating_sub(direct as u64);
            }
            self.body_bytes_sent += direct as u64;
            self.push_body(&chunk[direct..]);
        }
        // What is left (if anything) goes out with the usual buffered path, which also notes a
        // stall or a failure.
        self.flush();
    }

    /// Sends `length` bytes of `file` from `offset` with sendfile, as the body of a `Length`
    /// response of exactly that length. Returns false when the response is not such a one
    /// (the caller then copies the body itself). The offset comes from Perl's `tell`: PerlIO
    /// may have read ahead of it, so the descriptor's own offset would be wrong.
    pub fn send_file(&mut self, file: OwnedFd, offset: u64, length: u64) -> bool {
        match self.phase {
            Phase::Sending { framing: OutFraming::Length(_), remaining } if remaining == length => {
                let offset = libc::off_t::try_from(offset).unwrap_or(libc::off_t::MAX);
                self.file_body = Some(FileBody { file, offset, remaining: length });
                self.flush();
                true
            }
            // HEAD and bodiless statuses: nothing to send.
            Phase::Sending { framing: OutFraming::NoBody, .. } => true,
            _ => false,
        }
    }

    /// Whether the connection is between requests with nothing buffered (safe to close on drain).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.read_buffer.is_empty() && self.pending_output() == 0
    }

    /// The next deadline of this connection and what it is for.
    pub fn deadline(&self, config: &Config) -> Option<(Instant, Expiry)> {
        let mut earliest: Option<(Instant, Expiry)> = None;
        let mut consider = |at: Option<Instant>, expiry: Expiry| {
            if let Some(at) = at {
                if earliest.is_none_or(|(current, _)| at < current) {
                    earliest = Some((at, expiry));
                }
            }
        };
        if let Some(since) = self.output_stalled_since {
            consider(config.write_timeout.map(|timeout| since + timeout), Expiry::Write);
        }
        match self.phase {
            Phase::Head if self.head_started.is_none() && self.idle_close_at.is_some() => {
                consider(self.idle_close_at, Expiry::Idle)
            }
            Phase::Head => match self.head_started {
                Some(started) => consider(config.read_timeout.map(|timeout| started + timeout), Expiry::Request),
                None if self.requests_finished == 0 => {
                    consider(config.read_timeout.map(|timeout| self.idle_since + timeout), Expiry::Idle)
                }
                None => consider(config.keepalive_timeout.map(|timeout| self.idle_since + timeout), Expiry::Idle),
            },
            Phase::Body(_) => {
                consider(config.body_timeout.map(|timeout| self.body_progress + timeout), Expiry::Request)
            }
            Phase::Lingering => consider(self.linger_until, Expiry::Linger),
            _ => {}
        }
        earliest
    }

    /// Whether the peer has closed its side with nothing left unread: a FIN that leaves no
    /// pipelined request behind, seen while the app still works, means the client gave up
    /// (as nginx judges it). Peeking reads nothing, so an app that took over psgix.io loses
    /// no bytes.
    pub fn peer_finished(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a one-byte MSG_PEEK into a local; the socket is ours and non-blocking.
        let count = unsafe {
            libc::recv(self.raw_fd(), &mut byte as *mut u8 as *mut libc::c_void, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        count == 0 && self.read_buffer.is_empty()
    }

    /// Whether a request is with the app or its response is under way.
    pub fn has_outstanding_request(&self) -> bool {
        matches!(self.phase, Phase::Queued | Phase::App | Phase::Sending { .. }) && !self.close_after_flush
    }

    /// Closes the connection at `at` unless a request has started arriving by then.
    pub fn close_if_idle_at(&mut self, at: Instant) {
        self.idle_close_at = Some(at);
    }

    /// The response is complete and the connection stays: wait for the next request.
    pub fn await_next_request(&mut self, now: Instant) {
        self.phase = Phase::Head;
        self.requests_finished += 1;
        self.idle_since = now;
    }

    pub fn take_request(&mut self) -> Option<CompleteRequest> {
        self.request.take()
    }

    /// Reads and interprets input until a request is complete, input runs dry, or the phase
    /// stops reading. `scratch` is the reactor's shared read buffer.
    pub fn pump_input(&mut self, config: &Config, scratch: &mut [u8], now: Instant) -> InputEvent {
        loop {
            let event = self.interpret(config, now);
            if event != InputEvent::Nothing {
                return event;
            }
            if !self.wants_input() || self.read_blocked || self.peer_closed {
                return InputEvent::Nothing;
            }
            match self.read_some(scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    // An empty or incomplete request that ends gets no response bytes.
                    return InputEvent::Gone;
                }
                Ok(count) => {
                    // epoll(7): a short read on a stream socket means it is drained for now.
                    if count < scratch.len() && !self.hangup_reported {
                        self.read_blocked = true;
                    }
                    if matches!(self.phase, Phase::Lingering) {
                        continue;
                    }
                    if matches!(self.phase, Phase::Body(_)) {
                        self.body_progress = now;
                    }
                    self.read_buffer.extend_from_slice(&scratch[..count]);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.read_blocked = true;
                    return InputEvent::Nothing;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return InputEvent::Gone,
            }
        }
    }

    /// Whether the current phase consumes socket input. While the app holds a request we stop
    /// reading: that is our backpressure, and keeps bytes for an app that takes over psgix.io.
    fn wants_input(&self) -> bool {
        match self.phase {
            Phase::Head | Phase::Body(_) => self.pending_output() <= WRITE_HIGH_WATER,
            Phase::Lingering => true,
            _ => false,
        }
    }

    fn read_some(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into a buffer we own, at most its length.
        let count = unsafe { libc::recv(self.raw_fd(), scratch.as_mut_ptr() as *mut libc::c_void, scratch.len(), 0) };
        if count < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(count as usize)
        }
    }

    /// Makes progress on buffered bytes without reading.
    fn interpret(&mut self, config: &Config, now: Instant) -> InputEvent {
        match &mut self.phase {
            Phase::Head => self.interpret_head(config, now),
            Phase::Body(_) => self.interpret_body(config),
            _ => InputEvent::Nothing,
        }
    }

    fn interpret_head(&mut self, config: &Config, now: Instant) -> InputEvent {
        if self.read_buffer.is_empty() {
            return InputEvent::Nothing;
        }
        if self.head_started.is_none() {
            self.head_started = Some(now);
        }
        // Re-parse only when new bytes could have ended a line or broken a limit (a trickling
        // client would otherwise cost a full parse per byte).
        let fresh = &self.read_buffer[self.scanned.saturating_sub(3)..];
        let quiet_limit = config.max_request_line.min(config.max_head_bytes);
        if !fresh.contains(&b'\n') && self.read_buffer.len() <= quiet_limit {
            self.scanned = self.read_buffer.len();
            return InputEvent::Nothing;
        }
        self.scanned = self.read_buffer.len();
        let limits = HeadLimits {
            request_line: config.max_request_line,
            head: config.max_head_bytes,
            headers: config.max_headers,
        };
        match parse_head_reusing(&self.read_buffer, &limits, std::mem::take(&mut self.spare_headers)) {
            Parsed::Partial => InputEvent::Nothing,
            Parsed::Rejected(reject) => InputEvent::Refused(reject.status()),
            Parsed::Complete(head) => {
                self.head_bytes.clear();
                self.head_bytes.extend_from_slice(&self.read_buffer[..head.head_len]);
                self.read_buffer.drain(..head.head_len);
                self.scanned = 0;
                let framing = head.framing;
                // RFC 9110 15.5.14: refuse a declared body over the limit before reading it (and
                // before any 100 Continue, so a well-behaved client never sends it).
                if let (BodyFraming::Length(length), Some(limit)) = (framing, config.max_body) {
                    if length > limit {
                        return InputEvent::Refused(413);
                    }
                }
                if head.expect_continue && framing != BodyFraming::None && self.read_buffer.is_empty() {
                    self.write_buffer.extend_from_slice(encode::CONTINUE);
                }
                self.facts = RequestFacts {
                    minor_version: head.minor_version,
                    keep_alive: head.keep_alive,
                    is_head_method: head.is_head_method,
                };
                self.head = Some(head);
                match framing {
                    BodyFraming::None => self.complete(None),
                    BodyFraming::Length(length) => {
                        self.body =
                            Some(BodySink::Memory(Vec::with_capacity((length as usize).min(config.body_in_memory))));
                        self.phase = Phase::Body(BodyReader::Length(length));
                        self.body_progress = Instant::now();
                        self.interpret_body(config)
                    }
                    BodyFraming::Chunked => {
                        self.body = Some(BodySink::Memory(Vec::new()));
                        self.phase = Phase::Body(BodyReader::Chunked(ChunkedDecoder::default()));
                        self.body_progress = Instant::now();
                        self.interpret_body(config)
                    }
                }
            }
        }
    }

    fn interpret_body(&mut self, config: &Config) -> InputEvent {
        let Phase::Body(reader) = &mut self.phase else {
            return InputEvent::Nothing;
        };
        let Some(sink) = self.body.as_mut() else {
            return InputEvent::Refused(500);
        };
        let finished = match reader {
            BodyReader::Length(remaining) => {
                let take = (*remaining).min(self.read_buffer.len() as u64) as usize;
                if take > 0 {
                    if sink.append(&self.read_buffer[..take], config.body_in_memory).is_err() {
                        return InputEvent::Refused(500);
                    }
                    self.read_buffer.drain(..take);
                    *remaining -= take as u64;
                }
                *remaining == 0
            }
            BodyReader::Chunked(decoder) => {
                let mut decoded = Vec::new();
                let used = match decoder.decode(&self.read_buffer, &mut decoded) {
                    Ok(used) => used,
                    Err(_) => return InputEvent::Refused(400),
                };
                self.read_buffer.drain(..used);
                if sink.append(&decoded, config.body_in_memory).is_err() {
                    return InputEvent::Refused(500);
                }
                if config.max_body.is_some_and(|limit| sink.length() > limit) {
                    return InputEvent::Refused(413);
                }
                decoder.is_done()
            }
        };
        if !finished {
            return InputEvent::Nothing;
        }
        let body = self.body.take().map(rewind);
        match body {
            Some(Err(_)) => InputEvent::Refused(500),
            Some(Ok(body)) => self.complete(Some(body)),
            None => self.complete(None),
        }
    }

    fn complete(&mut self, body: Option<BodySink>) -> InputEvent {
        let Some(head) = self.head.take() else {
            return InputEvent::Refused(500);
        };
        self.request = Some(CompleteRequest { head, body });
        self.phase = Phase::Queued;
        self.head_started = None;
        InputEvent::Request
    }

    /// Queues an automatic error response and arranges to close after it.
    pub fn refuse(&mut self, status: u16, date: &[u8]) {
        self.read_buffer.clear();
        self.body = None;
        self.head = None;
        encode::encode_error(&mut self.write_buffer, status, date);
        self.close_after_flush = true;
        self.phase = Phase::Sending { framing: OutFraming::NoBody, remaining: 0 };
    }

    /// The peer has finished: send what is buffered, then close.
    pub fn close_when_flushed(&mut self) {
        self.peer_closed = true;
        self.close_after_flush = true;
        self.phase = Phase::Sending { framing: OutFraming::NoBody, remaining: 0 };
    }

    /// Writes buffered output until done or the socket is full. Returns false when the peer is gone.
    pub fn flush(&mut self) -> bool {
        while self.written < self.write_buffer.len() {
            let pending = &self.write_buffer[self.written..];
            // SAFETY: sending from a buffer we own; MSG_NOSIGNAL turns a closed peer into EPIPE
            // instead of a SIGPIPE that would kill the Perl process.
            let count = unsafe {
                libc::send(self.raw_fd(), pending.as_ptr() as *const libc::c_void, pending.len(), libc::MSG_NOSIGNAL)
            };
            if count >= 0 {
                self.written += count as usize;
                if count > 0 && self.output_stalled_since.is_some() {
                    self.output_stalled_since = Some(Instant::now());
                }
                continue;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => {
                    if self.output_stalled_since.is_none() {
                        self.output_stalled_since = Some(Instant::now());
                    }
                    return true;
                }
                io::ErrorKind::Interrupted => continue,
                _ => {
                    self.dead = true;
                    return false;
                }
            }
        }
        self.write_buffer.clear();
        self.written = 0;
        if !self.flush_file() {
            return !self.dead;
        }
        self.output_stalled_since = None;
        if self.write_buffer.capacity() > 4 * WRITE_HIGH_WATER {
            self.write_buffer.shrink_to(WRITE_HIGH_WATER);
        }
        if self.close_after_flush && !matches!(self.phase, Phase::Lingering) {
            if let Phase::Sending { .. } = self.phase {
                self.start_lingering();
            }
        }
        true
    }

    /// Sends what is left of a file body; true once nothing is left.
    fn flush_file(&mut self) -> bool {
        while let Some(file) = self.file_body.as_mut() {
            if file.remaining == 0 {
                self.file_body = None;
                break;
            }
            let chunk = file.remaining.min(SENDFILE_CHUNK) as usize;
            // SAFETY: sendfile between two descriptors we own; it advances `offset` itself.
            let count = unsafe { libc::sendfile(self.fd.as_raw_fd(), file.file.as_raw_fd(), &mut file.offset, chunk) };
            if count > 0 {
                file.remaining -= count as u64;
                self.body_bytes_sent += count as u64;
                if let Phase::Sending { remaining, .. } = &mut self.phase {
                    *remaining = remaining.saturating_sub(count as u64);
                }
                if self.output_stalled_since.is_some() {
                    self.output_stalled_since = Some(Instant::now());
                }
                continue;
            }
            let error = io::Error::last_os_error();
            match (count, error.kind()) {
                (0, _) => {
                    // The file is shorter than announced: the response cannot be completed.
                    self.file_body = None;
                    self.dead = true;
                    return false;
                }
                (_, io::ErrorKind::WouldBlock) => {
                    if self.output_stalled_since.is_none() {
                        self.output_stalled_since = Some(Instant::now());
                    }
                    return false;
                }
                (_, io::ErrorKind::Interrupted) => continue,
                _ => {
                    self.file_body = None;
                    self.dead = true;
                    return false;
                }
            }
        }
        true
    }

    /// Shuts our write side (the client sees the end of the response) and discards input briefly.
    fn start_lingering(&mut self) {
        // SAFETY: shutdown on our own socket fd.
        unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_WR) };
        self.phase = Phase::Lingering;
        self.linger_until = Some(Instant::now() + LINGER);
        self.read_buffer = Vec::new();
        if self.peer_closed {
            self.dead = true;
        }
    }

    /// Appends body bytes under the current framing; extra bytes beyond a Content-Length and any
    /// bytes of a bodiless response are dropped.
    pub fn push_body(&mut self, data: &[u8]) {
        let Phase::Sending { framing, remaining } = &mut self.phase else {
            return;
        };
        match framing {
            OutFraming::NoBody => {}
            OutFraming::Length(_) => {
                let take = (*remaining).min(data.len() as u64) as usize;
                self.write_buffer.extend_from_slice(&data[..take]);
                *remaining -= take as u64;
                self.body_bytes_sent += take as u64;
            }
            OutFraming::Chunked => {
                encode::encode_chunk(&mut self.write_buffer, data);
                self.body_bytes_sent += data.len() as u64;
            }
            OutFraming::UntilClose => {
                self.write_buffer.extend_from_slice(data);
                self.body_bytes_sent += data.len() as u64;
            }
        }
    }

    /// Ends the response body. Returns whether the connection may be kept alive.
    pub fn end_body(&mut self, keep_alive: bool) -> bool {
        let Phase::Sending { framing, remaining } = self.phase else {
            return false;
        };
        let intact = match framing {
            OutFraming::Chunked => {
                self.write_buffer.extend_from_slice(encode::LAST_CHUNK);
                true
            }
            // Fewer bytes than announced: the client would wait for the rest; only a close ends it.
            OutFraming::Length(_) => remaining == 0,
            OutFraming::NoBody => true,
            OutFraming::UntilClose => false,
        };
        keep_alive && intact
    }
}

/// Rewinds a spooled body so Perl reads it from the start.
fn rewind(body: BodySink) -> io::Result<BodySink> {
    match body {
        BodySink::File(mut file, length) => {
            file.rewind()?;
            Ok(BodySink::File(file, length))
        }
        memory => Ok(memory),
    }
}
