/* gpu_blas.cu — GEMM on the device through cuBLAS: agt_gpu_gemm, the twin of vec.h's agt_gemm
 * (row-major, the same arguments), registered by lua/agt/backend.lua as the CUDA backend's
 * vec.gemm and used by the dense layer (gpu_nn.cu).
 *
 * cuBLAS is column-major: a row-major m x n matrix C is the column-major n x m matrix Cᵀ, and
 * Cᵀ = op(B)ᵀ·op(A)ᵀ, so the call swaps the operands and the sizes, keeping each transpose flag.
 * Plain float32 arithmetic (CUBLAS_DEFAULT_MATH: no TF32 on Hopper) unless TF32 was asked for
 * (agt_gpu_nn_set_math(1), --gpu-math tf32: CUBLAS_TF32_TENSOR_OP_MATH), host scalars, the default
 * stream. The handle belongs to the process: created on the first call, made again after the
 * engine switched devices (agt_gpu_set_device), and left for the process's exit to release. */
#include "gpu_internal.h"

#include <cublas_v2.h>

extern "C" {
#include "gpu_nn.h"
}

static cublasHandle_t g_blas;
static int g_blas_device = -1;
static int g_blas_math = 0;   /* the math mode the handle has: 0 float32, 1 TF32 */

static agt_status blas_fail(cublasStatus_t s, const char *what) {
  return AGT_FAIL(s == CUBLAS_STATUS_ALLOC_FAILED ? AGT_ENOMEM : AGT_EIO, "cuBLAS: %s failed: %s",
                  what, cublasGetStatusString(s));
}

static agt_status blas_handle(cublasHandle_t *out) {
  AGT_TRY(agt_gpu_ensure());
  int dev = agt_gpu_device();
  if (g_blas && g_blas_device != dev) {
    cublasDestroy(g_blas);
    g_blas = NULL;
  }
  if (!g_blas) {
    cublasStatus_t s = cublasCreate(&g_blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
      g_blas = NULL;
      return blas_fail(s, "cublasCreate");
    }
    g_blas_device = dev;
    s = cublasSetStream(g_blas, 0);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(s, "cublasSetStream/MathMode");
    g_blas_math = 0;
  }
  int math = agt_gpu_nn_math() == 1;
  if (math != g_blas_math) {
    cublasStatus_t s = cublasSetMathMode(g_blas, math ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(s, "cublasSetMathMode");
    g_blas_math = math;
  }
  *out = g_blas;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                                   const float *A, size_t lda, const float *B, size_t ldb,
                                   float beta, float *C, size_t ldc) {
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
      ldc > INT32_MAX)
    return AGT_FAIL(AGT_EINVAL, "gemm dimensions too large for BLAS: m=%zu n=%zu k=%zu", m, n, k);
  if (m == 0 || n == 0) return AGT_OK;
  if (!C || (k > 0 && (!A || !B)))
    return AGT_FAIL(AGT_EINVAL, "gemm on cuda: A, B and C must be device pointers");
  cublasHandle_t h = NULL;
  AGT_TRY(blas_handle(&h));
  cublasStatus_t s = cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 (int)n, (int)m, (int)k, &alpha, B, (int)ldb, A, (int)lda, &beta,
                                 C, (int)ldc);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cudaGetLastError();
    return AGT_FAIL(s == CUBLAS_STATUS_INVALID_VALUE ? AGT_EINVAL : AGT_EIO,
                    "gemm on cuda: cublasSgemm(ta=%d tb=%d m=%zu n=%zu k=%zu lda=%zu ldb=%zu "
                    "ldc=%zu) failed: %s", ta, tb, m, n, k, lda, ldb, ldc, cublasGetStatusString(s));
  }
  return AGT_OK;
}

/* count products C_i = alpha·op(A_i)·op(B_i) + beta·C_i, row-major, X_i = X + i·strideX (a
 * stride of 0 shares the matrix): the convolutions' per-sample products (gpu_nn_conv.cu). */
agt_status agt_gpu_gemm_batched(int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                                const float *A, size_t lda, size_t sA, const float *B, size_t ldb,
                                size_t sB, float beta, float *C, size_t ldc, size_t sC,
                                size_t count) {
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
      ldc > INT32_MAX || count > INT32_MAX)
    return AGT_FAIL(AGT_EINVAL, "batched gemm dimensions too large for BLAS: m=%zu n=%zu k=%zu "
                    "count=%zu", m, n, k, count);
  if (m == 0 || n == 0 || count == 0) return AGT_OK;
  cublasHandle_t h = NULL;
  AGT_TRY(blas_handle(&h));
  cublasStatus_t s = cublasSgemmStridedBatched(
      h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k,
      &alpha, B, (int)ldb, (long long)sB, A, (int)lda, (long long)sA, &beta, C, (int)ldc,
      (long long)sC, (int)count);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cudaGetLastError();
    return AGT_FAIL(AGT_EIO, "gemm on cuda: cublasSgemmStridedBatched(m=%zu n=%zu k=%zu count=%zu) "
                    "failed: %s", m, n, k, count, cublasGetStatusString(s));
  }
  return AGT_OK;
}
