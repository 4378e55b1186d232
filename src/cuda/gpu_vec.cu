/* gpu_vec.cu — vector ops on device memory: the twins of vec.h's element-wise ops (fill,
 * scale, axpy, add, sub, mul), its reductions (sum, dot, norm2, sqdist) and its row reductions
 * (rows_mean, rows_std), registered by lua/agt/backend.lua as the CUDA backend's vec.*; and the
 * asynchronous upload of a page-locked batch on a copy stream (agt_gpu_copy_h2d_async).
 *
 * Element-wise ops and the row reductions are bit-identical to the CPU: each element gets the
 * same float (or double) operations in the same order. The CPU build has no FMA (no -march),
 * so axpy is a rounded product then a rounded sum here too (__fmul_rn/__fadd_rn, __dmul_rn/
 * __dadd_rn keep nvcc from contracting them into one fused multiply-add). The reductions over
 * one vector sum doubles in another order than the CPU's chunks: they agree to double
 * rounding (a relative 1e-12 for d in the millions), and a NaN or an inf gives the same. */
#include "gpu_internal.h"

#define VEC_BLOCK 256
#define VEC_MAX_BLOCKS 65536   /* grid-stride loops beyond this */

static unsigned vec_blocks(size_t n) {
  size_t b = (n + VEC_BLOCK - 1) / VEC_BLOCK;
  return (unsigned)(b > VEC_MAX_BLOCKS ? VEC_MAX_BLOCKS : b);
}

__global__ void k_vec_fill(float *x, size_t n, float v) {   /* x: n */
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) x[i] = v;
}

__global__ void k_vec_scale(float *x, size_t n, float a) {  /* x: n, x *= a */
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    x[i] = __fmul_rn(x[i], a);
}

__global__ void k_vec_axpy(float *y, const float *x, size_t n, float a) {  /* y += a x */
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = __fadd_rn(y[i], __fmul_rn(a, x[i]));
}

extern "C" agt_status agt_gpu_vec_fill(float *x, size_t n, float v) {
  AGT_TRY(agt_gpu_ensure());
  if (n == 0) return AGT_OK;
  if (!x) return AGT_FAIL(AGT_EINVAL, "vec.fill: x must be a device pointer");
  k_vec_fill<<<vec_blocks(n), VEC_BLOCK>>>(x, n, v);
  AGT_CU_LAUNCH("k_vec_fill");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_vec_scale(float *x, size_t n, float a) {
  AGT_TRY(agt_gpu_ensure());
  if (n == 0) return AGT_OK;
  if (!x) return AGT_FAIL(AGT_EINVAL, "vec.scale: x must be a device pointer");
  k_vec_scale<<<vec_blocks(n), VEC_BLOCK>>>(x, n, a);
  AGT_CU_LAUNCH("k_vec_scale");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_vec_axpy(float *y, const float *x, size_t n, float a) {
  AGT_TRY(agt_gpu_ensure());
  if (n == 0) return AGT_OK;
  if (!x || !y) return AGT_FAIL(AGT_EINVAL, "vec.axpy: x and y must be device pointers");
  k_vec_axpy<<<vec_blocks(n), VEC_BLOCK>>>(y, x, n, a);
  AGT_CU_LAUNCH("k_vec_axpy");
  return AGT_OK;
}

__global__ void k_vec_ew(int op, float *o, const float *a, const float *b, size_t n) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    o[i] = op == 0 ? __fadd_rn(a[i], b[i]) : op == 1 ? __fsub_rn(a[i], b[i]) : __fmul_rn(a[i], b[i]);
}

static agt_status vec_ew(int op, const char *name, float *o, const float *a, const float *b, size_t n) {
  AGT_TRY(agt_gpu_ensure());
  if (n == 0) return AGT_OK;
  if (!o || !a || !b) return AGT_FAIL(AGT_EINVAL, "vec.%s: out, a and b must be device pointers", name);
  k_vec_ew<<<vec_blocks(n), VEC_BLOCK>>>(op, o, a, b, n);
  AGT_CU_LAUNCH("k_vec_ew");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_vec_add(float *o, const float *a, const float *b, size_t n) {
  return vec_ew(0, "add", o, a, b, n);
}
extern "C" agt_status agt_gpu_vec_sub(float *o, const float *a, const float *b, size_t n) {
  return vec_ew(1, "sub", o, a, b, n);
}
extern "C" agt_status agt_gpu_vec_mul(float *o, const float *a, const float *b, size_t n) {
  return vec_ew(2, "mul", o, a, b, n);
}

/* ---- reductions: per-block double partial sums, then the blocks' partials summed in order on
 * the host (at most RED_BLOCKS of them) ---------------------------------------------------- */

#define RED_BLOCK 256
#define RED_BLOCKS 1024

enum { RED_SUM = 0, RED_DOT = 1, RED_SQ = 2, RED_SQDIST = 3 };

__global__ void k_vec_reduce(int op, const float *x, const float *y, size_t n, double *part) {
  __shared__ double s[RED_BLOCK];
  double acc = 0;
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    double v;
    if (op == RED_SUM) v = (double)x[i];
    else if (op == RED_DOT) v = __dmul_rn((double)x[i], (double)y[i]);
    else if (op == RED_SQ) v = __dmul_rn((double)x[i], (double)x[i]);
    else { double t = __dsub_rn((double)x[i], (double)y[i]); v = __dmul_rn(t, t); }
    acc = __dadd_rn(acc, v);
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = RED_BLOCK / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) s[threadIdx.x] = __dadd_rn(s[threadIdx.x], s[threadIdx.x + w]);
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}

static agt_status vec_reduce(int op, const char *name, const float *x, const float *y, size_t n,
                             double *out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "vec.%s: out must be a host pointer", name);
  *out = 0;
  AGT_TRY(agt_gpu_ensure());
  if (n == 0) return AGT_OK;
  if (!x || (op != RED_SUM && op != RED_SQ && !y))
    return AGT_FAIL(AGT_EINVAL, "vec.%s: the vectors must be device pointers", name);
  size_t b = (n + RED_BLOCK - 1) / RED_BLOCK;
  unsigned blocks = (unsigned)(b > RED_BLOCKS ? RED_BLOCKS : b);
  void *dev, *host;
  AGT_TRY(agt_gpu_scratch(blocks * sizeof(double), &dev));
  AGT_TRY(agt_gpu_host_scratch(blocks * sizeof(double), &host));
  k_vec_reduce<<<blocks, RED_BLOCK>>>(op, x, y, n, (double *)dev);
  AGT_CU_LAUNCH("k_vec_reduce");
  AGT_CU(cudaMemcpy(host, dev, blocks * sizeof(double), cudaMemcpyDeviceToHost));
  double acc = 0;
  for (unsigned k = 0; k < blocks; k++) acc += ((const double *)host)[k];
  *out = acc;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_vec_sum(const float *x, size_t n, double *out) {
  return vec_reduce(RED_SUM, "sum", x, NULL, n, out);
}
extern "C" agt_status agt_gpu_vec_dot(const float *x, const float *y, size_t n, double *out) {
  return vec_reduce(RED_DOT, "dot", x, y, n, out);
}
extern "C" agt_status agt_gpu_vec_norm2(const float *x, size_t n, double *out) {
  AGT_TRY(vec_reduce(RED_SQ, "norm2", x, NULL, n, out));
  *out = sqrt(*out);
  return AGT_OK;
}
extern "C" agt_status agt_gpu_vec_sqdist(const float *x, const float *y, size_t n, double *out) {
  return vec_reduce(RED_SQDIST, "sqdist", x, y, n, out);
}

/* ---- per-row reductions: a 2-D grid, blockIdx.y the row; the partials of each row summed in
 * order on the host ------------------------------------------------------------------------ */

__global__ void k_rows_reduce(int op, const float *G, size_t d, const float *v, double *part) {
  __shared__ double s[RED_BLOCK];
  const float *x = G + (size_t)blockIdx.y * d;
  double acc = 0;
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += stride) {
    double t = op == RED_SQ ? (double)x[i] : __dsub_rn((double)x[i], (double)v[i]);
    acc = __dadd_rn(acc, __dmul_rn(t, t));
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = RED_BLOCK / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) s[threadIdx.x] = __dadd_rn(s[threadIdx.x], s[threadIdx.x + w]);
    __syncthreads();
  }
  if (threadIdx.x == 0) part[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s[0];
}

static agt_status rows_reduce(int op, const char *name, const float *G, size_t n, size_t d,
                              const float *v, double *out) {
  if (!out && n > 0) return AGT_FAIL(AGT_EINVAL, "vec.%s: out must be a host pointer", name);
  AGT_TRY(agt_gpu_ensure());
  if (n == 0) return AGT_OK;
  if (n > 65535) return AGT_FAIL(AGT_EINVAL, "vec.%s: at most 65535 rows, got %zu", name, n);
  if (d == 0) {
    for (size_t i = 0; i < n; i++) out[i] = 0;
    return AGT_OK;
  }
  if (!G || (op == RED_SQDIST && !v))
    return AGT_FAIL(AGT_EINVAL, "vec.%s: G (and v) must be device pointers", name);
  size_t b = (d + RED_BLOCK - 1) / RED_BLOCK;
  size_t per = RED_BLOCKS / n;          /* about RED_BLOCKS blocks in all */
  if (per < 1) per = 1;
  unsigned blocks = (unsigned)(b < per ? b : per);
  void *dev, *host;
  AGT_TRY(agt_gpu_scratch(n * blocks * sizeof(double), &dev));
  AGT_TRY(agt_gpu_host_scratch(n * blocks * sizeof(double), &host));
  k_rows_reduce<<<dim3(blocks, (unsigned)n), RED_BLOCK>>>(op, G, d, v, (double *)dev);
  AGT_CU_LAUNCH("k_rows_reduce");
  AGT_CU(cudaMemcpy(host, dev, n * blocks * sizeof(double), cudaMemcpyDeviceToHost));
  const double *p = (const double *)host;
  for (size_t i = 0; i < n; i++) {
    double acc = 0;
    for (unsigned k = 0; k < blocks; k++) acc += p[i * blocks + k];
    out[i] = op == RED_SQ ? sqrt(acc) : acc;
  }
  return AGT_OK;
}

extern "C" agt_status agt_gpu_rows_norm2(const float *G, size_t n, size_t d, double *out) {
  return rows_reduce(RED_SQ, "rows_norm2", G, n, d, NULL, out);
}
extern "C" agt_status agt_gpu_rows_sqdist(const float *G, size_t n, size_t d, const float *v,
                                          double *out) {
  return rows_reduce(RED_SQDIST, "rows_sqdist", G, n, d, v, out);
}

/* ---- rows of a row-major n x d matrix: one thread per column, the rows in order, in double, as
 * vec.c's rows_mean_range / rows_std_range ---------------------------------------------------- */

__global__ void k_rows_mean(const float *G, size_t n, size_t d, float *out) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < d; j += stride) {
    double acc = 0;
    for (size_t i = 0; i < n; i++) acc = __dadd_rn(acc, (double)G[i * d + j]);
    out[j] = (float)__ddiv_rn(acc, (double)n);
  }
}

__global__ void k_rows_std(const float *G, size_t n, size_t d, const float *mean, double den,
                           float *out) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < d; j += stride) {
    double acc = 0, m = (double)mean[j];
    for (size_t i = 0; i < n; i++) {
      double t = __dsub_rn((double)G[i * d + j], m);
      acc = __dadd_rn(acc, __dmul_rn(t, t));
    }
    out[j] = (float)__dsqrt_rn(__ddiv_rn(acc, den));
  }
}

extern "C" agt_status agt_gpu_rows_mean(const float *G, size_t n, size_t d, float *out) {
  AGT_TRY(agt_gpu_ensure());
  if (d == 0) return AGT_OK;
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "vec.rows_mean: G and out must be device pointers");
  k_rows_mean<<<vec_blocks(d), VEC_BLOCK>>>(G, n, d, out);
  AGT_CU_LAUNCH("k_rows_mean");
  return AGT_OK;
}

extern "C" agt_status agt_gpu_rows_std(const float *G, size_t n, size_t d, const float *mean,
                                       int ddof, float *out) {
  AGT_TRY(agt_gpu_ensure());
  if (d == 0) return AGT_OK;
  if (!G || !mean || !out)
    return AGT_FAIL(AGT_EINVAL, "vec.rows_std: G, mean and out must be device pointers");
  k_rows_std<<<vec_blocks(d), VEC_BLOCK>>>(G, n, d, mean, (double)n - ddof, out);
  AGT_CU_LAUNCH("k_rows_std");
  return AGT_OK;
}

/* ---- batches ahead of use: page-locked host ranges to the device on a copy stream ------------ */

static cudaStream_t g_batch = NULL;
static cudaEvent_t g_batch_before = NULL, g_batch_after = NULL;

extern "C" agt_status agt_gpu_copy_h2d_async(void *dst_dev, const void *src_host, size_t bytes) {
  AGT_TRY(agt_gpu_ensure());
  if (bytes == 0) return AGT_OK;
  if (!dst_dev || !src_host)
    return AGT_FAIL(AGT_EINVAL, "copy_h2d_async: needs a device destination and a host source");
  if (!g_batch) {
    AGT_CU(cudaStreamCreateWithFlags(&g_batch, cudaStreamNonBlocking));
    AGT_CU(cudaEventCreateWithFlags(&g_batch_before, cudaEventDisableTiming));
    AGT_CU(cudaEventCreateWithFlags(&g_batch_after, cudaEventDisableTiming));
  }
  /* the copy waits for the work already queued on the default stream (which may still read
   * dst); the host does not wait */
  AGT_CU(cudaEventRecord(g_batch_before, 0));
  AGT_CU(cudaStreamWaitEvent(g_batch, g_batch_before, 0));
  AGT_CU(cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, g_batch));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_copy_async_join(void) {
  if (!g_batch) return AGT_OK;
  AGT_CU(cudaEventRecord(g_batch_after, g_batch));
  AGT_CU(cudaStreamWaitEvent(0, g_batch_after, 0));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_copy_async_wait(void) {
  if (!g_batch) return AGT_OK;
  AGT_CU(cudaStreamSynchronize(g_batch));
  return AGT_OK;
}
