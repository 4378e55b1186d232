/* attack.c — per-coordinate kernels of the Byzantine attacks (see attack.h).
 * Column ranges are split with agt_parallel_for; every output element is written by exactly
 * one chunk, and the drop count is summed over chunks in chunk order. */
#include "attack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

enum { ATTACK_GRAIN = 16384 };

typedef struct {
  const float *G;
  size_t n, d;
  float *lo, *hi;
} minmax_ctx;

static void minmax_range(void *vctx, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  minmax_ctx *c = vctx;
  for (size_t j = b; j < e; j++) { c->lo[j] = NAN; c->hi[j] = NAN; }
  for (size_t i = 0; i < c->n; i++) {
    const float *row = c->G + i * c->d;
    for (size_t j = b; j < e; j++) {
      float v = row[j];
      if (v != v) continue;
      if (!(c->lo[j] <= v)) c->lo[j] = v;   /* also replaces the initial NaN */
      if (!(c->hi[j] >= v)) c->hi[j] = v;
    }
  }
}

agt_status agt_attack_minmax(const float *G, size_t n, size_t d, float *lo, float *hi) {
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "attack minmax needs n >= 1 rows, got n=0");
  if (!G || !lo || !hi) return AGT_FAIL(AGT_EINVAL, "attack minmax: NULL buffer");
  minmax_ctx c = {G, n, d, lo, hi};
  agt_status s = agt_parallel_for(d, ATTACK_GRAIN, minmax_range, &c);
  return s == AGT_EINTR ? AGT_FAIL(AGT_EINTR, "attack minmax interrupted") : s;
}

typedef struct {
  float *x;
  const float *mu, *lo, *hi;
  double b;
} trim_ctx;

static void trim_range(void *vctx, size_t b0, size_t e, size_t chunk) {
  (void)chunk;
  trim_ctx *c = vctx;
  const double b = c->b;
  for (size_t j = b0; j < e; j++) {
    double m = c->mu[j], u = c->x[j], a, z;
    if (m > 0) {
      double mn = c->lo[j];
      if (mn > 0) { a = mn / b; z = mn; } else { a = b * mn; z = mn; }
    } else if (m < 0) {
      double mx = c->hi[j];
      if (mx > 0) { a = mx; z = b * mx; } else { a = mx; z = mx / b; }
    } else {
      c->x[j] = (float)m;
      continue;
    }
    c->x[j] = (float)(a + u * (z - a));
  }
}

agt_status agt_attack_fang_trim(float *x, const float *mu, const float *lo, const float *hi,
                                size_t d, double b) {
  if (!(b > 1)) return AGT_FAIL(AGT_EINVAL, "fang trim attack needs b > 1, got b=%g", b);
  if (!x || !mu || !lo || !hi) return AGT_FAIL(AGT_EINVAL, "fang trim attack: NULL buffer");
  trim_ctx c = {x, mu, lo, hi, b};
  agt_status s = agt_parallel_for(d, ATTACK_GRAIN, trim_range, &c);
  return s == AGT_EINTR ? AGT_FAIL(AGT_EINTR, "fang trim attack interrupted") : s;
}

typedef struct {
  float *x;
  const float *u;
  double p;
  size_t *counts;   /* one per chunk */
} drop_ctx;

static void drop_range(void *vctx, size_t b, size_t e, size_t chunk) {
  drop_ctx *c = vctx;
  size_t k = 0;
  for (size_t j = b; j < e; j++) {
    if (c->u[j] < c->p) { c->x[j] = 0.0f; k++; }
  }
  c->counts[chunk] = k;
}

agt_status agt_attack_drop(float *x, const float *u, size_t d, double p, size_t *dropped) {
  if (!(p >= 0 && p <= 1)) return AGT_FAIL(AGT_EINVAL, "drop attack needs 0 <= p <= 1, got p=%g", p);
  if ((!x || !u) && d > 0) return AGT_FAIL(AGT_EINVAL, "drop attack: NULL buffer");
  size_t chunks = agt_chunk_count(d, ATTACK_GRAIN);
  size_t *counts = calloc(chunks ? chunks : 1, sizeof *counts);
  if (!counts) return AGT_FAIL(AGT_ENOMEM, "drop attack: no memory for %zu counters", chunks);
  drop_ctx c = {x, u, p, counts};
  agt_status s = agt_parallel_for(d, ATTACK_GRAIN, drop_range, &c);
  size_t total = 0;
  for (size_t i = 0; i < chunks; i++) total += counts[i];
  free(counts);
  if (s != AGT_OK) return s == AGT_EINTR ? AGT_FAIL(AGT_EINTR, "drop attack interrupted") : s;
  if (dropped) *dropped = total;
  return AGT_OK;
}
