/* nn.c — layer kernels (see nn.h for layouts and conventions).
 *
 * Convolution is im2col + GEMM. The patches of the whole batch form col (K × B·P) with
 * K = C·KH·KW and P = OH·OW (sample b in columns b·P .. b·P+P−1), so the forward is ONE
 * GEMM, Y (OC × B·P) = W (OC × K) · col, whose result is scattered into the NCHW output
 * together with the bias and the activation. Backward lays dy out the same way (OC × B·P)
 * and reuses the patches for dW = dy·colᵀ. For stride 1, dx is itself a convolution (of
 * dy with the flipped kernel): im2col of dy and one GEMM. For other strides, col is
 * overwritten with Wᵀ·dy and folded back (col2im) into dx. Unfolding and
 * folding run on the thread pool (one (sample, channel) plane per item: planes never
 * share output), while the GEMMs are left to BLAS, which threads them itself. */

#include "nn.h"
#include "pool.h"
#include "vec.h"
#include "mem.h"

#include <math.h>
#include <string.h>

/* Items per chunk for element-wise loops: big enough to amortise a task. */
#define ELEM_GRAIN 32768

agt_status agt_nn_conv_geometry(size_t in, size_t k, size_t stride, int same,
                                size_t *out, size_t *pad_before) {
  if (k == 0 || stride == 0) return AGT_FAIL(AGT_EINVAL, "kernel and stride must be >= 1, got k=%zu stride=%zu", k, stride);
  if (in == 0) return AGT_FAIL(AGT_EINVAL, "input size must be >= 1");
  if (same) {
    size_t o = (in + stride - 1) / stride;
    size_t need = (o - 1) * stride + k;
    size_t total = need > in ? need - in : 0;
    *out = o;
    *pad_before = total / 2;
  } else {
    if (k > in) return AGT_FAIL(AGT_EINVAL, "VALID padding needs kernel <= input, got k=%zu in=%zu", k, in);
    *out = (in - k) / stride + 1;
    *pad_before = 0;
  }
  return AGT_OK;
}

/* ---- linear ----------------------------------------------------------------------

 * When the input of a linear layer is mostly zeros (raw pixels: half of Fashion-MNIST's
 * are 0; ReLU outputs), the products skip them: x is compressed row by row (CSR) and
 * y = x·W becomes, per row, a sum of rows of W scaled by the non-zeros; dW = xᵀ·dy the
 * same with x compressed column by column. The sums run over register blocks of 64
 * outputs (AVX2+FMA where the CPU has it), in a fixed order, so the result is the same
 * for any thread count; it differs from the GEMM path only by float rounding. */

#include <immintrin.h>

/* Densities under which the compressed products beat BLAS (measured at 784→100, batch 32:
 * the forward pays one pass over a row of W per non-zero, dW reuses the rows of dy). */
#define SPARSE_FWD_DENSITY 0.2
#define SPARSE_BWD_DENSITY 0.45
#define SPARSE_MAX_OUT 512       /* wider outputs: the rows of W stop fitting in cache */

typedef struct {
  const int32_t *ptr, *idx;
  const float *val;
  const float *Bm, *bias;
  float *C;
  size_t ldb, out, ldc;
} spmm_ctx;

/* One pass over the non-zeros of each row for NV vectors of 8 outputs starting at j0, the
 * last vector masked (m); NV ≤ 13 accumulators stay in registers, and with NV ≥ 5
 * independent chains the FMA units, not their latency, set the pace. */
#define DEF_SPMM(NV)                                                                      \
  __attribute__((target("avx2,fma")))                                                     \
  static void spmm_nv##NV(const spmm_ctx *t, size_t r0, size_t r1, size_t j0, __m256i m) { \
    const int32_t *ptr = t->ptr, *idx = t->idx;                                           \
    const float *val = t->val, *Bm = t->Bm + j0, *bias = t->bias;                         \
    size_t ldb = t->ldb;                                                                  \
    for (size_t r = r0; r < r1; r++) {                                                    \
      __m256 a[NV];                                                                       \
      _Pragma("GCC unroll 16")                                                            \
      for (int v = 0; v < NV - 1; v++)                                                    \
        a[v] = bias ? _mm256_loadu_ps(bias + j0 + 8 * v) : _mm256_setzero_ps();           \
      a[NV - 1] = bias ? _mm256_maskload_ps(bias + j0 + 8 * (NV - 1), m) : _mm256_setzero_ps(); \
      for (int32_t p = ptr[r]; p < ptr[r + 1]; p++) {                                     \
        __m256 s = _mm256_set1_ps(val[p]);                                                \
        const float *b = Bm + (size_t)idx[p] * ldb;                                       \
        _Pragma("GCC unroll 16")                                                          \
        for (int v = 0; v < NV - 1; v++)                                                  \
          a[v] = _mm256_fmadd_ps(s, _mm256_loadu_ps(b + 8 * v), a[v]);                    \
        a[NV - 1] = _mm256_fmadd_ps(s, _mm256_maskload_ps(b + 8 * (NV - 1), m), a[NV - 1]); \
      }                                                                                   \
      float *c = t->C + r * t->ldc + j0;                                                  \
      _Pragma("GCC unroll 16")                                                            \
      for (int v = 0; v < NV - 1; v++) _mm256_storeu_ps(c + 8 * v, a[v]);                 \
      _mm256_maskstore_ps(c + 8 * (NV - 1), m, a[NV - 1]);                                \
    }                                                                                     \
  }
DEF_SPMM(1) DEF_SPMM(2) DEF_SPMM(3) DEF_SPMM(4) DEF_SPMM(5) DEF_SPMM(6) DEF_SPMM(7)
DEF_SPMM(8) DEF_SPMM(9) DEF_SPMM(10) DEF_SPMM(11) DEF_SPMM(12) DEF_SPMM(13)
#undef DEF_SPMM

typedef void (*spmm_fn)(const spmm_ctx *, size_t, size_t, size_t, __m256i);

__attribute__((target("avx2,fma")))
static void spmm_rows_avx2(const spmm_ctx *t, size_t r0, size_t r1) {
  static const spmm_fn fns[14] = { NULL, spmm_nv1, spmm_nv2, spmm_nv3, spmm_nv4, spmm_nv5,
                                   spmm_nv6, spmm_nv7, spmm_nv8, spmm_nv9, spmm_nv10,
                                   spmm_nv11, spmm_nv12, spmm_nv13 };
  size_t out = t->out;
  for (size_t j0 = 0; j0 < out;) {
    /* passes of 12 vectors while more than 13 remain, then one pass for the rest */
    size_t rem = out - j0;
    size_t width = rem > 104 ? 96 : rem;
    size_t nv = (width + 7) / 8, last = width - 8 * (nv - 1);
    int32_t lanes[8];
    for (int l = 0; l < 8; l++) lanes[l] = (size_t)l < last ? -1 : 0;
    fns[nv](t, r0, r1, j0, _mm256_loadu_si256((const __m256i *)lanes));
    j0 += width;
  }
}

static void spmm_rows_plain(const spmm_ctx *t, size_t r0, size_t r1) {
  for (size_t r = r0; r < r1; r++) {
    float *c = t->C + r * t->ldc;
    if (t->bias) memcpy(c, t->bias, t->out * sizeof(float));
    else memset(c, 0, t->out * sizeof(float));
    for (int32_t p = t->ptr[r]; p < t->ptr[r + 1]; p++) {
      float v = t->val[p];
      const float *b = t->Bm + (size_t)t->idx[p] * t->ldb;
      for (size_t j = 0; j < t->out; j++) c[j] += v * b[j];
    }
  }
}

static int have_avx2(void) {
  static int known = -1;
  if (known < 0) known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return known;
}

static void spmm_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  if (have_avx2()) spmm_rows_avx2(vctx, begin, end);
  else spmm_rows_plain(vctx, begin, end);
}

/* C (rows×out) = A·Bm (+ bias on every row), A in CSR. */
static agt_status spmm(const int32_t *ptr, const int32_t *idx, const float *val, size_t rows,
                       const float *Bm, size_t ldb, size_t out, const float *bias, float *C) {
  spmm_ctx t = { ptr, idx, val, Bm, bias, C, ldb, out, out };
  size_t work = (size_t)ptr[rows] * out + rows * out;
  if (work < (1u << 18)) { spmm_task(&t, 0, rows, 0); return AGT_OK; }
  size_t per_row = work / rows + 1;
  size_t grain = (1u << 17) / per_row;
  return agt_parallel_for(rows, grain ? grain : 1, spmm_task, &t);
}

/* Compressed copies of x, kept per thread and grown on demand (x is small: a minibatch). */
static _Thread_local struct {
  int32_t *ptr, *idx;
  float *val;
  size_t cap_ptr, cap_nnz;
} sp;

static agt_status sp_reserve(size_t nptr, size_t nnz) {
  if (nptr > sp.cap_ptr) {
    agt_free(sp.ptr, sp.cap_ptr * sizeof(int32_t));
    sp.ptr = agt_alloc(nptr * sizeof(int32_t));
    sp.cap_ptr = sp.ptr ? nptr : 0;
  }
  if (nnz > sp.cap_nnz) {
    agt_free(sp.idx, sp.cap_nnz * sizeof(int32_t));
    agt_free(sp.val, sp.cap_nnz * sizeof(float));
    sp.idx = agt_alloc(nnz * sizeof(int32_t));
    sp.val = agt_alloc(nnz * sizeof(float));
    sp.cap_nnz = (sp.idx && sp.val) ? nnz : 0;
  }
  if (!sp.ptr || !sp.idx || !sp.val) return AGT_FAIL(AGT_ENOMEM, "linear: no memory for a compressed input of %zu values", nnz);
  return AGT_OK;
}

/* Number of non-zeros of x (B×in), or SIZE_MAX when too dense or too large to pay. */
static size_t sparse_nnz(const float *x, size_t B, size_t in, size_t out, double max_density) {
  if (out > SPARSE_MAX_OUT || in < 32 || B * in > 0x7fffffff) return SIZE_MAX;
  size_t n = B * in, limit = (size_t)(max_density * (double)n), nnz = 0;
  /* counted a row at a time, giving up as soon as the input is too dense to pay, or when
   * the first rows are already well above the threshold */
  for (size_t i = 0; i < B; i++) {
    const float *r = x + i * in;
    size_t z = 0;
    for (size_t k = 0; k < in; k++) z += r[k] == 0.0f;
    nnz += in - z;
    if (nnz > limit) return SIZE_MAX;
    if (i == 3 && B > 8 && (double)nnz > 1.25 * max_density * (double)(4 * in)) return SIZE_MAX;
  }
  return nnz;
}

agt_status agt_nn_linear_forward(const float *x, const float *W, const float *b, float *y,
                                 size_t B, size_t in, size_t out) {
  if (B == 0 || in == 0 || out == 0) return AGT_FAIL(AGT_EINVAL, "linear: empty shape B=%zu in=%zu out=%zu", B, in, out);
  size_t nnz = sparse_nnz(x, B, in, out, SPARSE_FWD_DENSITY);
  if (nnz != SIZE_MAX) {
    AGT_TRY(sp_reserve(B + 1, nnz + 1));
    size_t p = 0;
    for (size_t i = 0; i < B; i++) {
      sp.ptr[i] = (int32_t)p;
      const float *xr = x + i * in;
      for (size_t k = 0; k < in; k++) {  /* branch-free: zeros are half of the values */
        sp.idx[p] = (int32_t)k;
        sp.val[p] = xr[k];
        p += xr[k] != 0.0f;
      }
    }
    sp.ptr[B] = (int32_t)p;
    return spmm(sp.ptr, sp.idx, sp.val, B, W, out, out, b, y);
  }
  float beta = 0.0f;
  if (b) {
    for (size_t i = 0; i < B; i++) memcpy(y + i * out, b, out * sizeof(float));
    beta = 1.0f;
  }
  return agt_gemm(0, 0, B, out, in, 1.0f, x, in, W, out, beta, y, out);
}

agt_status agt_nn_linear_backward(const float *x, const float *W, const float *dy,
                                  float *dx, float *dW, float *db,
                                  size_t B, size_t in, size_t out) {
  if (B == 0 || in == 0 || out == 0) return AGT_FAIL(AGT_EINVAL, "linear: empty shape B=%zu in=%zu out=%zu", B, in, out);
  size_t nnz = sparse_nnz(x, B, in, out, SPARSE_BWD_DENSITY);
  if (nnz != SIZE_MAX) {
    /* dW = xᵀ·dy with xᵀ compressed: row k of dW sums the rows of dy where x[:, k] != 0 */
    AGT_TRY(sp_reserve(in + 1, nnz + 1));
    size_t p = 0;
    for (size_t k = 0; k < in; k++) {
      sp.ptr[k] = (int32_t)p;
      for (size_t i = 0; i < B; i++) {
        float v = x[i * in + k];
        sp.idx[p] = (int32_t)i;
        sp.val[p] = v;
        p += v != 0.0f;
      }
    }
    sp.ptr[in] = (int32_t)p;
    AGT_TRY(spmm(sp.ptr, sp.idx, sp.val, in, dy, out, out, NULL, dW));
  } else {
    AGT_TRY(agt_gemm(1, 0, in, out, B, 1.0f, x, in, dy, out, 0.0f, dW, out));
  }
  if (db) {
    memcpy(db, dy, out * sizeof(float));
    for (size_t i = 1; i < B; i++) {
      const float *r = dy + i * out;
      for (size_t j = 0; j < out; j++) db[j] += r[j];
    }
  }
  if (dx) AGT_TRY(agt_gemm(0, 1, B, in, out, 1.0f, dy, out, W, out, 0.0f, dx, in));
  return AGT_OK;
}

/* ---- conv2d ------------------------------------------------------------------------ */

typedef struct {
  const float *x;
  float *dx;
  float *col;
  size_t C, H, W, KH, KW, sh, sw, pt, pl, OH, OW;
  size_t ldc;   /* row stride of col: B·P */
} conv_ctx;

/* Samples per chunk. The batch is unfolded and multiplied a few samples at a time, so that the
 * patches of one chunk (K x Bc·P floats, about CONV_CHUNK_FLOATS) stay in cache between the
 * unfold, the GEMM's packing and the scatter, instead of a K x B·P matrix streaming through
 * memory (52 MB for cnnet's second convolution at batch 32, written and read back twice a
 * step). Each column of the products is independent of the others, so the forward output and
 * dx are the same for any chunking; dW adds the chunks' products in chunk order. */
#define CONV_CHUNK_FLOATS ((size_t)1 << 20)

static int direct_dx(size_t sh, size_t sw) { return sh == 1 && sw == 1; }

static size_t max2(size_t a, size_t b) { return a > b ? a : b; }

static size_t conv_chunk(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH, size_t KW,
                         size_t sh, size_t sw, size_t OH, size_t OW) {
  size_t per = C * KH * KW * OH * OW;
  if (direct_dx(sh, sw)) per = max2(per, OC * KH * KW * H * Wd);
  size_t bc = per ? CONV_CHUNK_FLOATS / per : B;
  if (bc < 1) bc = 1;
  return bc < B ? bc : B;
}

/* Scratch layout, for a chunk of Bc samples: [patches | product | flipped weights].
 *   patches: col (K × Bc·P); for stride 1 also the patches of dy (OC·KH·KW × Bc·H·W)
 *   product: the forward's (OC × Bc·P), dy as (OC × Bc·P); for stride 1 dx as (C × Bc·H·W)
 *   flipped weights (stride 1 only): W' (C × OC·KH·KW) */
static void scratch_layout(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH, size_t KW,
                           size_t sh, size_t sw, size_t OH, size_t OW, size_t *r1, size_t *r2, size_t *r3) {
  size_t Bc = conv_chunk(B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW);
  size_t BP = Bc * OH * OW, BHW = Bc * H * Wd;
  int d = direct_dx(sh, sw);
  *r1 = d ? max2(C * KH * KW * BP, OC * KH * KW * BHW) : C * KH * KW * BP;
  *r2 = d ? max2(OC * BP, C * BHW) : OC * BP;
  *r3 = d ? C * OC * KH * KW : 0;
}

size_t agt_nn_conv2d_scratch(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH, size_t KW,
                             size_t sh, size_t sw, size_t OH, size_t OW) {
  size_t r1, r2, r3;
  scratch_layout(B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW, &r1, &r2, &r3);
  return r1 + r2 + r3;
}

/* Range of output columns ow whose input column ow·sw + kw − pl lies in [0, W). */
static void valid_range(size_t n_out, size_t stride, size_t k, size_t pad, size_t n_in,
                        size_t *lo, size_t *hi) {
  /* ow·s + k − pad >= 0  <=>  ow >= ceil((pad − k)/s) when pad > k */
  size_t a = pad > k ? (pad - k + stride - 1) / stride : 0;
  /* ow·s + k − pad < n_in  <=>  ow·s < n_in + pad − k */
  size_t lim = n_in + pad;
  size_t b = lim > k ? (lim - k + stride - 1) / stride : 0;
  if (b > n_out) b = n_out;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

/* Zeroes n floats; for the one to three of a kernel's edge, stores rather than a memset call
 * (which a compiler makes of a plain loop). */
static inline void zero_few(float *p, size_t n) {
  if (n > 3) {
    memset(p, 0, n * sizeof(float));
    return;
  }
  if (n > 0) p[0] = 0.0f;
  if (n > 1) p[1] = 0.0f;
  if (n > 2) p[2] = 0.0f;
}

/* Unfolds plane (b, c): rows c·KH·KW .. +KH·KW of col_b. */
static void im2col_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const conv_ctx *t = vctx;
  size_t P = t->OH * t->OW;
  for (size_t item = begin; item < end; item++) {
    size_t b = item / t->C, c = item % t->C;
    const float *xp = t->x + (b * t->C + c) * t->H * t->W;
    float *colb = t->col + b * P;
    if (t->sh == 1 && t->sw == 1 && t->OW == t->W) {
      /* Stride 1, rows as wide as the input (SAME): the unfolded row of (kh, kw) is the plane
       * shifted by kw − pl columns and kh − pt rows, so it is one copy of the valid rows'
       * block plus zeros where the shift crosses a row's edge (or leaves the plane). */
      size_t W = t->W, OH = t->OH;
      for (size_t kh = 0; kh < t->KH; kh++) {
        size_t oh_lo = t->pt > kh ? t->pt - kh : 0;
        size_t oh_hi = t->H + t->pt > kh ? t->H + t->pt - kh : 0;
        if (oh_hi > OH) oh_hi = OH;
        if (oh_lo > oh_hi) oh_lo = oh_hi;
        for (size_t kw = 0; kw < t->KW; kw++) {
          float *row = colb + ((c * t->KH + kh) * t->KW + kw) * t->ldc;
          long sft = (long)kw - (long)t->pl;
          size_t a = sft < 0 ? (size_t)-sft : 0, z = sft > 0 ? (size_t)sft : 0;
          if (oh_lo) memset(row, 0, oh_lo * W * sizeof(float));
          if (oh_hi < OH) memset(row + oh_hi * W, 0, (OH - oh_hi) * W * sizeof(float));
          if (oh_lo == oh_hi) continue;
          size_t nrow = oh_hi - oh_lo, n = nrow * W - a - z;
          if (a + z < W) {
            memcpy(row + oh_lo * W + a, xp + (oh_lo + kh - t->pt) * W + z, n * sizeof(float));
            /* the a (or z) values a row's shift leaves: a few, so no library call each */
            size_t e0 = a ? 0 : W - z, ne = a + z;
            for (size_t oh = oh_lo; oh < oh_hi && ne; oh++) zero_few(row + oh * W + e0, ne);
          } else {
            memset(row + oh_lo * W, 0, nrow * W * sizeof(float));
          }
        }
      }
      continue;
    }
    for (size_t kh = 0; kh < t->KH; kh++) {
      for (size_t kw = 0; kw < t->KW; kw++) {
        float *row = colb + ((c * t->KH + kh) * t->KW + kw) * t->ldc;
        size_t lo, hi;
        valid_range(t->OW, t->sw, kw, t->pl, t->W, &lo, &hi);
        for (size_t oh = 0; oh < t->OH; oh++) {
          float *o = row + oh * t->OW;
          long ih = (long)(oh * t->sh + kh) - (long)t->pt;
          if (ih < 0 || ih >= (long)t->H) {
            memset(o, 0, t->OW * sizeof(float));
            continue;
          }
          const float *xr = xp + (size_t)ih * t->W;
          for (size_t ow = 0; ow < lo; ow++) o[ow] = 0.0f;
          if (t->sw == 1) {
            /* short rows: a loop beats a memcpy call; ow + kw − pl >= 0 from lo on */
            for (size_t ow = lo; ow < hi; ow++) o[ow] = xr[ow + kw - t->pl];
          } else {
            for (size_t ow = lo; ow < hi; ow++) o[ow] = xr[ow * t->sw + kw - t->pl];
          }
          for (size_t ow = hi; ow < t->OW; ow++) o[ow] = 0.0f;
        }
      }
    }
  }
}

/* Folds the rows of plane (b, c) of col_b back into dx (b, c), overwriting it. */
static void col2im_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const conv_ctx *t = vctx;
  size_t P = t->OH * t->OW;
  for (size_t item = begin; item < end; item++) {
    size_t b = item / t->C, c = item % t->C;
    float *dxp = t->dx + (b * t->C + c) * t->H * t->W;
    const float *colb = t->col + b * P;
    memset(dxp, 0, t->H * t->W * sizeof(float));
    for (size_t kh = 0; kh < t->KH; kh++) {
      for (size_t kw = 0; kw < t->KW; kw++) {
        const float *row = colb + ((c * t->KH + kh) * t->KW + kw) * t->ldc;
        size_t lo, hi;
        valid_range(t->OW, t->sw, kw, t->pl, t->W, &lo, &hi);
        for (size_t oh = 0; oh < t->OH; oh++) {
          long ih = (long)(oh * t->sh + kh) - (long)t->pt;
          if (ih < 0 || ih >= (long)t->H) continue;
          const float *o = row + oh * t->OW;
          float *xr = dxp + (size_t)ih * t->W;
          if (t->sw == 1) {
            for (size_t ow = lo; ow < hi; ow++) xr[ow + kw - t->pl] += o[ow];
          } else {
            for (size_t ow = lo; ow < hi; ow++) xr[ow * t->sw + kw - t->pl] += o[ow];
          }
        }
      }
    }
  }
}

agt_status agt_nn_conv2d_check(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH,
                             size_t KW, size_t sh, size_t sw, size_t pt, size_t pl, size_t OH,
                             size_t OW) {
  if (!B || !C || !H || !Wd || !OC || !KH || !KW || !sh || !sw || !OH || !OW)
    return AGT_FAIL(AGT_EINVAL, "conv2d: zero in shape B=%zu C=%zu H=%zu W=%zu OC=%zu K=%zux%zu stride=%zux%zu out=%zux%zu",
                    B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW);
  if (pt >= KH || pl >= KW)
    return AGT_FAIL(AGT_EINVAL, "conv2d: padding %zux%zu must be smaller than the kernel %zux%zu", pt, pl, KH, KW);
  if ((OH - 1) * sh + KH > H + 2 * KH || (OW - 1) * sw + KW > Wd + 2 * KW)
    return AGT_FAIL(AGT_EINVAL, "conv2d: output %zux%zu too large for input %zux%zu", OH, OW, H, Wd);
  return AGT_OK;
}

static size_t plane_grain(size_t per_item) {
  /* about 64k floats of work per chunk */
  size_t g = 65536 / (per_item ? per_item : 1);
  return g ? g : 1;
}

/* y (b, o, :) = act(Y (o, b·P ..) + bias[o]): the GEMM's (OC × B·P) result into NCHW. */
typedef struct {
  const float *Y, *bias;
  float *y;
  size_t OC, P, BP;
  int act;
} scatter_ctx;

static void act_fwd_range(int act, const float *x, float *y, size_t n);

static void conv_scatter_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const scatter_ctx *t = vctx;
  for (size_t item = begin; item < end; item++) {   /* item = (b, o) */
    size_t b = item / t->OC, o = item % t->OC;
    const float *src = t->Y + o * t->BP + b * t->P;
    float *dst = t->y + item * t->P;
    float bv = t->bias ? t->bias[o] : 0.0f;
    for (size_t j = 0; j < t->P; j++) dst[j] = src[j] + bv;
    if (t->act >= 0) act_fwd_range(t->act, dst, dst, t->P);
  }
}

agt_status agt_nn_conv2d_forward(const float *x, const float *W, const float *b, float *y,
                                 float *col, size_t B, size_t C, size_t H, size_t Wd,
                                 size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                 size_t pt, size_t pl, size_t OH, size_t OW, int act) {
  AGT_TRY(agt_nn_conv2d_check(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW));
  if (act < -1 || act > AGT_NN_SIGMOID) return AGT_FAIL(AGT_EINVAL, "conv2d: activation must be -1 (none), 0, 1 or 2, got %d", act);
  size_t K = C * KH * KW, P = OH * OW, r1, r2, r3;
  size_t Bc = conv_chunk(B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW);
  scratch_layout(B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW, &r1, &r2, &r3);
  float *Y = col + r1;
  for (size_t b0 = 0; b0 < B; b0 += Bc) {
    size_t bc = B - b0 < Bc ? B - b0 : Bc;
    conv_ctx t = { x + b0 * C * H * Wd, NULL, col, C, H, Wd, KH, KW, sh, sw, pt, pl, OH, OW, bc * P };
    AGT_TRY(agt_parallel_for(bc * C, plane_grain(KH * KW * P), im2col_task, &t));
    AGT_TRY(agt_gemm(0, 0, OC, bc * P, K, 1.0f, W, K, col, bc * P, 0.0f, Y, bc * P));
    scatter_ctx sc = { Y, b, y + b0 * OC * P, OC, P, bc * P, act };
    AGT_TRY(agt_parallel_for(bc * OC, plane_grain(P), conv_scatter_task, &sc));
  }
  return agt_interrupted() ? AGT_FAIL(AGT_EINTR, "interrupted") : AGT_OK;
}

typedef struct {
  const float *dy;
  float *db;
  size_t B, OC, P;
} bias_grad_ctx;

static void bias_grad_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const bias_grad_ctx *t = vctx;
  for (size_t o = begin; o < end; o++) {
    double s = 0.0;
    for (size_t i = 0; i < t->B; i++) {
      const float *p = t->dy + (i * t->OC + o) * t->P;
      /* eight running sums (a fixed order, so still deterministic): a single one would be
       * a chain of dependent adds that the compiler may not reorder */
      float a[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };
      size_t j = 0;
      for (; j + 8 <= t->P; j += 8)
        for (int l = 0; l < 8; l++) a[l] += p[j + l];
      float ps = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
      for (; j < t->P; j++) ps += p[j];
      s += ps;
    }
    t->db[o] = (float)s;
  }
}

agt_status agt_nn_conv2d_backward(const float *x, const float *W, const float *dy,
                                  float *dx, float *dW, float *db, float *col,
                                  size_t B, size_t C, size_t H, size_t Wd,
                                  size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                  size_t pt, size_t pl, size_t OH, size_t OW) {
  AGT_TRY(agt_nn_conv2d_check(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW));
  size_t K = C * KH * KW, P = OH * OW, HW = H * Wd, r1, r2, r3;
  size_t Bc = conv_chunk(B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW);
  if (dW && Bc < B && !x) return AGT_FAIL(AGT_EINVAL, "conv2d backward: dW needs x");
  if (db) {
    bias_grad_ctx bt = { dy, db, B, OC, P };
    AGT_TRY(agt_parallel_for(OC, 1, bias_grad_task, &bt));
  }
  if (!dW && !dx) return agt_interrupted() ? AGT_FAIL(AGT_EINTR, "interrupted") : AGT_OK;
  scratch_layout(B, C, H, Wd, OC, KH, KW, sh, sw, OH, OW, &r1, &r2, &r3);
  size_t K2 = OC * KH * KW;
  float *W2 = col + r1 + r2;
  int direct = direct_dx(sh, sw);
  if (dx && direct) {
    /* Stride 1: dx is the convolution of dy with the flipped, transposed kernel
     * W'[c][o][KH−1−kh][KW−1−kw] = W[o][c][kh][kw] and leading padding (KH−1−pt, KW−1−pl):
     * one im2col of dy and one GEMM with a long inner dimension, no col2im scatter. */
    for (size_t c = 0; c < C; c++)
      for (size_t o = 0; o < OC; o++)
        for (size_t kh = 0; kh < KH; kh++)
          for (size_t kw = 0; kw < KW; kw++)
            W2[((c * OC + o) * KH + kh) * KW + kw] = W[((o * C + c) * KH + (KH - 1 - kh)) * KW + (KW - 1 - kw)];
  }
  for (size_t b0 = 0; b0 < B; b0 += Bc) {
    size_t bc = B - b0 < Bc ? B - b0 : Bc, BP = bc * P, BHW = bc * HW;
    /* dy of the chunk as (OC × bc·P), in the product's scratch */
    float *dyT = col + r1;
    for (size_t i = 0; i < bc; i++)
      for (size_t o = 0; o < OC; o++)
        memcpy(dyT + o * BP + i * P, dy + ((b0 + i) * OC + o) * P, P * sizeof(float));
    if (dW) {
      /* the chunk's patches: still in col from forward when the batch is one chunk */
      if (Bc < B) {
        conv_ctx t = { x + b0 * C * HW, NULL, col, C, H, Wd, KH, KW, sh, sw, pt, pl, OH, OW, BP };
        AGT_TRY(agt_parallel_for(bc * C, plane_grain(KH * KW * P), im2col_task, &t));
      }
      AGT_TRY(agt_gemm(0, 1, OC, K, BP, 1.0f, dyT, BP, col, BP, b0 ? 1.0f : 0.0f, dW, K));
    }
    if (!dx) continue;
    if (direct) {
      /* dy's patches over col, then dx's product over dyT (used up by dW's product) */
      float *dxT = col + r1;
      conv_ctx t = { dy + b0 * OC * P, NULL, col, OC, OH, OW, KH, KW, 1, 1, KH - 1 - pt, KW - 1 - pl, H, Wd, BHW };
      AGT_TRY(agt_parallel_for(bc * OC, plane_grain(KH * KW * HW), im2col_task, &t));
      AGT_TRY(agt_gemm(0, 0, C, BHW, K2, 1.0f, W2, K2, col, BHW, 0.0f, dxT, BHW));
      scatter_ctx sc = { dxT, NULL, dx + b0 * C * HW, C, HW, BHW, -1 };
      AGT_TRY(agt_parallel_for(bc * C, plane_grain(HW), conv_scatter_task, &sc));
    } else {
      /* the patches' gradient Wᵀ·dy, folded back into dx */
      AGT_TRY(agt_gemm(1, 0, K, BP, OC, 1.0f, W, K, dyT, BP, 0.0f, col, BP));
      conv_ctx t = { NULL, dx + b0 * C * HW, col, C, H, Wd, KH, KW, sh, sw, pt, pl, OH, OW, BP };
      AGT_TRY(agt_parallel_for(bc * C, plane_grain(KH * KW * P), col2im_task, &t));
    }
  }
  return agt_interrupted() ? AGT_FAIL(AGT_EINTR, "interrupted") : AGT_OK;
}

/* ---- pooling ----------------------------------------------------------------------- */

typedef struct {
  const float *x;
  float *y;
  const float *dy;
  float *dx;
  int32_t *idx;
  const int32_t *cidx;
  size_t H, W, KH, KW, sh, sw, pt, pl, OH, OW;
} pool_ctx;

/* Window rows [*a, *b) of output index o: o·s − pad + [0, k) clipped to [0, n). */
static void window(size_t o, size_t s, size_t pad, size_t k, size_t n, size_t *a, size_t *b) {
  long lo = (long)(o * s) - (long)pad, hi = lo + (long)k;
  if (lo < 0) lo = 0;
  if (hi > (long)n) hi = (long)n;
  if (hi < lo) hi = lo;
  *a = (size_t)lo;
  *b = (size_t)hi;
}

/* One step of a branch-free running max (the winner is unpredictable); ties keep the
 * first maximum in row-major order; any NaN sets the flag. */
#define MAXSTEP(v, idx)                                                              \
  do {                                                                               \
    float v_ = (v);                                                                  \
    int32_t gt_ = v_ > best;                                                         \
    nan |= v_ != v_;                                                                 \
    best = _mm_cvtss_f32(_mm_max_ss(_mm_set_ss(v_), _mm_set_ss(best)));              \
    bi ^= (bi ^ (int32_t)(idx)) & -gt_;                                              \
  } while (0)

/* Later candidate (vb, ib) against the earlier (va, ia): strictly greater wins, so ties
 * keep the earlier one. Branch-free. */
#define PICK(va, ia, vb, ib)                                                         \
  do {                                                                               \
    int32_t gt_ = (vb) > (va);                                                       \
    (va) = _mm_cvtss_f32(_mm_max_ss(_mm_set_ss(vb), _mm_set_ss(va)));                \
    (ia) ^= ((ia) ^ (ib)) & -gt_;                                                    \
  } while (0)

/* A full 3×3 window at (h0, w0) as a reduction tree (depth 4 instead of a chain of 8):
 * each merge puts the earlier half on the left, so the first maximum still wins. */
static inline void max3x3(const float *xp, size_t W, size_t h0, size_t w0, float *best,
                          int32_t *bi, int *nan) {
  const float *r = xp + h0 * W + w0;
  int32_t i0 = (int32_t)(h0 * W + w0), w = (int32_t)W;
  float v0 = r[0], v1 = r[1], v2 = r[2], v3 = r[W], v4 = r[W + 1], v5 = r[W + 2];
  float v6 = r[2 * W], v7 = r[2 * W + 1], v8 = r[2 * W + 2];
  int32_t j0 = i0, j1 = i0 + 1, j2 = i0 + 2, j3 = i0 + w, j4 = i0 + w + 1, j5 = i0 + w + 2;
  int32_t j6 = i0 + 2 * w, j7 = i0 + 2 * w + 1, j8 = i0 + 2 * w + 2;
  *nan = (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3) | (v4 != v4) | (v5 != v5) |
         (v6 != v6) | (v7 != v7) | (v8 != v8);
  PICK(v0, j0, v1, j1);
  PICK(v2, j2, v3, j3);
  PICK(v4, j4, v5, j5);
  PICK(v6, j6, v7, j7);
  PICK(v0, j0, v2, j2);
  PICK(v4, j4, v6, j6);
  PICK(v0, j0, v4, j4);
  PICK(v0, j0, v8, j8);
  *best = v0;
  *bi = j0;
}

/* One output of max-pooling (window rows [h0, h1)). */
static inline void maxpool_one(const pool_ctx *t, const float *xp, float *yp, int32_t *ip,
                               size_t oh, size_t ow, size_t h0, size_t h1, int square3) {
  size_t W = t->W, w0, w1, o = oh * t->OW + ow;
  window(ow, t->sw, t->pl, t->KW, W, &w0, &w1);
  if (h0 >= h1 || w0 >= w1) {   /* a window all in padding */
    yp[o] = 0.0f;
    ip[o] = -1;
    return;
  }
  float best;
  int32_t bi;
  int nan;
  if (square3 && h1 - h0 == 3 && w1 - w0 == 3) {
    max3x3(xp, W, h0, w0, &best, &bi, &nan);
  } else {
    bi = (int32_t)(h0 * W + w0);
    best = xp[bi];
    nan = 0;
    for (size_t h = h0; h < h1; h++)
      for (size_t w = w0; w < w1; w++) MAXSTEP(xp[h * W + w], h * W + w);
  }
  yp[o] = nan ? NAN : best;
  ip[o] = bi;
}

#if defined(__x86_64__)
/* PICK on eight lanes: the same comparisons and the same max (max_ps returns its second
 * operand when either is NaN, as max_ss does), so each lane is max3x3's result bit for bit. */
#define PICK8(va, ia, vb, ib)                                                        \
  do {                                                                               \
    __m256 gt_ = _mm256_cmp_ps((vb), (va), _CMP_GT_OQ);                              \
    (va) = _mm256_max_ps((vb), (va));                                                \
    (ia) = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(ia),             \
                                                _mm256_castsi256_ps(ib), gt_));      \
  } while (0)

/* Eight outputs of a 3x3, stride-2 max-pool whose windows are all inside the plane: window j
 * starts at row h0, column w0 + 2j. Each input row's 17 values are split into the even
 * columns (kw = 0), the odd ones (kw = 1) and the even ones shifted by one (kw = 2). */
__attribute__((target("avx2"))) static void max3x3s2_x8(const float *xp, size_t W, size_t h0,
                                                        size_t w0, float *y, int32_t *idx) {
  const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i rot = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  __m256 v[9];
  __m256i j[9];
  __m256 nan = _mm256_setzero_ps();
  for (int r = 0; r < 3; r++) {
    const float *xr = xp + (h0 + (size_t)r) * W + w0;
    __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xr), perm);
    __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xr + 8), perm);
    __m256 even = _mm256_permute2f128_ps(lo, hi, 0x20), odd = _mm256_permute2f128_ps(lo, hi, 0x31);
    __m256 even2 = _mm256_blend_ps(_mm256_permutevar8x32_ps(even, rot), _mm256_set1_ps(xr[16]), 0x80);
    v[3 * r] = even;
    v[3 * r + 1] = odd;
    v[3 * r + 2] = even2;
    __m256i base = _mm256_add_epi32(_mm256_set1_epi32((int32_t)((h0 + (size_t)r) * W + w0)), lane2);
    for (int k = 0; k < 3; k++) {
      j[3 * r + k] = _mm256_add_epi32(base, _mm256_set1_epi32(k));
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[3 * r + k], v[3 * r + k], _CMP_UNORD_Q));
    }
  }
  PICK8(v[0], j[0], v[1], j[1]);
  PICK8(v[2], j[2], v[3], j[3]);
  PICK8(v[4], j[4], v[5], j[5]);
  PICK8(v[6], j[6], v[7], j[7]);
  PICK8(v[0], j[0], v[2], j[2]);
  PICK8(v[4], j[4], v[6], j[6]);
  PICK8(v[0], j[0], v[4], j[4]);
  PICK8(v[0], j[0], v[8], j[8]);
  _mm256_storeu_ps(y, _mm256_blendv_ps(v[0], _mm256_set1_ps(NAN), nan));
  _mm256_storeu_si256((__m256i *)idx, j[0]);
}
#undef PICK8
#endif

static void maxpool_fwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const pool_ctx *t = vctx;
  size_t W = t->W;
  int square3 = t->KH == 3 && t->KW == 3;
  for (size_t p = begin; p < end; p++) {
    const float *xp = t->x + p * t->H * W;
    float *yp = t->y + p * t->OH * t->OW;
    int32_t *ip = t->idx + p * t->OH * t->OW;
    for (size_t oh = 0; oh < t->OH; oh++) {
      size_t h0, h1;
      window(oh, t->sh, t->pt, t->KH, t->H, &h0, &h1);
      size_t ow = 0;
#if defined(__x86_64__)
      /* whole windows of a 3x3 stride-2 pool, eight at a time */
      if (square3 && t->sw == 2 && h1 - h0 == 3 && have_avx2()) {
        size_t lo = (t->pl + 1) / 2;                                  /* 2 ow >= pl */
        size_t hi = W + t->pl >= 3 ? (W + t->pl - 3) / 2 + 1 : 0;     /* 2 ow - pl + 3 <= W */
        if (hi > t->OW) hi = t->OW;
        for (; ow < lo && ow < t->OW; ow++) maxpool_one(t, xp, yp, ip, oh, ow, h0, h1, square3);
        for (; ow + 8 <= hi; ow += 8)
          max3x3s2_x8(xp, W, h0, ow * 2 - t->pl, yp + oh * t->OW + ow, ip + oh * t->OW + ow);
        if (ow < hi && hi >= lo + 8) {   /* the last whole windows, overlapping done ones */
          size_t o8 = hi - 8;
          max3x3s2_x8(xp, W, h0, o8 * 2 - t->pl, yp + oh * t->OW + o8, ip + oh * t->OW + o8);
          ow = hi;
        }
      }
#endif
      for (; ow < t->OW; ow++) maxpool_one(t, xp, yp, ip, oh, ow, h0, h1, square3);
    }
  }
}

#undef MAXSTEP
#undef PICK

static void maxpool_bwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const pool_ctx *t = vctx;
  for (size_t p = begin; p < end; p++) {
    float *dxp = t->dx + p * t->H * t->W;
    const float *dyp = t->dy + p * t->OH * t->OW;
    const int32_t *ip = t->cidx + p * t->OH * t->OW;
    memset(dxp, 0, t->H * t->W * sizeof(float));
    if (t->y) {   /* ReLU folded in: only windows whose max is > 0 pass their gradient */
      const float *yp = t->y + p * t->OH * t->OW;
      for (size_t o = 0; o < t->OH * t->OW; o++)
        if (ip[o] >= 0 && yp[o] > 0.0f) dxp[ip[o]] += dyp[o];
    } else {
      for (size_t o = 0; o < t->OH * t->OW; o++)
        if (ip[o] >= 0) dxp[ip[o]] += dyp[o];
    }
  }
}

agt_status agt_nn_pool_check(size_t P, size_t H, size_t W, size_t KH, size_t KW, size_t sh,
                             size_t sw, size_t OH, size_t OW) {
  if (!P || !H || !W || !KH || !KW || !sh || !sw || !OH || !OW)
    return AGT_FAIL(AGT_EINVAL, "pool: zero in shape planes=%zu in=%zux%zu k=%zux%zu stride=%zux%zu out=%zux%zu",
                    P, H, W, KH, KW, sh, sw, OH, OW);
  if (H * W > 0x7fffffff) return AGT_FAIL(AGT_EINVAL, "pool: plane of %zux%zu too large", H, W);
  return AGT_OK;
}

agt_status agt_nn_maxpool_forward(const float *x, float *y, int32_t *idx, size_t P,
                                  size_t H, size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                  size_t pt, size_t pl, size_t OH, size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  pool_ctx t = { x, y, NULL, NULL, idx, NULL, H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  return agt_parallel_for(P, plane_grain(OH * OW * KH * KW), maxpool_fwd_task, &t);
}

agt_status agt_nn_maxpool_backward(const float *dy, const int32_t *idx, const float *relu_y,
                                   float *dx, size_t P, size_t H, size_t Wd, size_t KH, size_t KW,
                                   size_t sh, size_t sw, size_t pt, size_t pl, size_t OH, size_t OW) {
  (void)pt;
  (void)pl;
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  pool_ctx t = { NULL, (float *)relu_y, dy, dx, NULL, idx, H, Wd, 1, 1, 1, 1, 0, 0, OH, OW };
  return agt_parallel_for(P, plane_grain(H * Wd), maxpool_bwd_task, &t);
}

static void avgpool_fwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const pool_ctx *t = vctx;
  for (size_t p = begin; p < end; p++) {
    const float *xp = t->x + p * t->H * t->W;
    float *yp = t->y + p * t->OH * t->OW;
    for (size_t oh = 0; oh < t->OH; oh++) {
      size_t h0, h1;
      window(oh, t->sh, t->pt, t->KH, t->H, &h0, &h1);
      for (size_t ow = 0; ow < t->OW; ow++) {
        size_t w0, w1;
        window(ow, t->sw, t->pl, t->KW, t->W, &w0, &w1);
        float s = 0.0f;
        for (size_t h = h0; h < h1; h++)
          for (size_t w = w0; w < w1; w++) s += xp[h * t->W + w];
        size_t cnt = (h1 - h0) * (w1 - w0);
        yp[oh * t->OW + ow] = cnt ? s / (float)cnt : 0.0f;
      }
    }
  }
}

static void avgpool_bwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const pool_ctx *t = vctx;
  for (size_t p = begin; p < end; p++) {
    float *dxp = t->dx + p * t->H * t->W;
    const float *dyp = t->dy + p * t->OH * t->OW;
    memset(dxp, 0, t->H * t->W * sizeof(float));
    for (size_t oh = 0; oh < t->OH; oh++) {
      size_t h0, h1;
      window(oh, t->sh, t->pt, t->KH, t->H, &h0, &h1);
      for (size_t ow = 0; ow < t->OW; ow++) {
        size_t w0, w1;
        window(ow, t->sw, t->pl, t->KW, t->W, &w0, &w1);
        size_t cnt = (h1 - h0) * (w1 - w0);
        if (!cnt) continue;
        float g = dyp[oh * t->OW + ow] / (float)cnt;
        for (size_t h = h0; h < h1; h++)
          for (size_t w = w0; w < w1; w++) dxp[h * t->W + w] += g;
      }
    }
  }
}

agt_status agt_nn_avgpool_forward(const float *x, float *y, size_t P,
                                  size_t H, size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                  size_t pt, size_t pl, size_t OH, size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  pool_ctx t = { x, y, NULL, NULL, NULL, NULL, H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  return agt_parallel_for(P, plane_grain(OH * OW * KH * KW), avgpool_fwd_task, &t);
}

agt_status agt_nn_avgpool_backward(const float *dy, float *dx, size_t P,
                                   size_t H, size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                   size_t pt, size_t pl, size_t OH, size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  pool_ctx t = { NULL, NULL, dy, dx, NULL, NULL, H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  return agt_parallel_for(P, plane_grain(OH * OW * KH * KW), avgpool_bwd_task, &t);
}

/* ---- element-wise ------------------------------------------------------------------ */

typedef struct {
  int act;
  const float *x;
  float *y;
  const float *dy;
  float *dx;
  const float *b;
  size_t C, S;
} act_ctx;

static void act_fwd_range(int act, const float *x, float *y, size_t n) {
  switch (act) {
  case AGT_NN_RELU:
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    break;
  case AGT_NN_TANH:
    for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
    break;
  default:
    for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
    break;
  }
}

static void act_fwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const act_ctx *t = vctx;
  act_fwd_range(t->act, t->x + begin, t->y + begin, end - begin);
}

static void act_bwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const act_ctx *t = vctx;
  const float *y = t->x + begin, *dy = t->dy + begin;
  float *dx = t->dx + begin;
  size_t n = end - begin;
  switch (t->act) {
  case AGT_NN_RELU:
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    break;
  case AGT_NN_TANH:
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    break;
  default:
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    break;
  }
}

static agt_status act_check(int act) {
  if (act < AGT_NN_RELU || act > AGT_NN_SIGMOID)
    return AGT_FAIL(AGT_EINVAL, "activation must be 0 (relu), 1 (tanh) or 2 (sigmoid), got %d", act);
  return AGT_OK;
}

agt_status agt_nn_act_forward(int act, const float *x, float *y, size_t n) {
  AGT_TRY(act_check(act));
  act_ctx t = { act, x, y, NULL, NULL, NULL, 0, 0 };
  if (n <= ELEM_GRAIN) { act_fwd_task(&t, 0, n, 0); return AGT_OK; }
  return agt_parallel_for(n, ELEM_GRAIN, act_fwd_task, &t);
}

agt_status agt_nn_act_backward(int act, const float *y, const float *dy, float *dx, size_t n) {
  AGT_TRY(act_check(act));
  act_ctx t = { act, y, NULL, dy, dx, NULL, 0, 0 };
  if (n <= ELEM_GRAIN) { act_bwd_task(&t, 0, n, 0); return AGT_OK; }
  return agt_parallel_for(n, ELEM_GRAIN, act_bwd_task, &t);
}

/* Items are rows (b, c) of S values. */
static void bias_act_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const act_ctx *t = vctx;
  for (size_t r = begin; r < end; r++) {
    float *p = t->y + r * t->S;
    if (t->b) {
      float bv = t->b[r % t->C];
      for (size_t j = 0; j < t->S; j++) p[j] += bv;
    }
    if (t->act >= 0) act_fwd_range(t->act, p, p, t->S);
  }
}

/* Dense case (S == 1): items are batch rows of C values. */
static void bias_act_dense_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const act_ctx *t = vctx;
  for (size_t r = begin; r < end; r++) {
    float *p = t->y + r * t->C;
    if (t->b)
      for (size_t j = 0; j < t->C; j++) p[j] += t->b[j];
    if (t->act >= 0) act_fwd_range(t->act, p, p, t->C);
  }
}

agt_status agt_nn_bias_act(float *x, const float *b, size_t B, size_t C, size_t S, int act) {
  if (act != -1) AGT_TRY(act_check(act));
  act_ctx t = { act, NULL, x, NULL, NULL, b, C, S };
  if (S == 1) {
    size_t grain = ELEM_GRAIN / (C ? C : 1);
    if (B * C <= ELEM_GRAIN) { bias_act_dense_task(&t, 0, B, 0); return AGT_OK; }
    return agt_parallel_for(B, grain ? grain : 1, bias_act_dense_task, &t);
  }
  size_t grain = ELEM_GRAIN / (S ? S : 1);
  if (B * C * S <= ELEM_GRAIN) { bias_act_task(&t, 0, B * C, 0); return AGT_OK; }
  return agt_parallel_for(B * C, grain ? grain : 1, bias_act_task, &t);
}

static void add_act_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const act_ctx *t = vctx;
  for (size_t i = begin; i < end; i++) t->y[i] = t->x[i] + t->dy[i];
  if (t->act >= 0) act_fwd_range(t->act, t->y + begin, t->y + begin, end - begin);
}

agt_status agt_nn_add_act(const float *a, const float *b, float *y, size_t n, int act) {
  if (act != -1) AGT_TRY(act_check(act));
  act_ctx t = { act, a, y, b, NULL, NULL, 0, 0 };
  if (n <= ELEM_GRAIN) { add_act_task(&t, 0, n, 0); return AGT_OK; }
  return agt_parallel_for(n, ELEM_GRAIN, add_act_task, &t);
}

agt_status agt_nn_dropout_check(float p) {
  if (!(p >= 0.0f && p < 1.0f)) return AGT_FAIL(AGT_EINVAL, "dropout rate must be in [0, 1), got %g", (double)p);
  return AGT_OK;
}

agt_status agt_nn_dropout_forward(const float *x, float *y, float *mask, size_t n, float p,
                                  agt_rng *r) {
  AGT_TRY(agt_nn_dropout_check(p));
  if (!r) return AGT_FAIL(AGT_EINVAL, "dropout needs a random stream");
  agt_rng_uniform(r, mask, n, 0.0f, 1.0f);
  float keep = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++) {
    mask[i] = mask[i] < p ? 0.0f : keep;
    y[i] = x[i] * mask[i];
  }
  return AGT_OK;
}

agt_status agt_nn_dropout_backward(const float *dy, const float *mask, float *dx, size_t n) {
  for (size_t i = 0; i < n; i++) dx[i] = dy[i] * mask[i];
  return AGT_OK;
}

/* ---- batch normalisation ----------------------------------------------------------- */

typedef struct {
  const float *x, *gamma, *beta, *dy;
  float *y, *mean, *invstd, *run_mean, *run_var, *dx, *dgamma, *dbeta;
  size_t B, C, S;
  float momentum, eps;
  int train, act;
} bn_ctx;

agt_status agt_nn_batchnorm_check(size_t B, size_t C, size_t S, float momentum, float eps,
                                  int train, int act) {
  if (!B || !C || !S) return AGT_FAIL(AGT_EINVAL, "batch norm: zero in shape B=%zu C=%zu S=%zu", B, C, S);
  if (!(momentum >= 0.0f && momentum <= 1.0f))
    return AGT_FAIL(AGT_EINVAL, "batch norm: momentum must be in [0, 1], got %g", (double)momentum);
  if (!(eps > 0.0f)) return AGT_FAIL(AGT_EINVAL, "batch norm: eps must be > 0, got %g", (double)eps);
  if (act < -1 || act > AGT_NN_SIGMOID)
    return AGT_FAIL(AGT_EINVAL, "batch norm: activation must be -1 (none), 0, 1 or 2, got %d", act);
  (void)train;
  return AGT_OK;
}

/* Items are channels: a channel's B planes of S values. */
static void bn_fwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const bn_ctx *t = vctx;
  size_t B = t->B, C = t->C, S = t->S, N = B * S;
  for (size_t c = begin; c < end; c++) {
    float mean, invstd;
    if (t->train) {
      double s = 0.0;
      for (size_t b = 0; b < B; b++) {
        const float *p = t->x + (b * C + c) * S;
        for (size_t j = 0; j < S; j++) s += p[j];
      }
      double m = s / (double)N, v = 0.0;
      for (size_t b = 0; b < B; b++) {
        const float *p = t->x + (b * C + c) * S;
        for (size_t j = 0; j < S; j++) {
          double e = p[j] - m;
          v += e * e;
        }
      }
      double var = v / (double)N;
      mean = (float)m;
      invstd = (float)(1.0 / sqrt(var + (double)t->eps));
      t->mean[c] = mean;
      t->invstd[c] = invstd;
      if (t->momentum > 0.0f) {
        double unb = N > 1 ? v / (double)(N - 1) : var, mo = t->momentum;
        t->run_mean[c] = (float)((1.0 - mo) * t->run_mean[c] + mo * m);
        t->run_var[c] = (float)((1.0 - mo) * t->run_var[c] + mo * unb);
      }
    } else {
      mean = t->run_mean[c];
      invstd = (float)(1.0 / sqrt((double)t->run_var[c] + (double)t->eps));
    }
    float g = t->gamma[c], be = t->beta[c];
    for (size_t b = 0; b < B; b++) {
      const float *p = t->x + (b * C + c) * S;
      float *q = t->y + (b * C + c) * S;
      for (size_t j = 0; j < S; j++) q[j] = g * ((p[j] - mean) * invstd) + be;
      if (t->act >= 0) act_fwd_range(t->act, q, q, S);
    }
  }
}

agt_status agt_nn_batchnorm_forward(const float *x, const float *gamma, const float *beta,
                                    float *y, float *save_mean, float *save_invstd,
                                    float *run_mean, float *run_var, size_t B, size_t C, size_t S,
                                    float momentum, float eps, int train, int act) {
  AGT_TRY(agt_nn_batchnorm_check(B, C, S, momentum, eps, train, act));
  if (train && (!save_mean || !save_invstd))
    return AGT_FAIL(AGT_EINVAL, "batch norm: training needs save_mean and save_invstd");
  bn_ctx t = { x, gamma, beta, NULL, y, save_mean, save_invstd, run_mean, run_var, NULL, NULL, NULL,
               B, C, S, momentum, eps, train, act };
  return agt_parallel_for(C, plane_grain(B * S), bn_fwd_task, &t);
}

static void bn_bwd_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const bn_ctx *t = vctx;
  size_t B = t->B, C = t->C, S = t->S, N = B * S;
  for (size_t c = begin; c < end; c++) {
    float mean = t->mean[c], invstd = t->invstd[c];
    double sg = 0.0, sb = 0.0;
    for (size_t b = 0; b < B; b++) {
      const float *p = t->x + (b * C + c) * S, *d = t->dy + (b * C + c) * S;
      for (size_t j = 0; j < S; j++) {
        float xh = (p[j] - mean) * invstd;
        sb += d[j];
        sg += (double)d[j] * (double)xh;
      }
    }
    t->dgamma[c] = (float)sg;
    t->dbeta[c] = (float)sb;
    if (!t->dx) continue;
    float k = t->gamma[c] * invstd, mb = (float)(sb / (double)N), mg = (float)(sg / (double)N);
    for (size_t b = 0; b < B; b++) {
      const float *p = t->x + (b * C + c) * S, *d = t->dy + (b * C + c) * S;
      float *q = t->dx + (b * C + c) * S;
      for (size_t j = 0; j < S; j++) {
        float xh = (p[j] - mean) * invstd;
        q[j] = k * ((d[j] - mb) - xh * mg);
      }
    }
  }
}

agt_status agt_nn_batchnorm_backward(const float *x, const float *gamma, const float *dy,
                                     const float *save_mean, const float *save_invstd, float *dx,
                                     float *dgamma, float *dbeta, size_t B, size_t C, size_t S) {
  AGT_TRY(agt_nn_batchnorm_check(B, C, S, 0.0f, 1.0f, 1, -1));
  bn_ctx t = { x, gamma, NULL, dy, NULL, (float *)save_mean, (float *)save_invstd, NULL, NULL, dx,
               dgamma, dbeta, B, C, S, 0.0f, 0.0f, 1, -1 };
  return agt_parallel_for(C, plane_grain(B * S), bn_bwd_task, &t);
}

/* ---- loss and accuracy ------------------------------------------------------------- */

static agt_status check_labels(const int32_t *y, size_t B, size_t K) {
  for (size_t i = 0; i < B; i++)
    if (y[i] < 0 || (size_t)y[i] >= K)
      return AGT_FAIL(AGT_EINVAL, "label %d of example %zu is out of range [0, %zu)", (int)y[i], i, K);
  return AGT_OK;
}

agt_status agt_nn_softmax_xent(const float *logits, const int32_t *y, size_t B, size_t K,
                               double *loss, float *dlogits) {
  if (B == 0 || K == 0) return AGT_FAIL(AGT_EINVAL, "softmax cross-entropy: empty shape B=%zu K=%zu", B, K);
  AGT_TRY(check_labels(y, B, K));
  double total = 0.0;
  float inv_b = 1.0f / (float)B;
  for (size_t i = 0; i < B; i++) {
    const float *z = logits + i * K;
    float m = z[0];
    for (size_t k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
    double s = 0.0;
    for (size_t k = 0; k < K; k++) s += exp((double)z[k] - (double)m);
    double lse = (double)m + log(s);
    total += lse - (double)z[y[i]];
    if (dlogits) {
      float *d = dlogits + i * K;
      for (size_t k = 0; k < K; k++) d[k] = (float)(exp((double)z[k] - lse)) * inv_b;
      d[y[i]] -= inv_b;
    }
  }
  *loss = total / (double)B;
  return AGT_OK;
}

agt_status agt_nn_eval_batch(const float *logits, const int32_t *y, size_t B, size_t K,
                             double *loss_sum, size_t *correct) {
  if (B == 0 || K == 0) return AGT_FAIL(AGT_EINVAL, "evaluation: empty shape B=%zu K=%zu", B, K);
  AGT_TRY(check_labels(y, B, K));
  double total = 0.0;
  size_t ok = 0;
  for (size_t i = 0; i < B; i++) {
    const float *z = logits + i * K;
    float m = z[0];
    size_t arg = 0;
    int nan = z[0] != z[0];
    for (size_t k = 1; k < K; k++) {
      if (z[k] != z[k]) nan = 1;
      if (z[k] > m) { m = z[k]; arg = k; }
    }
    double s = 0.0;
    for (size_t k = 0; k < K; k++) s += exp((double)z[k] - (double)m);
    total += (double)m + log(s) - (double)z[y[i]];
    if (!nan && arg == (size_t)y[i]) ok++;
  }
  *loss_sum = total;
  *correct = ok;
  return AGT_OK;
}
