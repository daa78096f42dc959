//! `psgix.io` on demand. Every env carries the key, but its value is an empty scalar with a
//! little "ext" magic naming the connection; only when the app reads it does the get callback
//! ask the reactor for the handle (a duplicate of the socket, wrapped by Perl), and store it in
//! the scalar. Apps that never look (nearly all) cost no descriptor and no Perl call.

use super::{Perl, SV};
use crate::reactor::Reactor;
use libperl_sys as sys;
use libperl_sys::thx;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `PERL_MAGIC_ext`: magic for extensions, found again by its vtable address.
const PERL_MAGIC_EXT: c_int = b'~' as c_int;

static IO_VTABLE: sys::MGVTBL = sys::MGVTBL {
    svt_get: Some(io_get),
    svt_set: None,
    svt_len: None,
    svt_clear: None,
    svt_free: None,
    svt_copy: None,
    svt_dup: None,
    svt_local: None,
};

/// A new `psgix.io` value for connection `id`. `reactor` is a weak reference to the reactor's
/// Perl object: the magic keeps that reference alive, not the reactor, so a value kept after
/// the server is gone reads as undef.
pub fn lazy_io_value(perl: Perl, reactor: *mut SV, id: u64) -> *mut SV {
    // SAFETY: a fresh undef scalar gets one magic entry; sv_magicext counts its own reference to
    // `reactor` (a live RV of ours) and stores the id in mg_ptr without copying (length 0).
    unsafe {
        let value = thx::Perl_newSV(perl.0, 0);
        thx::Perl_sv_magicext(perl.0, value, reactor, PERL_MAGIC_EXT, &IO_VTABLE, id as usize as *const c_char, 0);
        value
    }
}

/// Our magic on one `psgix.io` value, kept by the env that holds the value so the next request
/// can name its connection without looking the magic up again.
pub struct IoMagic {
    value: *mut SV,
    magic: *mut sys::MAGIC,
}

impl IoMagic {
    /// The magic on `value`, made by `lazy_io_value`.
    pub fn of(perl: Perl, value: *mut SV) -> IoMagic {
        // SAFETY: looking up magic on a live SV runs no code.
        let magic = unsafe { thx::Perl_mg_findext(perl.0, value, PERL_MAGIC_EXT, &IO_VTABLE) };
        IoMagic { value, magic }
    }

    /// Makes the value stand for connection `id`.
    pub fn point_at(&self, id: u64) {
        if !self.magic.is_null() {
            // SAFETY: `magic` is our live entry on `value` (`untouched` checks it is still the
            // only one before an env is reused); mg_ptr holds the id, not a pointer.
            unsafe { (*self.magic).mg_ptr = id as usize as *mut c_char };
        }
    }

    /// True while the value is as made: our magic alone, and never read (reading stores the
    /// connection's handle in it, which must then go with the env).
    pub fn untouched(&self) -> bool {
        if self.magic.is_null() {
            return false;
        }
        // SAFETY: flag and magic-chain reads on a live SV run no code.
        unsafe {
            let flags = sys::SvFLAGS(self.value);
            let value_flags = sys::SVf_OK | sys::SVf_READONLY | sys::SVf_PROTECT | sys::SVs_OBJECT;
            flags & value_flags == 0
                && sys::SvMAGIC(self.value) == self.magic
                && (*self.magic).mg_moremagic.is_null()
                && std::ptr::eq((*self.magic).mg_virtual, &IO_VTABLE)
        }
    }
}

/// The reactor object and connection id behind a `psgix.io` value still carrying our magic.
pub fn connection_of(perl: Perl, value: *mut SV) -> Option<(*mut SV, u64)> {
    if value.is_null() {
        return None;
    }
    // SAFETY: looking up magic on a live SV runs no code; mg_obj is the weak RV we stored.
    unsafe {
        let magic = thx::Perl_mg_findext(perl.0, value, PERL_MAGIC_EXT, &IO_VTABLE);
        if magic.is_null() {
            return None;
        }
        let reactor = (*magic).mg_obj;
        if reactor.is_null() || sys::SvFLAGS(reactor) & sys::SVf_ROK == 0 {
            return None;
        }
        Some((sys::SvRV(reactor), (*magic).mg_ptr as usize as u64))
    }
}

/// The get callback: fills the scalar with the connection's handle (or undef once it is gone).
/// Perl calls it from C; a panic must not cross back, so it is caught here.
unsafe extern "C" fn io_get(interpreter: *mut sys::PerlInterpreter, value: *mut SV, magic: *mut sys::MAGIC) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let perl = Perl(interpreter);
        // SAFETY: `magic` is our entry on `value`; mg_obj is the weak RV we stored, whose
        // referent (while it lives) is the reactor object holding the reactor's address as IV.
        let handle = unsafe {
            let reactor_ref = (*magic).mg_obj;
            if reactor_ref.is_null() || sys::SvFLAGS(reactor_ref) & sys::SVf_ROK == 0 {
                std::ptr::null_mut()
            } else {
                let object = sys::SvRV(reactor_ref);
                let reactor = sys::SvIVX(object) as usize as *const Reactor;
                match reactor.as_ref() {
                    Some(reactor) => reactor.io_handle((*magic).mg_ptr as usize as u64),
                    None => std::ptr::null_mut(),
                }
            }
        };
        let source = if handle.is_null() { sys::PL_sv_undef_ptr!(perl.0) } else { handle };
        // SAFETY: setting the magical scalar itself, as tie's FETCH does; no set magic is ours.
        unsafe { thx::Perl_sv_setsv_flags(perl.0, value, source, 0) };
    }));
    // A panic (a bug) leaves the value as it was; Perl carries on.
    drop(result);
    0
}
