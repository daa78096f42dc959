//! Every tunable of the reactor in one place, each with its default and the reason for it.
//! Perl validates the user's options and hands the numbers over; Rust only reads them.

use std::time::Duration;

/// Longest request line (method, target, version) before answering 414; Apache's default.
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8190;

/// Largest request head (request line plus headers) we buffer before answering 431.
/// Matches the order of magnitude of nginx's `large_client_header_buffers` (4 x 8 KiB) with room.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields httparse can hold (its array is fixed); the configurable limit is at most this.
pub const MAX_HEADERS: usize = 128;

/// Default limit on header fields per request (431 beyond it), as Apache's LimitRequestFields.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// How long a closing connection keeps discarding input after its last response, so that the
/// kernel does not reset the connection (and destroy that response) over unread bytes.
pub const LINGER_SECONDS: u64 = 2;

/// Request bodies up to this size stay in memory; larger ones are spooled to a temporary file.
pub const DEFAULT_BODY_IN_MEMORY: usize = 1024 * 1024;

/// Bytes read from a socket per `read` call; the buffer is reused, never zeroed per read.
pub const DEFAULT_READ_CHUNK: usize = 64 * 1024;

/// Above this many buffered output bytes a streaming body stops being pulled until the socket drains.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Longest chunk-size line (hex digits plus extensions) accepted in a chunked body.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Events fetched per `epoll_wait`; more pending events simply leave the fd readable for the next round.
pub const EVENTS_PER_POLL: usize = 1024;

#[derive(Clone, Debug)]
pub struct Config {
    /// Time allowed to receive a whole request head, from its first byte (or from the accept,
    /// for a connection's first request): the original Twiggy's `timeout`.
    pub read_timeout: Option<Duration>,
    /// Longest silence allowed while a request body is arriving.
    pub body_timeout: Option<Duration>,
    /// Longest time output may stay stuck (the client reads nothing) before the connection is cut.
    pub write_timeout: Option<Duration>,
    /// Time an idle keep-alive connection is kept open waiting for the next request.
    pub keepalive_timeout: Option<Duration>,
    /// Longest request line (414 beyond it).
    pub max_request_line: usize,
    /// Most header fields (431 beyond it), at most `MAX_HEADERS`.
    pub max_headers: usize,
    /// Largest request body (413 beyond it); None: no limit.
    pub max_body: Option<u64>,
    /// Bytes per read call.
    pub read_chunk_size: usize,
    /// Largest request head.
    pub max_head_bytes: usize,
    /// Body bytes kept in memory before spooling to a file.
    pub body_in_memory: usize,
    /// Set TCP_NODELAY on accepted TCP sockets.
    pub no_delay: bool,
    /// Requests this process serves before it drains itself (prefork worker recycling).
    pub max_requests: Option<u64>,
    /// A file descriptor, opened for appending by Perl, for the access log.
    pub access_log_fd: Option<i32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            read_timeout: Some(Duration::from_secs(300)),
            body_timeout: Some(Duration::from_secs(60)),
            write_timeout: Some(Duration::from_secs(60)),
            keepalive_timeout: Some(Duration::from_secs(30)),
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: None,
            read_chunk_size: DEFAULT_READ_CHUNK,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            body_in_memory: DEFAULT_BODY_IN_MEMORY,
            no_delay: true,
            max_requests: None,
            access_log_fd: None,
        }
    }
}

impl Config {
    /// A configuration from named numbers (Perl's option hash, already validated there). A
    /// missing name keeps the default; for timeouts 0 means "never", for `max_body` and
    /// `max_requests` 0 means "no limit", and for sizes 0 keeps the default.
    pub fn from_options(option: impl Fn(&str) -> Option<f64>) -> Config {
        let defaults = Config::default();
        let timeout = |name: &str, default: Option<Duration>| option(name).map_or(default, timeout_from_secs);
        let size = |name: &str, default: usize| match option(name) {
            Some(value) if value >= 1.0 => value.min(usize::MAX as f64) as usize,
            _ => default,
        };
        let limit = |name: &str| match option(name) {
            Some(value) if value >= 1.0 => Some(value.min(u64::MAX as f64) as u64),
            _ => None,
        };
        Config {
            read_timeout: timeout("read_timeout", defaults.read_timeout),
            body_timeout: timeout("body_timeout", defaults.body_timeout),
            write_timeout: timeout("write_timeout", defaults.write_timeout),
            keepalive_timeout: timeout("keepalive_timeout", defaults.keepalive_timeout),
            max_request_line: size("max_request_line", defaults.max_request_line),
            max_headers: size("max_headers", defaults.max_headers).min(MAX_HEADERS),
            max_body: limit("max_body"),
            read_chunk_size: size("read_chunk_size", defaults.read_chunk_size),
            max_head_bytes: size("max_head_size", defaults.max_head_bytes),
            body_in_memory: size("body_in_memory", defaults.body_in_memory),
            no_delay: option("no_delay").map_or(defaults.no_delay, |value| value != 0.0),
            max_requests: limit("max_requests"),
            access_log_fd: option("access_log_fd")
                .filter(|fd| *fd >= 0.0 && *fd < f64::from(i32::MAX))
                .map(|fd| fd as i32),
        }
    }
}

/// Seconds as given by Perl (fractions allowed, 0 or less meaning "never") to a timeout.
pub fn timeout_from_secs(secs: f64) -> Option<Duration> {
    if secs.is_finite() && secs > 0.0 {
        Some(Duration::from_secs_f64(secs.min(1e9)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_defaults_and_zero_means_never_or_unlimited() {
        let options = |name: &str| match name {
            "read_timeout" => Some(0.0),
            "keepalive_timeout" => Some(2.5),
            "max_headers" => Some(1000.0),
            "max_body" => Some(0.0),
            "max_requests" => Some(7.0),
            "read_chunk_size" => Some(0.0),
            _ => None,
        };
        let config = Config::from_options(options);
        assert_eq!(config.read_timeout, None);
        assert_eq!(config.keepalive_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(config.body_timeout, Config::default().body_timeout);
        assert_eq!(config.max_headers, MAX_HEADERS, "capped at what httparse can hold");
        assert_eq!(config.max_body, None);
        assert_eq!(config.max_requests, Some(7));
        assert_eq!(config.read_chunk_size, DEFAULT_READ_CHUNK);
    }

    #[test]
    fn zero_and_negative_timeouts_mean_never() {
        assert_eq!(timeout_from_secs(0.0), None);
        assert_eq!(timeout_from_secs(-3.0), None);
        assert_eq!(timeout_from_secs(f64::NAN), None);
        assert_eq!(timeout_from_secs(1.5), Some(Duration::from_millis(1500)));
    }
}
