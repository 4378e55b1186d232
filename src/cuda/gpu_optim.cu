/* gpu_optim.cu — the optimizers and the L1/L2 terms on the device: the twins of optim.h's
 * agt_optim_sgd, _momentum (Nesterov too), _adam, _adagrad, _adadelta, _rmsprop, _l1 and _l2
 * (same arguments, the penalty a host pointer), registered by lua/agt/backend.lua as the CUDA
 * backend's optim.* ops.
 *
 * Updates are bit-identical to the CPU: each element gets the twin's float operations in the
 * same order (__f*_rn: no fused multiply-add; IEEE division and square root), and Adam's step
 * size is computed on the host in double as there. The penalties sum in double per block, the
 * partial sums added on the host in block order: the same value for a given d on every run,
 * within 1e-12 of the CPU's chunked sum. */
#include "gpu_internal.h"

#include <math.h>

extern "C" {
#include "gpu_nn.h"
}

#define OPT_BLOCK 256
#define OPT_MAX_BLOCKS 65536   /* grid-stride loops beyond this */
#define REG_BLOCKS 256         /* blocks of the penalty's reduction (its partial sums) */

static unsigned opt_blocks(size_t n) {
  size_t b = (n + OPT_BLOCK - 1) / OPT_BLOCK;
  return (unsigned)(b == 0 ? 1 : b > OPT_MAX_BLOCKS ? OPT_MAX_BLOCKS : b);
}

#define GRID_STRIDE(i, n)                                                         \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);        \
       i += (size_t)gridDim.x * blockDim.x)

#define MUL __fmul_rn
#define ADD __fadd_rn
#define SUB __fsub_rn
#define DIV __fdiv_rn
#define SQRT __fsqrt_rn

enum { K_SGD, K_MOMENTUM, K_NESTEROV, K_ADAM, K_ADAGRAD, K_ADADELTA, K_RMSPROP, K_RMSPROP_C };

/* One kernel, the kind a launch constant: the formulas of optim.h, in optim.c's order. */
__global__ void k_opt(int kind, float *th, float *s1, float *s2, float *s3, const float *g,
                      size_t d, float lr, float a, float b, float eps) {
  GRID_STRIDE(i, d) {
    float gi = g[i];
    switch (kind) {
    case K_SGD: th[i] = SUB(th[i], MUL(lr, gi)); break;
    case K_MOMENTUM: {
      float acc = ADD(MUL(a, s1[i]), gi);
      s1[i] = acc;
      th[i] = SUB(th[i], MUL(lr, acc));
      break;
    }
    case K_NESTEROV: {
      float acc = ADD(MUL(a, s1[i]), gi);
      s1[i] = acc;
      th[i] = SUB(th[i], ADD(MUL(lr, gi), MUL(MUL(lr, a), acc)));
      break;
    }
    case K_ADAM: {   /* lr is already lr·√(1−β2ᵗ)/(1−β1ᵗ) */
      float m = ADD(s1[i], MUL(SUB(gi, s1[i]), SUB(1.0f, a)));
      float v = ADD(s2[i], MUL(SUB(MUL(gi, gi), s2[i]), SUB(1.0f, b)));
      s1[i] = m;
      s2[i] = v;
      th[i] = SUB(th[i], DIV(MUL(lr, m), ADD(SQRT(v), eps)));
      break;
    }
    case K_ADAGRAD: {
      float acc = ADD(s1[i], MUL(gi, gi));
      s1[i] = acc;
      th[i] = SUB(th[i], DIV(MUL(lr, gi), SQRT(acc)));
      break;
    }
    case K_ADADELTA: {
      float acc = ADD(MUL(s1[i], a), MUL(MUL(gi, gi), SUB(1.0f, a)));
      s1[i] = acc;
      float u = MUL(DIV(SQRT(ADD(s2[i], eps)), SQRT(ADD(acc, eps))), gi);
      th[i] = SUB(th[i], MUL(u, lr));
      s2[i] = ADD(MUL(s2[i], a), MUL(MUL(u, u), SUB(1.0f, a)));
      break;
    }
    case K_RMSPROP: {
      float ms = ADD(s1[i], MUL(SUB(MUL(gi, gi), s1[i]), SUB(1.0f, a)));
      s1[i] = ms;
      float mom = ADD(MUL(s3[i], b), DIV(MUL(lr, gi), SQRT(ADD(ms, eps))));
      s3[i] = mom;
      th[i] = SUB(th[i], mom);
      break;
    }
    default: {   /* K_RMSPROP_C */
      float ms = ADD(s1[i], MUL(SUB(MUL(gi, gi), s1[i]), SUB(1.0f, a)));
      float mg = ADD(s2[i], MUL(SUB(gi, s2[i]), SUB(1.0f, a)));
      s1[i] = ms;
      s2[i] = mg;
      float den = ADD(SUB(ms, MUL(mg, mg)), eps);
      float mom = ADD(MUL(s3[i], b), DIV(MUL(lr, gi), SQRT(den)));
      s3[i] = mom;
      th[i] = SUB(th[i], mom);
      break;
    }
    }
  }
}

/* g += λ·sign(θ) (l1) or λ·θ; part[block] = Σ |θ| or Σ θ² (double) over the block's share */
__global__ void k_reg(const float *th, float *g, size_t d, float lam, int l1, double *part) {
  __shared__ double sh[OPT_BLOCK];
  double s = 0.0;
  GRID_STRIDE(i, d) {
    float w = th[i];
    if (l1) {
      s += fabs((double)w);
      g[i] = ADD(g[i], w > 0.0f ? lam : (w < 0.0f ? -lam : 0.0f));
    } else {
      s += (double)w * (double)w;
      g[i] = ADD(g[i], MUL(lam, w));
    }
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (unsigned h = blockDim.x / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

#define NEED(p) do { if (!(p)) return AGT_FAIL(AGT_EINVAL, "%s: " #p " must be a device pointer, not NULL", __func__); } while (0)

static agt_status run(int kind, float *th, float *s1, float *s2, float *s3, const float *g, size_t d,
                      float lr, float a, float b, float eps) {
  AGT_TRY(agt_gpu_ensure());
  if (d == 0) return AGT_OK;
  k_opt<<<opt_blocks(d), OPT_BLOCK>>>(kind, th, s1, s2, s3, g, d, lr, a, b, eps);
  AGT_CU_LAUNCH("k_opt");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_optim_sgd(float *theta, const float *g, size_t d, float lr) {
  NEED(theta); NEED(g);
  return run(K_SGD, theta, NULL, NULL, NULL, g, d, lr, 0, 0, 0);
}

extern "C" agt_status agt_gpu_optim_momentum(float *theta, float *accum, const float *g, size_t d,
                                             float lr, float momentum, int nesterov) {
  NEED(theta); NEED(g); NEED(accum);
  return run(nesterov ? K_NESTEROV : K_MOMENTUM, theta, accum, NULL, NULL, g, d, lr, momentum, 0, 0);
}

extern "C" agt_status agt_gpu_optim_adam(float *theta, float *m, float *v, const float *g, size_t d,
                                         float lr, float beta1, float beta2, float eps, double t) {
  NEED(theta); NEED(g); NEED(m); NEED(v);
  if (!(t >= 1.0)) return AGT_FAIL(AGT_EINVAL, "adam: the update index t must be >= 1, got %g", t);
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    return AGT_FAIL(AGT_EINVAL, "adam: betas must be in [0, 1), got beta1=%g beta2=%g", (double)beta1, (double)beta2);
  double alpha = (double)lr * sqrt(1.0 - pow((double)beta2, t)) / (1.0 - pow((double)beta1, t));
  return run(K_ADAM, theta, m, v, NULL, g, d, (float)alpha, beta1, beta2, eps);
}

extern "C" agt_status agt_gpu_optim_adagrad(float *theta, float *accum, const float *g, size_t d,
                                            float lr) {
  NEED(theta); NEED(g); NEED(accum);
  return run(K_ADAGRAD, theta, accum, NULL, NULL, g, d, lr, 0, 0, 0);
}

extern "C" agt_status agt_gpu_optim_adadelta(float *theta, float *accum, float *accum_update,
                                             const float *g, size_t d, float lr, float rho, float eps) {
  NEED(theta); NEED(g); NEED(accum); NEED(accum_update);
  return run(K_ADADELTA, theta, accum, accum_update, NULL, g, d, lr, rho, 0, eps);
}

extern "C" agt_status agt_gpu_optim_rmsprop(float *theta, float *ms, float *mg, float *mom,
                                            const float *g, size_t d, float lr, float decay,
                                            float momentum, float eps) {
  NEED(theta); NEED(g); NEED(ms); NEED(mom);
  return run(mg ? K_RMSPROP_C : K_RMSPROP, theta, ms, mg, mom, g, d, lr, decay, momentum, eps);
}

static agt_status reg(const float *theta, float *g, size_t d, float lambda, int l1, double *penalty) {
  if (!theta || !g) return AGT_FAIL(AGT_EINVAL, "%s on cuda: theta and g must be device pointers", l1 ? "l1" : "l2");
  if (!penalty) return AGT_FAIL(AGT_EINVAL, "%s on cuda: penalty must be a host pointer", l1 ? "l1" : "l2");
  AGT_TRY(agt_gpu_ensure());
  double total = 0.0;
  if (d > 0) {
    size_t nb = (d + OPT_BLOCK - 1) / OPT_BLOCK;
    if (nb > REG_BLOCKS) nb = REG_BLOCKS;
    void *dev, *host;
    AGT_TRY(agt_gpu_scratch(nb * sizeof(double), &dev));
    AGT_TRY(agt_gpu_host_scratch(nb * sizeof(double), &host));
    k_reg<<<(unsigned)nb, OPT_BLOCK>>>(theta, g, d, lambda, l1, (double *)dev);
    AGT_CU_LAUNCH("k_reg");
    AGT_CU(cudaMemcpy(host, dev, nb * sizeof(double), cudaMemcpyDeviceToHost));
    for (size_t b = 0; b < nb; b++) total += ((const double *)host)[b];
  }
  *penalty = l1 ? (double)lambda * total : 0.5 * (double)lambda * total;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_optim_l1(const float *theta, float *g, size_t d, float lambda,
                                       double *penalty) {
  return reg(theta, g, d, lambda, 1, penalty);
}

extern "C" agt_status agt_gpu_optim_l2(const float *theta, float *g, size_t d, float lambda,
                                       double *penalty) {
  return reg(theta, g, d, lambda, 0, penalty);
}
