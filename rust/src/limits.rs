//! Every tunable of the reactor in one place, each with its default and the reason for it.
//! Perl validates the user's options and hands the numbers over; Rust only reads them.

use std::time::Duration;

/// Largest request head (request line plus headers) we buffer before answering 431.
/// Matches the order of magnitude of nginx's `large_client_header_buffers` (4 x 8 KiB) with room.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields in one request; httparse needs a fixed array, and more is an attack.
pub const MAX_HEADERS: usize = 128;

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
    /// Time allowed to receive a request head and its body (the original Twiggy's `timeout`).
    pub read_timeout: Option<Duration>,
    /// Time an idle keep-alive connection is kept open waiting for the next request.
    pub keepalive_timeout: Option<Duration>,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            read_timeout: Some(Duration::from_secs(300)),
            keepalive_timeout: Some(Duration::from_secs(30)),
            read_chunk_size: DEFAULT_READ_CHUNK,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            body_in_memory: DEFAULT_BODY_IN_MEMORY,
            no_delay: true,
            max_requests: None,
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
    fn zero_and_negative_timeouts_mean_never() {
        assert_eq!(timeout_from_secs(0.0), None);
        assert_eq!(timeout_from_secs(-3.0), None);
        assert_eq!(timeout_from_secs(f64::NAN), None);
        assert_eq!(timeout_from_secs(1.5), Some(Duration::from_millis(1500)));
    }
}
