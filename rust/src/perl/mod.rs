//! The bridge to Perl values: the only place that touches the interpreter. `env` builds the
//! request hash (`env_reuse` decides when it can serve again), `response` reads what the app returned; this file holds the calling convention.
//!
//! Rules (DESIGN.md): every call into Perl code goes through `call` with G_EVAL, so a `die`
//! never unwinds through Rust frames; values the app gave us are read only when they are plain
//! (no magic, no overloading), anything else goes to Perl code called the same way.

pub mod env;
mod env_reuse;
pub mod io;
pub mod response;

use libperl_sys as sys;
use libperl_sys::thx;
use std::os::raw::c_char;

pub use sys::{PerlInterpreter, AV, HV, SV};

/// The interpreter pointer (`aTHX`) handed over by XS.
#[derive(Clone, Copy, Debug)]
pub struct Perl(pub *mut PerlInterpreter);

/// The outcome of calling Perl code: the returned scalar (owned by the current temps scope),
/// or the error that was in `$@`.
pub enum Called {
    Returned(*mut SV),
    Died(*mut SV),
}

impl Perl {
    /// A new string SV holding a copy of `bytes`; the caller owns one reference.
    pub fn new_string(self, bytes: &[u8]) -> *mut SV {
        // SAFETY: newSVpvn copies `len` bytes from a valid slice; the interpreter is the one
        // XS handed us and is only used on its own thread.
        unsafe { thx::Perl_newSVpvn(self.0, bytes.as_ptr() as *const c_char, bytes.len()) }
    }

    pub fn new_int(self, value: i64) -> *mut SV {
        // SAFETY: allocating an IV scalar has no preconditions beyond a live interpreter.
        unsafe { thx::Perl_newSViv(self.0, value as sys::IV) }
    }

    /// A new reference to `target` (its count is raised); the caller owns the reference.
    pub fn new_ref(self, target: *mut SV) -> *mut SV {
        // SAFETY: `target` is a live SV owned elsewhere; newRV takes its own count on it.
        unsafe { thx::Perl_newRV(self.0, target) }
    }

    /// A copy of `value` (for values stored in several hashes, which must not be aliased).
    pub fn copy(self, value: *mut SV) -> *mut SV {
        // SAFETY: `value` is a live SV of ours (no get-magic is run: flags 0).
        unsafe { thx::Perl_newSVsv_flags(self.0, value, sys::SV_NOSTEAL as i32) }
    }

    pub fn mortal(self, value: *mut SV) -> *mut SV {
        // SAFETY: hands one reference we own to the current temps scope.
        unsafe { thx::Perl_sv_2mortal(self.0, value) }
    }

    pub fn inc(self, value: *mut SV) -> *mut SV {
        if !value.is_null() {
            // SAFETY: `value` is a live SV; raising its count cannot run code.
            unsafe { (*value).sv_refcnt += 1 };
        }
        value
    }

    /// Drops one reference. Freeing may run a DESTROY method: Perl itself traps a `die` in
    /// DESTROY (it warns "(in cleanup)"), so no longjmp reaches our frames.
    pub fn dec(self, value: *mut SV) {
        if !value.is_null() {
            // SAFETY: we own one reference to `value`.
            unsafe { thx::Perl_SvREFCNT_dec(self.0, value) }
        }
    }

    /// ENTER; SAVETMPS: one scope per request, so mortals never pile up across wake-ups.
    pub fn enter_scope(self) {
        // SAFETY: balanced by `leave_scope` on every path of the caller.
        unsafe {
            thx::Perl_push_scope(self.0);
            thx::Perl_savetmps(self.0);
        }
    }

    /// FREETMPS; LEAVE.
    pub fn leave_scope(self) {
        // SAFETY: pairs with `enter_scope`.
        unsafe {
            thx::Perl_free_tmps(self.0);
            thx::Perl_pop_scope(self.0);
        }
    }

    /// Calls `code` in scalar context under G_EVAL with `args` pushed on the Perl stack.
    pub fn call(self, code: *mut SV, args: &[*mut SV]) -> Called {
        let interpreter = self.0;
        // SAFETY: this reproduces dSP/PUSHMARK/EXTEND/XPUSHs/PUTBACK/call_sv/SPAGAIN/POPs on the
        // interpreter's own stack pointers, exactly as perlcall(1) describes. G_EVAL makes
        // call_sv trap any die, so control always comes back here.
        unsafe {
            let stack_pointer = sys::PL_stack_sp_ptr!(interpreter);
            let mut sp = *stack_pointer;
            let mark = sys::PL_markstack_ptr_ptr!(interpreter);
            *mark = (*mark).add(1);
            if *mark == *sys::PL_markstack_max_ptr!(interpreter) {
                thx::Perl_markstack_grow(interpreter);
            }
            **mark = sp.offset_from(*sys::PL_stack_base_ptr!(interpreter)) as i32;
            let needed = args.len() as isize;
            if (*sys::PL_stack_max_ptr!(interpreter)).offset_from(sp) < needed {
                sp = thx::Perl_stack_grow(interpreter, sp, sp, needed as _);
            }
            for &arg in args {
                sp = sp.add(1);
                *sp = arg;
            }
            *stack_pointer = sp;
            let count = thx::Perl_call_sv(interpreter, code, (sys::G_SCALAR | sys::G_EVAL) as i32);
            let mut sp = *stack_pointer;
            let mut returned = std::ptr::null_mut();
            if count > 0 {
                returned = *sp;
                sp = sp.sub(count as usize);
            }
            *stack_pointer = sp;
            let error = self.error_sv();
            if is_true_error(error) {
                // A copy: the next G_EVAL call (the logger) clears $@ on entry.
                Called::Died(self.mortal(self.copy(error)))
            } else {
                Called::Returned(returned)
            }
        }
    }

    /// `$@`.
    fn error_sv(self) -> *mut SV {
        // SAFETY: PL_errgv always exists in a running interpreter; its SV slot may be empty.
        unsafe {
            let glob = *sys::PL_errgv_ptr!(self.0);
            if glob.is_null() {
                return std::ptr::null_mut();
            }
            sys::GvSV(glob)
        }
    }

    /// The referent when `value` is a reference to an SV of type `kind` without magic or
    /// blessing (a structure we can read without running any code).
    pub fn plain_ref(self, value: *mut SV, kind: sys::svtype) -> Option<*mut SV> {
        // SAFETY: flag and type reads on a live SV run no code.
        unsafe {
            if value.is_null() || sys::SvFLAGS(value) & (sys::SVf_ROK | sys::SVs_GMG) != sys::SVf_ROK {
                return None;
            }
            let target = sys::SvRV(value);
            let flags = sys::SvFLAGS(target);
            if sys::SvTYPE(target) != kind || flags & (sys::SVs_OBJECT | sys::SVs_GMG | sys::SVs_RMG) != 0 {
                return None;
            }
            Some(target)
        }
    }

    /// A number stored under `key` in one of our own option hashes (plain IV, NV or numeric
    /// string); None when missing or not a number.
    pub fn hash_number(self, hash: *mut HV, key: &str) -> Option<f64> {
        // SAFETY: a fetch from a hash Perl built for us (no magic); the slot is read only.
        unsafe {
            let slot = thx::Perl_hv_common_key_len(
                self.0,
                hash,
                key.as_ptr() as *const c_char,
                key.len() as i32,
                sys::HV_FETCH_JUST_SV as i32,
                std::ptr::null_mut(),
                0,
            ) as *mut *mut SV;
            if slot.is_null() || (*slot).is_null() {
                return None;
            }
            let value = *slot;
            let flags = sys::SvFLAGS(value);
            if flags & (sys::SVs_GMG | sys::SVf_ROK) != 0 {
                return None;
            }
            if flags & sys::SVf_NOK != 0 {
                return Some(sys::SvNVX(value));
            }
            if let Some(integer) = plain_integer(value) {
                return Some(integer as f64);
            }
            plain_bytes(value).and_then(|bytes| std::str::from_utf8(bytes).ok()?.trim().parse().ok())
        }
    }

    /// The elements of a plain array (see `plain_ref`).
    pub fn array_items<'a>(self, array: *mut SV) -> &'a [*mut SV] {
        // SAFETY: `array` is an unmagical AV; AvARRAY holds AvFILLp+1 element slots (some may
        // be null for holes, which callers treat as "not plain").
        unsafe {
            let array = array as *mut AV;
            let fill = sys::AvFILLp(array);
            if fill < 0 {
                return &[];
            }
            std::slice::from_raw_parts(sys::AvARRAY(array), fill as usize + 1)
        }
    }
}

/// Bytes of a plain byte string: POK, no magic, not a reference, not UTF-8 flagged.
/// Anything else (numbers, objects, tied values, wide strings) is None.
pub fn plain_bytes<'a>(value: *mut SV) -> Option<&'a [u8]> {
    if value.is_null() {
        return None;
    }
    // SAFETY: reading flags, PVX and CUR of a live SV runs no code; POK guarantees PVX is valid
    // for CUR bytes.
    unsafe {
        let flags = sys::SvFLAGS(value);
        if flags & (sys::SVf_POK | sys::SVf_ROK | sys::SVs_GMG | sys::SVf_UTF8) != sys::SVf_POK {
            return None;
        }
        let length = sys::SvCUR(value);
        if length == 0 {
            return Some(&[]);
        }
        Some(std::slice::from_raw_parts(sys::SvPVX(value) as *const u8, length))
    }
}

/// A plain integer (IOK, no magic, no string part to prefer).
pub fn plain_integer(value: *mut SV) -> Option<i64> {
    if value.is_null() {
        return None;
    }
    // SAFETY: flag reads and IVX on an IOK scalar run no code.
    unsafe {
        let flags = sys::SvFLAGS(value);
        if flags & (sys::SVf_IOK | sys::SVf_ROK | sys::SVs_GMG | sys::SVf_IVisUV) != sys::SVf_IOK {
            return None;
        }
        Some(sys::SvIVX(value) as i64)
    }
}

/// Whether `$@` holds an error, decided without calling overloaded boolean operators.
fn is_true_error(error: *mut SV) -> bool {
    if error.is_null() {
        return false;
    }
    // SAFETY: flag reads; a reference counts as an error (exception object) without asking it.
    unsafe {
        let flags = sys::SvFLAGS(error);
        if flags & sys::SVf_ROK != 0 {
            return true;
        }
        if let Some(bytes) = plain_bytes(error) {
            return !(bytes.is_empty() || bytes == b"0");
        }
        if flags & sys::SVf_POK != 0 {
            return sys::SvCUR(error) > 0;
        }
        if flags & sys::SVf_IOK != 0 {
            return sys::SvIVX(error) != 0;
        }
        false
    }
}
