/* gpu_nn_internal.h — what the training kernels' files (gpu_nn*.cu) share: launch sizes for
 * element-wise kernels (grid-stride loops past NN_MAX_BLOCKS blocks) and the entries they call
 * in one another. */
#ifndef AGT_GPU_NN_INTERNAL_H
#define AGT_GPU_NN_INTERNAL_H

#include "gpu_internal.h"

extern "C" {
#include "nn.h"
#include "gpu_nn.h"
}

#define NN_BLOCK 256
#define NN_MAX_BLOCKS 65536

static inline unsigned nn_blocks(size_t n) {
  size_t b = (n + NN_BLOCK - 1) / NN_BLOCK;
  return (unsigned)(b == 0 ? 1 : b > NN_MAX_BLOCKS ? NN_MAX_BLOCKS : b);
}

#define GRID_STRIDE(i, n)                                                         \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);        \
       i += (size_t)gridDim.x * blockDim.x)

/* cuDNN (gpu_nn_cudnn.cu): *plan is the cached plan of this convolution, or NULL when the
 * im2col path runs it (cuDNN missing or off, asymmetric padding, no FMA deterministic
 * algorithm). The passes write (beta 0) y, dx, dW. */
agt_status agt_cudnn_plan(size_t B, size_t C, size_t H, size_t W, size_t OC, size_t KH, size_t KW,
                          size_t sh, size_t sw, size_t pt, size_t pl, size_t OH, size_t OW,
                          void **plan);
agt_status agt_cudnn_forward(void *plan, const float *x, const float *W, float *y);
/* How backward forms dx and dW with this plan: cuDNN's backward algorithm, a forward convolution
 * of dy (dx only; agt_cudnn_backward_data runs it), or the im2col path's GEMM (the caller's). */
enum { AGT_CUDNN_ROUTE_CUDNN = 0, AGT_CUDNN_ROUTE_FWD = 1, AGT_CUDNN_ROUTE_GEMM = 2 };
void agt_cudnn_routes(const void *plan, int *dx_route, int *dw_route);
agt_status agt_cudnn_backward_data(void *plan, const float *W, const float *dy, float *dx);
agt_status agt_cudnn_backward_filter(void *plan, const float *x, const float *dy, float *dW);

#endif
