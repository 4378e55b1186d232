/* gar_dist.c — pairwise distances and the rules built on them: Krum,
 * Multi-Krum, Bulyan, MDA, CGE, and the pre-aggregation steps NNM,
 * bucketing, clipping and ARC.
 *
 * Distances. D[i][j] = |x_i|^2 + |x_j|^2 - 2 x_i.x_j, the Gram matrix coming
 * from float GEMMs over fixed column chunks (GRAM_CHUNK columns each), summed
 * in double in chunk order: one read of G, deterministic for any thread count.
 * The form cancels badly when two rows are close, so every pair whose value
 * is below TAU_CLOSE (|x_i|^2 + |x_j|^2) is recomputed exactly as the sum of
 * (x_i - x_j)^2 in one more pass over G (taken only when such pairs exist).
 * The relative error of a kept GEMM value is then at most 1/TAU_CLOSE times
 * that of a chunk's float dot product. Non-finite results are +inf; values
 * are clamped at 0; the diagonal is 0.
 *
 * Ties: scores and norms are ordered by value, then by the lower row index.
 * Averages of rows sum the rows in ascending index order (bucketing: in the
 * permutation's order) in float and divide by the count. */
#include "gar.h"
#include "mem.h"
#include "pool.h"
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAM_CHUNK_MIN 32768
#define EXACT_CHUNK 8192
#define AVGROWS_GRAIN 4096
#define AVG_BLOCK 512
#define TRIE_KMAX 64        /* lists up to this long share their common prefixes' sums */
#define TAU_CLOSE 0.25
#define PREFETCH_AHEAD 1024 /* floats */

/* ---- small helpers -------------------------------------------------------- */

__attribute__((target_clones("arch=haswell", "default"))) double agt_gar__sqdiff(const float *a,
                                                                                  const float *b,
                                                                                  size_t len) {
  double total = 0.0;
  for (size_t b0 = 0; b0 < len; b0 += 1024) {
    size_t m = len - b0 < 1024 ? len - b0 : 1024;
    float acc[16] = {0};
    size_t j = 0;
    if (b) {
      for (; j + 16 <= m; j += 16)
        for (int l = 0; l < 16; l++) {
          float t = a[b0 + j + l] - b[b0 + j + l];
          acc[l] += t * t;
        }
      for (; j < m; j++) {
        float t = a[b0 + j] - b[b0 + j];
        acc[j & 15] += t * t;
      }
    } else {
      for (; j + 16 <= m; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[b0 + j + l] * a[b0 + j + l];
      for (; j < m; j++) acc[j & 15] += a[b0 + j] * a[b0 + j];
    }
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    total += s;
  }
  return total;
}

typedef struct {
  const float *G;
  size_t n, d;
  double *part; /* [chunks][n] */
} sqnorm_ctx;

static void sqnorm_chunk(void *v, size_t c0, size_t c1, size_t chunk) {
  sqnorm_ctx *c = v;
  if (agt_interrupted()) return;
  for (size_t i = 0; i < c->n; i++)
    c->part[chunk * c->n + i] = agt_gar__sqdiff(c->G + i * c->d + c0, NULL, c1 - c0);
}

agt_status agt_gar__rows_sqnorm(const float *G, size_t n, size_t d, double *sq) {
  size_t nch = agt_chunk_count(d, EXACT_CHUNK);
  size_t bytes = (nch ? nch : 1) * n * sizeof(double);
  double *part = agt_alloc(bytes);
  if (!part) return AGT_FAIL(AGT_ENOMEM, "row norms: no memory for %zu bytes", bytes);
  sqnorm_ctx c = {G, n, d, part};
  agt_status s = agt_parallel_for(d, EXACT_CHUNK, sqnorm_chunk, &c);
  for (size_t i = 0; i < n; i++) {
    double t = 0.0;
    for (size_t k = 0; k < nch; k++) t += part[k * n + i];
    sq[i] = isfinite(t) ? t : INFINITY;
  }
  agt_free(part, bytes);
  return s;
}

void agt_gar__argsort(const double *key, size_t m, int64_t *idx) {
  for (size_t i = 0; i < m; i++) idx[i] = (int64_t)i;
  /* insertion sort: stable, and m is small (rows, not coordinates) */
  for (size_t i = 1; i < m; i++) {
    int64_t t = idx[i];
    size_t j = i;
    while (j > 0 && key[idx[j - 1]] > key[t]) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = t;
  }
}

/* ---- pairwise squared distances ------------------------------------------ */

typedef struct {
  const float *G;             /* contiguous rows (BLAS path), or NULL */
  const float *const *rows;   /* the n row pointers (AVX2 path) */
  size_t n, d;
  double *part; /* [chunks][n][n], upper triangle (i <= j) meaningful */
  float *fpart; /* BLAS path scratch: [chunks][n][n] */
  int failed;
} gram_ctx;

#if defined(__x86_64__)
#include <immintrin.h>
#define GRAM_TILE 256
static const float gram_zeros[GRAM_TILE] __attribute__((aligned(64)));

/* x_i . x_j over columns [c0, c1) for i <= j, in blocks of 4 rows × 3 rows
 * (12 accumulators + 4 operands = the 16 ymm registers), tile by tile so the
 * n rows of a tile stay in L1. Lanes hold float partial sums over the chunk;
 * they are added in double at the end, lane by lane, in order. */
__attribute__((target("avx2,fma"))) static int gram_chunk_avx2(const float *const *rows,
                                                                size_t n, size_t c0, size_t c1,
                                                                double *out) {
  size_t nbi = (n + 3) / 4, nbj = (n + 2) / 3;
  size_t nacc = nbi * nbj * 12;
  __m256 *acc = aligned_alloc(32, nacc * sizeof(__m256));
  if (!acc) return -1;
  for (size_t q = 0; q < nacc; q++) acc[q] = _mm256_setzero_ps();
  size_t vend = c0 + ((c1 - c0) & ~(size_t)7);
  for (size_t t0 = c0; t0 < vend; t0 += GRAM_TILE) {
    size_t len = vend - t0 < GRAM_TILE ? vend - t0 : GRAM_TILE;
    /* The hardware prefetcher does not follow n short strided streams across pages:
     * fetch the next tile of every row while this one is being multiplied. */
    if (t0 + 2 * GRAM_TILE <= vend)
      for (size_t i = 0; i < n; i++)
        for (size_t q = 0; q < GRAM_TILE; q += 16)
          _mm_prefetch((const char *)(rows[i] + t0 + GRAM_TILE + q), _MM_HINT_T0);
    for (size_t bi = 0; bi < nbi; bi++)
      for (size_t bj = 0; bj < nbj; bj++) {
        if (4 * bi > 3 * bj + 2) continue; /* block entirely below the diagonal */
        const float *a[4], *b[3];
        for (int u = 0; u < 4; u++) a[u] = 4 * bi + u < n ? rows[4 * bi + u] + t0 : gram_zeros;
        for (int u = 0; u < 3; u++) b[u] = 3 * bj + u < n ? rows[3 * bj + u] + t0 : gram_zeros;
        __m256 *ac = acc + (bi * nbj + bj) * 12;
        __m256 c00 = ac[0], c01 = ac[1], c02 = ac[2], c10 = ac[3], c11 = ac[4], c12 = ac[5];
        __m256 c20 = ac[6], c21 = ac[7], c22 = ac[8], c30 = ac[9], c31 = ac[10], c32 = ac[11];
        for (size_t k = 0; k < len; k += 8) {
          __m256 B0 = _mm256_loadu_ps(b[0] + k), B1 = _mm256_loadu_ps(b[1] + k);
          __m256 B2 = _mm256_loadu_ps(b[2] + k);
          __m256 A = _mm256_loadu_ps(a[0] + k);
          c00 = _mm256_fmadd_ps(A, B0, c00), c01 = _mm256_fmadd_ps(A, B1, c01), c02 = _mm256_fmadd_ps(A, B2, c02);
          A = _mm256_loadu_ps(a[1] + k);
          c10 = _mm256_fmadd_ps(A, B0, c10), c11 = _mm256_fmadd_ps(A, B1, c11), c12 = _mm256_fmadd_ps(A, B2, c12);
          A = _mm256_loadu_ps(a[2] + k);
          c20 = _mm256_fmadd_ps(A, B0, c20), c21 = _mm256_fmadd_ps(A, B1, c21), c22 = _mm256_fmadd_ps(A, B2, c22);
          A = _mm256_loadu_ps(a[3] + k);
          c30 = _mm256_fmadd_ps(A, B0, c30), c31 = _mm256_fmadd_ps(A, B1, c31), c32 = _mm256_fmadd_ps(A, B2, c32);
        }
        ac[0] = c00, ac[1] = c01, ac[2] = c02, ac[3] = c10, ac[4] = c11, ac[5] = c12;
        ac[6] = c20, ac[7] = c21, ac[8] = c22, ac[9] = c30, ac[10] = c31, ac[11] = c32;
      }
  }
  for (size_t bi = 0; bi < nbi; bi++)
    for (size_t bj = 0; bj < nbj; bj++)
      for (int u = 0; u < 4; u++)
        for (int v = 0; v < 3; v++) {
          size_t i = 4 * bi + u, j = 3 * bj + v;
          if (i >= n || j >= n || i > j) continue;
          float lanes[8];
          _mm256_storeu_ps(lanes, acc[(bi * nbj + bj) * 12 + u * 3 + v]);
          double t = 0.0;
          for (int l = 0; l < 8; l++) t += lanes[l];
          for (size_t k = vend; k < c1; k++) t += (double)(rows[i][k] * rows[j][k]);
          out[i * n + j] = t;
        }
  free(acc);
  return 0;
}
#endif

static void gram_chunk(void *v, size_t c0, size_t c1, size_t chunk) {
  gram_ctx *c = v;
  if (agt_interrupted()) return;
  size_t n = c->n;
  double *out = c->part + chunk * n * n;
#if defined(__x86_64__)
  if (!c->fpart) {
    if (gram_chunk_avx2(c->rows, n, c0, c1, out) != 0)
      __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
    return;
  }
#endif
  float *fp = c->fpart + chunk * n * n;
  if (agt_gemm(0, 1, n, n, c1 - c0, 1.0f, c->G + c0, c->d, c->G + c0, c->d, 0.0f, fp, n) != AGT_OK)
    __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
  for (size_t q = 0; q < n * n; q++) out[q] = fp[q];
}

typedef struct {
  const float *G;
  size_t d, npairs;
  const int32_t *pairs; /* [npairs][2] */
  double *part;         /* [chunks][npairs] */
} exact_ctx;

static void exact_chunk(void *v, size_t c0, size_t c1, size_t chunk) {
  exact_ctx *c = v;
  if (agt_interrupted()) return;
  for (size_t p = 0; p < c->npairs; p++) {
    const float *a = c->G + (size_t)c->pairs[2 * p] * c->d + c0;
    const float *b = c->G + (size_t)c->pairs[2 * p + 1] * c->d + c0;
    c->part[chunk * c->npairs + p] = agt_gar__sqdiff(a, b, c1 - c0);
  }
}

static size_t gram_grain(size_t d) {
  size_t g = ((d + 255) / 256 + 7) & ~(size_t)7; /* at most ~256 chunks, 8-aligned */
  return g < GRAM_CHUNK_MIN ? GRAM_CHUNK_MIN : g;
}

/* Gram matrix of n rows given by pointers, into Gm[n*n] (upper triangle, i <= j), summed
 * over fixed chunks in chunk order. G non-NULL: the rows are G's, contiguous (needed by the
 * BLAS path, taken when the AVX2 kernel is not). */
static agt_status gram(const float *G, const float *const *rows, size_t n, size_t d, double *Gm) {
  int simd = agt_gar_simd();
  if (!simd && !G) return AGT_FAIL(AGT_ENOTSUP, "Gram of scattered rows needs AVX2");
  size_t grain = gram_grain(d), nch = agt_chunk_count(d, grain);
  size_t pbytes = (nch ? nch : 1) * n * n * sizeof(double);
  size_t fbytes = simd ? 0 : (nch ? nch : 1) * n * n * sizeof(float);
  double *part = agt_alloc(pbytes);
  float *fpart = fbytes ? agt_alloc(fbytes) : NULL;
  if (!part || (fbytes && !fpart)) {
    agt_free(part, pbytes);
    agt_free(fpart, fbytes);
    return AGT_FAIL(AGT_ENOMEM, "Gram matrix: no memory for %zu bytes", pbytes + fbytes);
  }
  gram_ctx gc = {G, rows, n, d, part, fpart, 0};
  agt_status s = agt_parallel_for(d, grain, gram_chunk, &gc);
  agt_free(fpart, fbytes);
  if (s == AGT_OK && gc.failed) s = AGT_FAIL(AGT_ENOMEM, "Gram matrix: kernel failed");
  if (s == AGT_OK)
    for (size_t i = 0; i < n; i++)
      for (size_t j = i; j < n; j++) {
        double t = 0.0;
        for (size_t k = 0; k < nch; k++) t += part[k * n * n + i * n + j];
        Gm[i * n + j] = t;
      }
  agt_free(part, pbytes);
  return s;
}

agt_status agt_gar__gram_rows(const float *const *rows, size_t n, size_t d, double *Gm) {
  AGT_TRY(gram(NULL, rows, n, d, Gm));
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < i; j++) Gm[i * n + j] = Gm[j * n + i];
  return AGT_OK;
}

agt_status agt_gar_sqdist(const float *G, size_t n, size_t d, double *D) {
  if (!G || !D) return AGT_FAIL(AGT_EINVAL, "sqdist: null pointer");
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "sqdist needs n >= 1, got n=0");
  const float *stack[256] = {0}, **rows = n <= 256 ? stack : malloc(n * sizeof(*rows));
  if (!rows) return AGT_FAIL(AGT_ENOMEM, "sqdist: no memory");
  for (size_t i = 0; i < n; i++) rows[i] = G + i * d;
  agt_status s = gram(G, rows, n, d, D);
  if (rows != stack) free(rows);
  AGT_TRY(s);
  /* Gram in D's upper triangle; distances go to the lower one, then are mirrored. */
  size_t npairs = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) {
      double gi = D[i * n + i], gj = D[j * n + j], v = gi + gj - 2.0 * D[i * n + j];
      if (!isfinite(v)) v = INFINITY;
      else if (v < TAU_CLOSE * (gi + gj)) npairs++, v = NAN; /* to recompute */
      else if (v < 0.0) v = 0.0;
      D[j * n + i] = v; /* lower triangle holds the result for now */
    }
  if (npairs) {
    size_t prb = npairs * 2 * sizeof(int32_t), nch2 = agt_chunk_count(d, EXACT_CHUNK);
    size_t xb = (nch2 ? nch2 : 1) * npairs * sizeof(double);
    int32_t *pairs = agt_alloc(prb);
    double *xp = agt_alloc(xb);
    if (!pairs || !xp) {
      agt_free(pairs, prb);
      agt_free(xp, xb);
      return AGT_FAIL(AGT_ENOMEM, "sqdist: no memory for %zu close pairs", npairs);
    }
    size_t p = 0;
    for (size_t i = 0; i < n; i++)
      for (size_t j = i + 1; j < n; j++)
        if (isnan(D[j * n + i])) pairs[2 * p] = (int32_t)i, pairs[2 * p + 1] = (int32_t)j, p++;
    exact_ctx ec = {G, d, npairs, pairs, xp};
    s = agt_parallel_for(d, EXACT_CHUNK, exact_chunk, &ec);
    for (p = 0; p < npairs; p++) {
      double t = 0.0;
      for (size_t k = 0; k < nch2; k++) t += xp[k * npairs + p];
      size_t i = (size_t)pairs[2 * p], j = (size_t)pairs[2 * p + 1];
      D[j * n + i] = isfinite(t) ? t : INFINITY;
    }
    agt_free(pairs, prb);
    agt_free(xp, xb);
    if (s != AGT_OK) return s;
  }
  for (size_t i = 0; i < n; i++) {
    D[i * n + i] = 0.0;
    for (size_t j = i + 1; j < n; j++) D[i * n + j] = D[j * n + i];
  }
  return AGT_OK;
}

/* ---- Krum scores ------------------------------------------------------------ */

static void sort_doubles(double *a, size_t m) {
  for (size_t i = 1; i < m; i++) {
    double t = a[i];
    size_t j = i;
    while (j > 0 && a[j - 1] > t) a[j] = a[j - 1], j--;
    a[j] = t;
  }
}

agt_status agt_gar_krum_scores(const double *D, size_t n, const int64_t *rows, size_t m,
                               size_t k, double *scores) {
  if (!D || !scores) return AGT_FAIL(AGT_EINVAL, "krum_scores: null pointer");
  if (!rows && m != n) return AGT_FAIL(AGT_EINVAL, "krum_scores: m=%zu must be n=%zu", m, n);
  if (m == 0 || k > m - 1)
    return AGT_FAIL(AGT_EINVAL, "krum_scores needs k <= m-1, got m=%zu k=%zu", m, k);
  double *tmp = malloc((m ? m : 1) * sizeof(double));
  if (!tmp) return AGT_FAIL(AGT_ENOMEM, "krum_scores: no memory");
  for (size_t r = 0; r < m; r++) {
    size_t i = rows ? (size_t)rows[r] : r, t = 0;
    for (size_t s = 0; s < m; s++) {
      if (s == r) continue;
      size_t j = rows ? (size_t)rows[s] : s;
      tmp[t++] = D[i * n + j];
    }
    sort_doubles(tmp, t);
    double sc = 0.0;
    for (size_t q = 0; q < k; q++) sc += tmp[q];
    scores[r] = sc;
  }
  free(tmp);
  return AGT_OK;
}

/* ---- averages of lists of rows --------------------------------------------- */

typedef struct {
  const float *G;
  size_t d, nout;
  const int64_t *rows;  /* concatenated lists */
  const size_t *offs;   /* list k = rows[offs[k] .. offs[k+1]) */
  float *out;           /* nout × d */
  const int64_t *urows; /* the distinct rows, to prefetch once per block */
  size_t nurows;
  /* Shared prefixes (NULL: none). The lists in lexicographic order, lex[q]; reuse[q], the
   * length of the prefix lex[q] shares with lex[q-1]; keep[q * (TRIE_KMAX + 1) + m] set where
   * a later list starts from the sum of lex[q]'s first m rows. */
  const size_t *lex, *reuse;
  const uint8_t *keep;
} avgrows_ctx;

/* The same sums as the portable loop below (each list's rows added in order,
 * from +0, then divided by the count), 64 columns at a time in registers. */
#if defined(__x86_64__)
__attribute__((target("avx2"))) static size_t avgrows_avx2(const avgrows_ctx *c, size_t c0,
                                                           size_t c1) {
  size_t col = c0;
  float stk[(TRIE_KMAX + 1) * 64] __attribute__((aligned(32)));
  for (; col + 64 <= c1; col += 64) {
    /* 25-odd rows read 256 bytes at a time defeat the hardware prefetcher, which does
     * not follow a stream across pages: fetch ahead explicitly, once per row. */
    if (col + 64 + PREFETCH_AHEAD <= c1)
      for (size_t u = 0; u < c->nurows; u++) {
        const float *x = c->G + (size_t)c->urows[u] * c->d + col + PREFETCH_AHEAD;
        for (int q = 0; q < 4; q++) _mm_prefetch((const char *)(x + 16 * q), _MM_HINT_T0);
      }
    for (size_t j = 0; j < c->nout; j++) {
      /* In lexicographic order, a list continues from the sum of the prefix it shares with
       * the one before (kept on a small stack): the same adds in the same order as its own
       * sum from +0, done once for all the lists that share them. */
      size_t k = c->lex ? c->lex[j] : j, m0 = c->lex ? c->reuse[j] : 0;
      const uint8_t *keep = c->lex ? c->keep + j * (TRIE_KMAX + 1) : NULL;
      __m256 s[8];
      if (m0)
        for (int q = 0; q < 8; q++) s[q] = _mm256_load_ps(stk + m0 * 64 + 8 * q);
      else
        for (int q = 0; q < 8; q++) s[q] = _mm256_setzero_ps();
      for (size_t m = m0, b = c->offs[k], len = c->offs[k + 1] - b; m < len; m++) {
        const float *x = c->G + (size_t)c->rows[b + m] * c->d + col;
        for (int q = 0; q < 8; q++) s[q] = _mm256_add_ps(s[q], _mm256_loadu_ps(x + 8 * q));
        if (keep && keep[m + 1])
          for (int q = 0; q < 8; q++) _mm256_store_ps(stk + (m + 1) * 64 + 8 * q, s[q]);
      }
      __m256 cnt = _mm256_set1_ps((float)(c->offs[k + 1] - c->offs[k]));
      float *o = c->out + k * c->d + col;
      /* Outputs are written once and not read back here: stream them past the cache
       * (saves the read-for-ownership, a third of nnm's memory traffic). */
      if (((uintptr_t)o & 31) == 0)
        for (int q = 0; q < 8; q++) _mm256_stream_ps(o + 8 * q, _mm256_div_ps(s[q], cnt));
      else
        for (int q = 0; q < 8; q++) _mm256_storeu_ps(o + 8 * q, _mm256_div_ps(s[q], cnt));
    }
  }
  _mm_sfence();
  return col;
}
#endif

static void avgrows_chunk(void *v, size_t c0, size_t c1, size_t chunk) {
  (void)chunk;
  const avgrows_ctx *c = v;
  if (agt_interrupted()) return;
#if defined(__x86_64__)
  if (agt_gar_simd()) c0 = avgrows_avx2(c, c0, c1);
#endif
  float acc[AVG_BLOCK];
  for (size_t b0 = c0; b0 < c1; b0 += AVG_BLOCK) {
    size_t len = c1 - b0 < AVG_BLOCK ? c1 - b0 : AVG_BLOCK;
    for (size_t k = 0; k < c->nout; k++) {
      for (size_t j = 0; j < len; j++) acc[j] = 0.0f;
      for (size_t r = c->offs[k]; r < c->offs[k + 1]; r++) {
        const float *x = c->G + (size_t)c->rows[r] * c->d + b0;
        for (size_t j = 0; j < len; j++) acc[j] += x[j];
      }
      float cnt = (float)(c->offs[k + 1] - c->offs[k]);
      float *o = c->out + k * c->d + b0;
      for (size_t j = 0; j < len; j++) o[j] = acc[j] / cnt;
    }
  }
}

/* Orders the lists lexicographically and finds, for each, the prefix it shares with the one
 * before it and which prefix sums must be kept for later lists (see avgrows_ctx). Returns 0
 * (nothing allocated) when no list shares a prefix, a list is longer than TRIE_KMAX, or
 * memory is short: the lists are then summed one by one, with the same result. */
typedef struct {
  const int64_t *rows;
  const size_t *offs;
} lists_ref;

static int cmp_lists(const void *a, const void *b, void *ref) {
  const lists_ref *L = ref;
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  size_t lx = L->offs[x + 1] - L->offs[x], ly = L->offs[y + 1] - L->offs[y];
  for (size_t m = 0; m < lx && m < ly; m++) {
    int64_t u = L->rows[L->offs[x] + m], v = L->rows[L->offs[y] + m];
    if (u != v) return u < v ? -1 : 1;
  }
  if (lx != ly) return lx < ly ? -1 : 1;
  return x < y ? -1 : (x > y);
}

static int lists_share_prefixes(const int64_t *rows, const size_t *offs, size_t nout,
                                size_t **lex_out, size_t **reuse_out, uint8_t **keep_out) {
  for (size_t k = 0; k < nout; k++)
    if (offs[k + 1] - offs[k] > TRIE_KMAX) return 0;
  size_t *lex = malloc(nout * sizeof(size_t)), *reuse = malloc(nout * sizeof(size_t));
  uint8_t *keep = calloc(nout * (TRIE_KMAX + 1), 1);
  if (!lex || !reuse || !keep) {
    free(lex); free(reuse); free(keep);
    return 0;
  }
  for (size_t k = 0; k < nout; k++) lex[k] = k;
  lists_ref ref = { rows, offs };
  qsort_r(lex, nout, sizeof(size_t), cmp_lists, &ref);
  size_t shared = 0;
  reuse[0] = 0;
  for (size_t q = 1; q < nout; q++) {
    size_t a = lex[q - 1], b = lex[q], m = 0;
    size_t la = offs[a + 1] - offs[a], lb = offs[b + 1] - offs[b];
    while (m < la && m < lb && rows[offs[a] + m] == rows[offs[b] + m]) m++;
    reuse[q] = m;
    shared += m;
    if (m == 0) continue;
    /* the sum of the first m rows was last made by the latest earlier list that started
     * below level m (every list since started at or above it, so none overwrote it) */
    size_t w = q - 1;
    while (w > 0 && reuse[w] >= m) w--;
    keep[w * (TRIE_KMAX + 1) + m] = 1;
  }
  if (!shared) {
    free(lex); free(reuse); free(keep);
    return 0;
  }
  *lex_out = lex;
  *reuse_out = reuse;
  *keep_out = keep;
  return 1;
}

static agt_status avg_lists(const float *G, size_t d, const int64_t *rows, const size_t *offs,
                            size_t nout, float *out) {
  size_t total = offs[nout], nu = 0;
  int64_t *urows = malloc((total ? total : 1) * sizeof(int64_t));
  if (!urows) return AGT_FAIL(AGT_ENOMEM, "average of rows: no memory");
  for (size_t r = 0; r < total; r++) {
    size_t u = 0;
    while (u < nu && urows[u] != rows[r]) u++;
    if (u == nu) urows[nu++] = rows[r];
    if (nu > 256) break; /* prefetching is a hint: the first rows suffice */
  }
  avgrows_ctx c = {G, d, nout, rows, offs, out, urows, nu, NULL, NULL, NULL};
  size_t *lex = NULL, *reuse = NULL;
  uint8_t *keep = NULL;
  if (nout > 1 && lists_share_prefixes(rows, offs, nout, &lex, &reuse, &keep)) {
    c.lex = lex;
    c.reuse = reuse;
    c.keep = keep;
  }
  agt_status s = agt_parallel_for(d, AVGROWS_GRAIN, avgrows_chunk, &c);
  free(urows);
  free(lex);
  free(reuse);
  free(keep);
  return s;
}

agt_status agt_gar__rows_mean_f32(const float *G, size_t n, size_t d, float *out) {
  int64_t stack[256] = {0}, *rows = n <= 256 ? stack : malloc(n * sizeof(int64_t));
  if (!rows) return AGT_FAIL(AGT_ENOMEM, "average: no memory");
  for (size_t i = 0; i < n; i++) rows[i] = (int64_t)i;
  size_t offs[2] = {0, n};
  agt_status s = avg_lists(G, d, rows, offs, 1, out);
  if (rows != stack) free(rows);
  return s;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Average of m rows in ascending index order (rows is not modified). */
static agt_status avg_sorted(const float *G, size_t d, const int64_t *rows, size_t m, float *out) {
  int64_t *r = malloc(m * sizeof(int64_t));
  if (!r) return AGT_FAIL(AGT_ENOMEM, "average of rows: no memory");
  memcpy(r, rows, m * sizeof(int64_t));
  qsort(r, m, sizeof(int64_t), cmp_i64);
  size_t offs[2] = {0, m};
  agt_status s = avg_lists(G, d, r, offs, 1, out);
  free(r);
  return s;
}

agt_status agt_gar_rows_average(const float *G, size_t n, size_t d, const int64_t *rows,
                                size_t m, float *out) {
  if (!G || !rows || !out) return AGT_FAIL(AGT_EINVAL, "rows_average: null pointer");
  if (m == 0) return AGT_FAIL(AGT_EINVAL, "rows_average needs m >= 1, got m=0");
  for (size_t i = 0; i < m; i++)
    if (rows[i] < 0 || (size_t)rows[i] >= n)
      return AGT_FAIL(AGT_EINVAL, "rows_average: row %lld out of 0..%zu", (long long)rows[i], n - 1);
  size_t offs[2] = {0, m};
  return avg_lists(G, d, rows, offs, 1, out);
}

/* ---- Multi-Krum, Krum ------------------------------------------------------- */

static double *alloc_D(size_t n, size_t *bytes) {
  *bytes = n * n * sizeof(double);
  return agt_alloc(*bytes);
}

agt_status agt_gar_multi_krum(const float *G, size_t n, size_t d, size_t f, size_t m,
                              float *out, int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "multi-krum: null pointer");
  if (n < f + 3) return AGT_FAIL(AGT_EINVAL, "multi-krum needs n >= f+3, got n=%zu f=%zu", n, f);
  if (m < 1 || m > n) return AGT_FAIL(AGT_EINVAL, "multi-krum needs 1 <= m <= n, got m=%zu n=%zu", m, n);
  size_t db;
  double *D = alloc_D(n, &db);
  double *sc = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!D || !sc || !idx) s = AGT_FAIL(AGT_ENOMEM, "multi-krum: no memory (n=%zu)", n);
  if (s == AGT_OK) s = agt_gar_sqdist(G, n, d, D);
  if (s == AGT_OK) s = agt_gar_krum_scores(D, n, NULL, n, n - f - 2, sc);
  if (s == AGT_OK) {
    agt_gar__argsort(sc, n, idx);
    if (selected) memcpy(selected, idx, m * sizeof(int64_t));
    s = avg_sorted(G, d, idx, m, out);
  }
  agt_free(D, db);
  free(sc);
  free(idx);
  return s;
}

/* ---- Bulyan ------------------------------------------------------------------ */

agt_status agt_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                          int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "bulyan: null pointer");
  if (n < 4 * f + 3) return AGT_FAIL(AGT_EINVAL, "bulyan needs n >= 4f+3, got n=%zu f=%zu", n, f);
  size_t theta = n - 2 * f, beta = theta - 2 * f, db;
  double *D = alloc_D(n, &db);
  double *sc = malloc(n * sizeof(double));
  int64_t *rem = malloc(n * sizeof(int64_t)), *sel = malloc(theta * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!D || !sc || !rem || !sel) s = AGT_FAIL(AGT_ENOMEM, "bulyan: no memory (n=%zu)", n);
  if (s == AGT_OK) s = agt_gar_sqdist(G, n, d, D);
  size_t r = n;
  for (size_t i = 0; i < n; i++) rem[i] = (int64_t)i;
  for (size_t t = 0; s == AGT_OK && t < theta; t++) {
    /* Krum among the r rows left: exact scores with r-f-2 neighbours (at least 0). */
    size_t k = r >= f + 2 ? r - f - 2 : 0;
    s = agt_gar_krum_scores(D, n, rem, r, k, sc);
    if (s != AGT_OK) break;
    size_t best = 0;
    for (size_t q = 1; q < r; q++)
      if (sc[q] < sc[best]) best = q; /* rem is ascending: ties keep the lower index */
    sel[t] = rem[best];
    memmove(rem + best, rem + best + 1, (r - best - 1) * sizeof(int64_t));
    r--;
  }
  if (s == AGT_OK) {
    if (selected) memcpy(selected, sel, theta * sizeof(int64_t));
    s = agt_gar_rows_meamed(G, d, sel, theta, beta, out);
  }
  agt_free(D, db);
  free(sc);
  free(rem);
  free(sel);
  return s;
}

/* ---- CGE -------------------------------------------------------------------- */

agt_status agt_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                       int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "cge: null pointer");
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "cge needs n > f, got n=%zu f=%zu", n, f);
  double *sq = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!sq || !idx) s = AGT_FAIL(AGT_ENOMEM, "cge: no memory");
  if (s == AGT_OK) s = agt_gar__rows_sqnorm(G, n, d, sq);
  if (s == AGT_OK) {
    agt_gar__argsort(sq, n, idx);
    if (selected) memcpy(selected, idx, (n - f) * sizeof(int64_t));
    s = avg_sorted(G, d, idx, n - f, out);
  }
  free(sq);
  free(idx);
  return s;
}

/* ---- MDA: exact enumeration with branch and bound ----------------------------- */

typedef struct {
  const double *D;
  size_t n, need;
  size_t keep[256], bestset[256];
  double best;
  int found;
  unsigned long long visits;
  int interrupted;
} mda_ctx;

static void mda_dfs(mda_ctx *c, size_t depth, size_t next, double diam) {
  if (c->interrupted) return;
  if (depth == c->need) {
    if (!c->found || diam < c->best) {
      c->found = 1;
      c->best = diam;
      memcpy(c->bestset, c->keep, c->need * sizeof(size_t));
    }
    return;
  }
  if ((++c->visits & 0xffff) == 0 && agt_interrupted()) {
    c->interrupted = 1;
    return;
  }
  for (size_t i = next; i + (c->need - depth) <= c->n; i++) {
    double nd = diam;
    for (size_t q = 0; q < depth; q++) {
      double v = c->D[i * c->n + c->keep[q]];
      if (v > nd) nd = v;
    }
    if (c->found && nd >= c->best) continue; /* cannot beat the best: a lexicographically
                                                 earlier set already has this diameter */
    c->keep[depth] = i;
    mda_dfs(c, depth + 1, i + 1, nd);
  }
}

static double binom(size_t n, size_t k) {
  double r = 1.0;
  for (size_t i = 1; i <= k; i++) r = r * (double)(n - k + i) / (double)i;
  return r;
}

agt_status agt_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget, float *out,
                       int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "mda: null pointer");
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "mda needs n > f, got n=%zu f=%zu", n, f);
  if (n > 256) return AGT_FAIL(AGT_EINVAL, "mda: n=%zu is more than the 256 rows it enumerates", n);
  double cnt = binom(n, f);
  if (cnt > budget)
    return AGT_FAIL(AGT_EINVAL,
                    "mda: C(n,f) = C(%zu,%zu) = %.0f subsets exceed the budget %.0f "
                    "(raise budget, or use another rule)", n, f, cnt, budget);
  size_t db;
  double *D = alloc_D(n, &db);
  mda_ctx *c = calloc(1, sizeof(mda_ctx));
  int64_t *sel = malloc(n * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!D || !c || !sel) s = AGT_FAIL(AGT_ENOMEM, "mda: no memory");
  if (s == AGT_OK) s = agt_gar_sqdist(G, n, d, D);
  if (s == AGT_OK) {
    c->D = D, c->n = n, c->need = n - f;
    mda_dfs(c, 0, 0, 0.0);
    if (c->interrupted) s = AGT_FAIL(AGT_EINTR, "mda: interrupted");
  }
  if (s == AGT_OK) {
    for (size_t i = 0; i < n - f; i++) sel[i] = (int64_t)c->bestset[i];
    if (selected) memcpy(selected, sel, (n - f) * sizeof(int64_t));
    size_t offs[2] = {0, n - f};
    s = avg_lists(G, d, sel, offs, 1, out);
  }
  agt_free(D, db);
  free(c);
  free(sel);
  return s;
}

/* ---- pre-aggregation ------------------------------------------------------------ */

agt_status agt_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "nnm: null pointer");
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "nnm needs n > f, got n=%zu f=%zu", n, f);
  if (out == G) return AGT_FAIL(AGT_EINVAL, "nnm: out must not be G");
  size_t k = n - f, db;
  double *D = alloc_D(n, &db);
  double *key = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t)), *rows = malloc(n * k * sizeof(int64_t));
  size_t *offs = malloc((n + 1) * sizeof(size_t));
  agt_status s = AGT_OK;
  if (!D || !key || !idx || !rows || !offs) s = AGT_FAIL(AGT_ENOMEM, "nnm: no memory (n=%zu)", n);
  if (s == AGT_OK) s = agt_gar_sqdist(G, n, d, D);
  if (s == AGT_OK) {
    for (size_t i = 0; i < n; i++) {
      for (size_t j = 0; j < n; j++) key[j] = D[i * n + j];
      key[i] = -1.0; /* the row itself always counts first */
      agt_gar__argsort(key, n, idx);
      memcpy(rows + i * k, idx, k * sizeof(int64_t));
      qsort(rows + i * k, k, sizeof(int64_t), cmp_i64);
      offs[i] = i * k;
    }
    offs[n] = n * k;
    s = avg_lists(G, d, rows, offs, n, out);
  }
  agt_free(D, db);
  free(key);
  free(idx);
  free(rows);
  free(offs);
  return s;
}

agt_status agt_gar_bucketing(const float *G, size_t n, size_t d, size_t s, const int64_t *perm,
                             float *out) {
  if (!G || !perm || !out) return AGT_FAIL(AGT_EINVAL, "bucketing: null pointer");
  if (s < 1 || n < 1) return AGT_FAIL(AGT_EINVAL, "bucketing needs n >= 1 and s >= 1, got n=%zu s=%zu", n, s);
  if (out == G) return AGT_FAIL(AGT_EINVAL, "bucketing: out must not be G");
  for (size_t i = 0; i < n; i++)
    if (perm[i] < 0 || (size_t)perm[i] >= n)
      return AGT_FAIL(AGT_EINVAL, "bucketing: perm[%zu]=%lld out of 0..%zu", i, (long long)perm[i], n - 1);
  size_t nb = (n + s - 1) / s;
  size_t *offs = malloc((nb + 1) * sizeof(size_t));
  if (!offs) return AGT_FAIL(AGT_ENOMEM, "bucketing: no memory");
  for (size_t b = 0; b < nb; b++) offs[b] = b * s;
  offs[nb] = n;
  agt_status st = avg_lists(G, d, perm, offs, nb, out);
  free(offs);
  return st;
}

/* Scales each row i by a[i] into out (a[i] == 1: copied or left alone). */
typedef struct {
  const float *G;
  size_t d;
  const float *a;
  float *out;
  size_t n;
} scale_ctx;

static void scale_rows(const float *G, size_t n, size_t d, const float *a, float *out) {
  for (size_t i = 0; i < n; i++) {
    if (a[i] == 1.0f) {
      if (out != G) memcpy(out + i * d, G + i * d, d * sizeof(float));
    } else {
      const float *x = G + i * d;
      float *o = out + i * d;
      for (size_t j = 0; j < d; j++) o[j] = x[j] * a[i];
    }
  }
}

/* factor to bring a row of squared norm sq to norm at most c; 1 for a
 * non-finite norm (such a row cannot be scaled; it is left as it is). */
static float clip_factor(double sq, double c) {
  double nr = sqrt(sq);
  if (!isfinite(nr) || !isfinite(c) || nr <= c) return 1.0f;
  return (float)(c / nr);
}

agt_status agt_gar_clipping(const float *G, size_t n, size_t d, double c, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "clipping: null pointer");
  if (!(c >= 0.0)) return AGT_FAIL(AGT_EINVAL, "clipping needs c >= 0, got c=%g", c);
  double *sq = malloc((n ? n : 1) * sizeof(double));
  float *a = malloc((n ? n : 1) * sizeof(float));
  agt_status s = AGT_OK;
  if (!sq || !a) s = AGT_FAIL(AGT_ENOMEM, "clipping: no memory");
  if (s == AGT_OK) s = agt_gar__rows_sqnorm(G, n, d, sq);
  if (s == AGT_OK) {
    for (size_t i = 0; i < n; i++) a[i] = clip_factor(sq[i], c);
    scale_rows(G, n, d, a, out);
  }
  free(sq);
  free(a);
  return s;
}

agt_status agt_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "arc: null pointer");
  if (f > n || n == 0) return AGT_FAIL(AGT_EINVAL, "arc needs n >= f and n >= 1, got n=%zu f=%zu", n, f);
  size_t k = (2 * f * (n - f)) / n; /* floor(2 (f/n) (n-f)) */
  double *sq = malloc(n * sizeof(double)), *neg = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t));
  float *a = malloc(n * sizeof(float));
  agt_status s = AGT_OK;
  if (!sq || !neg || !idx || !a) s = AGT_FAIL(AGT_ENOMEM, "arc: no memory");
  if (s == AGT_OK) s = agt_gar__rows_sqnorm(G, n, d, sq);
  if (s == AGT_OK) {
    for (size_t i = 0; i < n; i++) neg[i] = -sq[i], a[i] = 1.0f; /* descending, ties: lower index */
    agt_gar__argsort(neg, n, idx);
    if (k < n) {
      double thr = sqrt(sq[idx[k]]);
      for (size_t q = 0; q < k; q++) a[idx[q]] = clip_factor(sq[idx[q]], thr);
    }
    scale_rows(G, n, d, a, out);
  }
  free(sq);
  free(neg);
  free(idx);
  free(a);
  return s;
}
