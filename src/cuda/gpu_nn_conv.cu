/* gpu_nn_conv.cu — 2-D convolution on the device: the twins of nn.h's agt_nn_conv2d_forward and
 * _backward (same arguments, NCHW, weights (OC, C, KH, KW), the same explicit padding),
 * registered by lua/agt/backend.lua as the CUDA backend's nn.conv2d_forward / _backward.
 *
 * The im2col path (always there): a chunk of Bc samples is unfolded into col (K x Bc·P, K =
 * C·KH·KW, P = OH·OW, sample b in columns b·P ..: the CPU's layout), then
 *   forward   y_b (OC x P) = W (OC x K) · col_b          one strided batched SGEMM, written
 *                                                        straight into NCHW, then bias + act
 *   dW        dW (OC x K) = dyᵀ (OC x Bc·P) · colᵀ         dy laid out as (OC x Bc·P) first;
 *                                                        chunks after the first add (beta 1)
 *   dx        dcol_b (K x P) = Wᵀ (K x OC) · dy_b         strided batched, then col2im: each
 *                                                        input pixel gathers its patches'
 *                                                        entries (no atomics), kh, kw order
 *   db        per (sample, channel) the CPU's float partial sum (eight lanes, then the tail),
 *             then per channel their double sum in sample order: the CPU's bits.
 * cuBLAS runs float32 (no TF32), so y, dW and dx agree with the CPU's GEMMs to float rounding.
 * col and the product live in the device's scratch arena, at most CONV_SCRATCH_FLOATS (the batch
 * goes in chunks beyond it); the caller's col argument is not used: backward unfolds x again,
 * which costs one pass over x and saves a per-layer buffer. cuDNN, when found
 * (gpu_nn_cudnn.cu), replaces the products and the unfolding (the bias gradient, bias and
 * activation stay these kernels); it skips the padding's products, so after its dW
 * k_conv_pad_nan puts back the NaNs that im2col's zeros give a non-finite dy (inf·0). W is
 * taken finite: with a non-finite W, the CPU's stride-1 dx and y at the borders would also
 * differ (W·0 there), which no pass here restores. */
#include "gpu_nn_internal.h"

/* Floats of scratch (col and the product) a chunk may use: 256 MB. */
#define CONV_SCRATCH_FLOATS ((size_t)1 << 26)

struct conv_geom {
  size_t C, H, W, OC, KH, KW, sh, sw, pt, pl, OH, OW;
};

/* col (K x ldc), columns b·P + p of the chunk's bc samples, from x (bc, C, H, W). */
__global__ void k_im2col(const float *x, float *col, conv_geom g, size_t bc, size_t ldc) {
  size_t P = g.OH * g.OW, KK = g.KH * g.KW, n = g.C * KK * bc * P;
  GRID_STRIDE(i, n) {
    size_t row = i / ldc, j = i % ldc;
    size_t b = j / P, p = j % P, oh = p / g.OW, ow = p % g.OW;
    size_t c = row / KK, r = row % KK, kh = r / g.KW, kw = r % g.KW;
    long ih = (long)(oh * g.sh + kh) - (long)g.pt, iw = (long)(ow * g.sw + kw) - (long)g.pl;
    float v = 0.0f;
    if (ih >= 0 && ih < (long)g.H && iw >= 0 && iw < (long)g.W)
      v = x[((b * g.C + c) * g.H + (size_t)ih) * g.W + (size_t)iw];
    col[i] = v;
  }
}

/* dx (bc, C, H, W) = the sum of every patch entry of dcol (K x ldc) that reads the pixel, in
 * (kh, kw) order. */
__global__ void k_col2im(const float *dcol, float *dx, conv_geom g, size_t bc, size_t ldc) {
  size_t P = g.OH * g.OW, n = bc * g.C * g.H * g.W;
  GRID_STRIDE(i, n) {
    size_t iw = i % g.W, t = i / g.W, ih = t % g.H;
    t /= g.H;
    size_t c = t % g.C, b = t / g.C;
    float s = 0.0f;
    for (size_t kh = 0; kh < g.KH; kh++) {
      long nh = (long)(ih + g.pt) - (long)kh;   /* oh·sh */
      if (nh < 0 || nh % (long)g.sh) continue;
      size_t oh = (size_t)nh / g.sh;
      if (oh >= g.OH) continue;
      for (size_t kw = 0; kw < g.KW; kw++) {
        long nw = (long)(iw + g.pl) - (long)kw;
        if (nw < 0 || nw % (long)g.sw) continue;
        size_t ow = (size_t)nw / g.sw;
        if (ow >= g.OW) continue;
        s = __fadd_rn(s, dcol[((c * g.KH + kh) * g.KW + kw) * ldc + b * P + oh * g.OW + ow]);
      }
    }
    dx[i] = s;
  }
}

/* dyT (OC x bc·P) from dy (bc, OC, P). */
__global__ void k_conv_dy_t(const float *dy, float *dyT, size_t OC, size_t P, size_t bc) {
  size_t n = bc * OC * P, BP = bc * P;
  GRID_STRIDE(i, n) {
    size_t p = i % P, t = i / P, o = t % OC, b = t / OC;
    dyT[o * BP + b * P + p] = dy[i];
  }
}

/* part[o·B + b] = the float sum of plane (b, o) of dy, as the CPU's bias_grad_task forms it. */
__global__ void k_conv_bias_part(const float *dy, float *part, size_t B, size_t OC, size_t P) {
  GRID_STRIDE(i, B * OC) {
    size_t b = i % B, o = i / B;
    const float *p = dy + (b * OC + o) * P;
    float a[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };
    size_t j = 0;
    for (; j + 8 <= P; j += 8)
      for (int l = 0; l < 8; l++) a[l] = __fadd_rn(a[l], p[j + l]);
    float ps = __fadd_rn(__fadd_rn(__fadd_rn(a[0], a[1]), __fadd_rn(a[2], a[3])),
                         __fadd_rn(__fadd_rn(a[4], a[5]), __fadd_rn(a[6], a[7])));
    for (; j < P; j++) ps = __fadd_rn(ps, p[j]);
    part[i] = ps;
  }
}

/* After cuDNN's dW: the zero padding's products. im2col (here and on the CPU) writes the padding
 * as zeros that the GEMM multiplies, so a non-finite dy whose patch reaches the padding makes
 * every dW[o][c][kh][kw] of the (kh, kw) that land there NaN (inf·0, NaN·0); cuDNN adds only the
 * products of real pixels. One thread per row (b, o, oh) of dy reads the entries whose patches
 * leave the input (the whole row in the top and bottom bands, else the first c0 and the columns
 * from c1) and writes those NaNs: the result is then im2col's whatever algorithm cuDNN chose. */
__global__ void k_conv_pad_nan(const float *dy, float *dW, conv_geom g, size_t B, size_t r0,
                               size_t r1, size_t c0, size_t c1) {
  size_t KK = g.KH * g.KW;
  GRID_STRIDE(i, B * g.OC * g.OH) {
    size_t oh = i % g.OH, o = (i / g.OH) % g.OC;
    const float *row = dy + i * g.OW;
    int band = oh < r0 || oh >= r1;
    for (size_t ow = 0; ow < g.OW; ow++) {
      if (!band && ow == c0 && c1 > c0) ow = c1;
      if (ow >= g.OW) break;
      if (isfinite(row[ow])) continue;
      long ih0 = (long)(oh * g.sh) - (long)g.pt, iw0 = (long)(ow * g.sw) - (long)g.pl;
      for (size_t kh = 0; kh < g.KH; kh++) {
        long ih = ih0 + (long)kh;
        int hout = ih < 0 || ih >= (long)g.H;
        for (size_t kw = 0; kw < g.KW; kw++) {
          long iw = iw0 + (long)kw;
          if (!hout && iw >= 0 && iw < (long)g.W) continue;
          for (size_t c = 0; c < g.C; c++) dW[(o * g.C + c) * KK + kh * g.KW + kw] = __int_as_float(0x7fc00000);
        }
      }
    }
  }
}

/* Output indices [0, *lo) and [*hi, out) whose patches (k wide, stride s, pad before) leave an
 * input of n. */
static void pad_band(size_t n, size_t k, size_t s, size_t pad, size_t out, size_t *lo, size_t *hi) {
  size_t a = (pad + s - 1) / s;                  /* o·s < pad */
  long need = (long)n + (long)pad + 1 - (long)k;  /* o·s − pad + k − 1 >= n */
  size_t b = need <= 0 ? 0 : ((size_t)need + s - 1) / s;
  if (a > out) a = out;
  if (b < a) b = a;
  if (b > out) b = out;
  *lo = a;
  *hi = b;
}

__global__ void k_conv_bias_sum(const float *part, float *db, size_t B, size_t OC) {
  GRID_STRIDE(o, OC) {
    double s = 0.0;
    for (size_t b = 0; b < B; b++) s += (double)part[o * B + b];
    db[o] = (float)s;
  }
}

/* Samples per chunk: col (K x Bc·P) and the product (OC x Bc·P) within the scratch bound. */
static size_t conv_chunk(size_t B, size_t K, size_t OC, size_t P) {
  size_t per = (K + OC) * P;
  size_t bc = per ? CONV_SCRATCH_FLOATS / per : B;
  if (bc < 1) bc = 1;
  return bc < B ? bc : B;
}

static agt_status im2col(const float *x, float *col, const conv_geom &g, size_t bc) {
  size_t n = g.C * g.KH * g.KW * bc * g.OH * g.OW;
  k_im2col<<<nn_blocks(n), NN_BLOCK>>>(x, col, g, bc, bc * g.OH * g.OW);
  AGT_CU_LAUNCH("k_im2col");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_conv2d_forward(const float *x, const float *W, const float *b,
                                                float *y, float *col, size_t B, size_t C, size_t H,
                                                size_t Wd, size_t OC, size_t KH, size_t KW,
                                                size_t sh, size_t sw, size_t pt, size_t pl,
                                                size_t OH, size_t OW, int act) {
  (void)col;
  AGT_TRY(agt_nn_conv2d_check(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW));
  if (act < -1 || act > AGT_NN_SIGMOID)
    return AGT_FAIL(AGT_EINVAL, "conv2d: activation must be -1 (none), 0, 1 or 2, got %d", act);
  if (!x || !W || !y) return AGT_FAIL(AGT_EINVAL, "conv2d on cuda: x, W and y must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  size_t K = C * KH * KW, P = OH * OW, Bc = conv_chunk(B, K, OC, P);
  void *plan;
  AGT_TRY(agt_cudnn_plan(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW, &plan));
  if (plan) {
    AGT_TRY(agt_cudnn_forward(plan, x, W, y));
    if (b || act >= 0) AGT_TRY(agt_gpu_nn_bias_act(y, b, B, OC, P, act));
    return AGT_OK;
  }
  conv_geom g = { C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW };
  float *scr;
  AGT_TRY(agt_gpu_scratch(K * Bc * P * sizeof(float), (void **)&scr));
  for (size_t b0 = 0; b0 < B; b0 += Bc) {
    size_t bc = B - b0 < Bc ? B - b0 : Bc, BP = bc * P;
    AGT_TRY(im2col(x + b0 * C * H * Wd, scr, g, bc));
    AGT_TRY(agt_gpu_gemm_batched(0, 0, OC, P, K, 1.0f, W, K, 0, scr, BP, P, 0.0f,
                                 y + b0 * OC * P, P, OC * P, bc));
  }
  if (b || act >= 0) AGT_TRY(agt_gpu_nn_bias_act(y, b, B, OC, P, act));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_conv2d_backward(const float *x, const float *W, const float *dy,
                                                 float *dx, float *dW, float *db, float *col,
                                                 size_t B, size_t C, size_t H, size_t Wd,
                                                 size_t OC, size_t KH, size_t KW, size_t sh,
                                                 size_t sw, size_t pt, size_t pl, size_t OH,
                                                 size_t OW) {
  (void)col;
  AGT_TRY(agt_nn_conv2d_check(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW));
  if (!W || !dy || (dW && !x))
    return AGT_FAIL(AGT_EINVAL, "conv2d backward on cuda: W, dy (and x for dW) must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  conv_geom g = { C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW };
  size_t K = C * KH * KW, P = OH * OW, HW = H * Wd, Bc = conv_chunk(B, K, OC, P);
  float *scr;
  if (db) {   /* (the arena is reused below: the stream runs these first) */
    AGT_TRY(agt_gpu_scratch(B * OC * sizeof(float), (void **)&scr));
    k_conv_bias_part<<<nn_blocks(B * OC), NN_BLOCK>>>(dy, scr, B, OC, P);
    AGT_CU_LAUNCH("k_conv_bias_part");
    k_conv_bias_sum<<<nn_blocks(OC), NN_BLOCK>>>(scr, db, B, OC);
    AGT_CU_LAUNCH("k_conv_bias_sum");
  }
  if (!dW && !dx) return AGT_OK;
  void *plan;
  AGT_TRY(agt_cudnn_plan(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW, &plan));
  if (plan) {
    if (dW) {
      AGT_TRY(agt_cudnn_backward_filter(plan, x, dy, dW));
      size_t r0, r1, c0, c1;
      pad_band(H, KH, sh, pt, OH, &r0, &r1);
      pad_band(Wd, KW, sw, pl, OW, &c0, &c1);
      if (r0 > 0 || r1 < OH || c0 > 0 || c1 < OW) {
        k_conv_pad_nan<<<nn_blocks(B * OC * OH), NN_BLOCK>>>(dy, dW, g, B, r0, r1, c0, c1);
        AGT_CU_LAUNCH("k_conv_pad_nan");
      }
    }
    if (dx) AGT_TRY(agt_cudnn_backward_data(plan, W, dy, dx));
    return AGT_OK;
  }
  AGT_TRY(agt_gpu_scratch((K + OC) * Bc * P * sizeof(float), (void **)&scr));
  float *cbuf = scr, *dyT = scr + K * Bc * P;
  for (size_t b0 = 0; b0 < B; b0 += Bc) {
    size_t bc = B - b0 < Bc ? B - b0 : Bc, BP = bc * P;
    const float *dyc = dy + b0 * OC * P;
    if (dW) {
      AGT_TRY(im2col(x + b0 * C * HW, cbuf, g, bc));
      k_conv_dy_t<<<nn_blocks(BP * OC), NN_BLOCK>>>(dyc, dyT, OC, P, bc);
      AGT_CU_LAUNCH("k_conv_dy_t");
      AGT_TRY(agt_gpu_gemm(0, 1, OC, K, BP, 1.0f, dyT, BP, cbuf, BP, b0 ? 1.0f : 0.0f, dW, K));
    }
    if (dx) {
      AGT_TRY(agt_gpu_gemm_batched(1, 0, K, P, OC, 1.0f, W, K, 0, dyc, P, OC * P, 0.0f,
                                   cbuf, BP, P, bc));
      size_t n = bc * C * HW;
      k_col2im<<<nn_blocks(n), NN_BLOCK>>>(cbuf, dx + b0 * C * HW, g, bc, BP);
      AGT_CU_LAUNCH("k_col2im");
    }
  }
  return AGT_OK;
}
