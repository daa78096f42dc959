//! Deciding, once the app is done with a request, whether its env can serve the next one.
//!
//! The app may keep the env, change it, or take references into it; any of that must leave
//! the app's view intact, so reuse is allowed only when the hash is provably back in our sole
//! hands with exactly the values we put in:
//! - the hash has no other reference (nothing kept `$env`; the reference the app was given is
//!   ours too, and still points at the hash), no magic, no blessing, no weak
//!   references to it, and is not read-only;
//! - we hold a reference to each value we stored; each still has exactly two (the hash's and
//!   ours), so none was deleted, replaced or referenced from elsewhere, and the key count is
//!   ours, so nothing was added;
//! - every value is a plain, writable scalar (no magic, not read-only, not a glob; the
//!   per-request ones not a reference either), so rewriting it runs no code and cannot croak;
//! - `psgix.io` was never read (its handle would otherwise outlive the request).
//!
//! Template values the app changed in place are put back from the template; per-request
//! values are rewritten by the next fill anyway. A body's psgi.input is dropped here so its
//! temporary file does not wait for the next request.

use super::env::{set_reference, Env, HvTOTALKEYS, FIXED, INPUT, IO};
use super::{Perl, SV};
use libperl_sys as sys;
use libperl_sys::thx;

/// Flags that make a scalar unsafe to rewrite behind the app's back.
const NOT_PLAIN: u32 =
    sys::SVs_GMG | sys::SVs_SMG | sys::SVs_RMG | sys::SVf_READONLY | sys::SVf_PROTECT | sys::SVs_OBJECT;

/// Flags that describe a scalar's value (compared between a template value and its copy).
const VALUE_FLAGS: u32 = sys::SVf_OK | sys::SVf_UTF8 | sys::SVf_IVisUV;

impl Env {
    /// After the request: true when the env may be filled again (see the module notes), after
    /// putting back changed template values and dropping the request's input handle. False
    /// means the caller must `release` it.
    pub fn reclaim(&mut self, perl: Perl, null_input: *mut SV) -> bool {
        if !self.reusable || !self.hash_is_ours(perl) {
            return false;
        }
        let expected = self.statics.len() + FIXED + self.headers.len() + usize::from(!self.content_length.is_null());
        // SAFETY: `hash` is our live hash.
        if unsafe { HvTOTALKEYS(self.hash) } != expected {
            return false;
        }
        let mut plain = true;
        for (index, &value) in self.fixed.iter().enumerate() {
            plain &= match index {
                // SAFETY: we hold a reference to the io value, so it is live.
                IO => unsafe { sys::SvREFCNT(value) == 2 },
                INPUT => sole_plain_value(value),
                _ => sole_plain_string(value),
            };
        }
        plain &= self.headers.iter().all(|header| sole_plain_string(header.value));
        plain &= self.content_length.is_null() || sole_plain_string(self.content_length);
        if !plain || !self.io_magic.untouched() {
            return false;
        }
        // One pass: a value put back before a later one fails the check is harmless, since no
        // one but the hash (held by us alone) and us can see it.
        for &(value, original) in &self.statics {
            if !sole_plain_value(value) {
                return false;
            }
            if !same_value(value, original) {
                // SAFETY: `value` is a plain writable scalar of ours (checked above) and
                // `original` the template's; copying may free what `value` referred to.
                unsafe { thx::Perl_sv_setsv_flags(perl.0, value, original, sys::SV_NOSTEAL as i32) };
            }
        }
        // The request's input handle gives way to the shared empty one.
        set_reference(perl, self.fixed[INPUT], null_input);
        true
    }

    /// Only our reference to the hash, which is plain, and no iteration left half done.
    fn hash_is_ours(&self, perl: Perl) -> bool {
        let hash = self.hash as *mut SV;
        // SAFETY: reads of a live hash's header and, when it has one, its aux structure.
        unsafe {
            // Two references: ours and our `$env` reference's, which must itself be untouched.
            let flags = sys::SvFLAGS(hash);
            if sys::SvREFCNT(hash) != 2 || flags & NOT_PLAIN != 0 {
                return false;
            }
            let reference = self.reference;
            let reference_flags = sys::SvFLAGS(reference);
            if sys::SvREFCNT(reference) != 1
                || reference_flags & (sys::SVf_OK | NOT_PLAIN | sys::SVprv_WEAKREF) != sys::SVf_ROK
                || sys::SvRV(reference) != hash
            {
                return false;
            }
            if flags & sys::SVf_OOK != 0 {
                // Iterating the env (keys, each) gives it an aux structure; weak references and
                // stash names live there too.
                let aux = sys::HvAUX(hash);
                if !(*aux).xhv_backreferences.is_null() || !(*aux).xhv_name_u.xhvnameu_name.is_null() {
                    return false;
                }
                if !(*aux).xhv_eiter.is_null() || (*aux).xhv_riter != -1 {
                    // A loop that stopped early: the next request's `each` must start afresh.
                    thx::Perl_hv_iterinit(perl.0, self.hash);
                }
            }
            true
        }
    }
}

/// A value held by the hash and by us only, and plain: no magic, writable, and of a type
/// `sv_setpvn`/`sv_setsv` rewrite without surprises (no glob, code, array...).
#[inline]
fn sole_plain_value(value: *mut SV) -> bool {
    // SAFETY: we hold a reference to every value we check, so each is a live SV.
    unsafe {
        sys::SvREFCNT(value) == 2
            && sys::SvFLAGS(value) & NOT_PLAIN == 0
            && sys::SvTYPE(value) as u32 <= sys::svtype::SVt_PVMG as u32
    }
}

/// `sole_plain_value`, and not a reference: the next fill rewrites these values, and
/// overwriting a reference could run an object's DESTROY in the middle of it.
#[inline]
fn sole_plain_string(value: *mut SV) -> bool {
    // SAFETY: as `sole_plain_value`.
    sole_plain_value(value) && unsafe { sys::SvFLAGS(value) } & sys::SVf_ROK == 0
}

/// Whether `value` still holds what `original` holds: same kinds of value, same bytes,
/// numbers and referent. Conservative: any doubt means "copy it again".
#[inline]
fn same_value(value: *mut SV, original: *mut SV) -> bool {
    // SAFETY: flag and body reads of two live, unmagical scalars; PVX is valid for CUR bytes
    // when POK is set.
    unsafe {
        let flags = sys::SvFLAGS(value);
        if flags & VALUE_FLAGS != sys::SvFLAGS(original) & VALUE_FLAGS || sys::SvTYPE(value) != sys::SvTYPE(original) {
            return false;
        }
        if flags & sys::SVf_ROK != 0 {
            return sys::SvRV(value) == sys::SvRV(original);
        }
        if flags & sys::SVp_POK != 0 {
            let length = sys::SvCUR(value);
            if length != sys::SvCUR(original) {
                return false;
            }
            // Template strings are a few bytes: a plain loop beats a call to memcmp.
            let (left, right) = (sys::SvPVX(value) as *const u8, sys::SvPVX(original) as *const u8);
            if (0..length).any(|at| *left.add(at) != *right.add(at)) {
                return false;
            }
        }
        if flags & sys::SVp_IOK != 0 && sys::SvIVX(value) != sys::SvIVX(original) {
            return false;
        }
        if flags & sys::SVp_NOK != 0 && sys::SvNVX(value).to_bits() != sys::SvNVX(original).to_bits() {
            return false;
        }
        true
    }
}
