/* check.h — a minimal harness for the engine's C unit tests (no Lua involved).
 * CHECK(cond) and CHECK_NEAR(a, b, tol) count and report; a test file's main ends with
 * `return check_summary();`, which prints "N passed, N failed" and returns non-zero on any
 * failure. */
#ifndef AGT_CHECK_H
#define AGT_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed_, check_failed_;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) check_passed_++;                                                   \
    else {                                                                       \
      check_failed_++;                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                            \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                    \
  do {                                                                           \
    double ca_ = (double)(a), cb_ = (double)(b);                                 \
    if (fabs(ca_ - cb_) <= (tol)) check_passed_++;                               \
    else {                                                                       \
      check_failed_++;                                                           \
      fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, %s = %.9g (tol %g)\n", \
              __FILE__, __LINE__, #a, ca_, #b, cb_, (double)(tol));             \
    }                                                                            \
  } while (0)

static int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed_, check_failed_);
  return check_failed_ ? 1 : 0;
}

#endif
