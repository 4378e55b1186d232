/* gar_iter.c — the average, and the CPU's moving point for the iterative rules (geometric
 * median, centered clipping) whose iteration control is shared with the GPU in gar_host.c.
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
#include "gar.h"
#include "gar_host.h"
#include "mem.h"
#include "pool.h"
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ITER_GRAIN 8192
#define ITER_BLOCK 256

/* The rows summed in order in float, divided by n: the same arithmetic as every other
 * average of rows here, and a plain read of G (the speed floor the rules are compared to). */
agt_status agt_gar_average(const float *G, size_t n, size_t d, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "average: null pointer");
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "average needs n >= 1, got n=0");
  return agt_gar__rows_mean_f32(G, n, d, out);
}

typedef struct {
  const float *G;
  size_t n, d;
  const float *a; /* row weights; 0: row skipped. NULL: distance pass only */
  int centered;   /* 0: z' = sum a_i x_i; 1: z' = z + sum a_i (x_i - z);
                     2: z' = alpha z + sum a_i x_i (z not read when alpha is 0) */
  float alpha;
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
    /* n strided rows: prefetch the next block of each (the hardware prefetcher stops at
     * page boundaries) */
    if (b0 + 2 * ITER_BLOCK <= c1)
      for (size_t i = 0; i < n; i++)
        for (size_t q = 0; q < ITER_BLOCK; q += 16)
          __builtin_prefetch(c->G + i * d + b0 + ITER_BLOCK + q, 0, 3);
    if (c->a) {
      memcpy(zo, z, len * sizeof(float));
      if (c->centered == 2 && c->alpha != 0.0f)
        for (size_t j = 0; j < len; j++) acc[j] = c->alpha * zo[j];
      else
        for (size_t j = 0; j < len; j++) acc[j] = 0.0f;
      for (size_t i = 0; i < n; i++) {
        float ai = c->a[i];
        if (ai == 0.0f) continue;
        const float *x = c->G + i * d + b0;
        if (c->centered == 1)
          for (size_t j = 0; j < len; j++) acc[j] += ai * (x[j] - zo[j]);
        else
          for (size_t j = 0; j < len; j++) acc[j] += ai * x[j];
      }
      if (c->centered == 1)
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
static agt_status wpass2(const float *G, size_t n, size_t d, const float *a, int centered,
                         float alpha, float *z, double *dist2, double *delta2, double *zold2) {
  size_t nch = agt_chunk_count(d, ITER_GRAIN);
  size_t bytes = (nch ? nch : 1) * (n + 2) * sizeof(double);
  double *part = agt_alloc(bytes);
  if (!part) return AGT_FAIL(AGT_ENOMEM, "no memory for %zu bytes", bytes);
  wpass_ctx c = {G, n, d, a, centered, alpha, z, part};
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

static agt_status wpass(const float *G, size_t n, size_t d, const float *a, int centered,
                        float *z, double *dist2, double *delta2, double *zold2) {
  return wpass2(G, n, d, a, centered, 0.0f, z, dist2, delta2, zold2);
}

/* ---- iterating in the span of the rows -------------------------------------------------
 * Both rules move a point z that stays a combination of the n rows and one extra vector
 * y (the start: the coordinate median, or the previous output): z = sum_j c_j y_j with
 * y_j = x_j (j < n), y_n = y. With the Gram matrix K of (x_1..x_n, y), computed in one pass,
 * |x_i - z|^2 = K_ii - 2 (K c)_i + c'Kc, so every iteration costs O(n^2) and no pass over
 * G; one last pass writes z. Like the Gram form of the distances, this cancels when a row
 * is close to z: if some |x_i - z|^2 < TAU_SPAN (K_ii + c'Kc) the point is written out and
 * the iterations go on with the direct passes. Rows of non-finite K_ii weigh 0. */
#define TAU_SPAN 0.25

typedef struct {
  size_t n, m;      /* m = n + 1 */
  double *K;        /* m × m */
  double *c, *Kc;   /* m */
  int *valid;       /* n */
} span_t;

static void span_free(span_t *sp) {
  free(sp->K), free(sp->c), free(sp->Kc), free(sp->valid);
}

/* Builds K; returns 1 when usable (AVX2 Gram available and y finite), 0 otherwise. */
static int span_init(span_t *sp, const float *G, size_t n, size_t d, const float *y, agt_status *st) {
  memset(sp, 0, sizeof *sp);
  *st = AGT_OK;
  if (!agt_gar_simd() || n > 255) return 0;
  size_t m = n + 1;
  sp->n = n, sp->m = m;
  sp->K = malloc(m * m * sizeof(double));
  sp->c = calloc(m, sizeof(double));
  sp->Kc = malloc(m * sizeof(double));
  sp->valid = malloc(n * sizeof(int));
  const float *rows[256];
  if (!sp->K || !sp->c || !sp->Kc || !sp->valid) {
    *st = AGT_FAIL(AGT_ENOMEM, "no memory for the Gram matrix (n=%zu)", n);
    return 0;
  }
  for (size_t i = 0; i < n; i++) rows[i] = G + i * d;
  rows[n] = y;
  *st = agt_gar__gram_rows(rows, m, d, sp->K);
  if (*st != AGT_OK) return 0;
  if (!isfinite(sp->K[n * m + n])) return 0;
  for (size_t i = 0; i < n; i++) sp->valid[i] = isfinite(sp->K[i * m + i]) && isfinite(sp->K[i * m + n]);
  sp->c[n] = 1.0;
  return 1;
}

/* Sets c to cn; dist2 of every row to the new point; |c_new - c_old|_K^2 in *delta2 and
 * c_old'Kc_old in *zold2. Returns 0 when the distances would lose digits. */
static int span_move(span_t *sp, const double *cn, double *dist2, double *delta2, double *zold2) {
  size_t n = sp->n, m = sp->m;
  const double *K = sp->K;
  double old = 0.0, dd = 0.0;
  for (size_t i = 0; i < m; i++) {
    if (i < n && !sp->valid[i]) continue;
    double ko = 0.0, kd = 0.0;
    for (size_t j = 0; j < m; j++) {
      if (j < n && !sp->valid[j]) continue;
      ko += K[i * m + j] * sp->c[j];
      kd += K[i * m + j] * (cn[j] - sp->c[j]);
    }
    old += sp->c[i] * ko;
    dd += (cn[i] - sp->c[i]) * kd;
  }
  memcpy(sp->c, cn, m * sizeof(double));
  double cKc = 0.0;
  for (size_t i = 0; i < m; i++) {
    sp->Kc[i] = 0.0;
    if (i < n && !sp->valid[i]) continue;
    for (size_t j = 0; j < m; j++)
      if (j >= n || sp->valid[j]) sp->Kc[i] += K[i * m + j] * cn[j];
    cKc += cn[i] * sp->Kc[i];
  }
  int ok = 1;
  for (size_t i = 0; i < n; i++) {
    if (!sp->valid[i]) {
      dist2[i] = INFINITY;
      continue;
    }
    double v = K[i * m + i] - 2.0 * sp->Kc[i] + cKc;
    if (v < TAU_SPAN * (K[i * m + i] + cKc)) ok = 0;
    dist2[i] = v > 0.0 ? v : 0.0;
  }
  if (delta2) *delta2 = dd > 0.0 ? dd : 0.0;
  if (zold2) *zold2 = old;
  return ok;
}

/* Writes z = c_n z + sum_j c_j x_j (z holds y on entry) and the rows' distances to it. */
static agt_status span_write(span_t *sp, const float *G, size_t d, float *z, float *a,
                             double *dist2) {
  for (size_t j = 0; j < sp->n; j++) a[j] = sp->valid[j] ? (float)sp->c[j] : 0.0f;
  return wpass2(G, sp->n, d, a, 2, (float)sp->c[sp->n], z, dist2, NULL, NULL);
}

/* ---- the moving point of the iterative rules (the CPU's pass; gar_host.c iterates) --------
 * z moves in the span of the rows while the Gram form keeps its digits (span_*), and by direct
 * passes over G otherwise (wpass); `moved`: the span holds a point not yet written into z. */
typedef struct {
  const float *G;
  size_t n, d;
  float *z;
  span_t sp;
  int use_span, moved;
  double *cn; /* n + 1 span coefficients */
  float *a;   /* n row weights of a direct pass */
  double *d2; /* n distances of the last write, not read */
} cpu_point;

agt_status agt_gar__point_start(const float *G, size_t n, size_t d, int median, int moves, float *z,
                                double *dist2, void **out) {
  cpu_point *p = calloc(1, sizeof *p);
  *out = p;
  if (!p) return AGT_FAIL(AGT_ENOMEM, "no memory for the iterate (n=%zu)", n);
  p->G = G, p->n = n, p->d = d, p->z = z;
  p->a = malloc(n * sizeof(float));
  p->d2 = malloc(n * sizeof(double));
  if (!p->a || !p->d2) return AGT_FAIL(AGT_ENOMEM, "no memory for the iterate (n=%zu)", n);
  agt_status s = AGT_OK;
  if (median) s = agt_gar__median_dist(G, n, d, z, dist2); /* start: the coordinate median */
  if (s != AGT_OK || !moves) return s;
  p->use_span = span_init(&p->sp, G, n, d, z, &s);
  p->cn = calloc(n + 1, sizeof(double));
  if (!p->cn && s == AGT_OK) s = AGT_FAIL(AGT_ENOMEM, "no memory for the iterate (n=%zu)", n);
  if (!p->cn) p->use_span = 0;
  if (s != AGT_OK || median) return s;
  /* a given start: the distances to it, in the span (c = e_n) when it keeps its digits */
  if (p->use_span) {
    memcpy(p->cn, p->sp.c, (n + 1) * sizeof(double));
    if (!span_move(&p->sp, p->cn, dist2, NULL, NULL)) p->use_span = 0;
  }
  if (!p->use_span) s = wpass(G, n, d, NULL, 0, z, dist2, NULL, NULL);
  return s;
}

agt_status agt_gar__point_move(void *pt, const double *w, int centered, double *dist2, double *dz2,
                               double *z2) {
  cpu_point *p = pt;
  const size_t n = p->n;
  double A = 0.0;
  for (size_t i = 0; i < n; i++) {
    A += w[i];
    p->a[i] = (float)w[i];
  }
  if (!p->use_span) return wpass(p->G, n, p->d, p->a, centered, p->z, dist2, dz2, z2);
  /* z' = sum w_i x_i, or z + sum w_i (x_i - z) = (1 - A) z + sum w_i x_i, in coefficients */
  for (size_t j = 0; j <= n; j++) {
    double add = j < n ? w[j] : 0.0;
    p->cn[j] = centered ? (1.0 - A) * p->sp.c[j] + add : add;
  }
  p->moved = 1;
  if (span_move(&p->sp, p->cn, dist2, dz2, z2)) return AGT_OK;
  /* the distances would lose digits: write the point out and go on with direct passes */
  p->use_span = 0;
  p->moved = 0;
  return span_write(&p->sp, p->G, p->d, p->z, p->a, dist2);
}

agt_status agt_gar__point_end(void *pt, int write) {
  cpu_point *p = pt;
  if (!p) return AGT_OK;
  agt_status s = AGT_OK;
  if (write && p->use_span && p->moved) s = span_write(&p->sp, p->G, p->d, p->z, p->a, p->d2);
  free(p->cn);
  free(p->a);
  free(p->d2);
  span_free(&p->sp);
  free(p);
  return s;
}

agt_status agt_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                    size_t max_iter, double tol, float *out,
                                    int64_t *iterations) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "geometric-median: null pointer");
  return agt_gar_host_geometric_median(&agt_gar__cpu_passes, G, n, d, nu, max_iter, tol, out,
                                       iterations);
}

agt_status agt_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                     size_t iters, float *v) {
  if (!G || !v) return AGT_FAIL(AGT_EINVAL, "centered-clipping: null pointer");
  return agt_gar_host_centered_clipping(&agt_gar__cpu_passes, G, n, d, tau, iters, v);
}
