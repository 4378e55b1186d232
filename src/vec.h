/* vec.h — kernels on raw float32 vectors and row-major matrices.
 *
 * The building blocks shared by tensors, layers, rules and attacks. Plain
 * pointer + length arguments so they are cheap to call from the FFI. Sizes are
 * size_t: n rows × d columns of a 25M-parameter model times 64 workers fit.
 * Reductions accumulate in double, over fixed chunks (see pool.h), so their
 * result does not depend on the thread count. */
#ifndef AGT_VEC_H
#define AGT_VEC_H

#include "status.h"

/* ffi:begin */
void agt_vec_fill(float *x, size_t n, float v);
void agt_vec_copy(float *dst, const float *src, size_t n);
void agt_vec_scale(float *x, size_t n, float a);                    /* x *= a */
void agt_vec_axpy(float *y, const float *x, size_t n, float a);     /* y += a x */
void agt_vec_add(float *out, const float *a, const float *b, size_t n);
void agt_vec_sub(float *out, const float *a, const float *b, size_t n);
void agt_vec_mul(float *out, const float *a, const float *b, size_t n);
void agt_vec_div(float *out, const float *a, const float *b, size_t n);
double agt_vec_sum(const float *x, size_t n);
double agt_vec_dot(const float *x, const float *y, size_t n);
double agt_vec_norm2(const float *x, size_t n);                     /* Euclidean norm */
double agt_vec_norm1(const float *x, size_t n);
double agt_vec_norminf(const float *x, size_t n);
double agt_vec_sqdist(const float *x, const float *y, size_t n);    /* squared L2 distance */
double agt_vec_max(const float *x, size_t n);
double agt_vec_min(const float *x, size_t n);
size_t agt_vec_count_nonfinite(const float *x, size_t n);
/* 1 when |a-b| <= atol + rtol*|b| everywhere; NaN equals NaN, inf equals the same inf. */
int agt_vec_allclose(const float *a, const float *b, size_t n, double rtol, double atol);
/* Rows of a row-major n×d matrix G. */
void agt_rows_mean(const float *G, size_t n, size_t d, float *out);   /* out[d] = mean of rows */
void agt_rows_std(const float *G, size_t n, size_t d, const float *mean, int ddof, float *out);
void agt_rows_norm2(const float *G, size_t n, size_t d, double *out); /* out[n] */
/* out[n] = squared L2 distance of each row to v (d values) */
void agt_rows_sqdist(const float *G, size_t n, size_t d, const float *v, double *out);
/* C = alpha op(A) op(B) + beta C, row-major, through BLAS. ta/tb: 0 or 1 (transpose). */
agt_status agt_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                    const float *A, size_t lda, const float *B, size_t ldb,
                    float beta, float *C, size_t ldc);
/* ffi:end */

#endif
