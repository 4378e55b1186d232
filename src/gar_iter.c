/* gar_iter.c — the average and the iterative rules: geometric median
 * (smoothed Weiszfeld) and centered clipping.
 *
 * Both rules alternate "distances from each row to the current point z" and
 * "new z from weights of the rows". The new z on a coordinate depends only on
 * that coordinate and on scalar weights known beforehand, so one pass over G
 * computes the new z on a block of columns and, while the block is in cache,
 * each row's squared distance to it: one read of G per iteration. Partial
 * sums are kept per fixed column chunk and reduced in chunk order (bit-
 * identical for any thread count). A row whose distance is not finite gets
 * weight 0 and is skipped (never multiplied), so a NaN or inf row cannot
 * poison the result. */
#pragma GCC optimize("O3")
#include "gar.h"
#include "mem.h"
#include "pool.h"
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ITER_GRAIN 8192
#define ITER_BLOCK 256

agt_status agt_gar_average(const float *G, size_t n, size_t d, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "average: null pointer");
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "average needs n >= 1, got n=0");
  agt_rows_mean(G, n, d, out);
  return agt_interrupted() ? AGT_FAIL(AGT_EINTR, "average: interrupted") : AGT_OK;
}

typedef struct {
  const float *G;
  size_t n, d;
  const float *a; /* row weights; 0: row skipped. NULL: distance pass only */
  int centered;   /* 0: z' = sum a_i x_i; 1: z' = z + sum a_i (x_i - z) */
  float *z;       /* in/out */
  double *part;   /* [chunks][n + 2]: row distances^2 to z', |z' - z|^2, |z|^2 */
} wpass_ctx;

__attribute__((target_clones("arch=haswell", "default"))) static void wpass_chunk(void *v,
                                                                                  size_t c0,
                                                                                  size_t c1,
                                                                                  size_t chunk) {
  const wpass_ctx *c = v;
  const size_t n = c->n, d = c->d;
  double *p = c->part + chunk * (n + 2);
  for (size_t i = 0; i < n + 2; i++) p[i] = 0.0;
  if (agt_interrupted()) return;
  float acc[ITER_BLOCK], zo[ITER_BLOCK];
  for (size_t b0 = c0; b0 < c1; b0 += ITER_BLOCK) {
    size_t len = c1 - b0 < ITER_BLOCK ? c1 - b0 : ITER_BLOCK;
    float *z = c->z + b0;
    if (c->a) {
      memcpy(zo, z, len * sizeof(float));
      for (size_t j = 0; j < len; j++) acc[j] = 0.0f;
      for (size_t i = 0; i < n; i++) {
        float ai = c->a[i];
        if (ai == 0.0f) continue;
        const float *x = c->G + i * d + b0;
        if (c->centered)
          for (size_t j = 0; j < len; j++) acc[j] += ai * (x[j] - zo[j]);
        else
          for (size_t j = 0; j < len; j++) acc[j] += ai * x[j];
      }
      if (c->centered)
        for (size_t j = 0; j < len; j++) z[j] = zo[j] + acc[j];
      else
        memcpy(z, acc, len * sizeof(float));
      p[n] += agt_gar__sqdiff(z, zo, len);
      p[n + 1] += agt_gar__sqdiff(zo, NULL, len);
    }
    for (size_t i = 0; i < n; i++) p[i] += agt_gar__sqdiff(c->G + i * d + b0, z, len);
  }
}

/* One pass: optionally the new z, then dist2[i] = |x_i - z|^2 (+inf when not
 * finite), delta2 = |z_new - z_old|^2, zold2 = |z_old|^2. */
static agt_status wpass(const float *G, size_t n, size_t d, const float *a, int centered,
                        float *z, double *dist2, double *delta2, double *zold2) {
  size_t nch = agt_chunk_count(d, ITER_GRAIN);
  size_t bytes = (nch ? nch : 1) * (n + 2) * sizeof(double);
  double *part = agt_alloc(bytes);
  if (!part) return AGT_FAIL(AGT_ENOMEM, "no memory for %zu bytes", bytes);
  wpass_ctx c = {G, n, d, a, centered, z, part};
  agt_status s = agt_parallel_for(d, ITER_GRAIN, wpass_chunk, &c);
  double dz = 0.0, zz = 0.0;
  for (size_t i = 0; i < n; i++) dist2[i] = 0.0;
  for (size_t k = 0; k < nch; k++) {
    const double *p = part + k * (n + 2);
    for (size_t i = 0; i < n; i++) dist2[i] += p[i];
    dz += p[n];
    zz += p[n + 1];
  }
  for (size_t i = 0; i < n; i++)
    if (!isfinite(dist2[i])) dist2[i] = INFINITY;
  if (delta2) *delta2 = dz;
  if (zold2) *zold2 = zz;
  agt_free(part, bytes);
  return s;
}

agt_status agt_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                    size_t max_iter, double tol, float *out,
                                    int64_t *iterations) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "geometric-median: null pointer");
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "geometric-median needs n >= 1, got n=0");
  if (!(nu > 0.0) || !(tol >= 0.0))
    return AGT_FAIL(AGT_EINVAL, "geometric-median needs nu > 0 and tol >= 0, got nu=%g tol=%g", nu, tol);
  double *dist2 = malloc(n * sizeof(double)), *w = malloc(n * sizeof(double));
  float *a = malloc(n * sizeof(float));
  agt_status s = AGT_OK;
  size_t it = 0;
  if (!dist2 || !w || !a) s = AGT_FAIL(AGT_ENOMEM, "geometric-median: no memory");
  if (s == AGT_OK) s = agt_gar_median(G, n, d, out);
  if (s == AGT_OK) s = wpass(G, n, d, NULL, 0, out, dist2, NULL, NULL);
  while (s == AGT_OK && it < max_iter) {
    double W = 0.0;
    for (size_t i = 0; i < n; i++) {
      double r = sqrt(dist2[i]);
      w[i] = isfinite(r) ? 1.0 / (r > nu ? r : nu) : 0.0;
      W += w[i];
    }
    if (!(W > 0.0)) break; /* no finite row: stay at the start */
    for (size_t i = 0; i < n; i++) a[i] = (float)(w[i] / W);
    double dz, zz;
    s = wpass(G, n, d, a, 0, out, dist2, &dz, &zz);
    it++;
    if (s == AGT_OK && sqrt(dz) <= tol * sqrt(zz)) break;
  }
  if (iterations) *iterations = (int64_t)it;
  free(dist2);
  free(w);
  free(a);
  return s;
}

agt_status agt_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                     size_t iters, float *v) {
  if (!G || !v) return AGT_FAIL(AGT_EINVAL, "centered-clipping: null pointer");
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "centered-clipping needs n >= 1, got n=0");
  if (!(tau > 0.0)) return AGT_FAIL(AGT_EINVAL, "centered-clipping needs tau > 0, got tau=%g", tau);
  double *dist2 = malloc(n * sizeof(double));
  float *a = malloc(n * sizeof(float));
  agt_status s = AGT_OK;
  if (!dist2 || !a) s = AGT_FAIL(AGT_ENOMEM, "centered-clipping: no memory");
  if (s == AGT_OK && iters > 0) s = wpass(G, n, d, NULL, 0, v, dist2, NULL, NULL);
  for (size_t l = 0; s == AGT_OK && l < iters; l++) {
    for (size_t i = 0; i < n; i++) {
      double r = sqrt(dist2[i]);
      double ci = !isfinite(r) ? 0.0 : (r <= tau ? 1.0 : tau / r);
      a[i] = (float)(ci / (double)n);
    }
    s = wpass(G, n, d, a, 1, v, dist2, NULL, NULL);
  }
  free(dist2);
  free(a);
  return s;
}
