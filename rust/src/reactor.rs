//! The reactor: one mio `Poll` per server, its listeners and connections, deadlines, and the
//! hand-off of complete requests to the app. Perl drives it: the poll fd is watched by an
//! AnyEvent io watcher that calls `poll`, and a one-second AnyEvent timer calls `tick`.
//!
//! Perl code re-enters the reactor (a responder called inside the app, a writer used from a
//! timer), so state lives in a `RefCell` that is never borrowed across a call into Perl, and
//! connections are named by slot index plus generation and looked up again after every call.

use crate::access_log::{AccessLog, PendingEntry};
use crate::conn::{BodySink, CompleteRequest, Conn, Expiry, InputEvent, Phase, RemoteAddr};
use crate::deadline::{DeadlineWheel, Entry};
use crate::h1::encode::{self, DateCache, HeadError, OutFraming};
use crate::limits::{Config, EVENTS_PER_POLL, WRITE_HIGH_WATER};
use crate::perl::env::{Env, EnvKeys, RequestView};
use crate::perl::response::FastResponse;
use crate::perl::{Called, Perl, HV, SV};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long a connection accepted just before a drain may take to send its first request.
const DRAIN_FIRST_REQUEST_GRACE_SECONDS: u64 = 2;

/// Bodies at least this large are sent without copying them into the write buffer.
const DIRECT_SEND_MIN: u64 = 64 * 1024;

/// Listener tokens live above every possible connection slot.
const LISTENER_TOKEN_BASE: usize = 1 << 40;

/// Perl callbacks and values the reactor uses; each holds one reference of ours.
pub struct Hooks {
    pub app: *mut SV,
    /// `($reactor, $id, $response, $env)`: every response the fast path does not take.
    pub respond: *mut SV,
    /// `($env, $error)`: report an error on psgi.errors.
    pub log_error: *mut SV,
    /// `($fd, $is_unix, $reactor, $id)`: an IO::Socket for psgix.io owning `$fd`, which
    /// remembers its connection for `Twiggy::Server::on_client_close`.
    pub make_io: *mut SV,
    /// `($bytes)`: a seekable in-memory psgi.input.
    pub input_from_string: *mut SV,
    /// `($fd)`: a psgi.input reading a spooled body file, owning `$fd`.
    pub input_from_fd: *mut SV,
    /// `()`: called once when draining has finished.
    pub drained: *mut SV,
    /// The shared empty psgi.input.
    pub null_input: *mut SV,
}

impl Hooks {
    fn all(&self) -> [*mut SV; 8] {
        [
            self.app,
            self.respond,
            self.log_error,
            self.make_io,
            self.input_from_string,
            self.input_from_fd,
            self.drained,
            self.null_input,
        ]
    }
}

struct Listener {
    fd: OwnedFd,
    is_unix: bool,
    /// accept failed with something other than EAGAIN (e.g. EMFILE): retry on the next tick.
    retry: bool,
}

/// What one poll event said about one token.
struct Readiness {
    token: usize,
    readable: bool,
    /// The peer closed its write side (EPOLLRDHUP).
    hangup: bool,
    writable: bool,
    /// The socket failed or both directions are closed.
    gone: bool,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

struct State {
    poll: Poll,
    events: Events,
    config: Config,
    listeners: Vec<Option<Listener>>,
    /// The static part of the env for each listener, by listener index (references of ours,
    /// kept until the reactor goes: requests accepted before a drain still need them).
    templates: Vec<*mut HV>,
    /// Requests handed to the app so far (for `max_requests`).
    requests_dispatched: u64,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    ready: VecDeque<u64>,
    drains: VecDeque<u64>,
    /// Close callbacks of connections that went away mid-response, to be called.
    closed: Vec<*mut SV>,
    /// SVs to release once no borrow is held (releasing can run DESTROY).
    releases: Vec<*mut SV>,
    date: DateCache,
    wheel: DeadlineWheel,
    access_log: Option<AccessLog>,
    read_scratch: Vec<u8>,
    draining: bool,
    drained_reported: bool,
    connections: usize,
}

/// Why a response call from Perl could not be carried out.
#[derive(Debug)]
pub enum RespondError {
    /// The connection is closed (client gone, or already cut).
    Gone,
    /// A response was already started for this request.
    AlreadyStarted,
    Invalid(HeadError),
}

pub struct Reactor {
    perl: Perl,
    /// The Perl object (referent) that owns this reactor; handed to callbacks as `$reactor`.
    self_sv: Cell<*mut SV>,
    /// A weak reference to that object (ours), carried by every lazy `psgix.io` value.
    weak_self: Cell<*mut SV>,
    hooks: Hooks,
    keys: EnvKeys,
    state: RefCell<State>,
    dispatching: Cell<bool>,
    fast: RefCell<FastResponse>,
    path_scratch: RefCell<Vec<u8>>,
    /// An env per listener ready to be filled again (see `perl::env_reuse`); taken out while a
    /// request uses it, so a request dispatched from inside the app builds its own.
    spare_envs: RefCell<Vec<Option<Env>>>,
    /// The events of one poll round, kept between rounds so a wake-up allocates nothing.
    /// Taken out while in use: an app running the loop inside a request re-enters `poll`.
    ready_scratch: RefCell<Vec<Readiness>>,
}

fn make_id(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

fn split_id(id: u64) -> (usize, u32) {
    ((id & 0xffff_ffff) as usize, (id >> 32) as u32)
}

impl State {
    fn conn_mut(&mut self, id: u64) -> Option<&mut Conn> {
        let (index, generation) = split_id(id);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.conn.as_mut()
    }

    /// Removes a connection: deregisters, closes (or, with `shutdown`, first shuts the socket
    /// down so that a psgix.io duplicate cannot keep it open), and queues its SVs for release.
    fn remove(&mut self, index: usize, shutdown: bool) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(mut conn) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        let fd = conn.raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if shutdown {
            // SAFETY: shutdown on our own socket fd, which is still open.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        if let Some(entry) = conn.scheduled {
            self.cancel_entry(entry);
        }
        if let (Some(log), Some(entry)) = (self.access_log.as_mut(), conn.log_entry.take()) {
            log.finish(entry, conn.status_sent, conn.body_bytes_sent);
        }
        self.releases.push(conn.io_handle);
        if conn.has_outstanding_request() {
            // Both run once more: the writer's `write` (or a pull body's) now returns false, so
            // the app stops producing and closes its body.
            for callback in [conn.close_callback, conn.drain_callback] {
                if !callback.is_null() {
                    self.closed.push(callback);
                }
            }
        } else {
            self.releases.push(conn.close_callback);
            self.releases.push(conn.drain_callback);
        }
        drop(conn);
        self.free_slots.push(index);
        self.connections -= 1;
    }

    fn reap(&mut self, index: usize) {
        let dead = self.slots.get(index).and_then(|slot| slot.conn.as_ref()).is_some_and(|conn| conn.dead);
        if dead {
            self.remove(index, true);
        }
    }

    /// Feeds socket input to the connection's parser and acts on the outcome.
    fn pump(&mut self, index: usize) {
        self.pump_at(index, Instant::now());
    }

    fn pump_at(&mut self, index: usize, now: Instant) {
        let State { slots, config, read_scratch, date, ready, .. } = self;
        let slot = &mut slots[index];
        let generation = slot.generation;
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        match conn.pump_input(config, read_scratch, now) {
            InputEvent::Nothing => {}
            InputEvent::Request => ready.push_back(make_id(index, generation)),
            // The peer is done sending; whatever we still owe it is flushed before closing.
            InputEvent::Gone if conn.pending_output() > 0 => conn.close_when_flushed(),
            InputEvent::Gone => conn.dead = true,
            InputEvent::Refused(status) => conn.refuse(status, date.get()),
        }
        // Output may have been queued (an automatic answer, 100 Continue).
        if conn.pending_output() > 0 {
            self.flush(index);
        } else {
            self.reap(index);
            self.arm(index);
        }
    }

    /// Files the connection's deadline in the wheel if it is earlier than what is filed.
    fn arm(&mut self, index: usize) {
        let State { slots, config, wheel, .. } = self;
        let Some(slot) = slots.get_mut(index) else {
            return;
        };
        let id = make_id(index, slot.generation);
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let Some((at, _)) = conn.deadline(config) else {
            return;
        };
        let second = wheel.second_of(at);
        let earlier = match conn.scheduled {
            None => true,
            Some(entry) if second < entry.second => {
                conn.scheduled = None;
                self.cancel_entry(entry);
                true
            }
            Some(_) => false,
        };
        if earlier {
            let entry = self.wheel.schedule(id, at);
            if let Some(conn) = self.slots[index].conn.as_mut() {
                conn.scheduled = Some(entry);
            }
        }
    }

    /// Takes an entry out of the wheel, and tells the connection whose entry moved into its
    /// place where that is now.
    fn cancel_entry(&mut self, entry: Entry) {
        if let Some(moved) = self.wheel.cancel(entry) {
            if let Some(conn) = self.conn_mut(moved) {
                conn.scheduled = Some(entry);
            }
        }
    }

    /// Acts on a deadline that has passed.
    fn expire(&mut self, index: usize, expiry: Expiry) {
        let State { slots, date, .. } = self;
        let Some(conn) = slots[index].conn.as_mut() else {
            return;
        };
        match expiry {
            Expiry::Write | Expiry::Idle | Expiry::Linger => conn.dead = true,
            // RFC 9110 15.5.9: the client took too long to send its request.
            Expiry::Request => conn.refuse(408, date.get()),
        }
        self.flush(index);
    }

    fn flush(&mut self, index: usize) {
        let generation = self.slots[index].generation;
        let Some(conn) = self.slots[index].conn.as_mut() else {
            return;
        };
        conn.flush();
        if conn.pending_output() == 0 && !conn.drain_callback.is_null() {
            self.drains.push_back(make_id(index, generation));
        }
        let lingering_and_closed = matches!(conn.phase, Phase::Lingering) && conn.peer_closed;
        if lingering_and_closed {
            conn.dead = true;
        }
        self.reap(index);
        self.arm(index);
    }

    /// Stops accepting (listeners closed: the backlog goes to other processes sharing the
    /// socket), closes idle connections, and lets the others finish their exchange.
    fn begin_drain(&mut self) {
        self.draining = true;
        let listeners: Vec<Listener> = self.listeners.iter_mut().filter_map(Option::take).collect();
        for listener in listeners {
            unwatch_listener(self.poll.as_raw_fd(), listener.fd.as_raw_fd());
        }
        let grace = Instant::now() + Duration::from_secs(DRAIN_FIRST_REQUEST_GRACE_SECONDS);
        for index in 0..self.slots.len() {
            if !self.slots[index].conn.as_ref().is_some_and(Conn::is_idle) {
                continue;
            }
            // A request may already wait in the socket: read it before judging.
            self.pump(index);
            let Some(conn) = self.slots[index].conn.as_mut() else {
                continue;
            };
            if !conn.is_idle() {
                continue;
            }
            if conn.requests_finished > 0 {
                self.remove(index, true);
            } else {
                // Accepted before the drain, first request not here yet: the client is sending
                // it. Serve it if it comes soon, close quietly otherwise.
                conn.close_if_idle_at(grace);
                self.arm(index);
            }
        }
    }

    /// Encodes the head of the response to request `id` (which must not have one yet) and
    /// enters the body phase; returns the slot and the framing chosen.
    fn begin_response<H: AsRef<[u8]>>(
        &mut self,
        id: u64,
        status: u16,
        headers: &[(H, H)],
        body_length: Option<u64>,
    ) -> Result<(usize, encode::ResponsePlan), RespondError> {
        let draining = self.draining;
        let State { slots, date, .. } = self;
        let (index, _) = split_id(id);
        let conn = match slots.get_mut(index) {
            Some(slot) if make_id(index, slot.generation) == id => slot.conn.as_mut(),
            _ => None,
        }
        .ok_or(RespondError::Gone)?;
        if !matches!(conn.phase, Phase::App) {
            return Err(RespondError::AlreadyStarted);
        }
        let mut facts = conn.facts;
        facts.keep_alive &= !draining;
        let plan = encode::encode_head(&mut conn.write_buffer, status, headers, body_length, facts, date.get())
            .map_err(RespondError::Invalid)?;
        conn.status_sent = status;
        conn.phase = Phase::Sending { framing: plan.framing, remaining: framing_length(plan.framing) };
        Ok((index, plan))
    }

    /// After a response is complete: keep the connection for the next request, or close it.
    fn finish_exchange(&mut self, index: usize, keep_alive: bool) {
        let keep_alive = keep_alive && !self.draining;
        let Some(conn) = self.slots[index].conn.as_mut() else {
            return;
        };
        if let (Some(log), Some(entry)) = (self.access_log.as_mut(), conn.log_entry.take()) {
            log.finish(entry, conn.status_sent, conn.body_bytes_sent);
        }
        conn.status_sent = 0;
        conn.body_bytes_sent = 0;
        // The exchange is over: a close callback was for this request only.
        let callback = std::mem::replace(&mut conn.close_callback, std::ptr::null_mut());
        if !callback.is_null() {
            self.releases.push(callback);
        }
        if keep_alive {
            let now = Instant::now();
            conn.await_next_request(now);
            self.flush(index);
            self.pump_at(index, now);
        } else {
            conn.phase = Phase::Sending { framing: OutFraming::NoBody, remaining: 0 };
            conn.close_after_flush = true;
            self.flush(index);
        }
    }
}

impl Reactor {
    pub fn new(perl: Perl, hooks: Hooks, config: Config) -> io::Result<Reactor> {
        let access_log = config.access_log_fd.map(AccessLog::from_fd);
        let read_scratch = vec![0u8; config.read_chunk_size.max(4096)];
        let state = State {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_PER_POLL),
            config,
            listeners: Vec::new(),
            templates: Vec::new(),
            requests_dispatched: 0,
            slots: Vec::new(),
            free_slots: Vec::new(),
            ready: VecDeque::new(),
            drains: VecDeque::new(),
            closed: Vec::new(),
            releases: Vec::new(),
            date: DateCache::default(),
            wheel: DeadlineWheel::new(Instant::now()),
            access_log,
            read_scratch,
            draining: false,
            drained_reported: false,
            connections: 0,
        };
        Ok(Reactor {
            perl,
            self_sv: Cell::new(std::ptr::null_mut()),
            weak_self: Cell::new(std::ptr::null_mut()),
            hooks,
            keys: EnvKeys::new(perl),
            state: RefCell::new(state),
            dispatching: Cell::new(false),
            fast: RefCell::new(FastResponse::default()),
            path_scratch: RefCell::new(Vec::new()),
            spare_envs: RefCell::new(Vec::new()),
            ready_scratch: RefCell::new(Vec::new()),
        })
    }

    pub fn perl(&self) -> Perl {
        self.perl
    }

    /// A response whose parts Perl has normalised to plain strings: the whole response when
    /// `body` is an array reference, the head of a stream when it is null. None when a part
    /// is not plain after all.
    pub fn respond_from_perl(
        &self,
        id: u64,
        status: *mut SV,
        headers: *mut SV,
        body: *mut SV,
    ) -> Option<Result<(), RespondError>> {
        let mut fast = FastResponse::default();
        if !fast.read_parts(self.perl, status, headers, body) {
            return None;
        }
        Some(if body.is_null() {
            self.start_stream(id, fast.status, &fast.headers)
        } else {
            self.respond(id, fast.status, &fast.headers, &fast.body, fast.body_length)
        })
    }

    pub fn set_self(&self, referent: *mut SV) {
        self.self_sv.set(referent);
        let weak = self.perl.new_ref(referent);
        // SAFETY: weakening our own fresh RV to the reactor object; it becomes undef when the
        // object goes, which lazy psgix.io values check.
        unsafe { libperl_sys::thx::Perl_sv_rvweaken(self.perl.0, weak) };
        self.perl.dec(self.weak_self.replace(weak));
    }

    /// The psgix.io handle of connection `id`, made on first use; null once it is gone.
    pub fn io_handle(&self, id: u64) -> *mut SV {
        let (fd, is_unix) = {
            let Ok(mut state) = self.state.try_borrow_mut() else {
                return std::ptr::null_mut();
            };
            match state.conn_mut(id) {
                None => return std::ptr::null_mut(),
                Some(conn) if !conn.io_handle.is_null() => return conn.io_handle,
                Some(conn) => match duplicate_fd(conn.raw_fd()) {
                    Some(fd) => (fd, conn.is_unix),
                    None => return std::ptr::null_mut(),
                },
            }
        };
        let handle = self.make_io(fd, is_unix, id);
        if handle.is_null() {
            return handle;
        }
        if let Ok(mut state) = self.state.try_borrow_mut() {
            if let Some(conn) = state.conn_mut(id) {
                if conn.io_handle.is_null() {
                    conn.io_handle = self.perl.inc(handle);
                }
            }
        }
        handle
    }

    pub fn poll_fd(&self) -> RawFd {
        self.state.borrow().poll.as_raw_fd()
    }

    pub fn connection_count(&self) -> usize {
        self.state.borrow().connections
    }

    /// Takes ownership of a listening socket `fd` and serves it with the env `template`.
    pub fn add_listener(&self, fd: RawFd, template: *mut HV, is_unix: bool) -> io::Result<()> {
        // SAFETY: Perl hands over a listening socket it will not close itself.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        set_nonblocking(fd)?;
        let mut state = self.state.borrow_mut();
        let index = state.listeners.len();
        watch_listener(state.poll.as_raw_fd(), fd, index)?;
        self.perl.inc(template as *mut SV);
        state.templates.push(template);
        state.listeners.push(Some(Listener { fd: owned, is_unix, retry: false }));
        Ok(())
    }

    /// One round of I/O: everything that is ready now, then the app for complete requests.
    pub fn poll(&self) -> io::Result<()> {
        let mut ready = std::mem::take(&mut *self.ready_scratch.borrow_mut());
        {
            let mut state = self.state.borrow_mut();
            let State { poll, events, .. } = &mut *state;
            match poll.poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
            for event in events.iter() {
                ready.push(Readiness {
                    token: event.token().0,
                    readable: event.is_readable() || event.is_read_closed(),
                    hangup: event.is_read_closed(),
                    writable: event.is_writable(),
                    gone: event.is_error() || (event.is_read_closed() && event.is_write_closed()),
                });
            }
        }
        for readiness in ready.drain(..) {
            if readiness.token >= LISTENER_TOKEN_BASE {
                self.accept_all(readiness.token - LISTENER_TOKEN_BASE);
            } else {
                self.connection_event(readiness);
            }
        }
        *self.ready_scratch.borrow_mut() = ready;
        self.run_queues();
        Ok(())
    }

    fn connection_event(&self, readiness: Readiness) {
        let Readiness { token: index, readable, hangup, writable, gone } = readiness;
        let mut state = self.state.borrow_mut();
        let Some(conn) = state.slots.get_mut(index).and_then(|slot| slot.conn.as_mut()) else {
            return;
        };
        let app_working = matches!(conn.phase, Phase::App | Phase::Sending { .. } | Phase::Queued);
        if app_working && (gone || (hangup && conn.peer_finished())) {
            // The client left while the app works: only this connection pays, and the app
            // hears of it (on_close, poll_cb, write returning false).
            conn.dead = true;
            state.reap(index);
            return;
        }
        conn.hangup_reported |= hangup;
        if readable {
            conn.read_blocked = false;
        }
        // A writable edge with nothing owed (the usual one, right after a response went out)
        // needs no flush: the pump below reaps and re-arms the connection anyway.
        let owes =
            conn.pending_output() > 0 || !conn.drain_callback.is_null() || matches!(conn.phase, Phase::Lingering);
        if writable && owes {
            state.flush(index);
        }
        // Pumping after a writable event too: input paused behind a full output buffer
        // (pipelining) resumes once it drains.
        state.pump(index);
    }

    fn accept_all(&self, listener_index: usize) {
        let mut state = self.state.borrow_mut();
        let no_delay = state.config.no_delay;
        loop {
            let Some(listener) = state.listeners.get_mut(listener_index).and_then(Option::as_mut) else {
                return;
            };
            listener.retry = false;
            let is_unix = listener.is_unix;
            let (fd, peer) = match accept(listener.fd.as_raw_fd()) {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS...: the pending connection stays in the backlog.
                    // The listener is level-triggered, so stop watching it (or the loop would
                    // spin) and try again on the next tick.
                    listener.retry = true;
                    let listener_fd = listener.fd.as_raw_fd();
                    unwatch_listener(state.poll.as_raw_fd(), listener_fd);
                    return;
                }
            };
            if no_delay && !is_unix {
                set_no_delay(fd.as_raw_fd());
            }
            let (remote_addr, remote_port) = match peer {
                Some(address) => (RemoteAddr::of(address.ip()), address.port()),
                None => (RemoteAddr::unix(), 0),
            };
            let index = match state.free_slots.pop() {
                Some(index) => index,
                None => {
                    state.slots.push(Slot { generation: 1, conn: None });
                    state.slots.len() - 1
                }
            };
            let raw = fd.as_raw_fd();
            let registered = state.poll.registry().register(
                &mut SourceFd(&raw),
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            );
            if registered.is_err() {
                state.free_slots.push(index);
                continue;
            }
            state.slots[index].conn = Some(Conn::new(fd, listener_index, remote_addr, remote_port, is_unix));
            state.connections += 1;
            state.arm(index);
        }
    }

    /// Expires deadlines and retries paused listeners; called about once a second.
    pub fn tick(&self) {
        {
            let mut state = self.state.borrow_mut();
            let now = Instant::now();
            if let Some(log) = state.access_log.as_mut() {
                log.flush();
            }
            let mut due = Vec::new();
            state.wheel.expire(now, &mut due);
            for id in due {
                let (index, generation) = split_id(id);
                let State { slots, config, .. } = &mut *state;
                let deadline = match slots.get_mut(index) {
                    Some(Slot { generation: current, conn: Some(conn) }) if *current == generation => {
                        conn.scheduled = None;
                        conn.deadline(config)
                    }
                    _ => continue,
                };
                match deadline {
                    Some((at, expiry)) if at <= now => state.expire(index, expiry),
                    Some(_) => state.arm(index),
                    None => {}
                }
            }
        }
        let retry: Vec<usize> = {
            let state = self.state.borrow();
            state
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, listener)| listener.as_ref().is_some_and(|listener| listener.retry))
                .map(|(index, _)| index)
                .collect()
        };
        for index in retry {
            {
                let state = self.state.borrow();
                if let Some(listener) = state.listeners.get(index).and_then(Option::as_ref) {
                    let _ = watch_listener(state.poll.as_raw_fd(), listener.fd.as_raw_fd(), index);
                }
            }
            self.accept_all(index);
        }
        self.run_queues();
    }

    /// Stops accepting, closes idle connections, and lets the others finish their exchange.
    pub fn drain(&self) {
        self.state.borrow_mut().begin_drain();
        self.run_queues();
    }

    /// Dispatches queued requests and drain callbacks until none are left. Not re-entered:
    /// a nested call (from Perl code running inside a dispatch) leaves the work to the outer one.
    fn run_queues(&self) {
        if !self.dispatching.replace(true) {
            loop {
                let (request, drain) = {
                    let mut state = self.state.borrow_mut();
                    let request = state.ready.pop_front();
                    let drain = if request.is_none() { state.drains.pop_front() } else { None };
                    (request, drain)
                };
                if let Some(id) = request {
                    self.dispatch(id);
                } else if let Some(id) = drain {
                    self.run_drain_callback(id);
                } else {
                    break;
                }
            }
            self.dispatching.set(false);
        }
        self.notify_closed();
        self.release_deferred();
        self.report_drained();
    }

    /// Tells apps that asked (`on_close`) that their client went away.
    fn notify_closed(&self) {
        loop {
            let callbacks = std::mem::take(&mut self.state.borrow_mut().closed);
            if callbacks.is_empty() {
                return;
            }
            for callback in callbacks {
                self.perl.enter_scope();
                if let Called::Died(error) = self.perl.call(callback, &[]) {
                    self.log_error(std::ptr::null_mut(), error);
                }
                self.perl.leave_scope();
                self.perl.dec(callback);
            }
        }
    }

    fn release_deferred(&self) {
        loop {
            let releases = {
                let mut state = self.state.borrow_mut();
                if state.releases.is_empty() {
                    return;
                }
                std::mem::take(&mut state.releases)
            };
            for &value in &releases {
                self.perl.dec(value);
            }
            // Hand the emptied vector back so the next release does not allocate.
            let mut releases = releases;
            releases.clear();
            let mut state = self.state.borrow_mut();
            if state.releases.is_empty() {
                state.releases = releases;
            }
        }
    }

    fn report_drained(&self) {
        let report = {
            let mut state = self.state.borrow_mut();
            let report = state.draining && state.connections == 0 && !state.drained_reported && !self.dispatching.get();
            if report {
                state.drained_reported = true;
            }
            report
        };
        if report {
            self.perl.enter_scope();
            if let Called::Died(error) = self.perl.call(self.hooks.drained, &[]) {
                self.log_error(std::ptr::null_mut(), error);
            }
            self.perl.leave_scope();
        }
    }

    fn run_drain_callback(&self, id: u64) {
        let callback = {
            let mut state = self.state.borrow_mut();
            match state.conn_mut(id) {
                Some(conn) => std::mem::replace(&mut conn.drain_callback, std::ptr::null_mut()),
                None => std::ptr::null_mut(),
            }
        };
        if callback.is_null() {
            return;
        }
        self.perl.enter_scope();
        if let Called::Died(error) = self.perl.call(callback, &[]) {
            self.log_error(std::ptr::null_mut(), error);
            self.cut(id);
        }
        self.perl.leave_scope();
        self.perl.dec(callback);
    }

    /// Hands one complete request to the app.
    fn dispatch(&self, id: u64) {
        let taken = {
            let mut state = self.state.borrow_mut();
            let Some(conn) = state.conn_mut(id) else {
                return;
            };
            let Some(request) = conn.take_request() else {
                return;
            };
            conn.phase = Phase::App;
            let head_bytes = std::mem::take(&mut conn.head_bytes);
            let remote = (conn.remote_addr, conn.remote_port);
            let listener = conn.listener;
            if let Some(log) = state.access_log.as_mut() {
                let entry = log_entry(log, &remote.0, &request, &head_bytes);
                if let Some(conn) = state.conn_mut(id) {
                    conn.log_entry = Some(entry);
                }
            }
            let template = state.templates.get(listener).copied();
            state.requests_dispatched += 1;
            if state.config.max_requests.is_some_and(|limit| state.requests_dispatched >= limit) {
                // This process has served its share (prefork recycling): the response to this
                // request is the last, and says Connection: close.
                state.begin_drain();
            }
            (request, head_bytes, remote, template, listener)
        };
        let (request, head_bytes, (remote_addr, remote_port), template, listener) = taken;
        let perl = self.perl;
        let Some(template) = template else {
            self.cut(id);
            return;
        };
        perl.enter_scope();
        let CompleteRequest { head, body } = request;
        let body_length = body.as_ref().map(BodySink::length);
        let input = self.make_input(body);
        let spare = self.spare_envs.borrow_mut().get_mut(listener).and_then(Option::take);
        let mut env = spare.unwrap_or_else(|| Env::new(perl, &self.keys, template, listener, self.weak_self.get()));
        {
            // Taken out, not borrowed: no RefCell is held while Perl code could run.
            let mut scratch = std::mem::take(&mut *self.path_scratch.borrow_mut());
            let view = RequestView {
                head: &head,
                head_bytes: &head_bytes,
                body_length,
                remote_addr: remote_addr.as_bytes(),
                remote_port,
            };
            env.fill(perl, &self.keys, &view, input, id, &mut scratch);
            *self.path_scratch.borrow_mut() = scratch;
        }
        let env_ref = env.reference();
        match perl.call(self.hooks.app, &[env_ref]) {
            Called::Died(error) => self.app_failed(id, env_ref, error),
            Called::Returned(response) => self.take_response(id, env_ref, response),
        }
        self.keep_env(env);
        perl.leave_scope();
        let mut state = self.state.borrow_mut();
        if let Some(conn) = state.conn_mut(id) {
            if conn.head_bytes.is_empty() {
                let mut reused = head_bytes;
                reused.clear();
                conn.head_bytes = reused;
            }
            if conn.spare_headers.capacity() == 0 {
                conn.spare_headers = head.headers;
            }
        }
    }

    /// Keeps `env` for the next request on its listener when the app left it reusable.
    /// `reclaim` and `release` may run Perl code (DESTROY), so no RefCell is held across them.
    fn keep_env(&self, mut env: Env) {
        let perl = self.perl;
        let listener = env.listener();
        let slot_free = self.spare_envs.borrow().get(listener).is_none_or(Option::is_none);
        if slot_free && env.reclaim(perl, self.hooks.null_input) {
            let mut spares = self.spare_envs.borrow_mut();
            if spares.len() <= listener {
                spares.resize_with(listener + 1, || None);
            }
            if spares[listener].is_none() {
                spares[listener] = Some(env);
                return;
            }
        }
        env.release(perl);
    }

    fn make_io(&self, fd: RawFd, is_unix: bool, id: u64) -> *mut SV {
        let perl = self.perl;
        let arguments = [
            perl.mortal(perl.new_int(i64::from(fd))),
            perl.mortal(perl.new_int(i64::from(is_unix))),
            perl.mortal(perl.new_ref(self.self_sv.get())),
            perl.mortal(perl.new_int(id as i64)),
        ];
        match perl.call(self.hooks.make_io, &arguments) {
            Called::Returned(handle) => handle,
            Called::Died(error) => {
                self.log_error(std::ptr::null_mut(), error);
                std::ptr::null_mut()
            }
        }
    }

    /// psgi.input for the request: the shared empty handle, or one made by Perl over the body
    /// (owned by the current scope).
    fn make_input(&self, body: Option<BodySink>) -> *mut SV {
        let perl = self.perl;
        let called = match body {
            None => return self.hooks.null_input,
            Some(BodySink::Memory(bytes)) => {
                let data = perl.mortal(perl.new_string(&bytes));
                perl.call(self.hooks.input_from_string, &[data])
            }
            Some(BodySink::File(file, _)) => {
                let fd = perl.mortal(perl.new_int(i64::from(file.into_raw_fd())));
                perl.call(self.hooks.input_from_fd, &[fd])
            }
        };
        match called {
            Called::Returned(handle) if !handle.is_null() => handle,
            Called::Returned(_) => self.hooks.null_input,
            Called::Died(error) => {
                self.log_error(std::ptr::null_mut(), error);
                self.hooks.null_input
            }
        }
    }

    /// Reads the app's response on the fast path, or hands it to Perl.
    fn take_response(&self, id: u64, env_ref: *mut SV, response: *mut SV) {
        let fast_result = {
            let mut fast = self.fast.borrow_mut();
            if fast.read(self.perl, response) {
                Some(self.respond(id, fast.status, &fast.headers, &fast.body, fast.body_length))
            } else {
                None
            }
        };
        match fast_result {
            Some(Ok(())) | Some(Err(RespondError::Gone)) => {}
            Some(Err(RespondError::Invalid(error))) => {
                let message = self.perl.mortal(self.perl.new_string(error.message().as_bytes()));
                self.app_failed(id, env_ref, message);
            }
            Some(Err(RespondError::AlreadyStarted)) => {}
            None => {
                let perl = self.perl;
                let reactor = perl.mortal(perl.new_ref(self.self_sv.get()));
                let id_sv = perl.mortal(perl.new_int(id as i64));
                if let Called::Died(error) = perl.call(self.hooks.respond, &[reactor, id_sv, response, env_ref]) {
                    self.app_failed(id, env_ref, error);
                }
            }
        }
    }

    /// The app died or answered nonsense: log it, then 500 if nothing was sent, else cut.
    pub fn app_failed(&self, id: u64, env_ref: *mut SV, error: *mut SV) {
        self.log_error(env_ref, error);
        self.fail(id);
    }

    pub fn fail(&self, id: u64) {
        let not_started = {
            let mut state = self.state.borrow_mut();
            state.conn_mut(id).is_some_and(|conn| matches!(conn.phase, Phase::App))
        };
        if not_started {
            let body = encode::reason_phrase(500).as_bytes();
            let headers: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"text/plain")];
            let _ = self.respond(id, 500, &headers, &[body], body.len() as u64);
        } else {
            self.cut(id);
        }
    }

    fn log_error(&self, env_ref: *mut SV, error: *mut SV) {
        let perl = self.perl;
        let env_argument = if env_ref.is_null() { perl.mortal(perl.new_string(b"")) } else { env_ref };
        if let Called::Died(_) = perl.call(self.hooks.log_error, &[env_argument, error]) {
            // The logger itself failed; there is nowhere left to report to.
        }
    }

    /// A complete response with the whole body in hand.
    pub fn respond<H: AsRef<[u8]>, B: AsRef<[u8]>>(
        &self,
        id: u64,
        status: u16,
        headers: &[(H, H)],
        body: &[B],
        body_length: u64,
    ) -> Result<(), RespondError> {
        let mut state = self.state.borrow_mut();
        let (index, plan) = state.begin_response(id, status, headers, Some(body_length))?;
        let Some(conn) = state.slots[index].conn.as_mut() else {
            return Err(RespondError::Gone);
        };
        let whole_body = plan.framing == OutFraming::Length(body_length);
        if whole_body && body_length >= DIRECT_SEND_MIN && conn.pending_output() < DIRECT_SEND_MIN as usize {
            // Large body: straight from the app's strings to the socket, no copy.
            conn.send_with_body(body);
        } else {
            for chunk in body {
                conn.push_body(chunk.as_ref());
            }
        }
        let keep_alive = conn.end_body(plan.keep_alive);
        state.finish_exchange(index, keep_alive);
        drop(state);
        self.run_queues();
        Ok(())
    }

    /// Sends the head of a streamed response; the body follows through `write`.
    pub fn start_stream<H: AsRef<[u8]>>(&self, id: u64, status: u16, headers: &[(H, H)]) -> Result<(), RespondError> {
        let mut state = self.state.borrow_mut();
        let (index, plan) = state.begin_response(id, status, headers, None)?;
        if let Some(conn) = state.slots[index].conn.as_mut() {
            conn.facts.keep_alive = plan.keep_alive;
        }
        state.flush(index);
        drop(state);
        self.run_queues();
        Ok(())
    }

    /// Sends `length` bytes of the file open on `fd` (from `offset`) as the body of a
    /// streamed response whose head announced exactly that length. Ok(false) when the response
    /// is not such a one: the caller then sends the body itself.
    pub fn send_file(&self, id: u64, fd: RawFd, offset: u64, length: u64) -> Result<bool, RespondError> {
        let mut state = self.state.borrow_mut();
        let (index, _) = split_id(id);
        let conn = state.conn_mut(id).ok_or(RespondError::Gone)?;
        let Some(duplicate) = duplicate_fd(fd) else {
            return Ok(false);
        };
        // SAFETY: a fresh descriptor from F_DUPFD_CLOEXEC, owned from here on.
        let file = unsafe { OwnedFd::from_raw_fd(duplicate) };
        let taken = conn.send_file(file, offset, length);
        state.flush(index);
        drop(state);
        self.run_queues();
        Ok(taken)
    }

    /// Appends streamed body bytes. Ok(true) while the output buffer is below the high-water mark.
    pub fn write(&self, id: u64, data: &[u8]) -> Result<bool, RespondError> {
        let mut state = self.state.borrow_mut();
        let (index, _) = split_id(id);
        let conn = state.conn_mut(id).ok_or(RespondError::Gone)?;
        if conn.dead || !matches!(conn.phase, Phase::Sending { .. }) || conn.close_after_flush {
            return Err(RespondError::Gone);
        }
        conn.push_body(data);
        state.flush(index);
        let below_high_water = state.conn_mut(id).map(|conn| conn.pending_output() <= WRITE_HIGH_WATER);
        drop(state);
        self.run_queues();
        below_high_water.ok_or(RespondError::Gone)
    }

    /// Ends a streamed body.
    pub fn close_stream(&self, id: u64) -> Result<(), RespondError> {
        {
            let mut state = self.state.borrow_mut();
            let (index, _) = split_id(id);
            let conn = state.conn_mut(id).ok_or(RespondError::Gone)?;
            if !matches!(conn.phase, Phase::Sending { .. }) {
                return Err(RespondError::Gone);
            }
            let keep_alive = conn.facts.keep_alive;
            let keep_alive = conn.end_body(keep_alive);
            state.finish_exchange(index, keep_alive);
        }
        self.run_queues();
        Ok(())
    }

    /// Runs `callback` (a reference we now own) once the output buffer has drained.
    pub fn on_drain(&self, id: u64, callback: *mut SV) -> Result<(), RespondError> {
        let mut state = self.state.borrow_mut();
        let (index, _) = split_id(id);
        let (previous, drained) = match state.conn_mut(id) {
            Some(conn) => (std::mem::replace(&mut conn.drain_callback, callback), conn.pending_output() == 0),
            None => {
                state.releases.push(callback);
                return Err(RespondError::Gone);
            }
        };
        state.releases.push(previous);
        if drained {
            let generation = state.slots[index].generation;
            state.drains.push_back(make_id(index, generation));
        }
        Ok(())
    }

    /// Runs `callback` (a reference we now own) if the connection closes before the current
    /// response is complete; at once if it is already gone.
    pub fn on_close(&self, id: u64, callback: *mut SV) -> Result<(), RespondError> {
        let mut state = self.state.borrow_mut();
        match state.conn_mut(id) {
            Some(conn) if conn.has_outstanding_request() => {
                let previous = std::mem::replace(&mut conn.close_callback, callback);
                state.releases.push(previous);
                Ok(())
            }
            _ => {
                state.closed.push(callback);
                drop(state);
                self.run_queues();
                Err(RespondError::Gone)
            }
        }
    }

    /// Cuts the connection: no more bytes, the client sees an incomplete response.
    pub fn cut(&self, id: u64) {
        let mut state = self.state.borrow_mut();
        let (index, _) = split_id(id);
        if state.conn_mut(id).is_some() {
            state.remove(index, true);
        }
        drop(state);
        self.run_queues();
    }

    /// The app has let go of a request without answering (its responder is gone): close our
    /// descriptor only, so a socket the app took over through psgix.io stays open for it.
    pub fn forget(&self, id: u64) {
        let mut state = self.state.borrow_mut();
        let (index, _) = split_id(id);
        let waiting = state.conn_mut(id).is_some_and(|conn| matches!(conn.phase, Phase::App));
        if waiting {
            state.remove(index, false);
        }
    }

    pub fn release_all(&self) {
        let spares = std::mem::take(&mut *self.spare_envs.borrow_mut());
        for env in spares.into_iter().flatten() {
            env.release(self.perl);
        }
        {
            let mut state = self.state.borrow_mut();
            for index in 0..state.slots.len() {
                state.remove(index, true);
            }
            state.listeners.clear();
            let templates = std::mem::take(&mut state.templates);
            state.releases.extend(templates.into_iter().map(|template| template as *mut SV));
        }
        self.release_deferred();
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.release_all();
        for hook in self.hooks.all() {
            self.perl.dec(hook);
        }
        self.keys.release(self.perl);
    }
}

/// Starts the access-log entry of a request, from its head.
fn log_entry(log: &mut AccessLog, remote: &RemoteAddr, request: &CompleteRequest, bytes: &[u8]) -> PendingEntry {
    let head = &request.head;
    let header = |wanted: &[u8]| {
        head.headers
            .iter()
            .find(|(name, _)| name.get(bytes).eq_ignore_ascii_case(wanted))
            .map_or(&b""[..], |(_, value)| value.get(bytes))
    };
    let protocol: &[u8] = if head.minor_version == 0 { b"HTTP/1.0" } else { b"HTTP/1.1" };
    log.begin(
        remote.as_bytes(),
        [head.method.get(bytes), head.target.get(bytes), protocol],
        header(b"referer"),
        header(b"user-agent"),
    )
}

fn framing_length(framing: OutFraming) -> u64 {
    match framing {
        OutFraming::Length(length) => length,
        _ => 0,
    }
}

fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid initial value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: accept4 writes at most `length` bytes into `storage` and returns a new fd we own.
    let fd = unsafe {
        libc::accept4(
            listener,
            &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut length,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor from accept4.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `storage` was filled by accept4 with `length` valid bytes.
    let address = unsafe {
        socket2::SockAddr::new(std::mem::transmute::<libc::sockaddr_storage, socket2::SockAddrStorage>(storage), length)
    };
    Ok((owned, address.as_socket()))
}

/// Watches a listening socket on mio's epoll instance, level-triggered and with EPOLLEXCLUSIVE:
/// when several processes share the socket (prefork), a new connection wakes one of them, not
/// all. mio cannot express that flag, so this is a raw epoll_ctl whose data field carries the
/// token exactly as mio stores it, and mio reports the event like any other.
fn watch_listener(poll_fd: RawFd, listener_fd: RawFd, index: usize) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
        u64: (LISTENER_TOKEN_BASE + index) as u64,
    };
    // SAFETY: both fds are open and ours; `event` is a valid epoll_event for the call.
    let result = unsafe { libc::epoll_ctl(poll_fd, libc::EPOLL_CTL_ADD, listener_fd, &mut event) };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EEXIST) {
            return Err(error);
        }
    }
    Ok(())
}

fn unwatch_listener(poll_fd: RawFd, listener_fd: RawFd) {
    // SAFETY: removing an fd from our own epoll instance; failure (not watched) is harmless.
    unsafe { libc::epoll_ctl(poll_fd, libc::EPOLL_CTL_DEL, listener_fd, std::ptr::null_mut()) };
}

fn set_no_delay(fd: RawFd) {
    let enable: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value on our own socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &enable as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl flag read and write on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A close-on-exec duplicate of a connection's fd, for the psgix.io handle.
fn duplicate_fd(fd: RawFd) -> Option<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    (duplicate >= 0).then_some(duplicate)
}
