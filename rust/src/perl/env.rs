//! The PSGI env hash. Static keys live in a per-listener template built by Perl (policy stays
//! there); each request copies it and stores its own values under pre-hashed shared keys.

use super::{Perl, HV, SV};
use crate::h1::parse::{percent_decode_into, split_target, BodyFraming, RequestHead};
use libperl_sys as sys;
use libperl_sys::thx;
use std::os::raw::c_char;

/// Header names common enough to deserve a pre-hashed env key, in lowercase.
const COMMON_HEADERS: [&[u8]; 16] = [
    b"host",
    b"user-agent",
    b"accept",
    b"accept-encoding",
    b"accept-language",
    b"connection",
    b"cookie",
    b"referer",
    b"cache-control",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"authorization",
    b"origin",
    b"if-none-match",
    b"if-modified-since",
    b"upgrade",
];

/// Shared (pre-hashed) key SVs, made once per reactor.
pub struct EnvKeys {
    request_method: *mut SV,
    request_uri: *mut SV,
    path_info: *mut SV,
    query_string: *mut SV,
    server_protocol: *mut SV,
    remote_addr: *mut SV,
    remote_port: *mut SV,
    content_length: *mut SV,
    content_type: *mut SV,
    psgi_input: *mut SV,
    psgix_io: *mut SV,
    common_headers: [*mut SV; COMMON_HEADERS.len()],
}

fn shared_key(perl: Perl, name: &[u8]) -> *mut SV {
    // SAFETY: newSVpvn_share copies the key into the shared string table and computes its hash.
    unsafe { thx::Perl_newSVpvn_share(perl.0, name.as_ptr() as *const c_char, name.len() as i32, 0) }
}

impl EnvKeys {
    pub fn new(perl: Perl) -> EnvKeys {
        let mut common_headers = [std::ptr::null_mut(); COMMON_HEADERS.len()];
        let mut name = Vec::new();
        for (slot, header) in common_headers.iter_mut().zip(COMMON_HEADERS) {
            cgi_header_name(header, &mut name);
            *slot = shared_key(perl, &name);
        }
        EnvKeys {
            request_method: shared_key(perl, b"REQUEST_METHOD"),
            request_uri: shared_key(perl, b"REQUEST_URI"),
            path_info: shared_key(perl, b"PATH_INFO"),
            query_string: shared_key(perl, b"QUERY_STRING"),
            server_protocol: shared_key(perl, b"SERVER_PROTOCOL"),
            remote_addr: shared_key(perl, b"REMOTE_ADDR"),
            remote_port: shared_key(perl, b"REMOTE_PORT"),
            content_length: shared_key(perl, b"CONTENT_LENGTH"),
            content_type: shared_key(perl, b"CONTENT_TYPE"),
            psgi_input: shared_key(perl, b"psgi.input"),
            psgix_io: shared_key(perl, b"psgix.io"),
            common_headers,
        }
    }

    pub fn release(&mut self, perl: Perl) {
        for key in [
            self.request_method,
            self.request_uri,
            self.path_info,
            self.query_string,
            self.server_protocol,
            self.remote_addr,
            self.remote_port,
            self.content_length,
            self.content_type,
            self.psgi_input,
            self.psgix_io,
        ]
        .into_iter()
        .chain(self.common_headers)
        {
            perl.dec(key);
        }
    }
}

/// Everything about one request the env needs, borrowed from the connection.
pub struct RequestView<'a> {
    pub head: &'a RequestHead,
    pub head_bytes: &'a [u8],
    /// Decoded body length when the request had a body.
    pub body_length: Option<u64>,
    pub remote_addr: &'a [u8],
    pub remote_port: u16,
}

/// Builds the env for one request; returns a new HV the caller owns.
/// `input` and `io` are SVs whose ownership passes to the hash (may be null to leave out).
pub fn build_env(
    perl: Perl,
    keys: &EnvKeys,
    template: *mut HV,
    request: &RequestView<'_>,
    input: *mut SV,
    io: *mut SV,
    scratch: &mut Vec<u8>,
) -> *mut HV {
    // SAFETY: `template` is the hash Perl built for this listener (no magic); newHVhv copies it.
    let env = unsafe { thx::Perl_newHVhv(perl.0, template) };
    let bytes = request.head_bytes;
    let head = request.head;
    let target = head.target.get(bytes);
    let (path, query) = split_target(target);

    store(perl, env, keys.request_method, perl.new_string(head.method.get(bytes)));
    store(perl, env, keys.request_uri, perl.new_string(target));
    percent_decode_into(path, scratch);
    store(perl, env, keys.path_info, perl.new_string(scratch));
    store(perl, env, keys.query_string, perl.new_string(query));
    let protocol: &[u8] = if head.minor_version == 0 { b"HTTP/1.0" } else { b"HTTP/1.1" };
    store(perl, env, keys.server_protocol, perl.new_string(protocol));
    store(perl, env, keys.remote_addr, perl.new_string(request.remote_addr));
    store(perl, env, keys.remote_port, perl.new_int(i64::from(request.remote_port)));

    let chunked = head.framing == BodyFraming::Chunked;
    let mut declared_length = false;
    for (name_span, value_span) in &head.headers {
        let name = name_span.get(bytes);
        let value = value_span.get(bytes);
        if name.eq_ignore_ascii_case(b"content-length") {
            // Stored below from the framing, which already checked every value agrees.
            declared_length = true;
            continue;
        }
        if chunked && name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The body is decoded: the app sees CONTENT_LENGTH instead, as under Starman.
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            store_header(perl, env, keys.content_type, &[], value);
            continue;
        }
        match COMMON_HEADERS.iter().position(|common| common.eq_ignore_ascii_case(name)) {
            Some(index) => store_header(perl, env, keys.common_headers[index], &[], value),
            None => {
                cgi_header_name(name, scratch);
                store_header(perl, env, std::ptr::null_mut(), scratch, value);
            }
        }
    }
    let length = match (request.body_length, head.framing) {
        (Some(length), _) => Some(length),
        (None, BodyFraming::Length(length)) => Some(length),
        // "Content-Length: 0": framing None, but the app still sees the header.
        _ => declared_length.then_some(0),
    };
    if let Some(length) = length {
        scratch.clear();
        crate::h1::encode::push_decimal(scratch, length);
        store(perl, env, keys.content_length, perl.new_string(scratch));
    }
    if !input.is_null() {
        store(perl, env, keys.psgi_input, input);
    }
    if !io.is_null() {
        store(perl, env, keys.psgix_io, io);
    }
    env
}

/// `HTTP_` plus the name upper-cased with `-` as `_` (CGI/PSGI meta-variable form).
fn cgi_header_name(name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP_");
    out.extend(name.iter().map(|&byte| if byte == b'-' { b'_' } else { byte.to_ascii_uppercase() }));
}

/// Stores `value` under a shared key; the hash takes ownership of `value`.
fn store(perl: Perl, env: *mut HV, key: *mut SV, value: *mut SV) {
    // SAFETY: `env` is our fresh unmagical hash; `key` a shared-hash SV, whose precomputed hash
    // hv_common uses; storing cannot run user code.
    unsafe {
        thx::Perl_hv_common(perl.0, env, key, std::ptr::null(), 0, 0, sys::HV_FETCH_ISSTORE as i32, value, 0);
    }
}

/// Stores a header, joining repeated fields with ", " as RFC 9110 5.3 allows.
/// Uses `key` when it is a shared key SV, else the bytes in `name`.
fn store_header(perl: Perl, env: *mut HV, key: *mut SV, name: &[u8], value: &[u8]) {
    // SAFETY: an lvalue fetch on our own hash returns a valid slot (creating an undef SV when
    // missing); setting or appending bytes to that plain SV runs no user code.
    unsafe {
        let slot = thx::Perl_hv_common(
            perl.0,
            env,
            key,
            name.as_ptr() as *const c_char,
            name.len(),
            0,
            (sys::HV_FETCH_LVALUE | sys::HV_FETCH_JUST_SV) as i32,
            std::ptr::null_mut(),
            0,
        ) as *mut *mut SV;
        if slot.is_null() || (*slot).is_null() {
            return;
        }
        let existing = *slot;
        if sys::SvFLAGS(existing) & sys::SVf_POK != 0 {
            thx::Perl_sv_catpvn_flags(perl.0, existing, b", ".as_ptr() as *const c_char, 2, 0);
            thx::Perl_sv_catpvn_flags(perl.0, existing, value.as_ptr() as *const c_char, value.len(), 0);
        } else {
            thx::Perl_sv_setpvn(perl.0, existing, value.as_ptr() as *const c_char, value.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_take_cgi_form() {
        let mut out = Vec::new();
        cgi_header_name(b"X-Forwarded-For", &mut out);
        assert_eq!(out, b"HTTP_X_FORWARDED_FOR");
        cgi_header_name(b"accept", &mut out);
        assert_eq!(out, b"HTTP_ACCEPT");
    }
}
