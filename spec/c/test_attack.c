/* test_attack.c — the attack kernels against plain loops, across thread counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack.h"
#include "check.h"
#include "pool.h"
#include "rng.h"

static void test_minmax(void) {
  /* 3 rows × 4 columns, with a NaN that is skipped and a column of NaN only. */
  float G[12] = {1, -2, NAN, NAN, 5, 3, 0.5f, NAN, -1, 4, -0.5f, NAN};
  float lo[4], hi[4];
  CHECK(agt_attack_minmax(G, 3, 4, lo, hi) == AGT_OK);
  CHECK(lo[0] == -1 && hi[0] == 5);
  CHECK(lo[1] == -2 && hi[1] == 4);
  CHECK(lo[2] == -0.5f && hi[2] == 0.5f);
  CHECK(isnan(lo[3]) && isnan(hi[3]));
  CHECK(agt_attack_minmax(G, 0, 4, lo, hi) == AGT_EINVAL);
}

static void test_fang_trim(void) {
  float mu[6] = {2, 2, -2, -2, 0, 1};
  float lo[6] = {1, -3, 0, 0, 0, 0};
  float hi[6] = {0, 0, 3, -1, 0, 0};
  float x[6] = {0, 0.5f, 1, 0.5f, 0.7f, 0.25f};
  CHECK(agt_attack_fang_trim(x, mu, lo, hi, 6, 2.0) == AGT_OK);
  CHECK_NEAR(x[0], 0.5, 1e-7);    /* lo > 0: [lo/b, lo] = [0.5, 1], u = 0 */
  CHECK_NEAR(x[1], -4.5, 1e-6);   /* lo <= 0: [b lo, lo] = [-6, -3], u = 0.5 */
  CHECK_NEAR(x[2], 6, 1e-6);      /* hi > 0: [hi, b hi] = [3, 6], u = 1 */
  CHECK_NEAR(x[3], -0.75, 1e-7);  /* hi <= 0: [hi, hi/b] = [-1, -0.5], u = 0.5 */
  CHECK(x[4] == 0);               /* mu = 0: mu */
  CHECK(x[5] == 0);               /* lo = 0: [0, 0] */
  CHECK(agt_attack_fang_trim(x, mu, lo, hi, 6, 1.0) == AGT_EINVAL);
}

static void test_drop_threads(void) {
  size_t d = 200003;
  float *u = malloc(d * sizeof *u), *a = malloc(d * sizeof *a), *b = malloc(d * sizeof *b);
  agt_rng r;
  agt_rng_init(&r, 3, 0);
  agt_rng_uniform(&r, u, d, 0, 1);
  size_t expect = 0;
  for (size_t j = 0; j < d; j++) {
    a[j] = b[j] = 1.0f + (float)(j % 5);
    if (u[j] < 0.3f) expect++;
  }
  size_t got1 = 0, got4 = 0;
  agt_pool_set_threads(1);
  CHECK(agt_attack_drop(a, u, d, 0.3, &got1) == AGT_OK);
  agt_pool_set_threads(4);
  CHECK(agt_attack_drop(b, u, d, 0.3, &got4) == AGT_OK);
  agt_pool_set_threads(0);
  CHECK(got1 == expect && got4 == expect);
  CHECK(memcmp(a, b, d * sizeof *a) == 0);
  int ok = 1;
  for (size_t j = 0; j < d; j++) {
    if (u[j] < 0.3f ? a[j] != 0 : a[j] != 1.0f + (float)(j % 5)) ok = 0;
  }
  CHECK(ok);
  CHECK(agt_attack_drop(a, u, d, 1.5, NULL) == AGT_EINVAL);
  free(u); free(a); free(b);
}

int main(void) {
  test_minmax();
  test_fang_trim();
  test_drop_threads();
  return check_summary();
}
