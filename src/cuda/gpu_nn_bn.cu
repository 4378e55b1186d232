/* gpu_nn_bn.cu — batch normalisation on the device: the twins of nn.h's
 * agt_nn_batchnorm_forward and _backward (same arguments), registered by lua/agt/backend.lua as
 * the CUDA backend's nn.batchnorm_forward / _backward.
 *
 * One block per channel sums the channel's B·S values in double (the mean, then the squared
 * deviations from it: the CPU's two passes), in the block's order rather than the CPU's, so
 * the statistics agree with the CPU's to double rounding, which float results almost always
 * hide; the element-wise passes are the CPU's float operations in its order (no fused
 * multiply-adds). */
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

/* Block c: the batch statistics of channel c, saved, and the running statistics moved. */
__global__ void k_bn_stats(const float *x, float *save_mean, float *save_invstd, float *run_mean,
                           float *run_var, size_t B, size_t C, size_t S, float momentum,
                           float eps) {
  __shared__ double sh[BN_THREADS / 32];
  size_t c = blockIdx.x, N = B * S;
  double s = 0.0;
  for (size_t i = threadIdx.x; i < N; i += blockDim.x) s += x[((i / S) * C + c) * S + i % S];
  double m = block_sum(s, sh) / (double)N, v = 0.0;
  for (size_t i = threadIdx.x; i < N; i += blockDim.x) {
    double e = x[((i / S) * C + c) * S + i % S] - m;
    v += e * e;
  }
  v = block_sum(v, sh);
  if (threadIdx.x == 0) {
    double var = v / (double)N;
    save_mean[c] = (float)m;
    save_invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
    if (momentum > 0.0f) {
      double unb = N > 1 ? v / (double)(N - 1) : var, mo = momentum;
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

__global__ void k_bn_apply(const float *x, const float *gamma, const float *beta,
                           const float *mean, const float *invstd, float *y, size_t C, size_t S,
                           size_t n, int act) {
  GRID_STRIDE(i, n) {
    size_t c = (i / S) % C;
    float v = __fadd_rn(__fmul_rn(gamma[c], __fmul_rn(__fsub_rn(x[i], mean[c]), invstd[c])), beta[c]);
    y[i] = act >= 0 ? bn_act(act, v) : v;
  }
}

/* Block c: dgamma_c, dbeta_c, and (into k3[c], k3[C + c], k3[2C + c]) gamma·invstd, dbeta/N,
 * dgamma/N for the dx pass. */
__global__ void k_bn_grads(const float *x, const float *gamma, const float *dy, const float *mean,
                           const float *invstd, float *dgamma, float *dbeta, float *k3, size_t B,
                           size_t C, size_t S) {
  __shared__ double sh[BN_THREADS / 32];
  size_t c = blockIdx.x, N = B * S;
  float mu = mean[c], is = invstd[c];
  double sg = 0.0, sb = 0.0;
  for (size_t i = threadIdx.x; i < N; i += blockDim.x) {
    size_t at = ((i / S) * C + c) * S + i % S;
    float xh = __fmul_rn(__fsub_rn(x[at], mu), is), d = dy[at];
    sb += d;
    sg += (double)d * (double)xh;
  }
  sg = block_sum(sg, sh);
  sb = block_sum(sb, sh);
  if (threadIdx.x == 0) {
    dgamma[c] = (float)sg;
    dbeta[c] = (float)sb;
    k3[c] = __fmul_rn(gamma[c], is);
    k3[C + c] = (float)(sb / (double)N);
    k3[2 * C + c] = (float)(sg / (double)N);
  }
}

__global__ void k_bn_dx(const float *x, const float *dy, const float *mean, const float *invstd,
                        const float *k3, float *dx, size_t C, size_t S, size_t n) {
  GRID_STRIDE(i, n) {
    size_t c = (i / S) % C;
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
  if (C > INT32_MAX) return AGT_FAIL(AGT_EINVAL, "batch norm on cuda: %zu channels", C);
  AGT_TRY(agt_gpu_ensure());
  const float *mean = save_mean, *invstd = save_invstd;
  if (train) {
    k_bn_stats<<<(unsigned)C, BN_THREADS>>>(x, save_mean, save_invstd, run_mean, run_var, B, C, S,
                                            momentum, eps);
    AGT_CU_LAUNCH("k_bn_stats");
  } else {
    float *ev;
    AGT_TRY(agt_gpu_scratch(2 * C * sizeof(float), (void **)&ev));
    k_bn_eval_stats<<<nn_blocks(C), NN_BLOCK>>>(run_mean, run_var, ev, ev + C, C, eps);
    AGT_CU_LAUNCH("k_bn_eval_stats");
    mean = ev;
    invstd = ev + C;
  }
  size_t n = B * C * S;
  k_bn_apply<<<nn_blocks(n), NN_BLOCK>>>(x, gamma, beta, mean, invstd, y, C, S, n, act);
  AGT_CU_LAUNCH("k_bn_apply");
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
  if (C > INT32_MAX) return AGT_FAIL(AGT_EINVAL, "batch norm on cuda: %zu channels", C);
  AGT_TRY(agt_gpu_ensure());
  float *k3;
  AGT_TRY(agt_gpu_scratch(3 * C * sizeof(float), (void **)&k3));
  k_bn_grads<<<(unsigned)C, BN_THREADS>>>(x, gamma, dy, save_mean, save_invstd, dgamma, dbeta, k3,
                                          B, C, S);
  AGT_CU_LAUNCH("k_bn_grads");
  if (dx) {
    size_t n = B * C * S;
    k_bn_dx<<<nn_blocks(n), NN_BLOCK>>>(x, dy, save_mean, save_invstd, k3, dx, C, S, n);
    AGT_CU_LAUNCH("k_bn_dx");
  }
  return AGT_OK;
}
