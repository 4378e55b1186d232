/* status.h — status codes, the last error message, and the interrupt flag.
 *
 * Every fallible engine function returns an agt_status: AGT_OK (0) or a negative
 * code. On failure it leaves a human-readable message, prefixed with file:line,
 * in a thread-local buffer read by agt_last_error(). The engine never exits or
 * aborts on a recoverable condition.
 *
 * Long-running kernels poll agt_interrupted() (a signal-safe flag set by the
 * host's SIGINT handler) and return AGT_EINTR, so Ctrl-C reaches them. */
#ifndef AGT_STATUS_H
#define AGT_STATUS_H

#include <stddef.h>
#include <stdint.h>

/* ffi:begin */
typedef int agt_status;
enum {
  AGT_OK = 0,
  AGT_ENOMEM = -1,   /* allocation failed */
  AGT_EINVAL = -2,   /* bad argument: shape, size, range */
  AGT_EIO = -3,      /* file or stream error */
  AGT_EFORMAT = -4,  /* malformed or foreign input data */
  AGT_EINTR = -5,    /* interrupted by the user */
  AGT_ENOTSUP = -6,  /* not built in / not available here */
  AGT_ENET = -7,     /* network failure */
  AGT_ECHECKSUM = -8 /* integrity check failed */
};
const char *agt_last_error(void);
const char *agt_status_name(agt_status s);
void agt_clear_error(void);
int agt_interrupted(void);
void agt_interrupt_set(int on);
/* While held (on = 1), agt_interrupted() says 0, so no kernel stops part-way through work that
 * must be whole (a step's update of θ and the optimizer's state); a Ctrl-C meanwhile is kept
 * and seen once released. agt_interrupt_pending() reads it whether held or not. */
void agt_interrupt_hold(int on);
int agt_interrupt_pending(void);
const char *agt_version(void);
const char *agt_build_features(void);
/* ffi:end */

/* Sets the message (printf format) and returns code, for `return AGT_FAIL(...)`. */
agt_status agt_fail_at(agt_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define AGT_FAIL(code, ...) agt_fail_at((code), __FILE__, __LINE__, __VA_ARGS__)

/* For true invariants only (a broken one is a bug in agt, not bad input). */
#define AGT_ASSERT(cond) \
  do { if (!(cond)) agt_assert_failed(#cond, __FILE__, __LINE__); } while (0)
void agt_assert_failed(const char *expr, const char *file, int line) __attribute__((noreturn));

/* Propagate a failing status. */
#define AGT_TRY(expr) \
  do { agt_status agt_try_s_ = (expr); if (agt_try_s_ != AGT_OK) return agt_try_s_; } while (0)

#endif
