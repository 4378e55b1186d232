/* gpu_nn_conv.cu — 2-D convolution on the device: the twins of nn.h's agt_nn_conv2d_forward and
 * _backward (same arguments, NCHW, weights (OC, C, KH, KW), the same explicit padding),
 * registered by lua/agt/backend.lua as the CUDA backend's nn.conv2d_forward / _backward.
 *
 * The im2col path (always there): a chunk of Bc samples is unfolded into col (K x Bc·P, K =
 * C·KH·KW, P = OH·OW, sample b in columns b·P ..: the CPU's layout), then
 *   forward   y_b (OC x P) = W (OC x K) · col_b          one strided batched SGEMM, written
 *                                                        straight into NCHW (from P >=
 *                                                        CONV_BATCHED_MIN_P; below, one SGEMM
 *                                                        over the chunk and a transpose)
 *             then bias + act
 *   dW        dW (OC x K) = dyᵀ (OC x Bc·P) · colᵀ         dy laid out as (OC x Bc·P) first;
 *                                                        chunks after the first add (beta 1)
 *   dx        dcol (K x Bc·P) = Wᵀ (K x OC) · dyᵀ          one SGEMM, then col2im: each input
 *                                                        pixel gathers its patches' entries
 *                                                        (no atomics), kh, kw order
 *   db        per (sample, channel) the CPU's float partial sum (eight lanes, then the tail),
 *             then per channel their double sum in sample order: the CPU's bits.
 * cuBLAS runs float32 (no TF32), so y, dW and dx agree with the CPU's GEMMs to float rounding.
 * col and the product live in the device's scratch arena, at most CONV_SCRATCH_FLOATS (the batch
 * goes in chunks beyond it); the caller's col argument is not used: backward unfolds x again,
 * which costs one pass over x and saves a per-layer buffer. cuDNN, when found
 * (gpu_nn_cudnn.cu), replaces the forward product and, as its plan says (agt_cudnn_routes), dx
 * and dW (in float32 mode dW and strided dx stay the GEMMs here; the bias gradient, bias and
 * activation stay these kernels always); its own dW skips the padding's products, so after it
 * k_conv_pad_nan puts back the NaNs that im2col's zeros give a non-finite dy (inf·0). W is
 * taken finite: with a non-finite W, the CPU's stride-1 dx and y at the borders would also
 * differ (W·0 there), which no pass here restores. */
#include "gpu_nn_internal.h"

/* Floats of scratch (col and the product) a chunk may use: 256 MB. */
#define CONV_SCRATCH_FLOATS ((size_t)1 << 26)

struct conv_geom {
  size_t C, H, W, OC, KH, KW, sh, sw, pt, pl, OH, OW;
};

/* The element-wise kernels below index in I: unsigned where every index of the call fits in 31
 * bits (32-bit division is several times cheaper than 64-bit on the device), else size_t. */
#define GRID_STRIDE_I(I, i, n)                                                                \
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)gridDim.x * blockDim.x)

static inline bool fits31(size_t a, size_t b, size_t c) {
  return a <= INT32_MAX && b <= INT32_MAX && c <= INT32_MAX;
}

/* col (K x ldc), columns b·P + p of the chunk's bc samples, from x (bc, C, H, W). */
template <typename I>
__global__ void k_im2col(const float *x, float *col, conv_geom g, I ldc, I n) {
  I C = (I)g.C, H = (I)g.H, W = (I)g.W, KW = (I)g.KW, KK = (I)(g.KH * g.KW), OW = (I)g.OW;
  I sh = (I)g.sh, sw = (I)g.sw, pt = (I)g.pt, pl = (I)g.pl, P = (I)(g.OH * g.OW);
  GRID_STRIDE_I(I, i, n) {
    I row = i / ldc, j = i % ldc;
    I b = j / P, p = j % P, oh = p / OW, ow = p % OW;
    I c = row / KK, r = row % KK, kh = r / KW, kw = r % KW;
    I ih = oh * sh + kh, iw = ow * sw + kw;   /* in the padded input */
    float v = 0.0f;
    if (ih >= pt && ih - pt < H && iw >= pl && iw - pl < W)
      v = x[((b * C + c) * H + (ih - pt)) * W + (iw - pl)];
    col[i] = v;
  }
}

/* dx (bc, C, H, W) = the sum of every patch entry of dcol (K x ldc) that reads the pixel, in
 * (kh, kw) order. */
template <typename I>
__global__ void k_col2im(const float *dcol, float *dx, conv_geom g, I ldc, I n) {
  I C = (I)g.C, H = (I)g.H, W = (I)g.W, KH = (I)g.KH, KW = (I)g.KW, OH = (I)g.OH, OW = (I)g.OW;
  I sh = (I)g.sh, sw = (I)g.sw, P = OH * OW;
  GRID_STRIDE_I(I, i, n) {
    I iw = i % W, t = i / W, ih = t % H;
    t /= H;
    I c = t % C, b = t / C;
    I ihp = ih + (I)g.pt, iwp = iw + (I)g.pl;   /* in the padded input: oh·sh + kh */
    float s = 0.0f;
    for (I kh = 0; kh < KH && kh <= ihp; kh++) {
      I nh = ihp - kh;
      if (nh % sh) continue;
      I oh = nh / sh;
      if (oh >= OH) continue;
      for (I kw = 0; kw < KW && kw <= iwp; kw++) {
        I nw = iwp - kw;
        if (nw % sw) continue;
        I ow = nw / sw;
        if (ow >= OW) continue;
        s = __fadd_rn(s, dcol[((c * KH + kh) * KW + kw) * ldc + b * P + oh * OW + ow]);
      }
    }
    dx[i] = s;
  }
}

/* dyT (OC x bc·P) from dy (bc, OC, P). */
template <typename I>
__global__ void k_conv_dy_t(const float *dy, float *dyT, I OC, I P, I bc) {
  I n = bc * OC * P, BP = bc * P;
  GRID_STRIDE_I(I, i, n) {
    I p = i % P, t = i / P, o = t % OC, b = t / OC;
    dyT[o * BP + b * P + p] = dy[i];
  }
}

/* y (bc, OC, P) from yT (OC x bc·P): k_conv_dy_t's inverse. */
template <typename I>
__global__ void k_conv_y_nchw(const float *yT, float *y, I OC, I P, I bc) {
  I n = bc * OC * P, BP = bc * P;
  GRID_STRIDE_I(I, i, n) {
    I p = i % P, t = i / P, o = t % OC, b = t / OC;
    y[i] = yT[o * BP + b * P + p];
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
  size_t ldc = bc * g.OH * g.OW, n = g.C * g.KH * g.KW * ldc;
  if (fits31(n, bc * g.C * g.H * g.W, 0))
    k_im2col<unsigned><<<nn_blocks(n), NN_BLOCK>>>(x, col, g, (unsigned)ldc, (unsigned)n);
  else
    k_im2col<size_t><<<nn_blocks(n), NN_BLOCK>>>(x, col, g, ldc, n);
  AGT_CU_LAUNCH("k_im2col");
  return AGT_OK;
}

static agt_status col2im(const float *dcol, float *dx, const conv_geom &g, size_t bc) {
  size_t ldc = bc * g.OH * g.OW, n = bc * g.C * g.H * g.W;
  if (fits31(n, g.C * g.KH * g.KW * ldc, 0))
    k_col2im<unsigned><<<nn_blocks(n), NN_BLOCK>>>(dcol, dx, g, (unsigned)ldc, (unsigned)n);
  else
    k_col2im<size_t><<<nn_blocks(n), NN_BLOCK>>>(dcol, dx, g, ldc, n);
  AGT_CU_LAUNCH("k_col2im");
  return AGT_OK;
}

/* to = (OC x bc·P) from (bc, OC, P) (t = 1), or back (t = 0). */
static agt_status conv_transpose(const float *from, float *to, size_t OC, size_t P, size_t bc, int t) {
  size_t n = bc * OC * P;
  if (fits31(n, 0, 0)) {
    if (t) k_conv_dy_t<unsigned><<<nn_blocks(n), NN_BLOCK>>>(from, to, (unsigned)OC, (unsigned)P, (unsigned)bc);
    else k_conv_y_nchw<unsigned><<<nn_blocks(n), NN_BLOCK>>>(from, to, (unsigned)OC, (unsigned)P, (unsigned)bc);
  } else {
    if (t) k_conv_dy_t<size_t><<<nn_blocks(n), NN_BLOCK>>>(from, to, OC, P, bc);
    else k_conv_y_nchw<size_t><<<nn_blocks(n), NN_BLOCK>>>(from, to, OC, P, bc);
  }
  AGT_CU_LAUNCH("k_conv_dy_t / k_conv_y_nchw");
  return AGT_OK;
}

/* The forward product per sample (one strided batched SGEMM straight into NCHW) from this many
 * output pixels up; below, one SGEMM over the chunk (OC x Bc·P) and a transpose into NCHW (a
 * batch of small products leaves most of the card idle; gpu_nn_cudnn.cu's CUDNN_FP32_MIN_P
 * sends such convolutions here in float32). */
#define CONV_BATCHED_MIN_P 256

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
  int batched = P >= CONV_BATCHED_MIN_P;
  float *scr;
  AGT_TRY(agt_gpu_scratch((K + (batched ? 0 : OC)) * Bc * P * sizeof(float), (void **)&scr));
  float *yT = scr + K * Bc * P;
  for (size_t b0 = 0; b0 < B; b0 += Bc) {
    size_t bc = B - b0 < Bc ? B - b0 : Bc, BP = bc * P;
    AGT_TRY(im2col(x + b0 * C * H * Wd, scr, g, bc));
    if (batched) {
      AGT_TRY(agt_gpu_gemm_batched(0, 0, OC, P, K, 1.0f, W, K, 0, scr, BP, P, 0.0f,
                                   y + b0 * OC * P, P, OC * P, bc));
    } else {
      AGT_TRY(agt_gpu_gemm(0, 0, OC, BP, K, 1.0f, W, K, scr, BP, 0.0f, yT, BP));
      AGT_TRY(conv_transpose(yT, y + b0 * OC * P, OC, P, bc, 0));
    }
  }
  if (b || act >= 0) AGT_TRY(agt_gpu_nn_bias_act(y, b, B, OC, P, act));
  return AGT_OK;
}

/* The im2col path's backward (either of dx, dW may be NULL), per chunk: dyT (OC x Bc·P), then
 *   dW (+)= dyT · colᵀ        im2col of x first; chunks after the first add (beta 1)
 *   dcol  = Wᵀ · dyT          one SGEMM over the chunk (K x Bc·P), then col2im into dx. */
static agt_status gemm_backward(const float *x, const float *W, const float *dy, float *dx,
                                float *dW, const conv_geom &g, size_t B) {
  size_t K = g.C * g.KH * g.KW, P = g.OH * g.OW, HW = g.H * g.W, Bc = conv_chunk(B, K, g.OC, P);
  float *scr;
  AGT_TRY(agt_gpu_scratch((K + g.OC) * Bc * P * sizeof(float), (void **)&scr));
  float *cbuf = scr, *dyT = scr + K * Bc * P;
  for (size_t b0 = 0; b0 < B; b0 += Bc) {
    size_t bc = B - b0 < Bc ? B - b0 : Bc, BP = bc * P;
    AGT_TRY(conv_transpose(dy + b0 * g.OC * P, dyT, g.OC, P, bc, 1));
    if (dW) {
      AGT_TRY(im2col(x + b0 * g.C * HW, cbuf, g, bc));
      AGT_TRY(agt_gpu_gemm(0, 1, g.OC, K, BP, 1.0f, dyT, BP, cbuf, BP, b0 ? 1.0f : 0.0f, dW, K));
    }
    if (dx) {
      AGT_TRY(agt_gpu_gemm(1, 0, K, BP, g.OC, 1.0f, W, K, dyT, BP, 0.0f, cbuf, BP));
      AGT_TRY(col2im(cbuf, dx + b0 * g.C * HW, g, bc));
    }
  }
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
  size_t P = OH * OW;
  if (db) {   /* (the arena is reused below: the stream runs these first) */
    float *scr;
    AGT_TRY(agt_gpu_scratch(B * OC * sizeof(float), (void **)&scr));
    k_conv_bias_part<<<nn_blocks(B * OC), NN_BLOCK>>>(dy, scr, B, OC, P);
    AGT_CU_LAUNCH("k_conv_bias_part");
    k_conv_bias_sum<<<nn_blocks(OC), NN_BLOCK>>>(scr, db, B, OC);
    AGT_CU_LAUNCH("k_conv_bias_sum");
  }
  if (!dW && !dx) return AGT_OK;
  void *plan;
  AGT_TRY(agt_cudnn_plan(B, C, H, Wd, OC, KH, KW, sh, sw, pt, pl, OH, OW, &plan));
  int dx_route = AGT_CUDNN_ROUTE_GEMM, dw_route = AGT_CUDNN_ROUTE_GEMM;
  if (plan) agt_cudnn_routes(plan, &dx_route, &dw_route);
  if (dW && dw_route == AGT_CUDNN_ROUTE_CUDNN) {
    AGT_TRY(agt_cudnn_backward_filter(plan, x, dy, dW));
    size_t r0, r1, c0, c1;
    pad_band(H, KH, sh, pt, OH, &r0, &r1);
    pad_band(Wd, KW, sw, pl, OW, &c0, &c1);
    if (r0 > 0 || r1 < OH || c0 > 0 || c1 < OW) {
      k_conv_pad_nan<<<nn_blocks(B * OC * OH), NN_BLOCK>>>(dy, dW, g, B, r0, r1, c0, c1);
      AGT_CU_LAUNCH("k_conv_pad_nan");
    }
  }
  if (dx && dx_route != AGT_CUDNN_ROUTE_GEMM) AGT_TRY(agt_cudnn_backward_data(plan, W, dy, dx));
  float *gdx = dx_route == AGT_CUDNN_ROUTE_GEMM ? dx : NULL;
  float *gdW = dw_route == AGT_CUDNN_ROUTE_GEMM ? dW : NULL;
  if (gdx || gdW) AGT_TRY(gemm_backward(x, W, dy, gdx, gdW, g, B));
  return AGT_OK;
}
