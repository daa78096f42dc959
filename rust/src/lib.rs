//! Twiggy's Rust core: the module list and the `extern "C"` surface XS calls, nothing else.
//!
//! Every entry point catches panics (`guard`), so no unwind crosses into C or Perl, and takes
//! the interpreter pointer from XS. Errors come back as status codes, with the message from
//! `twiggy_last_error` for XS to croak with (croaking in XS is safe: no Rust frame is left).

// Raw SV and reactor pointers are this crate's currency: they come from the interpreter or
// from XS, are live by construction, and are only dereferenced in `unsafe` blocks that say
// why. Marking every bridge function `unsafe` would move those comments, not add safety.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod access_log;
pub mod conn;
pub mod deadline;
pub mod h1 {
    pub mod decode;
    pub mod encode;
    pub mod parse;
}
pub mod limits;
pub mod listen;
pub mod perl;
pub mod reactor;

use perl::{Perl, PerlInterpreter, HV, SV};
use reactor::{Hooks, Reactor, RespondError};
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: impl Into<String>) {
    let text = message.into().replace('\0', " ");
    LAST_ERROR.with(|slot| *slot.borrow_mut() = CString::new(text).unwrap_or_default());
}

/// Runs `body`, turning a panic into `fallback` and a recorded error.
fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_error(format!("internal error in the Twiggy core: {text}"));
            fallback
        }
    }
}

/// # Safety
/// `reactor` must come from `twiggy_reactor_new` and not be freed.
unsafe fn reactor_ref<'a>(reactor: *const Reactor) -> Option<&'a Reactor> {
    // SAFETY: per the function contract.
    unsafe { reactor.as_ref() }
}

/// The last error message (valid until the next failing call on this thread).
#[no_mangle]
pub extern "C" fn twiggy_last_error() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// Creates a reactor. `hooks` is an array reference, in `Hooks` order, of app, respond,
/// log_error, make_io, input_from_string, input_from_fd, drained and the null input;
/// `options` a hash reference of numbers (see `limits::Config::from_options`).
#[no_mangle]
pub extern "C" fn twiggy_reactor_new(
    interpreter: *mut PerlInterpreter,
    hooks: *mut SV,
    options: *mut SV,
) -> *mut Reactor {
    guard(std::ptr::null_mut(), || {
        let perl = Perl(interpreter);
        let Some(array) = perl.plain_ref(hooks, libperl_sys::svtype::SVt_PVAV) else {
            set_error("hooks must be an array reference");
            return std::ptr::null_mut();
        };
        let items = perl.array_items(array);
        if items.len() != 8 || items.iter().any(|item| item.is_null()) {
            set_error("hooks must hold eight values");
            return std::ptr::null_mut();
        }
        let Some(options) = perl.plain_ref(options, libperl_sys::svtype::SVt_PVHV) else {
            set_error("options must be a hash reference");
            return std::ptr::null_mut();
        };
        let config = limits::Config::from_options(|name| perl.hash_number(options as *mut HV, name));
        let hooks = Hooks {
            app: perl.copy(items[0]),
            respond: perl.copy(items[1]),
            log_error: perl.copy(items[2]),
            make_io: perl.copy(items[3]),
            input_from_string: perl.copy(items[4]),
            input_from_fd: perl.copy(items[5]),
            drained: perl.copy(items[6]),
            null_input: perl.copy(items[7]),
        };
        match Reactor::new(perl, hooks, config) {
            Ok(reactor) => Box::into_raw(Box::new(reactor)),
            Err(error) => {
                set_error(format!("cannot create the event poller: {error}"));
                std::ptr::null_mut()
            }
        }
    })
}

/// Records the Perl object owning the reactor (its referent, not counted: it owns us).
#[no_mangle]
pub extern "C" fn twiggy_reactor_set_self(reactor: *mut Reactor, referent: *mut SV) {
    guard((), || {
        // SAFETY: XS passes the pointer it stored in the object.
        if let Some(reactor) = unsafe { reactor_ref(reactor) } {
            reactor.set_self(referent);
        }
    })
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_free(reactor: *mut Reactor) {
    guard((), || {
        if !reactor.is_null() {
            // SAFETY: called once, from DESTROY, with the pointer from twiggy_reactor_new.
            drop(unsafe { Box::from_raw(reactor) });
        }
    })
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_fd(reactor: *const Reactor) -> i32 {
    // SAFETY: XS passes a live reactor.
    guard(-1, || unsafe { reactor_ref(reactor) }.map_or(-1, Reactor::poll_fd))
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_connections(reactor: *const Reactor) -> usize {
    // SAFETY: XS passes a live reactor.
    guard(0, || unsafe { reactor_ref(reactor) }.map_or(0, Reactor::connection_count))
}

/// Adopts a listening socket. Returns 0, or -1 with an error.
#[no_mangle]
pub extern "C" fn twiggy_reactor_add_listener(
    reactor: *const Reactor,
    fd: i32,
    template: *mut SV,
    is_unix: i32,
) -> i32 {
    guard(-1, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return -1;
        };
        let perl = reactor_perl(reactor);
        let Some(hash) = perl.plain_ref(template, libperl_sys::svtype::SVt_PVHV) else {
            set_error("the env template must be a hash reference");
            return -1;
        };
        match reactor.add_listener(fd, hash as *mut HV, is_unix != 0) {
            Ok(()) => 0,
            Err(error) => {
                set_error(format!("cannot watch listener fd {fd}: {error}"));
                -1
            }
        }
    })
}

fn reactor_perl(reactor: &Reactor) -> Perl {
    reactor.perl()
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_poll(reactor: *const Reactor) -> i32 {
    guard(-1, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return -1;
        };
        match reactor.poll() {
            Ok(()) => 0,
            Err(error) => {
                set_error(format!("poll failed: {error}"));
                -1
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_tick(reactor: *const Reactor) {
    // SAFETY: XS passes a live reactor.
    guard((), || unsafe { reactor_ref(reactor) }.map_or((), Reactor::tick))
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_drain(reactor: *const Reactor) {
    // SAFETY: XS passes a live reactor.
    guard((), || unsafe { reactor_ref(reactor) }.map_or((), Reactor::drain))
}

/// Status codes shared by the response calls.
const OK: i32 = 1;
const GONE: i32 = 0;
const INVALID: i32 = -1;
const ALREADY_STARTED: i32 = -2;
const NOT_PLAIN: i32 = -3;

fn respond_status(result: Result<(), RespondError>) -> i32 {
    match result {
        Ok(()) => OK,
        Err(RespondError::Gone) => GONE,
        Err(RespondError::AlreadyStarted) => {
            set_error("a response was already started for this request");
            ALREADY_STARTED
        }
        Err(RespondError::Invalid(error)) => {
            set_error(error.message());
            INVALID
        }
    }
}

/// A whole response from Perl: status, header array ref, body array ref, all plain strings.
#[no_mangle]
pub extern "C" fn twiggy_reactor_respond(
    reactor: *const Reactor,
    id: u64,
    status: *mut SV,
    headers: *mut SV,
    body: *mut SV,
) -> i32 {
    guard(INVALID, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return INVALID;
        };
        match reactor.respond_from_perl(id, status, headers, body) {
            Some(result) => respond_status(result),
            None => {
                set_error("response parts must be plain strings");
                NOT_PLAIN
            }
        }
    })
}

/// The head of a streamed response (body null in `respond_from_perl`).
#[no_mangle]
pub extern "C" fn twiggy_reactor_start_stream(
    reactor: *const Reactor,
    id: u64,
    status: *mut SV,
    headers: *mut SV,
) -> i32 {
    guard(INVALID, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return INVALID;
        };
        match reactor.respond_from_perl(id, status, headers, std::ptr::null_mut()) {
            Some(result) => respond_status(result),
            None => {
                set_error("response parts must be plain strings");
                NOT_PLAIN
            }
        }
    })
}

/// Streamed body bytes: 1 written (buffer low), 2 written (buffer high: wait for drain), 0 gone.
#[no_mangle]
pub extern "C" fn twiggy_reactor_write(reactor: *const Reactor, id: u64, data: *const u8, length: usize) -> i32 {
    guard(GONE, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return GONE;
        };
        let bytes: &[u8] = if length == 0 || data.is_null() {
            &[]
        } else {
            // SAFETY: XS passes the buffer and length of a Perl string it holds for this call.
            unsafe { std::slice::from_raw_parts(data, length) }
        };
        match reactor.write(id, bytes) {
            Ok(true) => 1,
            Ok(false) => 2,
            Err(_) => GONE,
        }
    })
}

/// A file body by sendfile: 1 taken, 0 connection gone, -3 not applicable (send it yourself).
#[no_mangle]
pub extern "C" fn twiggy_reactor_send_file(reactor: *const Reactor, id: u64, fd: i32, offset: u64, length: u64) -> i32 {
    guard(GONE, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return GONE;
        };
        match reactor.send_file(id, fd, offset, length) {
            Ok(true) => OK,
            Ok(false) => NOT_PLAIN,
            Err(_) => GONE,
        }
    })
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_close_stream(reactor: *const Reactor, id: u64) -> i32 {
    guard(GONE, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return GONE;
        };
        respond_status(reactor.close_stream(id))
    })
}

/// Stores `callback` (XS passes a new reference, which we own) to run once output has drained.
#[no_mangle]
pub extern "C" fn twiggy_reactor_on_drain(reactor: *const Reactor, id: u64, callback: *mut SV) -> i32 {
    guard(GONE, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return GONE;
        };
        respond_status(reactor.on_drain(id, callback))
    })
}

/// Stores `callback` (XS passes a new reference, which we own) to run if the connection closes
/// before the current response is complete. 1 stored, 0 already gone (then it runs at once).
#[no_mangle]
pub extern "C" fn twiggy_reactor_on_close(reactor: *const Reactor, id: u64, callback: *mut SV) -> i32 {
    guard(GONE, || {
        // SAFETY: XS passes a live reactor.
        let Some(reactor) = (unsafe { reactor_ref(reactor) }) else {
            return GONE;
        };
        respond_status(reactor.on_close(id, callback))
    })
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_cut(reactor: *const Reactor, id: u64) {
    // SAFETY: XS passes a live reactor.
    guard((), || unsafe { reactor_ref(reactor) }.map_or((), |reactor| reactor.cut(id)))
}

#[no_mangle]
pub extern "C" fn twiggy_reactor_forget(reactor: *const Reactor, id: u64) {
    // SAFETY: XS passes a live reactor.
    guard((), || unsafe { reactor_ref(reactor) }.map_or((), |reactor| reactor.forget(id)))
}

/// Answers 500 if nothing was sent for `id` yet, else cuts the connection.
#[no_mangle]
pub extern "C" fn twiggy_reactor_fail(reactor: *const Reactor, id: u64) {
    // SAFETY: XS passes a live reactor.
    guard((), || unsafe { reactor_ref(reactor) }.map_or((), |reactor| reactor.fail(id)))
}

/// The reactor object (borrowed) and connection id behind a lazy `psgix.io` value, or null.
#[no_mangle]
pub extern "C" fn twiggy_connection_of(interpreter: *mut PerlInterpreter, value: *mut SV, id: *mut u64) -> *mut SV {
    guard(std::ptr::null_mut(), || match perl::io::connection_of(Perl(interpreter), value) {
        Some((object, connection)) => {
            // SAFETY: XS passes a writable out-parameter.
            unsafe { *id = connection };
            object
        }
        None => std::ptr::null_mut(),
    })
}

/// Binds a TCP listener; returns its fd (or -1) and writes the bound port and host.
#[no_mangle]
pub extern "C" fn twiggy_listen_tcp(
    host: *const u8,
    host_length: usize,
    port: u16,
    backlog: i32,
    reuse_port: i32,
    bound_port: *mut u16,
    bound_host: *mut u8,
    bound_host_capacity: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: XS passes a Perl string buffer and its length.
        let host_bytes = unsafe { bytes_from(host, host_length) };
        let Ok(host) = std::str::from_utf8(host_bytes) else {
            set_error("host is not valid UTF-8");
            return -1;
        };
        match listen::listen_tcp(host, port, backlog, reuse_port != 0) {
            Ok(bound) => {
                // SAFETY: XS passes writable out-parameters of the stated capacity.
                unsafe {
                    *bound_port = bound.port;
                    let text = bound.host.as_bytes();
                    let length = text.len().min(bound_host_capacity.saturating_sub(1));
                    std::ptr::copy_nonoverlapping(text.as_ptr(), bound_host, length);
                    *bound_host.add(length) = 0;
                }
                bound.fd
            }
            Err(error) => {
                set_error(format!("cannot listen on {host}:{port}: {error}"));
                -1
            }
        }
    })
}

/// Binds a UNIX-domain listener; returns its fd or -1.
#[no_mangle]
pub extern "C" fn twiggy_listen_unix(path: *const u8, path_length: usize, backlog: i32) -> i32 {
    guard(-1, || {
        // SAFETY: XS passes a Perl string buffer and its length.
        let path_bytes = unsafe { bytes_from(path, path_length) };
        let Ok(path) = std::str::from_utf8(path_bytes) else {
            set_error("socket path is not valid UTF-8");
            return -1;
        };
        match listen::listen_unix(path, backlog) {
            Ok(bound) => bound.fd,
            Err(error) => {
                set_error(format!("cannot listen on {path}: {error}"));
                -1
            }
        }
    })
}

/// # Safety
/// `pointer` must be valid for `length` bytes (or null with length 0).
unsafe fn bytes_from<'a>(pointer: *const u8, length: usize) -> &'a [u8] {
    if pointer.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: per the function contract.
        unsafe { std::slice::from_raw_parts(pointer, length) }
    }
}
