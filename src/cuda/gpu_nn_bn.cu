/* gpu_nn_bn.cu — batch normalisation on the device: the twins of nn.h's
 * agt_nn_batchnorm_forward and _backward (same arguments), registered by lua/agt/backend.lua as
 * the CUDA backend's nn.batchnorm_forward / _backward.
 *
 * The statistics: a channel's B·S values are split into parts of at least BN_MIN_PART values
 * (several blocks per channel when the channels are few); a block sums its part in double (the
 * mean, then the squared deviations from it: the CPU's two passes), and one thread per channel
 * merges the parts in part order (Chan et al.'s formula). The order differs from the
 * CPU's, so the statistics agree with the CPU's to double rounding, which float results almost
 * always hide, and depend on (C, B·S) only. The element-wise passes are the CPU's float
 * operations in its order (no fused multiply-adds). */
#include "gpu_nn_internal.h"

#define BN_THREADS 256

__device__ __forceinline__ float bn_act(int act, float x) {
  switch (act) {
  case AGT_NN_RELU: return x > 0.0f ? x : 0.0f;
  case AGT_NN_TANH: return tanhf(x);
  default: return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
  }
}

/* The block's sum of v (every thread's share), returned to every thread. */
__device__ double block_sum(double v, double *sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();   /* sh may still be read from an earlier call */
  if (lane == 0) sh[w] = v;
  __syncthreads();
  double s = 0.0;
  for (int k = 0; k < (int)((blockDim.x + 31) >> 5); k++) s += sh[k];
  return s;
}

/* Blocks per channel: enough blocks for eight on each SM of a 132-SM card when the channels
 * are few (ResNet's first stages: 64 channels of 131,072 values at batch 128; these passes
 * are memory-bound and need many loads in flight), at least BN_MIN_PART values each, at most
 * BN_MAX_PARTS. A function of (C, N) only: the results do not depend on the card. */
#define BN_TARGET_BLOCKS 1056
#define BN_MIN_PART 2048
#define BN_MAX_PARTS 64

static unsigned bn_parts(size_t C, size_t N) {
  size_t g = (BN_TARGET_BLOCKS + C - 1) / C, cap = N / BN_MIN_PART;
  if (g > cap) g = cap;
  if (g > BN_MAX_PARTS) g = BN_MAX_PARTS;
  return (unsigned)(g < 1 ? 1 : g);
}

/* The values [lo, hi) of channel c: element i is x[((i / S)·C + c)·S + i % S]. */
template <typename I>
__device__ __forceinline__ float bn_at(const float *x, I i, I C, I S, I c) {
  return x[((i / S) * C + c) * S + i % S];
}

/* The kernels index in I: unsigned where B·C·S fits in 31 bits (32-bit division is several
 * times cheaper than 64-bit on the device; the arithmetic and its order are the same), else
 * size_t. */
#define GRID_STRIDE_I(I, i, n)                                                                \
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)gridDim.x * blockDim.x)
#define BN_LAUNCH(n, kernel, grid, block, ...)                                                 \
  do {                                                                                         \
    if ((n) <= INT32_MAX) kernel<unsigned><<<grid, block>>>(__VA_ARGS__);                      \
    else kernel<size_t><<<grid, block>>>(__VA_ARGS__);                                         \
    AGT_CU_LAUNCH(#kernel);                                                                    \
  } while (0)

/* Block (g, c): part g of channel c's values, its count, mean and sum of squared deviations
 * from that mean (two passes over the part, in double) into part[(c·G + g)·3 ..]. */
template <typename I>
__global__ void k_bn_part(const float *x, double *part, size_t B, size_t C_, size_t S_) {
  __shared__ double sh[BN_THREADS / 32];
  size_t g = blockIdx.x, G = gridDim.x, N = B * S_;
  I c = (I)blockIdx.y, C = (I)C_, S = (I)S_;
  I lo = (I)(N * g / G), hi = (I)(N * (g + 1) / G);
  double s = 0.0;
  for (I i = lo + threadIdx.x; i < hi; i += blockDim.x) s += bn_at(x, i, C, S, c);
  double n = (double)(hi - lo), m = hi > lo ? block_sum(s, sh) / n : 0.0, v = 0.0;
  for (I i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    double e = bn_at(x, i, C, S, c) - m;
    v += e * e;
  }
  v = block_sum(v, sh);
  if (threadIdx.x == 0) {
    double *o = part + (c * G + g) * 3;
    o[0] = n;
    o[1] = m;
    o[2] = v;
  }
}

/* Thread c: the parts merged in part order (mean = Σ n_g m_g / N, then the squared deviations
 * Σ M2_g + n_g (m_g − mean)², Chan et al.'s), the statistics saved and the running ones moved. */
__global__ void k_bn_final(const double *part, unsigned G, float *save_mean, float *save_invstd,
                           float *run_mean, float *run_var, size_t C, float momentum, float eps) {
  GRID_STRIDE(c, C) {
    const double *p = part + c * G * 3;
    double n = 0.0, s = 0.0, M2 = 0.0;
    for (unsigned g = 0; g < G; g++) {
      n += p[g * 3];
      s += p[g * 3] * p[g * 3 + 1];
    }
    double m = s / n;
    for (unsigned g = 0; g < G; g++) {
      double e = p[g * 3 + 1] - m;
      M2 += p[g * 3 + 2] + p[g * 3] * e * e;
    }
    double var = M2 / n;
    save_mean[c] = (float)m;
    save_invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
    if (momentum > 0.0f) {
      double unb = n > 1 ? M2 / (n - 1) : var, mo = momentum;
      run_mean[c] = (float)((1.0 - mo) * run_mean[c] + mo * m);
      run_var[c] = (float)((1.0 - mo) * run_var[c] + mo * unb);
    }
  }
}

/* Evaluation: the normalisation of each channel from the running statistics. */
__global__ void k_bn_eval_stats(const float *run_mean, const float *run_var, float *mean,
                                float *invstd, size_t C, float eps) {
  GRID_STRIDE(c, C) {
    mean[c] = run_mean[c];
    invstd[c] = (float)(1.0 / sqrt((double)run_var[c] + (double)eps));
  }
}

template <typename I>
__global__ void k_bn_apply(const float *x, const float *gamma, const float *beta,
                           const float *mean, const float *invstd, float *y, I C, I S, I n,
                           int act) {
  GRID_STRIDE_I(I, i, n) {
    I c = (i / S) % C;
    float v = __fadd_rn(__fmul_rn(gamma[c], __fmul_rn(__fsub_rn(x[i], mean[c]), invstd[c])), beta[c]);
    y[i] = act >= 0 ? bn_act(act, v) : v;
  }
}

/* Block (g, c): part g of channel c's Σ dy·x̂ and Σ dy (double) into part[(c·G + g)·2 ..]. */
template <typename I>
__global__ void k_bn_grad_part(const float *x, const float *dy, const float *mean,
                               const float *invstd, double *part, size_t B, size_t C_, size_t S_) {
  __shared__ double sh[BN_THREADS / 32];
  size_t g = blockIdx.x, G = gridDim.x, N = B * S_;
  I c = (I)blockIdx.y, C = (I)C_, S = (I)S_;
  I lo = (I)(N * g / G), hi = (I)(N * (g + 1) / G);
  float mu = mean[c], is = invstd[c];
  double sg = 0.0, sb = 0.0;
  for (I i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    I at = ((i / S) * C + c) * S + i % S;
    float xh = __fmul_rn(__fsub_rn(x[at], mu), is), d = dy[at];
    sb += d;
    sg += (double)d * (double)xh;
  }
  sg = block_sum(sg, sh);
  sb = block_sum(sb, sh);
  if (threadIdx.x == 0) {
    part[(c * G + g) * 2] = sg;
    part[(c * G + g) * 2 + 1] = sb;
  }
}

/* Thread c: dgamma_c, dbeta_c (the parts in part order), and into k3[c], k3[C + c],
 * k3[2C + c]: gamma·invstd, dbeta/N, dgamma/N for the dx pass. */
__global__ void k_bn_grad_final(const double *part, unsigned G, const float *gamma,
                                const float *invstd, float *dgamma, float *dbeta, float *k3,
                                size_t C, size_t N) {
  GRID_STRIDE(c, C) {
    double sg = 0.0, sb = 0.0;
    for (unsigned g = 0; g < G; g++) {
      sg += part[(c * G + g) * 2];
      sb += part[(c * G + g) * 2 + 1];
    }
    dgamma[c] = (float)sg;
    dbeta[c] = (float)sb;
    k3[c] = __fmul_rn(gamma[c], invstd[c]);
    k3[C + c] = (float)(sb / (double)N);
    k3[2 * C + c] = (float)(sg / (double)N);
  }
}

template <typename I>
__global__ void k_bn_dx(const float *x, const float *dy, const float *mean, const float *invstd,
                        const float *k3, float *dx, I C, I S, I n) {
  GRID_STRIDE_I(I, i, n) {
    I c = (i / S) % C;
    float xh = __fmul_rn(__fsub_rn(x[i], mean[c]), invstd[c]);
    dx[i] = __fmul_rn(k3[c], __fsub_rn(__fsub_rn(dy[i], k3[C + c]), __fmul_rn(xh, k3[2 * C + c])));
  }
}

extern "C" agt_status agt_gpu_nn_batchnorm_forward(const float *x, const float *gamma,
                                                   const float *beta, float *y, float *save_mean,
                                                   float *save_invstd, float *run_mean,
                                                   float *run_var, size_t B, size_t C, size_t S,
                                                   float momentum, float eps, int train, int act) {
  AGT_TRY(agt_nn_batchnorm_check(B, C, S, momentum, eps, train, act));
  if (!x || !gamma || !beta || !y || !run_mean || !run_var)
    return AGT_FAIL(AGT_EINVAL, "batch norm on cuda: x, gamma, beta, y and the running statistics "
                    "must be device pointers");
  if (train && (!save_mean || !save_invstd))
    return AGT_FAIL(AGT_EINVAL, "batch norm: training needs save_mean and save_invstd");
  AGT_TRY(agt_gpu_ensure());
  const float *mean = save_mean, *invstd = save_invstd;
  if (C > 65535) return AGT_FAIL(AGT_EINVAL, "batch norm on cuda: at most 65535 channels, got %zu", C);
  if (train) {
    unsigned G = bn_parts(C, B * S);
    double *part;
    AGT_TRY(agt_gpu_scratch(C * G * 3 * sizeof(double), (void **)&part));
    BN_LAUNCH(B * C * S, k_bn_part, dim3(G, (unsigned)C), BN_THREADS, x, part, B, C, S);
    k_bn_final<<<nn_blocks(C), NN_BLOCK>>>(part, G, save_mean, save_invstd, run_mean, run_var, C,
                                           momentum, eps);
    AGT_CU_LAUNCH("k_bn_final");
  } else {
    float *ev;
    AGT_TRY(agt_gpu_scratch(2 * C * sizeof(float), (void **)&ev));
    k_bn_eval_stats<<<nn_blocks(C), NN_BLOCK>>>(run_mean, run_var, ev, ev + C, C, eps);
    AGT_CU_LAUNCH("k_bn_eval_stats");
    mean = ev;
    invstd = ev + C;
  }
  size_t n = B * C * S;
  BN_LAUNCH(n, k_bn_apply, nn_blocks(n), NN_BLOCK, x, gamma, beta, mean, invstd, y, C, S, n, act);
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_batchnorm_backward(const float *x, const float *gamma,
                                                    const float *dy, const float *save_mean,
                                                    const float *save_invstd, float *dx,
                                                    float *dgamma, float *dbeta, size_t B,
                                                    size_t C, size_t S) {
  AGT_TRY(agt_nn_batchnorm_check(B, C, S, 0.0f, 1.0f, 1, -1));
  if (!x || !gamma || !dy || !save_mean || !save_invstd || !dgamma || !dbeta)
    return AGT_FAIL(AGT_EINVAL, "batch norm backward on cuda: every array but dx must be a device "
                    "pointer");
  AGT_TRY(agt_gpu_ensure());
  if (C > 65535) return AGT_FAIL(AGT_EINVAL, "batch norm on cuda: at most 65535 channels, got %zu", C);
  unsigned G = bn_parts(C, B * S);
  double *part;
  AGT_TRY(agt_gpu_scratch(C * G * 2 * sizeof(double) + 3 * C * sizeof(float), (void **)&part));
  float *k3 = (float *)(part + C * G * 2);
  BN_LAUNCH(B * C * S, k_bn_grad_part, dim3(G, (unsigned)C), BN_THREADS, x, dy, save_mean,
            save_invstd, part, B, C, S);
  k_bn_grad_final<<<nn_blocks(C), NN_BLOCK>>>(part, G, gamma, save_invstd, dgamma, dbeta, k3, C, B * S);
  AGT_CU_LAUNCH("k_bn_grad_final");
  if (dx) {
    size_t n = B * C * S;
    BN_LAUNCH(n, k_bn_dx, nn_blocks(n), NN_BLOCK, x, dy, save_mean, save_invstd, k3, dx, C, S, n);
  }
  return AGT_OK;
}
