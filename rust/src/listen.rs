//! Listening sockets, set up with socket2: address resolution, SO_REUSEADDR, non-blocking,
//! close-on-exec, and a backlog that defaults to the kernel's own maximum.

use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// A bound, listening socket handed to Perl as a file descriptor.
#[derive(Debug)]
pub struct Bound {
    pub fd: RawFd,
    pub host: String,
    pub port: u16,
}

/// The backlog to use: the one asked for, or `net.core.somaxconn` (a backlog of 128 makes a
/// burst of 1,000 connects wait for SYN retransmits).
pub fn effective_backlog(requested: i32) -> i32 {
    if requested > 0 {
        return requested;
    }
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|&value| value > 0)
        .unwrap_or(libc::SOMAXCONN)
}

/// Binds a TCP listener. An empty host or `*` means every IPv4 address, as with the original.
/// With `reuse_port`, several processes may bind the same address and the kernel spreads new
/// connections over them (SO_REUSEPORT).
pub fn listen_tcp(host: &str, port: u16, backlog: i32, reuse_port: bool) -> io::Result<Bound> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() || host == "*" { "0.0.0.0" } else { host };
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve host {host:?}"));
    for address in (host, port).to_socket_addrs()? {
        match bind_tcp(address, backlog, reuse_port) {
            Ok(bound) => return Ok(bound),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

fn bind_tcp(address: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<Bound> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM.nonblocking(), None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SockAddr::from(address))?;
    socket.listen(effective_backlog(backlog))?;
    let local = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("listener has no socket address"))?;
    Ok(Bound { fd: socket.into_raw_fd(), host: local.ip().to_string(), port: local.port() })
}

/// Binds a UNIX-domain listener at `path`, replacing a stale socket file left by a previous run
/// (but never a regular file).
pub fn listen_unix(path: &str, backlog: i32) -> io::Result<Bound> {
    if let Ok(metadata) = std::fs::symlink_metadata(Path::new(path)) {
        if metadata.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{path} exists and is not a socket")));
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(effective_backlog(backlog))?;
    Ok(Bound { fd: socket.into_raw_fd(), host: "unix/".to_string(), port: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_ephemeral_port_is_reported() {
        let bound = listen_tcp("127.0.0.1", 0, 0, false).expect("bind");
        assert!(bound.port > 0);
        assert_eq!(bound.host, "127.0.0.1");
        // SAFETY: the fd was just created and is owned by this test.
        unsafe { libc::close(bound.fd) };
    }

    #[test]
    fn unix_refuses_to_replace_a_regular_file() {
        let path = std::env::temp_dir().join(format!("twiggy-listen-test-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let error = listen_unix(path.to_str().unwrap(), 0).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn backlog_defaults_to_somaxconn() {
        assert_eq!(effective_backlog(7), 7);
        assert!(effective_backlog(0) >= 128);
    }
}
