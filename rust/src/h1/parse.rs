//! Request-head rules (RFC 9112): httparse splits the head; this module decides what it means for
//! framing and connection handling, and rejects what must be rejected before Perl sees anything.

use crate::limits::MAX_HEADERS;

/// A byte range into the buffer the head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span { start: start as u32, len: part.len() as u32 }
    }

    pub fn get<'a>(&self, base: &'a [u8]) -> &'a [u8] {
        let start = self.start as usize;
        &base[start..start + self.len as usize]
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head; all spans point into the first `head_len` bytes of the read buffer.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub head_len: usize,
    pub method: Span,
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(Span, Span)>,
    pub framing: BodyFraming,
    /// The value of the request's Content-Length field(s), which all agree (`framing` is None
    /// for "Content-Length: 0", but the app still sees that header).
    pub declared_length: Option<u64>,
    /// The client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    pub is_head_method: bool,
}

/// Why a head was refused; each maps to one automatic response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// 400: malformed syntax or framing.
    BadRequest(&'static str),
    /// 414: the request line alone exceeds the head limit.
    UriTooLong,
    /// 431: the head exceeds the size limit or has too many fields.
    HeadTooLarge,
    /// 501: a transfer coding we cannot decode.
    NotImplemented(&'static str),
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::UriTooLong => 414,
            Reject::HeadTooLarge => 431,
            Reject::NotImplemented(_) => 501,
        }
    }
}

#[derive(Debug)]
pub enum Parsed {
    Complete(RequestHead),
    /// More bytes are needed.
    Partial,
    Rejected(Reject),
}

/// Size limits applied while parsing a head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Longest request line, without its CRLF (414).
    pub request_line: usize,
    /// Largest head, request line and fields with their line ends (431).
    pub head: usize,
    /// Most header fields (431); at most `MAX_HEADERS`.
    pub headers: usize,
}

/// Parses a request head from the front of `buf`, within `limits`.
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Parsed {
    parse_head_reusing(buf, limits, Vec::new())
}

/// `parse_head`, keeping the fields in `spare` (cleared first): a connection hands back the
/// vector of its last request so the next one needs no allocation.
pub fn parse_head_reusing(buf: &[u8], limits: &HeadLimits, spare: Vec<(Span, Span)>) -> Parsed {
    // RFC 9112 3: a server receiving a request line longer than it wishes to parse answers 414.
    // (A buffer shorter than the limit cannot hold a longer line: no need to look.)
    if buf.len() > limits.request_line + 1 {
        match buf.iter().position(|&byte| byte == b'\n') {
            None => return Parsed::Rejected(Reject::UriTooLong),
            Some(end) if end > limits.request_line + 1 => return Parsed::Rejected(Reject::UriTooLong),
            _ => {}
        }
    }
    // Uninitialised slots: zeroing all MAX_HEADERS of them would cost more than the parse.
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // RFC 6585 5: 431 for a header section that is too large.
            return if buf.len() <= limits.head { Parsed::Partial } else { Parsed::Rejected(Reject::HeadTooLarge) };
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Rejected(Reject::HeadTooLarge),
        Err(httparse::Error::Version) => return Parsed::Rejected(Reject::BadRequest("unsupported HTTP version")),
        Err(_) => return Parsed::Rejected(Reject::BadRequest("malformed request head")),
    };
    if head_len > limits.head || request.headers.len() > limits.headers {
        return Parsed::Rejected(Reject::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version) else {
        return Parsed::Rejected(Reject::BadRequest("incomplete request line"));
    };
    match interpret(buf, method, target, minor, request.headers, head_len, spare) {
        Ok(head) => Parsed::Complete(head),
        Err(reject) => Parsed::Rejected(reject),
    }
}

fn interpret(
    buf: &[u8],
    method: &str,
    target: &str,
    minor: u8,
    fields: &[httparse::Header<'_>],
    head_len: usize,
    mut headers: Vec<(Span, Span)>,
) -> Result<RequestHead, Reject> {
    // RFC 9112 3.2: origin-form, absolute-form, or "*" (OPTIONS); authority-form is CONNECT only.
    let target_ok = target.starts_with('/')
        || target == "*"
        || starts_with_ignore_case(target.as_bytes(), b"http://")
        || starts_with_ignore_case(target.as_bytes(), b"https://");
    if !target_ok {
        return Err(Reject::BadRequest("unsupported request target"));
    }
    // RFC 3986 2.1: "%" must start a two-hex-digit escape; the path is decoded for PATH_INFO,
    // so a broken escape there is refused (as HTTP::Parser::XS does), not guessed at.
    if !has_valid_escapes(split_target(target.as_bytes()).0) {
        return Err(Reject::BadRequest("invalid percent-encoding in the request path"));
    }

    let mut content_length: Option<u64> = None;
    let mut transfer_codings: Vec<&[u8]> = Vec::new();
    let mut host_count = 0usize;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    headers.clear();
    headers.reserve(fields.len());

    for field in fields {
        let name = field.name.as_bytes();
        let value = field.value;
        headers.push((Span::of(buf, name), Span::of(buf, value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9112 6.3 (5): differing or invalid values make the framing invalid.
            let length = parse_content_length(value).ok_or(Reject::BadRequest("invalid Content-Length"))?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(Reject::BadRequest("conflicting Content-Length values"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_codings.extend(split_list(value));
        } else if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in split_list(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
        }
    }

    // RFC 9112 3.2: a 1.1 request without exactly one Host field is answered 400.
    if minor == 1 && host_count != 1 {
        return Err(Reject::BadRequest("HTTP/1.1 request needs exactly one Host header"));
    }
    if minor == 0 && host_count > 1 {
        return Err(Reject::BadRequest("more than one Host header"));
    }

    let framing = if !transfer_codings.is_empty() {
        // RFC 9112 6.1: Transfer-Encoding is 1.1 only; with Content-Length too the message is
        // a smuggling attempt until proven otherwise (6.3 (3)): reject and close.
        if content_length.is_some() {
            return Err(Reject::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        if minor == 0 {
            return Err(Reject::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let last = transfer_codings[transfer_codings.len() - 1];
        if !last.eq_ignore_ascii_case(b"chunked") {
            // RFC 9112 6.3 (4): final coding not chunked means the length is unknowable.
            return Err(Reject::BadRequest("final transfer coding is not chunked"));
        }
        if transfer_codings.len() > 1 {
            return Err(Reject::NotImplemented("transfer coding other than chunked"));
        }
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(length) => BodyFraming::Length(length),
        }
    };

    let keep_alive = if minor == 1 { !connection_close } else { connection_keep_alive && !connection_close };

    Ok(RequestHead {
        head_len,
        method: Span::of(buf, method.as_bytes()),
        target: Span::of(buf, target.as_bytes()),
        minor_version: minor,
        headers,
        framing,
        declared_length: content_length,
        keep_alive,
        expect_continue: expect_continue && minor == 1,
        is_head_method: method == "HEAD",
    })
}

/// `1*DIGIT`, optionally as a comma list of identical values (RFC 9110 8.6 allows accepting
/// "42, 42"). Anything else, including signs, spaces inside digits and overflow, is invalid.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result: Option<u64> = None;
    for item in value.split(|&byte| byte == b',') {
        let item = trim(item);
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut number: u64 = 0;
        for &digit in item {
            number = number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        }
        if result.is_some_and(|seen| seen != number) {
            return None;
        }
        result = Some(number);
    }
    result
}

/// Elements of a comma-separated field value, trimmed, empty ones skipped (RFC 9110 5.6.1).
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&byte| byte == b',').map(trim).filter(|item| !item.is_empty())
}

pub fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if *first == b' ' || *first == b'\t' {
            bytes = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = bytes {
        if *last == b' ' || *last == b'\t' {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Splits a request target into the path (raw, still percent-encoded) and the query string.
/// Absolute-form targets lose their scheme and authority; a fragment is dropped.
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let mut rest = target;
    // Origin-form ("/path"), by far the most common, cannot carry a scheme.
    let schemes: &[&[u8]] = if target.first() == Some(&b'/') { &[] } else { &[b"http://", b"https://"] };
    for &scheme in schemes {
        if starts_with_ignore_case(rest, scheme) {
            let after = &rest[scheme.len()..];
            rest = match after.iter().position(|&byte| byte == b'/' || byte == b'?') {
                Some(at) => &after[at..],
                None => b"/",
            };
            break;
        }
    }
    let rest = match rest.iter().position(|&byte| byte == b'#') {
        Some(at) => &rest[..at],
        None => rest,
    };
    match rest.iter().position(|&byte| byte == b'?') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, b""),
    }
}

/// Percent-decodes a path into `out` (PATH_INFO). Invalid escapes are kept as they are, as
/// URI::Escape and HTTP::Parser::XS do.
pub fn percent_decode_into(path: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(path.len());
    let mut index = 0;
    while index < path.len() {
        let byte = path[index];
        if byte == b'%' && index + 2 < path.len() {
            if let (Some(high), Some(low)) = (hex_value(path[index + 1]), hex_value(path[index + 2])) {
                out.push(high << 4 | low);
                index += 3;
                continue;
            }
        }
        out.push(byte);
        index += 1;
    }
}

fn has_valid_escapes(path: &[u8]) -> bool {
    let mut index = 0;
    while let Some(offset) = path[index..].iter().position(|&byte| byte == b'%') {
        let at = index + offset;
        match (path.get(at + 1).copied().and_then(hex_value), path.get(at + 2).copied().and_then(hex_value)) {
            (Some(_), Some(_)) => index = at + 3,
            _ => return false,
        }
    }
    true
}

pub fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { request_line: 4096, head: 8192, headers: 100 };

    fn parse(text: &str) -> Parsed {
        parse_head(text.as_bytes(), &LIMITS)
    }

    fn complete(text: &str) -> RequestHead {
        match parse(text) {
            Parsed::Complete(head) => head,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn rejected(text: &str) -> Reject {
        match parse(text) {
            Parsed::Rejected(reject) => reject,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn simple_get_keeps_alive_on_1_1() {
        let text = "GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = complete(text);
        assert_eq!(head.head_len, text.len());
        assert_eq!(head.method.get(text.as_bytes()), b"GET");
        assert_eq!(head.target.get(text.as_bytes()), b"/a?b=c");
        assert_eq!(head.framing, BodyFraming::None);
        assert!(head.keep_alive);
    }

    #[test]
    fn partial_until_blank_line() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
        assert!(matches!(parse("GET / HTTP/1.1\r"), Parsed::Partial));
    }

    #[test]
    fn http_1_0_keep_alive_only_when_asked() {
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn rfc9112_3_2_host_required_on_1_1() {
        assert_eq!(rejected("GET / HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status(), 400);
    }

    #[test]
    fn rfc9112_6_3_content_length_rules() {
        let head = complete("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::Length(5));
        let same = complete("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(same.framing, BodyFraming::Length(5));
        for bad in ["abc", "-1", "+5", "5 5", "", "99999999999999999999", "0x10"] {
            let text = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(rejected(&text).status(), 400, "value {bad:?}");
        }
        let differing = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(rejected(differing).status(), 400);
    }

    #[test]
    fn rfc9112_6_1_transfer_encoding_rules() {
        let chunked = complete("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        let both = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(rejected(both).status(), 400);
        let gzip = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(rejected(gzip).status(), 400);
        let stacked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(rejected(stacked).status(), 501);
        let on_1_0 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(rejected(on_1_0).status(), 400);
    }

    #[test]
    fn expect_continue_only_on_1_1() {
        assert!(complete("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        assert!(!complete("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn malformed_heads_are_400() {
        assert_eq!(rejected("GET / HTTP/2.0\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET  / HTTP/1.1\r\nHost: x\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET / HTTP/1.1\r\nHost : x\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET foo HTTP/1.1\r\nHost: x\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET /a%2 HTTP/1.1\r\nHost: x\r\n\r\n").status(), 400);
        assert_eq!(rejected("GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n").status(), 400);
        assert!(matches!(parse("GET /a%2F?q=%zz HTTP/1.1\r\nHost: x\r\n\r\n"), Parsed::Complete(_)), "query is raw");
    }

    #[test]
    fn oversized_heads() {
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(5000));
        assert_eq!(parse(&long_line).status_of(), Some(414), "partial line already too long");
        let long_complete = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
        assert_eq!(parse(&long_complete).status_of(), Some(414));
        let fits = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(4096 - 15));
        assert!(matches!(parse(&fits), Parsed::Complete(_)), "a line of exactly the limit is accepted");
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n", "b".repeat(9000));
        assert_eq!(parse(&big).status_of(), Some(431), "partial head over the size limit");
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(100));
        assert_eq!(parse(&many).status_of(), Some(431), "101 fields, over the field limit");
        let too_many_for_httparse = format!("GET / HTTP/1.1\r\nHost: x\r\n{}", "X-A: b\r\n".repeat(200));
        assert_eq!(parse(&too_many_for_httparse).status_of(), Some(431));
    }

    impl Parsed {
        fn status_of(&self) -> Option<u16> {
            match self {
                Parsed::Rejected(reject) => Some(reject.status()),
                _ => None,
            }
        }
    }

    #[test]
    fn targets_split_and_decode() {
        assert_eq!(split_target(b"/a%20b?x=1#frag"), (&b"/a%20b"[..], &b"x=1"[..]));
        assert_eq!(split_target(b"http://host:80/p?q"), (&b"/p"[..], &b"q"[..]));
        assert_eq!(split_target(b"http://host"), (&b"/"[..], &b""[..]));
        let mut out = Vec::new();
        percent_decode_into(b"/a%20b%2fc%zz%4", &mut out);
        assert_eq!(out, b"/a b/c%zz%4");
    }
}
