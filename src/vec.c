/* vec.c — raw vector and row-major matrix kernels (see vec.h).
 *
 * Element-wise loops are plain so the compiler vectorises them; long ones are split over the
 * pool. Reductions sum fixed-size chunks in double and combine the chunk results in order,
 * so the result is the same for any thread count. */
#include "vec.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "mem.h"
#include "pool.h"

#define VEC_GRAIN ((size_t)1 << 16)     /* elements per chunk */
#define VEC_PAR_MIN ((size_t)1 << 18)   /* below this, stay on the calling thread */

/* ---- element-wise -------------------------------------------------------------------- */

typedef struct {
  int op;
  float *out;
  const float *a, *b;
  float s;
} ew_ctx;

enum { EW_FILL, EW_COPY, EW_SCALE, EW_AXPY, EW_ADD, EW_SUB, EW_MUL, EW_DIV };

static void ew_range(void *vctx, size_t b0, size_t e, size_t chunk) {
  (void)chunk;
  ew_ctx *c = vctx;
  float *o = c->out;
  const float *a = c->a, *b = c->b;
  float s = c->s;
  switch (c->op) {
    case EW_FILL: for (size_t i = b0; i < e; i++) o[i] = s; break;
    case EW_COPY: memmove(o + b0, a + b0, (e - b0) * sizeof(float)); break;
    case EW_SCALE: for (size_t i = b0; i < e; i++) o[i] *= s; break;
    case EW_AXPY: for (size_t i = b0; i < e; i++) o[i] += s * a[i]; break;
    case EW_ADD: for (size_t i = b0; i < e; i++) o[i] = a[i] + b[i]; break;
    case EW_SUB: for (size_t i = b0; i < e; i++) o[i] = a[i] - b[i]; break;
    case EW_MUL: for (size_t i = b0; i < e; i++) o[i] = a[i] * b[i]; break;
    case EW_DIV: for (size_t i = b0; i < e; i++) o[i] = a[i] / b[i]; break;
  }
}

static void ew(int op, float *out, const float *a, const float *b, float s, size_t n) {
  ew_ctx c = {op, out, a, b, s};
  if (n < VEC_PAR_MIN) ew_range(&c, 0, n, 0);
  else if (agt_parallel_for(n, VEC_GRAIN, ew_range, &c) != AGT_OK) ew_range(&c, 0, n, 0);
}

void agt_vec_fill(float *x, size_t n, float v) { ew(EW_FILL, x, NULL, NULL, v, n); }
void agt_vec_copy(float *dst, const float *src, size_t n) {
  if (dst != src) ew(EW_COPY, dst, src, NULL, 0, n);
}
void agt_vec_scale(float *x, size_t n, float a) { ew(EW_SCALE, x, NULL, NULL, a, n); }
void agt_vec_axpy(float *y, const float *x, size_t n, float a) { ew(EW_AXPY, y, x, NULL, a, n); }
void agt_vec_add(float *o, const float *a, const float *b, size_t n) { ew(EW_ADD, o, a, b, 0, n); }
void agt_vec_sub(float *o, const float *a, const float *b, size_t n) { ew(EW_SUB, o, a, b, 0, n); }
void agt_vec_mul(float *o, const float *a, const float *b, size_t n) { ew(EW_MUL, o, a, b, 0, n); }
void agt_vec_div(float *o, const float *a, const float *b, size_t n) { ew(EW_DIV, o, a, b, 0, n); }

/* ---- reductions ---------------------------------------------------------------------- */

enum { RD_SUM, RD_DOT, RD_SQ, RD_ABS, RD_MAXABS, RD_SQDIST, RD_MAX, RD_MIN, RD_NONFINITE };

typedef struct {
  int op;
  const float *x, *y;
  double *part;
} rd_ctx;

static double rd_chunk(int op, const float *x, const float *y, size_t b, size_t e) {
  double acc = 0;
  switch (op) {
    case RD_SUM: for (size_t i = b; i < e; i++) acc += x[i]; break;
    case RD_DOT: for (size_t i = b; i < e; i++) acc += (double)x[i] * y[i]; break;
    case RD_SQ: for (size_t i = b; i < e; i++) acc += (double)x[i] * x[i]; break;
    case RD_ABS: for (size_t i = b; i < e; i++) acc += fabs((double)x[i]); break;
    case RD_MAXABS:
      for (size_t i = b; i < e; i++) {
        double v = fabs((double)x[i]);
        if (v > acc || isnan(v)) acc = v;
        if (isnan(acc)) break;
      }
      break;
    case RD_SQDIST:
      for (size_t i = b; i < e; i++) {
        double t = (double)x[i] - y[i];
        acc += t * t;
      }
      break;
    case RD_MAX:
      acc = -INFINITY;
      for (size_t i = b; i < e; i++) {
        if (isnan(x[i])) return NAN;
        if (x[i] > acc) acc = x[i];
      }
      break;
    case RD_MIN:
      acc = INFINITY;
      for (size_t i = b; i < e; i++) {
        if (isnan(x[i])) return NAN;
        if (x[i] < acc) acc = x[i];
      }
      break;
    case RD_NONFINITE: for (size_t i = b; i < e; i++) acc += !isfinite(x[i]); break;
  }
  return acc;
}

static void rd_range(void *vctx, size_t b, size_t e, size_t chunk) {
  rd_ctx *c = vctx;
  c->part[chunk] = rd_chunk(c->op, c->x, c->y, b, e);
}

static double combine(int op, double a, double b) {
  switch (op) {
    case RD_MAXABS: return (isnan(a) || isnan(b)) ? NAN : (a > b ? a : b);
    case RD_MAX: return (isnan(a) || isnan(b)) ? NAN : (a > b ? a : b);
    case RD_MIN: return (isnan(a) || isnan(b)) ? NAN : (a < b ? a : b);
    default: return a + b;
  }
}

static double reduce(int op, const float *x, const float *y, size_t n) {
  size_t nchunks = agt_chunk_count(n, VEC_GRAIN);
  double init = op == RD_MAX ? -INFINITY : op == RD_MIN ? INFINITY : 0;
  if (nchunks <= 1) return n ? rd_chunk(op, x, y, 0, n) : init;
  double stack_part[64];
  double *part = nchunks <= 64 ? stack_part : agt_alloc(nchunks * sizeof(double));
  rd_ctx c = {op, x, y, part};
  if (!part || n < VEC_PAR_MIN || agt_parallel_for(n, VEC_GRAIN, rd_range, &c) != AGT_OK) {
    /* serial fallback, same chunking so the same result */
    double acc = init;
    for (size_t k = 0; k < nchunks; k++) {
      size_t b = k * VEC_GRAIN, e = b + VEC_GRAIN < n ? b + VEC_GRAIN : n;
      acc = combine(op, acc, rd_chunk(op, x, y, b, e));
    }
    if (part != stack_part) agt_free(part, nchunks * sizeof(double));
    return acc;
  }
  double acc = init;
  for (size_t k = 0; k < nchunks; k++) acc = combine(op, acc, part[k]);
  if (part != stack_part) agt_free(part, nchunks * sizeof(double));
  return acc;
}

double agt_vec_sum(const float *x, size_t n) { return reduce(RD_SUM, x, NULL, n); }
double agt_vec_dot(const float *x, const float *y, size_t n) { return reduce(RD_DOT, x, y, n); }
double agt_vec_norm2(const float *x, size_t n) { return sqrt(reduce(RD_SQ, x, NULL, n)); }
double agt_vec_norm1(const float *x, size_t n) { return reduce(RD_ABS, x, NULL, n); }
double agt_vec_norminf(const float *x, size_t n) { return reduce(RD_MAXABS, x, NULL, n); }
double agt_vec_sqdist(const float *x, const float *y, size_t n) { return reduce(RD_SQDIST, x, y, n); }
double agt_vec_max(const float *x, size_t n) { return reduce(RD_MAX, x, NULL, n); }
double agt_vec_min(const float *x, size_t n) { return reduce(RD_MIN, x, NULL, n); }
size_t agt_vec_count_nonfinite(const float *x, size_t n) {
  return (size_t)reduce(RD_NONFINITE, x, NULL, n);
}

int agt_vec_allclose(const float *a, const float *b, size_t n, double rtol, double atol) {
  for (size_t i = 0; i < n; i++) {
    double x = a[i], y = b[i];
    if (isnan(x) || isnan(y)) {
      if (isnan(x) && isnan(y)) continue;
      return 0;
    }
    if (isinf(x) || isinf(y)) {
      if (x == y) continue;
      return 0;
    }
    if (fabs(x - y) > atol + rtol * fabs(y)) return 0;
  }
  return 1;
}

/* ---- rows of a matrix ---------------------------------------------------------------- */

#define COL_TILE 1024

typedef struct {
  const float *G, *mean;
  size_t n, d;
  int ddof;
  float *out;
} rows_ctx;

static void rows_mean_range(void *vctx, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  rows_ctx *c = vctx;
  double acc[COL_TILE];
  size_t w = e - b;
  memset(acc, 0, w * sizeof(double));
  for (size_t i = 0; i < c->n; i++) {
    const float *row = c->G + i * c->d + b;
    for (size_t j = 0; j < w; j++) acc[j] += row[j];
  }
  for (size_t j = 0; j < w; j++) c->out[b + j] = (float)(acc[j] / (double)c->n);
}

static void rows_std_range(void *vctx, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  rows_ctx *c = vctx;
  double acc[COL_TILE];
  size_t w = e - b;
  memset(acc, 0, w * sizeof(double));
  for (size_t i = 0; i < c->n; i++) {
    const float *row = c->G + i * c->d + b;
    for (size_t j = 0; j < w; j++) {
      double t = (double)row[j] - c->mean[b + j];
      acc[j] += t * t;
    }
  }
  double den = (double)c->n - c->ddof;
  for (size_t j = 0; j < w; j++) c->out[b + j] = (float)sqrt(acc[j] / den);
}

void agt_rows_mean(const float *G, size_t n, size_t d, float *out) {
  rows_ctx c = {G, NULL, n, d, 0, out};
  if (agt_parallel_for(d, COL_TILE, rows_mean_range, &c) != AGT_OK)
    for (size_t b = 0; b < d; b += COL_TILE) rows_mean_range(&c, b, b + COL_TILE < d ? b + COL_TILE : d, 0);
}

void agt_rows_std(const float *G, size_t n, size_t d, const float *mean, int ddof, float *out) {
  rows_ctx c = {G, mean, n, d, ddof, out};
  if (agt_parallel_for(d, COL_TILE, rows_std_range, &c) != AGT_OK)
    for (size_t b = 0; b < d; b += COL_TILE) rows_std_range(&c, b, b + COL_TILE < d ? b + COL_TILE : d, 0);
}

void agt_rows_norm2(const float *G, size_t n, size_t d, double *out) {
  for (size_t i = 0; i < n; i++) out[i] = agt_vec_norm2(G + i * d, d);
}

void agt_rows_sqdist(const float *G, size_t n, size_t d, const float *v, double *out) {
  for (size_t i = 0; i < n; i++) out[i] = agt_vec_sqdist(G + i * d, v, d);
}

agt_status agt_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *A,
                    size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
      ldc > INT32_MAX)
    return AGT_FAIL(AGT_EINVAL, "gemm dimensions too large for BLAS: m=%zu n=%zu k=%zu", m, n, k);
  if (m == 0 || n == 0) return AGT_OK;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (int)m, (int)n, (int)k, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
  return AGT_OK;
}
