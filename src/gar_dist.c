/* gar_dist.c — the CPU's row passes: pairwise distances, row norms, averages of lists of rows
 * and row scaling, the table that hands them to the shared decisions of gar_host.c, and the CPU
 * entries of the row rules (Multi-Krum, Bulyan, MDA, CGE, NNM, bucketing, clipping, ARC), which
 * check their pointers and call those decisions.
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
 * Averages of lists sum each list's rows in list order in float and divide by the count; lists
 * that share a prefix (NNM's) share its sums, with the same adds in the same order. */
#include "gar.h"
#include "gar_host.h"
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


agt_status agt_gar_rows_average(const float *G, size_t n, size_t d, const int64_t *rows,
                                size_t m, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "rows_average: null pointer");
  return agt_gar_host_rows_average(&agt_gar__cpu_passes, G, n, d, rows, m, out);
}

/* ---- the CPU's passes for the shared decisions (gar_host.c) ---------------------------------- */

static agt_status cpu_avg_lists(const float *G, size_t d, const int64_t *rows, const size_t *off,
                                size_t R, int finite, float *out) {
  (void)finite; /* one path here: the prefix sums shared between lists serve NNM's lists */
  return avg_lists(G, d, rows, off, R, out);
}

/* out[i] = a[i] * G[i] (a[i] == 1: copied, or left alone when out == G). */
static agt_status cpu_scale_rows(const float *G, size_t n, size_t d, const float *a, float *out) {
  for (size_t i = 0; i < n; i++) {
    if (a[i] == 1.0f) {
      if (out != G) memcpy(out + i * d, G + i * d, d * sizeof(float));
    } else {
      const float *x = G + i * d;
      float *o = out + i * d;
      for (size_t j = 0; j < d; j++) o[j] = x[j] * a[i];
    }
  }
  return AGT_OK;
}

const agt_gar_passes agt_gar__cpu_passes = {
  .sqdist = agt_gar_sqdist,
  .row_sqnorms = agt_gar__rows_sqnorm,
  .avg_lists = cpu_avg_lists,
  .rows_meamed = agt_gar_rows_meamed,
  .scale_rows = cpu_scale_rows,
  .point_start = agt_gar__point_start,
  .point_move = agt_gar__point_move,
  .point_end = agt_gar__point_end,
};

/* ---- the rules: the CPU's checks, then the shared decisions ----------------------------------- */

agt_status agt_gar_multi_krum(const float *G, size_t n, size_t d, size_t f, size_t m,
                              float *out, int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "multi-krum: null pointer");
  return agt_gar_host_multi_krum(&agt_gar__cpu_passes, G, n, d, f, m, out, selected);
}

agt_status agt_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                          int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "bulyan: null pointer");
  return agt_gar_host_bulyan(&agt_gar__cpu_passes, G, n, d, f, out, selected);
}

agt_status agt_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                       int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "cge: null pointer");
  return agt_gar_host_cge(&agt_gar__cpu_passes, G, n, d, f, out, selected);
}

agt_status agt_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget, float *out,
                       int64_t *selected) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "mda: null pointer");
  return agt_gar_host_mda(&agt_gar__cpu_passes, G, n, d, f, budget, out, selected);
}

agt_status agt_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "nnm: null pointer");
  return agt_gar_host_nnm(&agt_gar__cpu_passes, G, n, d, f, out);
}

agt_status agt_gar_bucketing(const float *G, size_t n, size_t d, size_t s, const int64_t *perm,
                             float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "bucketing: null pointer");
  return agt_gar_host_bucketing(&agt_gar__cpu_passes, G, n, d, s, perm, out);
}

agt_status agt_gar_clipping(const float *G, size_t n, size_t d, double c, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "clipping: null pointer");
  return agt_gar_host_clipping(&agt_gar__cpu_passes, G, n, d, c, out);
}

agt_status agt_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "arc: null pointer");
  return agt_gar_host_arc(&agt_gar__cpu_passes, G, n, d, f, out);
}
