/* gar_coord.c — per-coordinate rules: median, trimmed mean, meamed, phocas,
 * average-nan, and Bulyan's last stage.
 *
 * Each coordinate's n values are read as keys (NaN, ±inf -> +inf) and sorted
 * by a Batcher odd-even merge network (n <= 64) applied to whole vectors of
 * adjacent coordinates: element i of the network is row i's slice of 16
 * columns, loaded straight from G, so no transpose and no copy of G is needed
 * and every comparator is one min and one max per 8 columns. Past 64 rows a
 * column is gathered and sorted with qsort. The AVX2 kernel and the portable
 * one perform the same float operations in the same order, so they give
 * bit-identical results (test_gar checks it); so does any thread count, since
 * coordinates are independent.
 *
 * After sorting (v[0] <= ... <= v[n-1]):
 *   median        n odd: v[n/2]; n even: (v[n/2-1] + v[n/2]) * 0.5
 *   trimmed mean  (v[f] + ... + v[n-f-1]) / (n-2f), summed in that order
 *   closest(m, b) the b values nearest to m, ties to the smaller value; they
 *                 form a window v[s..s+b) with s = #{t < n-b : dl(t) > dr(t)},
 *                 dl = m - v[t], dr = v[t+b] - m (0 when equal to m, so an
 *                 infinite centre keeps infinite values closest); summed in
 *                 order, divided by b. meamed: m = median; phocas: m = the
 *                 f-trimmed mean. */
#pragma GCC optimize("O3")
#include "gar.h"
#include "pool.h"
#include "mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define GAR_HAVE_X86 1
#endif

enum { M_MEDIAN, M_TRIMMED, M_MEAMED, M_PHOCAS };

#define NET_MAX_N 64
#define NET_MAX_PAIRS 1024
#define COORD_GRAIN 4096 /* columns per chunk: fixed, so chunking never depends on threads */

static int g_simd = 1;
void agt_gar_set_simd(int on) { g_simd = on ? 1 : 0; }
int agt_gar_simd(void) {
#if GAR_HAVE_X86
  return g_simd && __builtin_cpu_supports("avx2");
#else
  return 0;
#endif
}

/* Batcher's odd-even merge sort for any n (comparators past n dropped, as if
 * padded with +inf). pairs[2k], pairs[2k+1]: compare-exchange, low index first. */
static size_t make_network(size_t n, uint8_t *pairs) {
  size_t np = 0;
  for (size_t p = 1; p < n; p <<= 1)
    for (size_t k = p; k >= 1; k >>= 1) {
      for (size_t j = k % p; j + k < n; j += 2 * k)
        for (size_t i = 0; i < k && i + j + k < n; i++)
          if ((i + j) / (p * 2) == (i + j + k) / (p * 2)) {
            pairs[2 * np] = (uint8_t)(i + j);
            pairs[2 * np + 1] = (uint8_t)(i + j + k);
            np++;
          }
      if (k == 1) break;
    }
  return np;
}

typedef struct {
  const float *const *rows; /* n row pointers */
  size_t n, d, f, beta;
  int mode;
  float *out;
  const uint8_t *net;
  size_t nnet;
  int simd;
} coord_ctx;

static inline float key1(float x) { return (x - x == 0.0f) ? x : INFINITY; }

/* The rule on one sorted column v[0..n). */
static float finish1(const float *v, size_t n, int mode, size_t f, size_t beta) {
  size_t h = n / 2;
  float med = (n & 1) ? v[h] : (v[h - 1] + v[h]) * 0.5f;
  if (mode == M_MEDIAN) return med;
  float m;
  if (mode == M_MEAMED) {
    m = med;
  } else {
    float s = 0.0f;
    for (size_t i = f; i < n - f; i++) s += v[i];
    m = s / (float)(n - 2 * f);
    if (mode == M_TRIMMED) return m;
  }
  size_t start = 0;
  for (size_t t = 0; t + beta < n; t++) {
    float dl = (v[t] == m) ? 0.0f : m - v[t];
    float dr = (v[t + beta] == m) ? 0.0f : v[t + beta] - m;
    if (dl - dr > 0.0f) start++;
  }
  float s = 0.0f;
  for (size_t i = start; i < start + beta; i++) s += v[i];
  return s / (float)beta;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Portable path: one column at a time. */
static void coord_cols_scalar(const coord_ctx *c, size_t c0, size_t c1, float *buf) {
  const size_t n = c->n;
  for (size_t col = c0; col < c1; col++) {
    for (size_t i = 0; i < n; i++) buf[i] = key1(c->rows[i][col]);
    if (n <= NET_MAX_N) {
      for (size_t k = 0; k < c->nnet; k++) {
        size_t a = c->net[2 * k], b = c->net[2 * k + 1];
        float x = buf[a], y = buf[b];
        buf[a] = x < y ? x : y;
        buf[b] = x < y ? y : x;
      }
    } else {
      qsort(buf, n, sizeof(float), cmp_float);
    }
    c->out[col] = finish1(buf, n, c->mode, c->f, c->beta);
  }
}

#if GAR_HAVE_X86
/* AVX2 path: 16 columns (two vectors) per network pass; same operations as finish1.
 * min/max of two non-NaN keys equals the scalar x<y?x:y. */
__attribute__((target("avx2"))) static void coord_cols_avx2(const coord_ctx *c, size_t c0,
                                                              size_t c1) {
  const size_t n = c->n, f = c->f, beta = c->beta;
  const int mode = c->mode;
  __m256 v[NET_MAX_N][2];
  const __m256 inf = _mm256_set1_ps(INFINITY), zero = _mm256_setzero_ps();
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  size_t col = c0;
  for (; col + 16 <= c1; col += 16) {
    for (size_t i = 0; i < n; i++)
      for (int h = 0; h < 2; h++) {
        __m256 x = _mm256_loadu_ps(c->rows[i] + col + 8 * h);
        __m256 ok = _mm256_cmp_ps(_mm256_sub_ps(x, x), zero, _CMP_EQ_OQ);
        v[i][h] = _mm256_blendv_ps(inf, x, ok);
      }
    for (size_t k = 0; k < c->nnet; k++) {
      size_t a = c->net[2 * k], b = c->net[2 * k + 1];
      for (int h = 0; h < 2; h++) {
        __m256 x = v[a][h], y = v[b][h];
        v[a][h] = _mm256_min_ps(x, y);
        v[b][h] = _mm256_max_ps(x, y);
      }
    }
    for (int h = 0; h < 2; h++) {
      size_t hn = n / 2;
      __m256 med = (n & 1) ? v[hn][h] : _mm256_mul_ps(_mm256_add_ps(v[hn - 1][h], v[hn][h]), half);
      __m256 res;
      if (mode == M_MEDIAN) {
        res = med;
      } else {
        __m256 m;
        if (mode == M_MEAMED) {
          m = med;
        } else {
          __m256 s = zero;
          for (size_t i = f; i < n - f; i++) s = _mm256_add_ps(s, v[i][h]);
          m = _mm256_div_ps(s, _mm256_set1_ps((float)(n - 2 * f)));
        }
        if (mode == M_TRIMMED) {
          res = m;
        } else {
          __m256 start = zero;
          for (size_t t = 0; t + beta < n; t++) {
            __m256 a = v[t][h], b = v[t + beta][h];
            __m256 dl = _mm256_andnot_ps(_mm256_cmp_ps(a, m, _CMP_EQ_OQ), _mm256_sub_ps(m, a));
            __m256 dr = _mm256_andnot_ps(_mm256_cmp_ps(b, m, _CMP_EQ_OQ), _mm256_sub_ps(b, m));
            __m256 gt = _mm256_cmp_ps(_mm256_sub_ps(dl, dr), zero, _CMP_GT_OQ);
            start = _mm256_add_ps(start, _mm256_and_ps(gt, one));
          }
          /* Sum the window in order: out-of-window terms add +0, which leaves
           * the running sum (started at +0) unchanged. */
          __m256 endw = _mm256_add_ps(start, _mm256_set1_ps((float)beta));
          __m256 s = zero;
          for (size_t i = 0; i < n; i++) {
            __m256 fi = _mm256_set1_ps((float)i);
            __m256 in = _mm256_and_ps(_mm256_cmp_ps(fi, start, _CMP_GE_OQ),
                                      _mm256_cmp_ps(fi, endw, _CMP_LT_OQ));
            s = _mm256_add_ps(s, _mm256_and_ps(in, v[i][h]));
          }
          res = _mm256_div_ps(s, _mm256_set1_ps((float)beta));
        }
      }
      _mm256_storeu_ps(c->out + col + 8 * h, res);
    }
  }
  if (col < c1) {
    float buf[NET_MAX_N];
    coord_cols_scalar(c, col, c1, buf);
  }
}
#endif

static void coord_chunk(void *vctx, size_t c0, size_t c1, size_t chunk) {
  (void)chunk;
  const coord_ctx *c = vctx;
  if (agt_interrupted()) return;
#if GAR_HAVE_X86
  if (c->simd && c->n <= NET_MAX_N) {
    coord_cols_avx2(c, c0, c1);
    return;
  }
#endif
  if (c->n <= NET_MAX_N) {
    float buf[NET_MAX_N];
    coord_cols_scalar(c, c0, c1, buf);
  } else {
    float *buf = malloc(c->n * sizeof(float));
    if (!buf) return; /* caller saw the size; cannot happen for sane n */
    coord_cols_scalar(c, c0, c1, buf);
    free(buf);
  }
}

/* Runs a per-coordinate rule over the m rows given by pointers. */
static agt_status coord_run(const float *const *rows, size_t m, size_t d, int mode, size_t f,
                            size_t beta, float *out) {
  uint8_t net[2 * NET_MAX_PAIRS];
  coord_ctx c = {rows, m, d, f, beta, mode, out, net, 0, agt_gar_simd()};
  if (m <= NET_MAX_N) c.nnet = make_network(m, net);
  return agt_parallel_for(d, COORD_GRAIN, coord_chunk, &c);
}

/* Row pointers for all n rows, on the stack for small n. */
#define ROWPTRS_STACK 256
static const float **rowptrs(const float *G, size_t n, size_t d, const float **stack) {
  const float **p = n <= ROWPTRS_STACK ? stack : malloc(n * sizeof(*p));
  if (!p) return NULL;
  for (size_t i = 0; i < n; i++) p[i] = G + i * d;
  return p;
}

static agt_status coord_all(const char *name, const float *G, size_t n, size_t d, int mode,
                            size_t f, size_t beta, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "%s: null pointer", name);
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "%s needs n >= 1, got n=0", name);
  const float *stack[ROWPTRS_STACK] = {0};
  const float **p = rowptrs(G, n, d, stack);
  if (!p) return AGT_FAIL(AGT_ENOMEM, "%s: no memory for %zu row pointers", name, n);
  agt_status s = coord_run(p, n, d, mode, f, beta, out);
  if (p != stack) free(p);
  return s;
}

agt_status agt_gar_median(const float *G, size_t n, size_t d, float *out) {
  return coord_all("median", G, n, d, M_MEDIAN, 0, 0, out);
}

agt_status agt_gar_trimmed_mean(const float *G, size_t n, size_t d, size_t f, float *out) {
  if (2 * f >= n) return AGT_FAIL(AGT_EINVAL, "trimmed-mean needs n > 2f, got n=%zu f=%zu", n, f);
  return coord_all("trimmed-mean", G, n, d, M_TRIMMED, f, 0, out);
}

agt_status agt_gar_meamed(const float *G, size_t n, size_t d, size_t beta, float *out) {
  if (beta < 1 || beta > n)
    return AGT_FAIL(AGT_EINVAL, "meamed needs 1 <= beta <= n, got n=%zu beta=%zu", n, beta);
  return coord_all("meamed", G, n, d, M_MEAMED, 0, beta, out);
}

agt_status agt_gar_phocas(const float *G, size_t n, size_t d, size_t f, float *out) {
  if (2 * f >= n) return AGT_FAIL(AGT_EINVAL, "phocas needs n > 2f, got n=%zu f=%zu", n, f);
  return coord_all("phocas", G, n, d, M_PHOCAS, f, n - f, out);
}

agt_status agt_gar_rows_meamed(const float *G, size_t d, const int64_t *rows, size_t m,
                               size_t beta, float *out) {
  if (!G || !rows || !out) return AGT_FAIL(AGT_EINVAL, "rows_meamed: null pointer");
  if (m == 0 || beta < 1 || beta > m)
    return AGT_FAIL(AGT_EINVAL, "rows_meamed needs 1 <= beta <= m, got m=%zu beta=%zu", m, beta);
  const float *stack[ROWPTRS_STACK] = {0};
  const float **p = m <= ROWPTRS_STACK ? stack : malloc(m * sizeof(*p));
  if (!p) return AGT_FAIL(AGT_ENOMEM, "rows_meamed: no memory");
  for (size_t i = 0; i < m; i++) p[i] = G + (size_t)rows[i] * d;
  agt_status s = coord_run(p, m, d, M_MEAMED, 0, beta, out);
  if (p != stack) free(p);
  return s;
}

/* ---- average-nan: per coordinate mean of the finite values, 0 where none. */
typedef struct {
  const float *G;
  size_t n, d;
  float *out;
} avg_ctx;

#define AVG_BLOCK 512
__attribute__((target_clones("avx2", "default"))) static void average_nan_chunk(void *vctx,
                                                                                size_t c0,
                                                                                size_t c1,
                                                                                size_t chunk) {
  (void)chunk;
  const avg_ctx *c = vctx;
  if (agt_interrupted()) return;
  float acc[AVG_BLOCK], cnt[AVG_BLOCK];
  for (size_t b0 = c0; b0 < c1; b0 += AVG_BLOCK) {
    size_t len = c1 - b0 < AVG_BLOCK ? c1 - b0 : AVG_BLOCK;
    for (size_t j = 0; j < len; j++) acc[j] = 0.0f, cnt[j] = 0.0f;
    for (size_t i = 0; i < c->n; i++) {
      const float *x = c->G + i * c->d + b0;
      for (size_t j = 0; j < len; j++) {
        float ok = (x[j] - x[j] == 0.0f) ? 1.0f : 0.0f;
        acc[j] += ok != 0.0f ? x[j] : 0.0f;
        cnt[j] += ok;
      }
    }
    for (size_t j = 0; j < len; j++) c->out[b0 + j] = cnt[j] > 0.0f ? acc[j] / cnt[j] : 0.0f;
  }
}

agt_status agt_gar_average_nan(const float *G, size_t n, size_t d, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "average-nan: null pointer");
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "average-nan needs n >= 1, got n=0");
  avg_ctx c = {G, n, d, out};
  return agt_parallel_for(d, COORD_GRAIN, average_nan_chunk, &c);
}
