//! The native access log, in the combined log format, written off the request path: lines
//! collect in a buffer that is written when it fills, on the once-a-second tick, and when the
//! server stops.
//!
//!   127.0.0.1 - - [21/Nov/2026:01:40:00 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/8.0"

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

/// Written once this much is buffered, even between ticks.
const FLUSH_AT: usize = 64 * 1024;

/// What is known about a request when the app gets it: the line up to the status, and its end.
pub struct PendingEntry {
    head: Vec<u8>,
    tail: Vec<u8>,
}

pub struct AccessLog {
    file: File,
    buffer: Vec<u8>,
    stamp_second: u64,
    stamp: [u8; 28],
}

impl AccessLog {
    /// Takes ownership of `fd`, a file opened for appending by Perl.
    pub fn from_fd(fd: RawFd) -> AccessLog {
        // SAFETY: Perl hands over a descriptor it duplicated for us and will not close.
        let file = unsafe { File::from_raw_fd(fd) };
        AccessLog { file, buffer: Vec::with_capacity(FLUSH_AT), stamp_second: u64::MAX, stamp: [b' '; 28] }
    }

    /// Starts an entry for a request: client address, time, request line, Referer, User-Agent.
    pub fn begin(
        &mut self,
        remote: &[u8],
        request_line: [&[u8]; 3],
        referer: &[u8],
        user_agent: &[u8],
    ) -> PendingEntry {
        let mut head = Vec::with_capacity(96 + request_line.iter().map(|part| part.len()).sum::<usize>());
        head.extend_from_slice(remote);
        head.extend_from_slice(b" - - ");
        head.extend_from_slice(self.timestamp());
        head.extend_from_slice(b" \"");
        escape_into(&mut head, request_line[0]);
        head.push(b' ');
        escape_into(&mut head, request_line[1]);
        head.push(b' ');
        escape_into(&mut head, request_line[2]);
        head.extend_from_slice(b"\" ");
        let mut tail = Vec::with_capacity(8 + referer.len() + user_agent.len());
        tail.extend_from_slice(b" \"");
        quoted_or_dash(&mut tail, referer);
        tail.extend_from_slice(b"\" \"");
        quoted_or_dash(&mut tail, user_agent);
        tail.extend_from_slice(b"\"\n");
        PendingEntry { head, tail }
    }

    /// Completes an entry with the status sent and the body bytes sent.
    pub fn finish(&mut self, entry: PendingEntry, status: u16, body_bytes: u64) {
        self.buffer.extend_from_slice(&entry.head);
        if status == 0 {
            self.buffer.push(b'-');
        } else {
            crate::h1::encode::push_decimal(&mut self.buffer, u64::from(status));
        }
        self.buffer.push(b' ');
        if body_bytes == 0 {
            self.buffer.push(b'-');
        } else {
            crate::h1::encode::push_decimal(&mut self.buffer, body_bytes);
        }
        self.buffer.extend_from_slice(&entry.tail);
        if self.buffer.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes what is buffered. A failing log (disk full) drops lines rather than block serving.
    pub fn flush(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.file.write_all(&self.buffer);
            self.buffer.clear();
        }
    }

    /// `[21/Nov/2026:01:40:00 +0000]`, formatted at most once per second.
    fn timestamp(&mut self) -> &[u8] {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
        if now != self.stamp_second {
            self.stamp_second = now;
            self.stamp = format_clf_time(now);
        }
        &self.stamp
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

pub fn format_clf_time(unix_seconds: u64) -> [u8; 28] {
    // Reuse the HTTP date's fields: "Thu, 29 Feb 2024 12:34:56 GMT".
    let http = crate::h1::encode::format_http_date(unix_seconds);
    let mut text = [0u8; 28];
    text[0] = b'[';
    text[1..3].copy_from_slice(&http[5..7]);
    text[3] = b'/';
    text[4..7].copy_from_slice(&http[8..11]);
    text[7] = b'/';
    text[8..12].copy_from_slice(&http[12..16]);
    text[12] = b':';
    text[13..21].copy_from_slice(&http[17..25]);
    text[21..28].copy_from_slice(b" +0000]");
    text
}

fn quoted_or_dash(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        out.push(b'-');
    } else {
        escape_into(out, value);
    }
}

/// Quotes, backslashes and bytes outside printable ASCII as `\xHH`, so a client cannot forge
/// log lines (as Apache's mod_log_config does).
fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            out.extend_from_slice(b"\\x");
            out.push(b"0123456789abcdef"[usize::from(byte >> 4)]);
            out.push(b"0123456789abcdef"[usize::from(byte & 15)]);
        } else {
            out.push(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_from_http_date() {
        assert_eq!(&format_clf_time(1_709_210_096), b"[29/Feb/2024:12:34:56 +0000]");
    }

    #[test]
    fn combined_line_with_escaping() {
        let path = std::env::temp_dir().join(format!("twiggy-access-log-test-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
        let mut log = AccessLog::from_fd(fd);
        let entry = log.begin(b"10.0.0.1", [b"GET", b"/a\"b", b"HTTP/1.1"], b"", b"agent\n1");
        log.finish(entry, 200, 13);
        let entry = log.begin(b"::1", [b"HEAD", b"/", b"HTTP/1.0"], b"http://r/", b"x");
        log.finish(entry, 304, 0);
        drop(log);
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("10.0.0.1 - - ["), "{}", lines[0]);
        assert!(lines[0].ends_with("] \"GET /a\\x22b HTTP/1.1\" 200 13 \"-\" \"agent\\x0a1\""), "{}", lines[0]);
        assert!(lines[1].ends_with("\"HEAD / HTTP/1.0\" 304 - \"http://r/\" \"x\""), "{}", lines[1]);
    }
}
