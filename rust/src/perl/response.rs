//! Reading the app's response without running Perl code: the common `[status, [headers],
//! [body]]` of plain strings and integers is read here; anything else (code refs, handles,
//! objects, tied or overloaded values) is left to the Perl side, called under G_EVAL.

use super::{plain_bytes, plain_integer, Perl, SV};
use libperl_sys as sys;

/// A byte range owned by a Perl scalar (or by `FastResponse::numbers`) that stays alive for the
/// current request scope; see `FastResponse`.
#[derive(Clone, Copy)]
pub struct PerlBytes {
    pointer: *const u8,
    length: usize,
}

impl AsRef<[u8]> for PerlBytes {
    fn as_ref(&self) -> &[u8] {
        if self.length == 0 {
            return &[];
        }
        // SAFETY: built only by `FastResponse::read` from a plain SV's buffer or from the
        // pre-reserved `numbers` buffer; both outlive the use within one request scope, and
        // nothing modifies them meanwhile (no Perl code runs between reading and writing).
        unsafe { std::slice::from_raw_parts(self.pointer, self.length) }
    }
}

impl PerlBytes {
    fn of(bytes: &[u8]) -> PerlBytes {
        PerlBytes { pointer: bytes.as_ptr(), length: bytes.len() }
    }
}

/// A response read from Perl values; the buffers are reused from request to request.
#[derive(Default)]
pub struct FastResponse {
    pub status: u16,
    pub headers: Vec<(PerlBytes, PerlBytes)>,
    pub body: Vec<PerlBytes>,
    pub body_length: u64,
    /// Text of integer header values; reserved before filling so it never moves.
    numbers: Vec<u8>,
}

impl FastResponse {
    /// Fills `self` from `response` when every part of it is plain; false means "let Perl do it"
    /// (which also covers invalid responses: Perl reports those).
    pub fn read(&mut self, perl: Perl, response: *mut SV) -> bool {
        let Some(triple) = perl.plain_ref(response, sys::svtype::SVt_PVAV) else {
            return false;
        };
        let &[status, headers, body] = perl.array_items(triple) else {
            return false;
        };
        self.read_parts(perl, status, headers, body)
    }

    /// Fills `self` from a status, a header array reference and, unless `body` is null, a body
    /// array reference; false when any part is not plain.
    pub fn read_parts(&mut self, perl: Perl, status: *mut SV, headers: *mut SV, body: *mut SV) -> bool {
        self.headers.clear();
        self.body.clear();
        self.numbers.clear();
        self.body_length = 0;
        let Some(status) = read_status(status) else {
            return false;
        };
        self.status = status;
        let Some(headers) = perl.plain_ref(headers, sys::svtype::SVt_PVAV) else {
            return false;
        };
        let header_items = perl.array_items(headers);
        if header_items.len() % 2 != 0 {
            return false;
        }
        self.numbers.reserve(header_items.len() * 21);
        for pair in header_items.chunks_exact(2) {
            let Some(name) = plain_bytes(pair[0]) else {
                return false;
            };
            let value = match plain_bytes(pair[1]) {
                Some(value) => PerlBytes::of(value),
                None => match plain_integer(pair[1]) {
                    Some(number) => self.push_number(number),
                    None => return false,
                },
            };
            self.headers.push((PerlBytes::of(name), value));
        }
        if body.is_null() {
            return true;
        }
        let Some(body) = perl.plain_ref(body, sys::svtype::SVt_PVAV) else {
            return false;
        };
        for &item in perl.array_items(body) {
            let Some(bytes) = plain_bytes(item) else {
                return false;
            };
            self.body_length += bytes.len() as u64;
            if !bytes.is_empty() {
                self.body.push(PerlBytes::of(bytes));
            }
        }
        true
    }

    /// Formats an integer header value; `numbers` was reserved for every header, so it never
    /// reallocates under earlier `PerlBytes`.
    fn push_number(&mut self, number: i64) -> PerlBytes {
        debug_assert!(self.numbers.capacity() - self.numbers.len() >= 21);
        let start = self.numbers.len();
        if number < 0 {
            self.numbers.push(b'-');
        }
        crate::h1::encode::push_decimal(&mut self.numbers, number.unsigned_abs());
        PerlBytes { pointer: self.numbers[start..].as_ptr(), length: self.numbers.len() - start }
    }
}

/// A status read from a plain integer or a plain string of three digits.
pub fn read_status(value: *mut SV) -> Option<u16> {
    if let Some(number) = plain_integer(value) {
        return u16::try_from(number).ok();
    }
    let bytes = plain_bytes(value)?;
    if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u16, |acc, &digit| acc * 10 + u16::from(digit - b'0')))
}
