/* gpu_nn.cu — the dense layer, activations, bias and softmax cross-entropy on the device: the
 * twins of nn.h's agt_nn_linear_forward/_backward, _act_forward/_backward, _bias_act and
 * _softmax_xent (same arguments; gpu_nn.h says which results are bit-identical), registered by
 * lua/agt/backend.lua as the CUDA backend's nn.* ops.
 *
 * Each element gets the CPU twin's float operations in the same order; __fmul_rn, __fadd_rn
 * and __fsub_rn keep nvcc from fusing them (the CPU build has no FMA). The dense layer's
 * products go through agt_gpu_gemm (cuBLAS). */
#include "gpu_nn_internal.h"

__device__ __forceinline__ float act_fwd(int act, float x) {
  switch (act) {
  case AGT_NN_RELU: return x > 0.0f ? x : 0.0f;
  case AGT_NN_TANH: return tanhf(x);
  default: return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
  }
}

/* y = act(x) over n values (y may be x) */
__global__ void k_act_fwd(int act, const float *x, float *y, size_t n) {
  GRID_STRIDE(i, n) y[i] = act_fwd(act, x[i]);
}

/* dx from the forward output y and dy over n values (dx may be dy) */
__global__ void k_act_bwd(int act, const float *y, const float *dy, float *dx, size_t n) {
  GRID_STRIDE(i, n) {
    float yi = y[i], g = dy[i];
    switch (act) {
    case AGT_NN_RELU: dx[i] = yi > 0.0f ? g : 0.0f; break;
    case AGT_NN_TANH: dx[i] = __fmul_rn(g, __fsub_rn(1.0f, __fmul_rn(yi, yi))); break;
    default: dx[i] = __fmul_rn(__fmul_rn(g, yi), __fsub_rn(1.0f, yi)); break;
    }
  }
}

/* x (B, C, S): x += b[c] (b may be NULL), then act (-1: none) */
__global__ void k_bias_act(float *x, const float *b, size_t C, size_t S, size_t n, int act) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    if (b) v = __fadd_rn(v, b[(i / S) % C]);
    x[i] = act >= 0 ? act_fwd(act, v) : v;
  }
}

/* y = act(a + b) */
__global__ void k_add_act(const float *a, const float *b, float *y, size_t n, int act) {
  GRID_STRIDE(i, n) {
    float v = __fadd_rn(a[i], b[i]);
    y[i] = act >= 0 ? act_fwd(act, v) : v;
  }
}

/* y (B, out) = b broadcast over the rows */
__global__ void k_rows_set(float *y, const float *b, size_t out, size_t n) {
  GRID_STRIDE(i, n) y[i] = b[i % out];
}

/* db (out) = Σ_i dy[i, :] summed in row order, as the CPU twin */
__global__ void k_bias_grad(const float *dy, float *db, size_t B, size_t out) {
  GRID_STRIDE(j, out) {
    float s = dy[j];
    for (size_t i = 1; i < B; i++) s = __fadd_rn(s, dy[i * out + j]);
    db[j] = s;
  }
}

/* One thread per example: the row's loss (double) into loss[i], its gradient into dlogits
 * (when not NULL), flag[i] = -1 when the label is out of range. */
__global__ void k_softmax_xent(const float *logits, const int32_t *y, size_t B, size_t K,
                               float inv_b, double *loss, int32_t *flag, float *dlogits) {
  GRID_STRIDE(i, B) {
    int32_t label = y[i];
    if (label < 0 || (size_t)label >= K) {
      flag[i] = -1;
      loss[i] = 0.0;
      continue;
    }
    flag[i] = 0;
    const float *z = logits + i * K;
    float m = z[0];
    for (size_t k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
    double s = 0.0;
    for (size_t k = 0; k < K; k++) s += exp((double)z[k] - (double)m);
    double lse = (double)m + log(s);
    loss[i] = lse - (double)z[label];
    if (dlogits) {
      float *d = dlogits + i * K;
      for (size_t k = 0; k < K; k++) d[k] = __fmul_rn((float)exp((double)z[k] - lse), inv_b);
      d[label] = __fsub_rn(d[label], inv_b);
    }
  }
}

/* Evaluation, one thread per example: loss[i] = its cross-entropy, flag[i] = 1 when its argmax
 * (ties: the lowest index; never with a NaN in the row) is the label, -1 for a bad label. */
__global__ void k_eval_rows(const float *logits, const int32_t *y, size_t B, size_t K,
                            double *loss, int32_t *flag) {
  GRID_STRIDE(i, B) {
    int32_t label = y[i];
    if (label < 0 || (size_t)label >= K) {
      flag[i] = -1;
      loss[i] = 0.0;
      continue;
    }
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
    loss[i] = (double)m + log(s) - (double)z[label];
    flag[i] = !nan && arg == (size_t)label;
  }
}

/* The per-example results of k_softmax_xent / k_eval_rows back on the host: *loss_sum = their
 * sum in example order (the CPU's), *correct = the number of flags 1; a bad label is AGT_EINVAL
 * naming the first such example. dev/host: scratch of rows_bytes(B). */
static size_t rows_bytes(size_t B) { return B * (sizeof(double) + sizeof(int32_t)); }

static agt_status rows_back(const void *dev, void *host, const int32_t *y, size_t B, size_t K,
                            double *loss_sum, size_t *correct) {
  AGT_CU(cudaMemcpy(host, dev, rows_bytes(B), cudaMemcpyDeviceToHost));
  const double *row = (const double *)host;
  const int32_t *flag = (const int32_t *)(row + B);
  double total = 0.0;
  size_t ok = 0;
  for (size_t i = 0; i < B; i++) {
    if (flag[i] < 0) {
      int32_t label;
      AGT_CU(cudaMemcpy(&label, y + i, sizeof label, cudaMemcpyDeviceToHost));
      return AGT_FAIL(AGT_EINVAL, "label %d of example %zu is out of range [0, %zu)", (int)label, i, K);
    }
    total += row[i];
    ok += flag[i] == 1;
  }
  *loss_sum = total;
  if (correct) *correct = ok;
  return AGT_OK;
}

static agt_status act_check(int act) {
  if (act < AGT_NN_RELU || act > AGT_NN_SIGMOID)
    return AGT_FAIL(AGT_EINVAL, "activation must be 0 (relu), 1 (tanh) or 2 (sigmoid), got %d", act);
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_linear_forward(const float *x, const float *W, const float *b,
                                                float *y, size_t B, size_t in, size_t out) {
  if (B == 0 || in == 0 || out == 0)
    return AGT_FAIL(AGT_EINVAL, "linear: empty shape B=%zu in=%zu out=%zu", B, in, out);
  if (!x || !W || !y) return AGT_FAIL(AGT_EINVAL, "linear on cuda: x, W and y must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  float beta = 0.0f;
  if (b) {
    k_rows_set<<<nn_blocks(B * out), NN_BLOCK>>>(y, b, out, B * out);
    AGT_CU_LAUNCH("k_rows_set");
    beta = 1.0f;
  }
  return agt_gpu_gemm(0, 0, B, out, in, 1.0f, x, in, W, out, beta, y, out);
}

extern "C" agt_status agt_gpu_nn_linear_backward(const float *x, const float *W, const float *dy,
                                                 float *dx, float *dW, float *db,
                                                 size_t B, size_t in, size_t out) {
  if (B == 0 || in == 0 || out == 0)
    return AGT_FAIL(AGT_EINVAL, "linear: empty shape B=%zu in=%zu out=%zu", B, in, out);
  if (!x || !W || !dy || !dW)
    return AGT_FAIL(AGT_EINVAL, "linear backward on cuda: x, W, dy and dW must be device pointers");
  AGT_TRY(agt_gpu_gemm(1, 0, in, out, B, 1.0f, x, in, dy, out, 0.0f, dW, out));
  if (db) {
    k_bias_grad<<<nn_blocks(out), NN_BLOCK>>>(dy, db, B, out);
    AGT_CU_LAUNCH("k_bias_grad");
  }
  if (dx) AGT_TRY(agt_gpu_gemm(0, 1, B, in, out, 1.0f, dy, out, W, out, 0.0f, dx, in));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_act_forward(int act, const float *x, float *y, size_t n) {
  AGT_TRY(act_check(act));
  if (n == 0) return AGT_OK;
  if (!x || !y) return AGT_FAIL(AGT_EINVAL, "activation on cuda: x and y must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  k_act_fwd<<<nn_blocks(n), NN_BLOCK>>>(act, x, y, n);
  AGT_CU_LAUNCH("k_act_fwd");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_act_backward(int act, const float *y, const float *dy, float *dx,
                                              size_t n) {
  AGT_TRY(act_check(act));
  if (n == 0) return AGT_OK;
  if (!y || !dy || !dx)
    return AGT_FAIL(AGT_EINVAL, "activation backward on cuda: y, dy and dx must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  k_act_bwd<<<nn_blocks(n), NN_BLOCK>>>(act, y, dy, dx, n);
  AGT_CU_LAUNCH("k_act_bwd");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_bias_act(float *x, const float *b, size_t B, size_t C, size_t S,
                                          int act) {
  if (act != -1) AGT_TRY(act_check(act));
  size_t n = B * C * S;
  if (n == 0) return AGT_OK;
  if (!x) return AGT_FAIL(AGT_EINVAL, "bias/activation on cuda: x must be a device pointer");
  AGT_TRY(agt_gpu_ensure());
  k_bias_act<<<nn_blocks(n), NN_BLOCK>>>(x, b, C, S, n, act);
  AGT_CU_LAUNCH("k_bias_act");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_softmax_xent(const float *logits, const int32_t *y, size_t B,
                                              size_t K, double *loss, float *dlogits) {
  if (B == 0 || K == 0)
    return AGT_FAIL(AGT_EINVAL, "softmax cross-entropy: empty shape B=%zu K=%zu", B, K);
  if (!logits || !y || !loss)
    return AGT_FAIL(AGT_EINVAL, "softmax cross-entropy on cuda: logits and y must be device "
                    "pointers and loss a host pointer");
  void *dev, *host;
  AGT_TRY(agt_gpu_scratch(rows_bytes(B), &dev));
  AGT_TRY(agt_gpu_host_scratch(rows_bytes(B), &host));
  double *row_d = (double *)dev;
  k_softmax_xent<<<nn_blocks(B), NN_BLOCK>>>(logits, y, B, K, 1.0f / (float)B, row_d,
                                             (int32_t *)(row_d + B), dlogits);
  AGT_CU_LAUNCH("k_softmax_xent");
  double total;
  AGT_TRY(rows_back(dev, host, y, B, K, &total, NULL));
  *loss = total / (double)B;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_nn_eval_batch(const float *logits, const int32_t *y, size_t B,
                                            size_t K, double *loss_sum, size_t *correct) {
  if (B == 0 || K == 0) return AGT_FAIL(AGT_EINVAL, "evaluation: empty shape B=%zu K=%zu", B, K);
  if (!logits || !y || !loss_sum || !correct)
    return AGT_FAIL(AGT_EINVAL, "evaluation on cuda: logits and y must be device pointers, "
                    "loss_sum and correct host pointers");
  void *dev, *host;
  AGT_TRY(agt_gpu_scratch(rows_bytes(B), &dev));
  AGT_TRY(agt_gpu_host_scratch(rows_bytes(B), &host));
  double *row_d = (double *)dev;
  k_eval_rows<<<nn_blocks(B), NN_BLOCK>>>(logits, y, B, K, row_d, (int32_t *)(row_d + B));
  AGT_CU_LAUNCH("k_eval_rows");
  return rows_back(dev, host, y, B, K, loss_sum, correct);
}

extern "C" agt_status agt_gpu_nn_add_act(const float *a, const float *b, float *y, size_t n, int act) {
  if (act != -1) AGT_TRY(act_check(act));
  if (n == 0) return AGT_OK;
  if (!a || !b || !y) return AGT_FAIL(AGT_EINVAL, "add on cuda: a, b and y must be device pointers");
  AGT_TRY(agt_gpu_ensure());
  k_add_act<<<nn_blocks(n), NN_BLOCK>>>(a, b, y, n, act);
  AGT_CU_LAUNCH("k_add_act");
  return AGT_OK;
}
