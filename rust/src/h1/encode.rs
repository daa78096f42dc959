//! Response encoder: the status line, the app's headers (validated: no response splitting), and
//! the framing we choose (Content-Length, chunked, or close-delimited) per RFC 9112 6 and 9110 6.4.

/// What the request tells the encoder about how to answer it.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts {
    pub minor_version: u8,
    /// The client allows keep-alive and the server is not draining.
    pub keep_alive: bool,
    pub is_head_method: bool,
}

/// How the body that follows the head is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFraming {
    /// HEAD, 1xx, 204, 304: whatever the app sends is dropped.
    NoBody,
    /// Exactly this many bytes; extra bytes are dropped, fewer mean the connection is cut.
    Length(u64),
    Chunked,
    /// The body ends when we close the connection (HTTP/1.0 streaming, or app-framed bodies).
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    pub framing: OutFraming,
    pub keep_alive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    BadStatus,
    BadHeaderName,
    BadHeaderValue,
    BadContentLength,
}

impl HeadError {
    pub fn message(&self) -> &'static str {
        match self {
            HeadError::BadStatus => "invalid status code in PSGI response",
            HeadError::BadHeaderName => "invalid header name in PSGI response",
            HeadError::BadHeaderValue => {
                "header value with CR, LF or NUL in PSGI response (response splitting refused)"
            }
            HeadError::BadContentLength => "invalid Content-Length in PSGI response",
        }
    }
}

/// Whether a response with this status to this request may carry a body (RFC 9110 6.4.1).
pub fn status_allows_body(status: u16, is_head_method: bool) -> bool {
    !(is_head_method || status < 200 || status == 204 || status == 304)
}

/// Writes the response head into `out` and returns the framing to use for the body.
/// `body_length` is the total body size when the server already holds the whole body.
/// On error nothing is left in `out`.
pub fn encode_head<H: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(H, H)],
    body_length: Option<u64>,
    request: RequestFacts,
    date: &[u8],
) -> Result<ResponsePlan, HeadError> {
    if !(100..=999).contains(&status) {
        return Err(HeadError::BadStatus);
    }
    let mut app_length: Option<u64> = None;
    let mut app_transfer_encoding = false;
    let mut app_close = false;
    let mut app_date = false;
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
            return Err(HeadError::BadHeaderName);
        }
        if value.iter().any(|&byte| byte == b'\r' || byte == b'\n' || byte == 0) {
            return Err(HeadError::BadHeaderValue);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_decimal(value).ok_or(HeadError::BadContentLength)?;
            if app_length.is_some_and(|seen| seen != length) {
                return Err(HeadError::BadContentLength);
            }
            app_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            app_transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            app_close |= has_token(value, b"close");
        } else if name.eq_ignore_ascii_case(b"date") {
            app_date = true;
        }
    }

    let mut keep_alive = request.keep_alive && !app_close;
    let has_body = status_allows_body(status, request.is_head_method);
    // Informational and bodiless statuses never get framing headers of ours; HEAD gets what GET
    // would have had, so a known length is still announced.
    let entity_headers_allowed = !(status < 200 || status == 204 || status == 304);
    let mut add_length: Option<u64> = None;
    let mut add_chunked = false;
    let framing = if app_transfer_encoding {
        // The app framed the body itself (e.g. Plack::Middleware::Chunked): pass it through and
        // let the close end it, since we cannot see where its framing ends.
        if has_body {
            keep_alive = false;
            OutFraming::UntilClose
        } else {
            OutFraming::NoBody
        }
    } else if let Some(length) = app_length {
        if has_body {
            OutFraming::Length(length)
        } else {
            OutFraming::NoBody
        }
    } else if let Some(length) = body_length {
        if entity_headers_allowed {
            add_length = Some(length);
        }
        if has_body {
            OutFraming::Length(length)
        } else {
            OutFraming::NoBody
        }
    } else if !has_body {
        OutFraming::NoBody
    } else if request.minor_version >= 1 {
        add_chunked = true;
        OutFraming::Chunked
    } else {
        keep_alive = false;
        OutFraming::UntilClose
    };

    let start = out.len();
    out.reserve(
        128 + headers.iter().map(|(name, value)| name.as_ref().len() + value.as_ref().len() + 4).sum::<usize>(),
    );
    out.extend_from_slice(if request.minor_version >= 1 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
    // 100..=999, checked above: three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.eq_ignore_ascii_case(b"connection") && is_connection_option_we_own(value) {
            continue;
        }
        if !entity_headers_allowed
            && (name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = add_length {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, length);
        out.extend_from_slice(b"\r\n");
    }
    if add_chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if !app_date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    if request.minor_version >= 1 && !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if request.minor_version == 0 && keep_alive {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    debug_assert!(out.len() > start);
    Ok(ResponsePlan { framing, keep_alive })
}

/// Frames `data` as one chunk. Empty data writes nothing (an empty chunk would end the body).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut position = digits.len();
    let mut size = data.len();
    loop {
        position -= 1;
        digits[position] = b"0123456789abcdef"[size & 15];
        size >>= 4;
        if size == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[position..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The automatic answer for a request refused before Perl saw it; always closes.
pub fn encode_error(out: &mut Vec<u8>, status: u16, date: &[u8]) {
    let reason = reason_phrase(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    // 100..=999, checked above: three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    push_decimal(out, reason.len() as u64);
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
}

/// `HTTP/1.1 100 Continue` (RFC 9110 10.1.1), sent before reading a body the client holds back.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn is_connection_option_we_own(value: &[u8]) -> bool {
    has_token(value, b"close") || has_token(value, b"keep-alive")
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&byte| byte == b',').any(|item| crate::h1::parse::trim(item).eq_ignore_ascii_case(token))
}

/// RFC 9110 5.6.2 tchar.
fn is_token_byte(byte: u8) -> bool {
    TOKEN_BYTES[usize::from(byte)]
}

/// RFC 9110 5.6.2 `tchar`, as a table: header names are checked byte by byte on every response.
static TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        byte += 1;
    }
    table
};

fn parse_decimal(value: &[u8]) -> Option<u64> {
    let value = crate::h1::parse::trim(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &digit| acc.checked_mul(10)?.checked_add(u64::from(digit - b'0')))
}

pub fn push_decimal(out: &mut Vec<u8>, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut position = digits.len();
    loop {
        position -= 1;
        digits[position] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[position..]);
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// The Date header value (RFC 9110 5.6.7 IMF-fixdate), formatted at most once per second.
pub struct DateCache {
    second: u64,
    text: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        let mut cache = DateCache { second: u64::MAX, text: [b' '; 29] };
        cache.refresh();
        cache
    }
}

impl DateCache {
    pub fn get(&mut self) -> &[u8] {
        self.refresh();
        &self.text
    }

    fn refresh(&mut self) {
        // time(2) is a vDSO call: cheaper than SystemTime's checked arithmetic, once per response.
        // SAFETY: time with a null pointer only returns the value.
        let now = u64::try_from(unsafe { libc::time(std::ptr::null_mut()) }).unwrap_or(0);
        if now != self.second {
            self.second = now;
            self.text = format_http_date(now);
        }
    }
}

pub fn format_http_date(unix_seconds: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = (unix_seconds / 86_400) as i64;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = [0u8; 29];
    text[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    text[3] = b',';
    text[4] = b' ';
    two_digits(&mut text[5..7], day as u64);
    text[7] = b' ';
    text[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    text[11] = b' ';
    let year = year as u64;
    two_digits(&mut text[12..14], year / 100);
    two_digits(&mut text[14..16], year % 100);
    text[16] = b' ';
    two_digits(&mut text[17..19], second_of_day / 3600);
    text[19] = b':';
    two_digits(&mut text[20..22], second_of_day / 60 % 60);
    text[22] = b':';
    two_digits(&mut text[23..25], second_of_day % 60);
    text[25..].copy_from_slice(b" GMT");
    text
}

fn two_digits(out: &mut [u8], value: u64) {
    out[0] = b'0' + (value / 10 % 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's civil calendar algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn facts(minor: u8, keep_alive: bool, head: bool) -> RequestFacts {
        RequestFacts { minor_version: minor, keep_alive, is_head_method: head }
    }

    fn encode(
        status: u16,
        headers: &[(&[u8], &[u8])],
        length: Option<u64>,
        request: RequestFacts,
    ) -> (String, ResponsePlan) {
        let mut out = Vec::new();
        let plan = encode_head(&mut out, status, headers, length, request, DATE).unwrap();
        (String::from_utf8(out).unwrap(), plan)
    }

    #[test]
    fn known_body_gets_content_length_and_date() {
        let (text, plan) = encode(200, &[(b"Content-Type", b"text/plain")], Some(5), facts(1, true, false));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        assert_eq!(plan, ResponsePlan { framing: OutFraming::Length(5), keep_alive: true });
    }

    #[test]
    fn streaming_is_chunked_on_1_1_and_close_delimited_on_1_0() {
        let (text, plan) = encode(200, &[], None, facts(1, true, false));
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert_eq!(plan.framing, OutFraming::Chunked);
        assert!(plan.keep_alive);
        let (text, plan) = encode(200, &[], None, facts(0, true, false));
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(!text.contains("Transfer-Encoding"));
        assert!(!text.contains("keep-alive"));
        assert_eq!(plan, ResponsePlan { framing: OutFraming::UntilClose, keep_alive: false });
    }

    #[test]
    fn http_1_0_keep_alive_is_announced() {
        let (text, plan) = encode(200, &[], Some(0), facts(0, true, false));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(plan.keep_alive);
    }

    #[test]
    fn rfc9110_6_4_1_no_body_statuses() {
        for status in [101, 204, 304] {
            let (text, plan) = encode(status, &[(b"Content-Length", b"3")], Some(3), facts(1, true, false));
            assert_eq!(plan.framing, OutFraming::NoBody, "status {status}");
            assert!(!text.contains("Content-Length"), "status {status}");
        }
        let (text, plan) = encode(200, &[], Some(11), facts(1, true, true));
        assert_eq!(plan.framing, OutFraming::NoBody);
        assert!(text.contains("Content-Length: 11\r\n"));
    }

    #[test]
    fn app_connection_close_is_honoured_once() {
        let (text, plan) = encode(200, &[(b"Connection", b"close")], Some(1), facts(1, true, false));
        assert!(!plan.keep_alive);
        assert_eq!(text.matches("Connection: close").count(), 1);
    }

    #[test]
    fn response_splitting_is_refused() {
        let mut out = b"keep".to_vec();
        let request = facts(1, true, false);
        let bad_value: &[(&[u8], &[u8])] = &[(b"X", b"a\r\nSet-Cookie: evil")];
        assert_eq!(encode_head(&mut out, 200, bad_value, None, request, DATE), Err(HeadError::BadHeaderValue));
        let bad_name: &[(&[u8], &[u8])] = &[(b"X Y", b"a")];
        assert_eq!(encode_head(&mut out, 200, bad_name, None, request, DATE), Err(HeadError::BadHeaderName));
        assert_eq!(encode_head::<&[u8]>(&mut out, 99, &[], None, request, DATE), Err(HeadError::BadStatus));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn chunks_are_hex_framed() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'x'; 26]);
        encode_chunk(&mut out, b"");
        assert_eq!(out, [&b"1a\r\n"[..], &[b'x'; 26], b"\r\n"].concat());
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(&format_http_date(784_111_777), DATE);
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_http_date(1_709_210_096), b"Thu, 29 Feb 2024 12:34:56 GMT");
    }
}
