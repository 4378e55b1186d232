/* gpu_nn_pool.cu — pooling and dropout on the device: the twins of nn.h's agt_nn_maxpool_*,
 * agt_nn_avgpool_* and agt_nn_dropout_*, registered by lua/agt/backend.lua as the CUDA
 * backend's nn.* ops. All bit-identical to the CPU:
 *
 * - max-pool forward: one thread per output, the CPU's comparisons in the CPU's order (a whole
 *   3x3 window as nn.c's reduction tree, other windows as its running max), so the recorded
 *   index agrees even where a window holds NaN (the output is then NaN on both);
 * - the backward passes gather instead of scattering: an input pixel adds the gradients of
 *   the outputs whose window holds it in output order, which is the order in which the CPU's
 *   scatter adds them, from 0 (no atomics, deterministic);
 * - dropout: value i of the mask comes from word i of the caller's Philox stream, computed
 *   in place from the stream's key and counter (the words still buffered in the state are
 *   passed along), and the host advances the stream past the n words exactly as n calls of
 *   agt_rng_u32 would, buffer included, so a saved stream state is the CPU's too. */
#include "gpu_nn_internal.h"

struct pool_geom {
  size_t H, W, KH, KW, sh, sw, pt, pl, OH, OW;
};

/* Window rows [*a, *b) of output index o: nn.c's window(). */
__device__ __forceinline__ void window(size_t o, size_t s, size_t pad, size_t k, size_t n,
                                       size_t *a, size_t *b) {
  long lo = (long)(o * s) - (long)pad, hi = lo + (long)k;
  if (lo < 0) lo = 0;
  if (hi > (long)n) hi = (long)n;
  if (hi < lo) hi = lo;
  *a = (size_t)lo;
  *b = (size_t)hi;
}

/* nn.c's PICK / MAXSTEP: a later value wins when strictly greater; the kept value is
 * _mm_max_ss(later, kept), i.e. later > kept ? later : kept. */
#define PICK(va, ia, vb, ib)       \
  do {                             \
    if ((vb) > (va)) {             \
      (va) = (vb);                 \
      (ia) = (ib);                 \
    }                              \
  } while (0)

__global__ void k_maxpool_fwd(const float *x, float *y, int32_t *idx, size_t P, pool_geom g) {
  size_t per = g.OH * g.OW;
  GRID_STRIDE(i, P * per) {
    size_t p = i / per, o = i % per, oh = o / g.OW, ow = o % g.OW;
    const float *xp = x + p * g.H * g.W;
    size_t h0, h1, w0, w1;
    window(oh, g.sh, g.pt, g.KH, g.H, &h0, &h1);
    window(ow, g.sw, g.pl, g.KW, g.W, &w0, &w1);
    if (h0 >= h1 || w0 >= w1) {
      y[i] = 0.0f;
      idx[i] = -1;
      continue;
    }
    float best;
    int32_t bi;
    int nan = 0;
    if (g.KH == 3 && g.KW == 3 && h1 - h0 == 3 && w1 - w0 == 3) {
      /* nn.c's max3x3: a tree whose merges keep the earlier half on the left */
      float v[9];
      int32_t j[9];
      for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
          j[3 * r + c] = (int32_t)((h0 + r) * g.W + w0 + c);
          v[3 * r + c] = xp[j[3 * r + c]];
          nan |= v[3 * r + c] != v[3 * r + c];
        }
      PICK(v[0], j[0], v[1], j[1]);
      PICK(v[2], j[2], v[3], j[3]);
      PICK(v[4], j[4], v[5], j[5]);
      PICK(v[6], j[6], v[7], j[7]);
      PICK(v[0], j[0], v[2], j[2]);
      PICK(v[4], j[4], v[6], j[6]);
      PICK(v[0], j[0], v[4], j[4]);
      PICK(v[0], j[0], v[8], j[8]);
      best = v[0];
      bi = j[0];
    } else {
      bi = (int32_t)(h0 * g.W + w0);
      best = xp[bi];
      for (size_t h = h0; h < h1; h++)
        for (size_t w = w0; w < w1; w++) {
          float v = xp[h * g.W + w];
          nan |= v != v;
          PICK(best, bi, v, (int32_t)(h * g.W + w));
        }
    }
    y[i] = nan ? __int_as_float(0x7fc00000) : best;
    idx[i] = bi;
  }
}
#undef PICK

/* Outputs along one axis whose window [o·s − pad, o·s − pad + k) holds input coordinate h:
 * [*lo, *hi). */
__device__ __forceinline__ void covering(size_t h, size_t s, size_t pad, size_t k, size_t n_out,
                                         size_t *lo, size_t *hi) {
  long a = (long)h + (long)pad - (long)k + 1;   /* o·s >= a */
  size_t l = a <= 0 ? 0 : (size_t)((a + (long)s - 1) / (long)s);
  size_t u = (h + pad) / s + 1;                 /* o·s <= h + pad */
  if (u > n_out) u = n_out;
  *lo = l;
  *hi = u > l ? u : l;
}

/* dx: each input pixel, the gradients of the outputs that picked it (and, with relu_y, whose
 * max is > 0), in output order. */
__global__ void k_maxpool_bwd(const float *dy, const int32_t *idx, const float *relu_y, float *dx,
                              size_t P, pool_geom g) {
  size_t HW = g.H * g.W, per = g.OH * g.OW;
  GRID_STRIDE(i, P * HW) {
    size_t p = i / HW, q = i % HW, h = q / g.W, w = q % g.W;
    size_t oh0, oh1, ow0, ow1;
    covering(h, g.sh, g.pt, g.KH, g.OH, &oh0, &oh1);
    covering(w, g.sw, g.pl, g.KW, g.OW, &ow0, &ow1);
    const int32_t *ip = idx + p * per;
    const float *dyp = dy + p * per, *yp = relu_y ? relu_y + p * per : NULL;
    float s = 0.0f;
    for (size_t oh = oh0; oh < oh1; oh++)
      for (size_t ow = ow0; ow < ow1; ow++) {
        size_t o = oh * g.OW + ow;
        if (ip[o] == (int32_t)q && (!yp || yp[o] > 0.0f)) s = __fadd_rn(s, dyp[o]);
      }
    dx[i] = s;
  }
}

__global__ void k_avgpool_fwd(const float *x, float *y, size_t P, pool_geom g) {
  size_t per = g.OH * g.OW;
  GRID_STRIDE(i, P * per) {
    size_t p = i / per, o = i % per, oh = o / g.OW, ow = o % g.OW;
    const float *xp = x + p * g.H * g.W;
    size_t h0, h1, w0, w1;
    window(oh, g.sh, g.pt, g.KH, g.H, &h0, &h1);
    window(ow, g.sw, g.pl, g.KW, g.W, &w0, &w1);
    float s = 0.0f;
    for (size_t h = h0; h < h1; h++)
      for (size_t w = w0; w < w1; w++) s = __fadd_rn(s, xp[h * g.W + w]);
    size_t cnt = (h1 - h0) * (w1 - w0);
    y[i] = cnt ? __fdiv_rn(s, (float)cnt) : 0.0f;
  }
}

__global__ void k_avgpool_bwd(const float *dy, float *dx, size_t P, pool_geom g) {
  size_t HW = g.H * g.W, per = g.OH * g.OW;
  GRID_STRIDE(i, P * HW) {
    size_t p = i / HW, q = i % HW, h = q / g.W, w = q % g.W;
    size_t oh0, oh1, ow0, ow1;
    covering(h, g.sh, g.pt, g.KH, g.OH, &oh0, &oh1);
    covering(w, g.sw, g.pl, g.KW, g.OW, &ow0, &ow1);
    const float *dyp = dy + p * per;
    float s = 0.0f;
    for (size_t oh = oh0; oh < oh1; oh++) {
      size_t h0, h1;
      window(oh, g.sh, g.pt, g.KH, g.H, &h0, &h1);
      for (size_t ow = ow0; ow < ow1; ow++) {
        size_t w0, w1;
        window(ow, g.sw, g.pl, g.KW, g.W, &w0, &w1);
        size_t cnt = (h1 - h0) * (w1 - w0);
        s = __fadd_rn(s, __fdiv_rn(dyp[oh * g.OW + ow], (float)cnt));
      }
    }
    dx[i] = s;
  }
}

extern "C" agt_status agt_gpu_nn_maxpool_forward(const float *x, float *y, int32_t *idx, size_t P,
                                                 size_t H, size_t Wd, size_t KH, size_t KW,
                                                 size_t sh, size_t sw, size_t pt, size_t pl,
                                                 size_t OH, size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  if (!x || !y || !idx) return AGT_FAIL(AGT_EINVAL, "max-pool on cuda: x, y and idx must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  pool_geom g = { H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  k_maxpool_fwd<<<nn_blocks(P * OH * OW), NN_BLOCK>>>(x, y, idx, P, g);
  AGT_CU_LAUNCH("k_maxpool_fwd");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_maxpool_backward(const float *dy, const int32_t *idx,
                                                  const float *relu_y, float *dx, size_t P,
                                                  size_t H, size_t Wd, size_t KH, size_t KW,
                                                  size_t sh, size_t sw, size_t pt, size_t pl,
                                                  size_t OH, size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  if (!dy || !idx || !dx)
    return AGT_FAIL(AGT_EINVAL, "max-pool backward on cuda: dy, idx and dx must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  pool_geom g = { H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  k_maxpool_bwd<<<nn_blocks(P * H * Wd), NN_BLOCK>>>(dy, idx, relu_y, dx, P, g);
  AGT_CU_LAUNCH("k_maxpool_bwd");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_avgpool_forward(const float *x, float *y, size_t P, size_t H,
                                                 size_t Wd, size_t KH, size_t KW, size_t sh,
                                                 size_t sw, size_t pt, size_t pl, size_t OH,
                                                 size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  if (!x || !y) return AGT_FAIL(AGT_EINVAL, "avg-pool on cuda: x and y must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  pool_geom g = { H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  k_avgpool_fwd<<<nn_blocks(P * OH * OW), NN_BLOCK>>>(x, y, P, g);
  AGT_CU_LAUNCH("k_avgpool_fwd");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_avgpool_backward(const float *dy, float *dx, size_t P, size_t H,
                                                  size_t Wd, size_t KH, size_t KW, size_t sh,
                                                  size_t sw, size_t pt, size_t pl, size_t OH,
                                                  size_t OW) {
  AGT_TRY(agt_nn_pool_check(P, H, Wd, KH, KW, sh, sw, OH, OW));
  if (!dy || !dx) return AGT_FAIL(AGT_EINVAL, "avg-pool backward on cuda: dy and dx must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  pool_geom g = { H, Wd, KH, KW, sh, sw, pt, pl, OH, OW };
  k_avgpool_bwd<<<nn_blocks(P * H * Wd), NN_BLOCK>>>(dy, dx, P, g);
  AGT_CU_LAUNCH("k_avgpool_bwd");
  return AGT_OK;
}

/* ---- dropout --------------------------------------------------------------------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* rng.c's philox_block, on either side. */
__host__ __device__ static inline void philox(uint32_t k0, uint32_t k1, const uint32_t ctr[4],
                                              uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* The counter j blocks after ctr (the block index is the 64-bit ctr[0..1]). */
__host__ __device__ static inline void ctr_add(const uint32_t ctr[4], uint64_t j, uint32_t out[4]) {
  uint64_t c = ((uint64_t)ctr[1] << 32 | ctr[0]) + j;
  out[0] = (uint32_t)c;
  out[1] = (uint32_t)(c >> 32);
  out[2] = ctr[2];
  out[3] = ctr[3];
}

/* The stream as the kernel needs it: key, next counter, the nb (< 4) words still buffered. */
struct rng_view {
  uint32_t k0, k1, ctr[4], buf[4], nb;
};

/* One thread per block of four words: word i of the stream is buffered word i while i < nb,
 * then word (i − nb) % 4 of block (i − nb) / 4 from ctr. The uniform is rng.c's (float)(u >> 8)
 * · 2^-24 (lo 0, width 1: exact), then the CPU's mask and product. */
__global__ void k_dropout_fwd(const float *x, float *y, float *mask, size_t n, float p, float keep,
                              rng_view r) {
  size_t nblk = n > r.nb ? (n - r.nb + 3) / 4 : 0;
  GRID_STRIDE(t, nblk + 1) {
    uint32_t w[4];
    size_t i0;
    int cnt;
    if (t == 0) {            /* the buffered words */
      for (int k = 0; k < 4; k++) w[k] = r.buf[k];
      i0 = 0;
      cnt = (int)(r.nb < n ? r.nb : n);
    } else {
      uint32_t c[4];
      ctr_add(r.ctr, t - 1, c);
      philox(r.k0, r.k1, c, w);
      i0 = r.nb + (t - 1) * 4;
      cnt = (int)(n - i0 < 4 ? n - i0 : 4);
    }
    for (int k = 0; k < cnt; k++) {
      float u = __fmul_rn((float)(w[k] >> 8), 0x1.0p-24f);
      float m = u < p ? 0.0f : keep;
      mask[i0 + k] = m;
      y[i0 + k] = __fmul_rn(x[i0 + k], m);
    }
  }
}

__global__ void k_dropout_bwd(const float *dy, const float *mask, float *dx, size_t n) {
  GRID_STRIDE(i, n) dx[i] = __fmul_rn(dy[i], mask[i]);
}

extern "C" agt_status agt_gpu_nn_dropout_forward(const float *x, float *y, float *mask, size_t n,
                                                 float p, agt_rng *r) {
  AGT_TRY(agt_nn_dropout_check(p));
  if (!r) return AGT_FAIL(AGT_EINVAL, "dropout needs a random stream");
  if (n == 0) return AGT_OK;
  if (!x || !y || !mask) return AGT_FAIL(AGT_EINVAL, "dropout on cuda: x, y and mask must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  rng_view v;
  v.k0 = r->key[0];
  v.k1 = r->key[1];
  v.nb = r->pos < 4 ? 4 - r->pos : 0;
  for (int k = 0; k < 4; k++) {
    v.ctr[k] = r->ctr[k];
    v.buf[k] = (uint32_t)k + r->pos < 4 ? r->buf[k + r->pos] : 0;
  }
  size_t nblk = n > v.nb ? (n - v.nb + 3) / 4 : 0;
  k_dropout_fwd<<<nn_blocks(nblk + 1), NN_BLOCK>>>(x, y, mask, n, p, 1.0f / (1.0f - p), v);
  AGT_CU_LAUNCH("k_dropout_fwd");
  /* the stream past n words, as n calls of agt_rng_u32 leave it */
  if (n <= v.nb) {
    r->pos += (uint32_t)n;
  } else if (nblk > 0) {
    uint32_t c[4];
    ctr_add(r->ctr, nblk - 1, c);
    philox(r->key[0], r->key[1], c, r->buf);   /* the last block drawn, as the CPU's buffer */
    ctr_add(r->ctr, nblk, c);
    for (int k = 0; k < 4; k++) r->ctr[k] = c[k];
    size_t used = (n - v.nb) % 4;
    r->pos = used ? (uint32_t)used : 4;
  }
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_dropout_backward(const float *dy, const float *mask, float *dx,
                                                  size_t n) {
  if (n == 0) return AGT_OK;
  if (!dy || !mask || !dx)
    return AGT_FAIL(AGT_EINVAL, "dropout backward on cuda: dy, mask and dx must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  k_dropout_bwd<<<nn_blocks(n), NN_BLOCK>>>(dy, mask, dx, n);
  AGT_CU_LAUNCH("k_dropout_bwd");
  return AGT_OK;
}
