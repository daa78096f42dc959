/* Entry points only: each XSUB unpacks its Perl arguments, calls the Rust core, and croaks
 * with the core's message on failure. Croaking here is safe: the Rust call has returned, so
 * no Rust frame is between this XSUB and the caller's eval. */

#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

#include <stdint.h>

#ifdef MULTIPLICITY
#  define TWIGGY_THX aTHX
#else
#  define TWIGGY_THX PL_curinterp
#endif

typedef struct twiggy_reactor twiggy_reactor;
typedef twiggy_reactor *Twiggy__Reactor;

extern const char *twiggy_last_error(void);
extern twiggy_reactor *twiggy_reactor_new(PerlInterpreter *, SV *, SV *);
extern void twiggy_reactor_set_self(twiggy_reactor *, SV *);
extern void twiggy_reactor_free(twiggy_reactor *);
extern int twiggy_reactor_fd(twiggy_reactor *);
extern size_t twiggy_reactor_connections(twiggy_reactor *);
extern int twiggy_reactor_add_listener(twiggy_reactor *, int, SV *, int);
extern int twiggy_reactor_poll(twiggy_reactor *);
extern void twiggy_reactor_tick(twiggy_reactor *);
extern void twiggy_reactor_drain(twiggy_reactor *);
extern int twiggy_reactor_respond(twiggy_reactor *, uint64_t, SV *, SV *, SV *);
extern int twiggy_reactor_start_stream(twiggy_reactor *, uint64_t, SV *, SV *);
extern int twiggy_reactor_write(twiggy_reactor *, uint64_t, const char *, size_t);
extern int twiggy_reactor_close_stream(twiggy_reactor *, uint64_t);
extern int twiggy_reactor_send_file(twiggy_reactor *, uint64_t, int, uint64_t, uint64_t);
extern int twiggy_reactor_on_drain(twiggy_reactor *, uint64_t, SV *);
extern int twiggy_reactor_on_close(twiggy_reactor *, uint64_t, SV *);
extern void twiggy_reactor_cut(twiggy_reactor *, uint64_t);
extern void twiggy_reactor_forget(twiggy_reactor *, uint64_t);
extern void twiggy_reactor_fail(twiggy_reactor *, uint64_t);
extern int twiggy_listen_tcp(const char *, size_t, uint16_t, int, int, uint16_t *, char *, size_t);
extern int twiggy_listen_unix(const char *, size_t, int);
extern SV *twiggy_connection_of(PerlInterpreter *, SV *, uint64_t *);

/* Response calls: 1 done, 0 connection gone; negative values croak. */
static int
checked(pTHX_ int status)
{
    if (status < 0)
        croak("Twiggy: %s", twiggy_last_error());
    return status;
}

/* Marks the magic by which a poll callback keeps its reactor object alive. */
static MGVTBL twiggy_poll_callback_vtbl;

/* The body of the code reference `poll_callback` returns: polls the reactor whose address
 * the CV carries, with no Perl code, method lookup or type check in between. */
static void
twiggy_poll_callback(pTHX_ CV *cv)
{
    dXSARGS;
    PERL_UNUSED_VAR(items);
    if (twiggy_reactor_poll((twiggy_reactor *)CvXSUBANY(cv).any_ptr) < 0)
        croak("Twiggy: %s", twiggy_last_error());
    XSRETURN_EMPTY;
}

MODULE = Twiggy  PACKAGE = Twiggy::Reactor

PROTOTYPES: DISABLE

SV *
_new(class, hooks, options)
    const char *class
    SV *hooks
    SV *options
  PREINIT:
    twiggy_reactor *reactor;
  CODE:
    reactor = twiggy_reactor_new(TWIGGY_THX, hooks, options);
    if (!reactor)
        croak("Twiggy: %s", twiggy_last_error());
    RETVAL = sv_setref_pv(newSV(0), class, (void *)reactor);
    twiggy_reactor_set_self(reactor, SvRV(RETVAL));
  OUTPUT:
    RETVAL

void
DESTROY(self)
    Twiggy::Reactor self
  CODE:
    twiggy_reactor_free(self);

int
fd(self)
    Twiggy::Reactor self
  CODE:
    RETVAL = twiggy_reactor_fd(self);
  OUTPUT:
    RETVAL

UV
connections(self)
    Twiggy::Reactor self
  CODE:
    RETVAL = (UV)twiggy_reactor_connections(self);
  OUTPUT:
    RETVAL

void
add_listener(self, fd, template, is_unix)
    Twiggy::Reactor self
    int fd
    SV *template
    int is_unix
  CODE:
    if (twiggy_reactor_add_listener(self, fd, template, is_unix) < 0)
        croak("Twiggy: %s", twiggy_last_error());

void
poll(self)
    Twiggy::Reactor self
  CODE:
    if (twiggy_reactor_poll(self) < 0)
        croak("Twiggy: %s", twiggy_last_error());

SV *
poll_callback(self)
    SV *self
  PREINIT:
    CV *callback;
  CODE:
    if (!(SvROK(self) && sv_derived_from(self, "Twiggy::Reactor")))
        croak("Twiggy: poll_callback needs a Twiggy::Reactor");
    callback = newXS(NULL, twiggy_poll_callback, __FILE__);
    CvXSUBANY(callback).any_ptr = INT2PTR(void *, SvIV(SvRV(self)));
    /* The magic holds a counted reference to the reactor object, released with the CV, so
     * the address stays valid for as long as the callback can be called. */
    sv_magicext((SV *)callback, SvRV(self), PERL_MAGIC_ext, &twiggy_poll_callback_vtbl, NULL, 0);
    RETVAL = newRV_noinc((SV *)callback);
  OUTPUT:
    RETVAL

void
tick(self)
    Twiggy::Reactor self
  CODE:
    twiggy_reactor_tick(self);

void
drain(self)
    Twiggy::Reactor self
  CODE:
    twiggy_reactor_drain(self);

int
respond(self, id, status, headers, body)
    Twiggy::Reactor self
    uint64_t id
    SV *status
    SV *headers
    SV *body
  CODE:
    RETVAL = checked(aTHX_ twiggy_reactor_respond(self, id, status, headers, body));
  OUTPUT:
    RETVAL

int
start_stream(self, id, status, headers)
    Twiggy::Reactor self
    uint64_t id
    SV *status
    SV *headers
  CODE:
    RETVAL = checked(aTHX_ twiggy_reactor_start_stream(self, id, status, headers));
  OUTPUT:
    RETVAL

int
write(self, id, data)
    Twiggy::Reactor self
    uint64_t id
    SV *data
  PREINIT:
    STRLEN length;
    const char *bytes;
  CODE:
    bytes = SvPVbyte(data, length);
    RETVAL = twiggy_reactor_write(self, id, bytes, (size_t)length);
  OUTPUT:
    RETVAL

int
send_file(self, id, fd, offset, length)
    Twiggy::Reactor self
    uint64_t id
    int fd
    UV offset
    UV length
  CODE:
    RETVAL = twiggy_reactor_send_file(self, id, fd, (uint64_t)offset, (uint64_t)length);
  OUTPUT:
    RETVAL

int
close_stream(self, id)
    Twiggy::Reactor self
    uint64_t id
  CODE:
    RETVAL = twiggy_reactor_close_stream(self, id);
    if (RETVAL < 0)
        RETVAL = 0;
  OUTPUT:
    RETVAL

int
on_drain(self, id, callback)
    Twiggy::Reactor self
    uint64_t id
    SV *callback
  CODE:
    RETVAL = twiggy_reactor_on_drain(self, id, newSVsv(callback));
    if (RETVAL < 0)
        RETVAL = 0;
  OUTPUT:
    RETVAL

int
on_close(self, id, callback)
    Twiggy::Reactor self
    uint64_t id
    SV *callback
  CODE:
    RETVAL = twiggy_reactor_on_close(self, id, newSVsv(callback));
    if (RETVAL < 0)
        RETVAL = 0;
  OUTPUT:
    RETVAL

void
cut(self, id)
    Twiggy::Reactor self
    uint64_t id
  CODE:
    twiggy_reactor_cut(self, id);

void
forget(self, id)
    Twiggy::Reactor self
    uint64_t id
  CODE:
    twiggy_reactor_forget(self, id);

void
fail(self, id)
    Twiggy::Reactor self
    uint64_t id
  CODE:
    twiggy_reactor_fail(self, id);

void
listen_tcp(class, host, port, backlog, reuse_port = 0)
    const char *class
    SV *host
    int port
    int backlog
    int reuse_port
  PREINIT:
    STRLEN length;
    const char *bytes;
    uint16_t bound_port = 0;
    char bound_host[128];
    int fd;
  PPCODE:
    PERL_UNUSED_VAR(class);
    bytes = SvPVbyte(host, length);
    if (port < 0 || port > 65535)
        croak("Twiggy: port %d is out of range", port);
    fd = twiggy_listen_tcp(bytes, (size_t)length, (uint16_t)port, backlog, reuse_port, &bound_port,
                           bound_host, sizeof bound_host);
    if (fd < 0)
        croak("Twiggy: %s", twiggy_last_error());
    EXTEND(SP, 3);
    mPUSHi(fd);
    mPUSHp(bound_host, strlen(bound_host));
    mPUSHi(bound_port);

void
connection_of(value)
    SV *value
  PREINIT:
    uint64_t id = 0;
    SV *object;
  PPCODE:
    object = twiggy_connection_of(TWIGGY_THX, value, &id);
    if (object) {
        EXTEND(SP, 2);
        mPUSHs(newRV_inc(object));
        mPUSHu((UV)id);
    }

int
listen_unix(class, path, backlog)
    const char *class
    SV *path
    int backlog
  PREINIT:
    STRLEN length;
    const char *bytes;
  CODE:
    PERL_UNUSED_VAR(class);
    bytes = SvPVbyte(path, length);
    RETVAL = twiggy_listen_unix(bytes, (size_t)length, backlog);
    if (RETVAL < 0)
        croak("Twiggy: %s", twiggy_last_error());
  OUTPUT:
    RETVAL
