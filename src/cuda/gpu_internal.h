/* gpu_internal.h — what the CUDA files share: error checking that turns every CUDA failure into
 * an agt_status with the CUDA message, the scratch arena, and the launch sizes.
 *
 * Invariants: every CUDA call goes through AGT_CU (or AGT_CU_LAUNCH after a launch); a failing
 * call returns from the enclosing function with AGT_EIO (AGT_ENOMEM for allocations) and a
 * message naming the call. Kernels take plain pointers and sizes; shapes are noted beside them. */
#ifndef AGT_GPU_INTERNAL_H
#define AGT_GPU_INTERNAL_H

#include <cuda_runtime.h>
#include <stdint.h>
#include <stddef.h>

extern "C" {
#include "status.h"
#include "gpu.h"
}

/* Largest n that the register (sorting-network) and tiled-distance paths take; above it the
 * general paths run (shared-memory sort, distance tiles by row blocks). */
#define AGT_GPU_NET_MAX 64
/* Largest n the backend accepts at all (shared memory of the general sort, the n x n work). */
#define AGT_GPU_N_MAX 1024

agt_status agt_cu_fail(cudaError_t e, const char *what, const char *file, int line);

#define AGT_CU(call)                                                          \
  do {                                                                        \
    cudaError_t agt_cu_e_ = (call);                                           \
    if (agt_cu_e_ != cudaSuccess)                                             \
      return agt_cu_fail(agt_cu_e_, #call, __FILE__, __LINE__);               \
  } while (0)

/* After a kernel launch: the launch error (bad configuration), not the kernel's outcome. */
#define AGT_CU_LAUNCH(name)                                                   \
  do {                                                                        \
    cudaError_t agt_cu_e_ = cudaGetLastError();                               \
    if (agt_cu_e_ != cudaSuccess)                                             \
      return agt_cu_fail(agt_cu_e_, "launch of " name, __FILE__, __LINE__);   \
  } while (0)

/* Lazily initialised device (first device, or the one set); AGT_ENOTSUP when there is none. */
agt_status agt_gpu_ensure(void);

/* Scratch: one device arena and one pinned host arena, grown on demand, reused across calls.
 * A call takes what it needs at its start; the pointers stay valid until the next call. */
agt_status agt_gpu_scratch(size_t bytes, void **dev);      /* kernels' small buffers */
agt_status agt_gpu_vec_scratch(size_t bytes, void **dev);  /* a rule's own vectors (d floats) */
agt_status agt_gpu_host_scratch(size_t bytes, void **host);

/* Rows given by pointer: a pointer may be NULL, which reads as a row of zeros. */
#define AGT_GPU_ROWS_MAX 65
struct agt_rowptrs {
  const float *p[AGT_GPU_ROWS_MAX];
};

/* Checks shared by every entry. */
static inline agt_status agt_gpu_check_shape(const char *rule, const void *G, size_t n, size_t d,
                                             const void *out) {
  if (!G || !out) return AGT_FAIL(AGT_EINVAL, "%s: G and out must be device pointers", rule);
  if (n < 1 || d < 1) return AGT_FAIL(AGT_EINVAL, "%s: needs n >= 1 and d >= 1, got n=%zu d=%zu", rule, n, d);
  if (n > AGT_GPU_N_MAX)
    return AGT_FAIL(AGT_ENOTSUP, "%s on the GPU takes n <= %d, got n=%zu", rule, AGT_GPU_N_MAX, n);
  return AGT_OK;
}

/* Internal launchers (all on the default stream). */
/* D_host (n+extras)^2: the n rows of G, then extra (device vector, if not NULL), then a zero
 * row (if zero_row); non-finite entries +inf, diagonal as computed. */
agt_status agt_gpu_pairdist(const float *G, size_t n, size_t d, const float *extra,
                            int zero_row, double *D_host);
/* out[r] = sum_k W_host[r*K + k] rows[k] for r < R; rows: host array of device pointers. */
agt_status agt_gpu_mix_rows(const float *const *rows, size_t K, size_t d, const double *W_host,
                            size_t R, float *out);
/* out[r] = average of rows[off[r] .. off[r+1]) in list order (host arrays), float, exact. */
agt_status agt_gpu_avg_lists(const float *G, size_t d, const int64_t *rows, const size_t *off,
                             size_t R, float *out);
/* out[r] = average of lists[r*k .. r*k+k) (host, ascending) for r < n <= 64, finite rows only,
 * bit-identical to agt_gpu_avg_lists. */
agt_status agt_gpu_avg_lists_dense(const float *G, size_t n, size_t d, const int64_t *lists,
                                   size_t k, float *out);
/* sq_host[i] = |row i|^2, +inf when not finite. */
agt_status agt_gpu_row_sqnorms(const float *G, size_t n, size_t d, double *sq_host);
/* out[i] = scale_host[i] * G[i]; out may be G. */
agt_status agt_gpu_scale_rows(const float *G, size_t n, size_t d, const float *scale_host,
                              float *out);
/* Strided batched SGEMM, row-major as agt_gpu_gemm (gpu_blas.cu). */
agt_status agt_gpu_gemm_batched(int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                                const float *A, size_t lda, size_t sA, const float *B, size_t ldb,
                                size_t sB, float beta, float *C, size_t ldc, size_t sC,
                                size_t count);
agt_status agt_gpu_coord_median(const float *G, size_t n, size_t d, float *out);
/* A per-coordinate rule (AGT_GPU_RULE_*) on columns [0, len) of n rows of stride ld. */
agt_status agt_gpu_coord_rule(int which, const float *G, size_t ld, size_t n, size_t len, size_t p,
                              float *out);

#endif
