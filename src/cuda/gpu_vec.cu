/* gpu_vec.cu — element-wise vector ops on device memory: the twins of vec.h's agt_vec_fill,
 * agt_vec_scale and agt_vec_axpy, registered by lua/agt/backend.lua as the CUDA backend's
 * vec.fill, vec.scale and vec.axpy.
 *
 * Bit-identical to the CPU: each element gets the same float operations in the same order.
 * The CPU build has no FMA (no -march), so axpy is a rounded product then a rounded sum here
 * too (__fmul_rn/__fadd_rn keep nvcc from contracting them into one fused multiply-add). */
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
