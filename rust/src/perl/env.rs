//! The PSGI env hash. Static keys live in a per-listener template built by Perl (policy stays
//! there). An env is made once from the template and then, as long as the app leaves it
//! untouched and keeps no reference to it (see `env_reuse`), refilled in place for the next
//! request: the hash, its keys and its value scalars are reused, so a request costs a few
//! string copies instead of building and freeing a hash of two dozen scalars.

use super::io::{lazy_io_value, IoMagic};
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

/// The keys every request sets, in the order of `Env::fixed`.
const FIXED_KEYS: [&[u8]; FIXED] = [
    b"REQUEST_METHOD",
    b"REQUEST_URI",
    b"PATH_INFO",
    b"QUERY_STRING",
    b"SERVER_PROTOCOL",
    b"REMOTE_ADDR",
    b"REMOTE_PORT",
    b"psgi.input",
    b"psgix.io",
];
pub(super) const FIXED: usize = 9;
const METHOD: usize = 0;
const URI: usize = 1;
const PATH: usize = 2;
const QUERY: usize = 3;
const PROTOCOL: usize = 4;
const ADDR: usize = 5;
const PORT: usize = 6;
pub(super) const INPUT: usize = 7;
pub(super) const IO: usize = 8;

/// Shared (pre-hashed) key SVs, made once per reactor.
pub struct EnvKeys {
    fixed: [*mut SV; FIXED],
    content_length: *mut SV,
    content_type: *mut SV,
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
            fixed: FIXED_KEYS.map(|key| shared_key(perl, key)),
            content_length: shared_key(perl, b"CONTENT_LENGTH"),
            content_type: shared_key(perl, b"CONTENT_TYPE"),
            common_headers,
        }
    }

    pub fn release(&mut self, perl: Perl) {
        for key in self.fixed.into_iter().chain([self.content_length, self.content_type]).chain(self.common_headers) {
            perl.dec(key);
        }
    }

    /// The env key of a request header other than Content-Length: a shared key, or null with
    /// the name written to `scratch`.
    fn header_key(&self, name: &[u8], scratch: &mut Vec<u8>) -> *mut SV {
        if name.eq_ignore_ascii_case(b"content-type") {
            return self.content_type;
        }
        match COMMON_HEADERS.iter().position(|common| common.eq_ignore_ascii_case(name)) {
            Some(index) => self.common_headers[index],
            None => {
                cgi_header_name(name, scratch);
                std::ptr::null_mut()
            }
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

impl RequestView<'_> {
    /// The request's header fields that become `HTTP_*`/`CONTENT_TYPE` keys, as (name, value):
    /// Content-Length is left out (CONTENT_LENGTH comes from the framing, which already checked
    /// that every value agrees), and so is Transfer-Encoding on a chunked request: the body is
    /// decoded, and the app sees CONTENT_LENGTH instead, as under Starman.
    /// Calls `visit` with each until it returns false; false if it stopped early. (A plain
    /// loop: this runs on every request, and an iterator adapter chain did not inline.)
    fn each_env_header(&self, mut visit: impl FnMut(&[u8], &[u8]) -> bool) -> bool {
        let chunked = self.head.framing == BodyFraming::Chunked;
        // Most requests have neither field: then no name needs comparing.
        let screen = chunked || self.head.declared_length.is_some();
        for (name, value) in &self.head.headers {
            let name = name.get(self.head_bytes);
            if screen
                && (name.eq_ignore_ascii_case(b"content-length")
                    || (chunked && name.eq_ignore_ascii_case(b"transfer-encoding")))
            {
                continue;
            }
            if !visit(name, value.get(self.head_bytes)) {
                return false;
            }
        }
        true
    }

    /// CONTENT_LENGTH: the decoded body length, else the declared one.
    fn content_length(&self) -> Option<u64> {
        self.body_length.or(self.head.declared_length)
    }
}

/// A header key the server stored, with the value scalar it holds a reference to.
pub(super) struct StoredHeader {
    /// End of the raw field name in `Env::names`.
    name_end: usize,
    /// The shared key, or null when the key is computed from the name.
    key: *mut SV,
    pub(super) value: *mut SV,
}

/// One env hash and a reference of ours to every value the server put in it: that is what
/// lets `reclaim` tell, after the app, that the hash still holds exactly these values.
pub struct Env {
    pub(super) hash: *mut HV,
    /// A reference to `hash`, passed to the app as `$env` (reused with the hash).
    pub(super) reference: *mut SV,
    pub(super) listener: usize,
    /// False when the template's copy could not be paired with the template (never expected):
    /// such an env serves one request only.
    pub(super) reusable: bool,
    /// Template values copied in: (value in this hash, value in the template).
    pub(super) statics: Vec<(*mut SV, *mut SV)>,
    /// Values under `FIXED_KEYS`.
    pub(super) fixed: [*mut SV; FIXED],
    pub(super) io_magic: IoMagic,
    /// CONTENT_LENGTH's value when the key is present, else null.
    pub(super) content_length: *mut SV,
    /// One entry per header key, in the order of the request that stored them.
    pub(super) headers: Vec<StoredHeader>,
    /// Raw field names of `headers`, end to end.
    names: Vec<u8>,
}

impl Env {
    /// A fresh env from `template` (a plain hash of ours).
    pub fn new(perl: Perl, keys: &EnvKeys, template: *mut HV, listener: usize, reactor_weak: *mut SV) -> Env {
        // SAFETY: `template` is the plain hash Perl built for this listener; newHVhv copies it.
        let hash = unsafe { thx::Perl_newHVhv(perl.0, template) };
        let statics = pair_statics(perl, hash, template);
        let reusable = statics.is_some();
        let statics = statics.unwrap_or_default();
        let io = lazy_io_value(perl, reactor_weak, 0);
        let io_magic = IoMagic::of(perl, io);
        let mut fixed = [std::ptr::null_mut(); FIXED];
        for (index, slot) in fixed.iter_mut().enumerate() {
            // SAFETY: an empty scalar for each fixed key (the io one carries its magic).
            let value = if index == IO { io } else { unsafe { thx::Perl_newSV(perl.0, 0) } };
            store(perl, hash, keys.fixed[index], value);
            *slot = perl.inc(value);
        }
        Env {
            hash,
            reference: perl.new_ref(hash as *mut SV),
            listener,
            reusable,
            statics,
            fixed,
            io_magic,
            content_length: std::ptr::null_mut(),
            headers: Vec::new(),
            names: Vec::new(),
        }
    }

    /// `$env`: a reference to the hash, owned by the env.
    pub fn reference(&self) -> *mut SV {
        self.reference
    }

    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Writes request `request` of connection `id` into the env. `input` is the psgi.input
    /// handle (a reference the caller keeps alive for the call).
    pub fn fill(
        &mut self,
        perl: Perl,
        keys: &EnvKeys,
        request: &RequestView<'_>,
        input: *mut SV,
        id: u64,
        scratch: &mut Vec<u8>,
    ) {
        let bytes = request.head_bytes;
        let head = request.head;
        let target = head.target.get(bytes);
        let (path, query) = split_target(target);
        set_bytes(perl, self.fixed[METHOD], head.method.get(bytes));
        set_bytes(perl, self.fixed[URI], target);
        if path.contains(&b'%') {
            percent_decode_into(path, scratch);
            set_bytes(perl, self.fixed[PATH], scratch);
        } else {
            set_bytes(perl, self.fixed[PATH], path);
        }
        set_bytes(perl, self.fixed[QUERY], query);
        let protocol: &[u8] = if head.minor_version == 0 { b"HTTP/1.0" } else { b"HTTP/1.1" };
        set_bytes(perl, self.fixed[PROTOCOL], protocol);
        set_bytes(perl, self.fixed[ADDR], request.remote_addr);
        set_integer(perl, self.fixed[PORT], i64::from(request.remote_port));
        set_reference(perl, self.fixed[INPUT], input);
        self.io_magic.point_at(id);
        self.fill_headers(perl, keys, request, scratch);
        match request.content_length() {
            Some(length) => {
                scratch.clear();
                crate::h1::encode::push_decimal(scratch, length);
                if self.content_length.is_null() {
                    // SAFETY: an empty scalar, stored under a key the hash does not hold.
                    let value = unsafe { thx::Perl_newSV(perl.0, 0) };
                    store(perl, self.hash, keys.content_length, value);
                    self.content_length = perl.inc(value);
                }
                set_bytes(perl, self.content_length, scratch);
            }
            None if !self.content_length.is_null() => {
                delete(perl, self.hash, keys.content_length, &[]);
                perl.dec(std::mem::replace(&mut self.content_length, std::ptr::null_mut()));
            }
            None => {}
        }
    }

    /// Header keys: when the request has the same fields as the last one (names compared
    /// without case), only the values are rewritten; otherwise the old keys go and the new
    /// ones are stored, repeated fields joined with ", " as RFC 9110 5.3 allows.
    fn fill_headers(&mut self, perl: Perl, keys: &EnvKeys, request: &RequestView<'_>, scratch: &mut Vec<u8>) {
        if self.same_header_names(request) {
            let mut stored = self.headers.iter();
            request.each_env_header(|_, value| {
                if let Some(header) = stored.next() {
                    set_bytes(perl, header.value, value);
                }
                true
            });
            return;
        }
        let mut start = 0;
        for stored in std::mem::take(&mut self.headers) {
            let name = &self.names[start..stored.name_end];
            start = stored.name_end;
            if stored.key.is_null() {
                cgi_header_name(name, scratch);
            }
            delete(perl, self.hash, stored.key, scratch);
            perl.dec(stored.value);
        }
        self.names.clear();
        request.each_env_header(|name, value| {
            let key = keys.header_key(name, scratch);
            let slot = fetch_lvalue(perl, self.hash, key, scratch);
            if slot.is_null() {
                return true;
            }
            // SAFETY: `slot` is the live value scalar of our own hash (plain, see `reclaim`).
            let appended = unsafe { sys::SvFLAGS(slot) & sys::SVf_POK != 0 };
            if appended {
                // A repeated field (or two names with one CGI form): join the values.
                append_bytes(perl, slot, b", ");
                append_bytes(perl, slot, value);
            } else {
                set_bytes(perl, slot, value);
                self.names.extend_from_slice(name);
                self.headers.push(StoredHeader { name_end: self.names.len(), key, value: perl.inc(slot) });
            }
            true
        });
    }

    /// Whether `request` has exactly the header fields stored last time, in the same order.
    fn same_header_names(&self, request: &RequestView<'_>) -> bool {
        let mut start = 0;
        let mut stored = self.headers.iter();
        let all_matched = request.each_env_header(|name, _| match stored.next() {
            Some(header) if self.names[start..header.name_end].eq_ignore_ascii_case(name) => {
                start = header.name_end;
                true
            }
            _ => false,
        });
        all_matched && stored.next().is_none()
    }

    /// Every value scalar we hold a reference to.
    fn held_values(&self) -> impl Iterator<Item = *mut SV> + '_ {
        self.statics
            .iter()
            .map(|&(value, _)| value)
            .chain(self.fixed)
            .chain(self.headers.iter().map(|header| header.value))
            .chain((!self.content_length.is_null()).then_some(self.content_length))
    }

    /// Drops our references (the hash lives on while the app holds it).
    pub fn release(self, perl: Perl) {
        for value in self.held_values() {
            perl.dec(value);
        }
        perl.dec(self.reference);
        perl.dec(self.hash as *mut SV);
    }
}

/// Pairs every value newHVhv copied into `hash` with its original in `template`, taking a
/// reference to each copy; None (holding nothing) when the two do not line up.
fn pair_statics(perl: Perl, hash: *mut HV, template: *mut HV) -> Option<Vec<(*mut SV, *mut SV)>> {
    // SAFETY: both are live unmagical hashes; newHVhv copied `template` bucket by bucket,
    // keeping the order of each chain, and the keys are shared, so a copied entry has the same
    // HEK as its original. Only pointers are read.
    unsafe {
        let mut statics = Vec::with_capacity(HvTOTALKEYS(template));
        let mut lined_up = HvMAX(hash) == HvMAX(template);
        let mut bucket = 0;
        while lined_up && bucket <= HvMAX(hash) {
            let mut copy = *sys::HvARRAY(hash as *mut SV).add(bucket);
            let mut original = *sys::HvARRAY(template as *mut SV).add(bucket);
            while !copy.is_null() && !original.is_null() && sys::HeKEY_hek(copy) == sys::HeKEY_hek(original) {
                statics.push((perl.inc(sys::HeVAL(copy)), sys::HeVAL(original)));
                copy = sys::HeNEXT(copy);
                original = sys::HeNEXT(original);
            }
            lined_up = copy.is_null() && original.is_null();
            bucket += 1;
        }
        if lined_up {
            return Some(statics);
        }
        for (value, _) in statics {
            perl.dec(value);
        }
        None
    }
}

/// `HTTP_` plus the name upper-cased with `-` as `_` (CGI/PSGI meta-variable form).
fn cgi_header_name(name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP_");
    out.extend(name.iter().map(|&byte| if byte == b'-' { b'_' } else { byte.to_ascii_uppercase() }));
}

#[allow(non_snake_case)]
unsafe fn HvMAX(hash: *mut HV) -> usize {
    // SAFETY: the caller passes a live hash.
    unsafe { sys::HvMAX(hash as *mut SV) }
}

#[allow(non_snake_case)]
pub(super) unsafe fn HvTOTALKEYS(hash: *mut HV) -> usize {
    // SAFETY: the caller passes a live hash.
    unsafe { sys::HvTOTALKEYS(hash as *mut SV) }
}

/// Sets a plain scalar of ours to a byte string (never UTF-8 flagged: these are raw bytes).
/// A value that already is exactly that string is left alone: on a keep-alive connection most
/// values (method, protocol, address, most headers) repeat from request to request.
fn set_bytes(perl: Perl, value: *mut SV, bytes: &[u8]) {
    // SAFETY: `value` is a live, unmagical, writable scalar of an env of ours (`reclaim`
    // checks that before reuse). A string-only scalar's PVX is valid for CUR bytes; sv_setpvn
    // copies the bytes and un-shares a copy-on-write buffer.
    unsafe {
        let only_string = sys::SvFLAGS(value) & (sys::SVf_OK | sys::SVf_UTF8) == sys::SVf_POK | sys::SVp_POK;
        if only_string
            && sys::SvCUR(value) == bytes.len()
            && std::slice::from_raw_parts(sys::SvPVX(value) as *const u8, bytes.len()) == bytes
        {
            return;
        }
        thx::Perl_sv_setpvn(perl.0, value, bytes.as_ptr() as *const c_char, bytes.len());
        (*value).sv_flags &= !sys::SVf_UTF8;
    }
}

/// Sets a plain scalar of ours to an integer, unless it already is exactly that integer.
fn set_integer(perl: Perl, value: *mut SV, number: i64) {
    // SAFETY: as `set_bytes`; IVX is valid when IOK is set.
    unsafe {
        let only_integer = sys::SvFLAGS(value) & (sys::SVf_OK | sys::SVf_IVisUV) == sys::SVf_IOK | sys::SVp_IOK;
        if only_integer && sys::SvIVX(value) as i64 == number {
            return;
        }
        thx::Perl_sv_setiv(perl.0, value, number as sys::IV);
    }
}

fn append_bytes(perl: Perl, value: *mut SV, bytes: &[u8]) {
    // SAFETY: as `set_bytes`; the scalar holds a string already.
    unsafe { thx::Perl_sv_catpvn_flags(perl.0, value, bytes.as_ptr() as *const c_char, bytes.len(), 0) };
}

/// Makes `value` a copy of the reference `source`, unless it already refers to the same thing.
pub(super) fn set_reference(perl: Perl, value: *mut SV, source: *mut SV) {
    // SAFETY: flag and referent reads on live scalars; sv_setsv on our plain scalar may free
    // what it referred to before (a DESTROY runs under Perl's own eval protection).
    unsafe {
        let flags = sys::SvFLAGS(value);
        if flags & sys::SVf_ROK != 0
            && sys::SvFLAGS(source) & sys::SVf_ROK != 0
            && sys::SvRV(value) == sys::SvRV(source)
            && flags & sys::SVprv_WEAKREF == 0
        {
            return;
        }
        thx::Perl_sv_setsv_flags(perl.0, value, source, 0);
    }
}

/// One `hv_common` call on our own env hash: by the shared key SV `key`, or by `name` when
/// `key` is null (a shared key carries its precomputed hash).
fn hv_call(perl: Perl, env: *mut HV, key: *mut SV, name: &[u8], action: u32, value: *mut SV) -> *mut std::ffi::c_void {
    // SAFETY: `env` is an unmagical hash of ours, so no user code runs; `name` is valid for its
    // length and read only when `key` is null.
    unsafe {
        thx::Perl_hv_common(perl.0, env, key, name.as_ptr() as *const c_char, name.len(), 0, action as i32, value, 0)
    }
}

/// Stores `value` under a shared key; the hash takes ownership of `value`.
fn store(perl: Perl, env: *mut HV, key: *mut SV, value: *mut SV) {
    hv_call(perl, env, key, &[], sys::HV_FETCH_ISSTORE, value);
}

/// The value scalar under `key` (or `name`), made undef when missing.
fn fetch_lvalue(perl: Perl, env: *mut HV, key: *mut SV, name: &[u8]) -> *mut SV {
    let slot = hv_call(perl, env, key, name, sys::HV_FETCH_LVALUE | sys::HV_FETCH_JUST_SV, std::ptr::null_mut())
        as *mut *mut SV;
    // SAFETY: an lvalue fetch returns null or a valid slot holding the value scalar.
    unsafe { slot.as_ref().copied().unwrap_or(std::ptr::null_mut()) }
}

/// Deletes `key` (or `name`) from our hash. G_DISCARD frees the value, which we still hold a
/// reference to, so nothing is destroyed here.
fn delete(perl: Perl, env: *mut HV, key: *mut SV, name: &[u8]) {
    hv_call(perl, env, key, name, sys::HV_DELETE | sys::G_DISCARD, std::ptr::null_mut());
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
