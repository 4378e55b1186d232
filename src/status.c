/* status.c — the thread-local last-error message, status names, the interrupt flag and the
 * build's version and features. */
#include "status.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGT_VERSION "0.1.0"

static _Thread_local char last_error[1024];
static volatile sig_atomic_t interrupt_flag;
static volatile sig_atomic_t interrupt_hold; /* agt_interrupt_hold */

const char *agt_last_error(void) { return last_error[0] ? last_error : "no error"; }

void agt_clear_error(void) { last_error[0] = '\0'; }

agt_status agt_fail_at(agt_status code, const char *file, int line, const char *fmt, ...) {
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  int k = snprintf(last_error, sizeof last_error, "%s:%d: ", base, line);
  if (k < 0 || (size_t)k >= sizeof last_error) k = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error + k, sizeof last_error - (size_t)k, fmt, ap);
  va_end(ap);
  return code;
}

const char *agt_status_name(agt_status s) {
  switch (s) {
    case AGT_OK: return "ok";
    case AGT_ENOMEM: return "out of memory";
    case AGT_EINVAL: return "invalid argument";
    case AGT_EIO: return "I/O error";
    case AGT_EFORMAT: return "malformed input";
    case AGT_EINTR: return "interrupted";
    case AGT_ENOTSUP: return "not supported";
    case AGT_ENET: return "network error";
    case AGT_ECHECKSUM: return "checksum mismatch";
    default: return "unknown status";
  }
}

void agt_assert_failed(const char *expr, const char *file, int line) {
  fprintf(stderr, "agt: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  abort();
}

int agt_interrupted(void) { return interrupt_flag != 0 && !interrupt_hold; }
int agt_interrupt_pending(void) { return interrupt_flag != 0; }
void agt_interrupt_set(int on) { interrupt_flag = on ? 1 : 0; }
void agt_interrupt_hold(int on) { interrupt_hold = on ? 1 : 0; }

const char *agt_version(void) { return AGT_VERSION; }

const char *agt_build_features(void) {
  return "CUDA: "
#ifdef AGT_HAVE_CUDA
         "yes"
#else
         "no"
#endif
         ", BLAS: OpenBLAS, threads: pthreads";
}
