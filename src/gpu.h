/* gpu.h — the CUDA backend: device query, device memory, host<->device copies, a few vector
 * ops, and every aggregation rule and pre-aggregation step on device-resident gradients.
 * Tensors (tensor.h) allocate their CUDA storage and page-lock their host storage through it.
 *
 * Always declared; src/gpu_stub.c answers AGT_ENOTSUP ("agt was built without CUDA") when the
 * engine is built without nvcc, and agt_gpu_available() then returns 0.
 *
 * Conventions of the rule entries (the CPU rules of gar.h are the reference):
 * - G is a device pointer to n rows x d columns, float32, row-major, contiguous; out is a device
 *   pointer to d floats (a rule) or to rows x d floats (a pre-aggregation step). G is never
 *   written, and out must not overlap G unless the entry says so.
 * - `selected`, where present, is an optional HOST array (NULL to skip) that receives the 0-based
 *   indices of the rows the rule kept, as gar.h says; rows and perm are HOST arrays too.
 * - Ordering: a NaN or +-inf orders as +inf (ties broken by row index, lower first); a distance
 *   that is not finite is +inf. Per-coordinate selections are exact (bit-identical to the CPU);
 *   sums are accumulated in double where a rule averages.
 * - The entries run on the engine's default stream and return once the result is in out
 *   (selection rules copy their few indices back, which synchronizes). Scratch memory is owned
 *   by the backend and grows on demand; agt_gpu_release_scratch() gives it back.
 * - Not thread-safe: one host thread drives the device at a time.
 *
 * Errors: a failing CUDA call is reported by the entry that made it (AGT_EIO, AGT_ENOMEM for
 * allocations) and cleared there, so it never resurfaces in a later, unrelated call. An error
 * that leaves the CUDA context unusable (an illegal address or instruction, a kernel fault) is
 * sticky in CUDA: the device is then marked unusable, agt_gpu_available() returns 0, and every
 * entry answers AGT_ENOTSUP with the first error's message until agt restarts. */
#ifndef AGT_GPU_H
#define AGT_GPU_H

#include "status.h"

/* ffi:begin */
int agt_gpu_available(void);                     /* 1 when built with CUDA and a device is seen */
int agt_gpu_device_count(void);
agt_status agt_gpu_set_device(int ordinal);
int agt_gpu_device(void);                        /* the ordinal the engine drives (0 by default) */
/* "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.2 GiB" into buf; AGT_ENOTSUP when none. */
agt_status agt_gpu_describe(char *buf, size_t cap);
agt_status agt_gpu_mem_info(size_t *free_bytes, size_t *total_bytes);

/* Device memory and copies (bytes). NULL is a fine argument to agt_gpu_free. */
agt_status agt_gpu_malloc(void **p, size_t bytes);
agt_status agt_gpu_free(void *p);
agt_status agt_gpu_memset(void *p, int byte, size_t bytes);
agt_status agt_gpu_copy_h2d(void *dst_dev, const void *src_host, size_t bytes);
agt_status agt_gpu_copy_d2h(void *dst_host, const void *src_dev, size_t bytes);
agt_status agt_gpu_copy_d2d(void *dst_dev, const void *src_dev, size_t bytes);
/* Page-lock a host range so that copies from it run asynchronously at full speed. A range
 * registered twice fails (cudaErrorHostMemoryAlreadyRegistered): page-lock a tensor with
 * agt_tensor_pin, which registers its storage once. */
agt_status agt_gpu_host_register(void *p, size_t bytes);
agt_status agt_gpu_host_unregister(void *p);
agt_status agt_gpu_synchronize(void);
void agt_gpu_release_scratch(void);

/* Benchmarks: device events on the default stream; stop waits and gives the elapsed ms. */
agt_status agt_gpu_timer_start(void);
agt_status agt_gpu_timer_stop(double *ms);
/* x[i] = mean + std * N(0,1) from a counter-based generator keyed by (seed, i): no host data. */
agt_status agt_gpu_fill_normal(float *x_dev, size_t count, uint64_t seed, float mean, float std);

/* Vector ops on device memory: twins of vec.h's agt_vec_fill, _scale, _axpy (same float
 * operations in the same order, so the same bits). */
agt_status agt_gpu_vec_fill(float *x, size_t n, float v);
agt_status agt_gpu_vec_scale(float *x, size_t n, float a);                  /* x *= a */
agt_status agt_gpu_vec_axpy(float *y, const float *x, size_t n, float a);   /* y += a x */
agt_status agt_gpu_vec_add(float *out, const float *a, const float *b, size_t n);
agt_status agt_gpu_vec_sub(float *out, const float *a, const float *b, size_t n);
agt_status agt_gpu_vec_mul(float *out, const float *a, const float *b, size_t n);
/* Reductions of vec.h (sum, dot, norm2, sqdist): the value into *out, a HOST double (it waits
 * for the device); the same double accumulation in another order than the CPU's. */
agt_status agt_gpu_vec_sum(const float *x, size_t n, double *out);
agt_status agt_gpu_vec_dot(const float *x, const float *y, size_t n, double *out);
agt_status agt_gpu_vec_norm2(const float *x, size_t n, double *out);
agt_status agt_gpu_vec_sqdist(const float *x, const float *y, size_t n, double *out);
/* Twins of agt_rows_norm2 and agt_rows_sqdist: out (HOST, n doubles) gets each row's norm or
 * squared distance to v (device), in one pass over G; to double rounding, as the reductions. */
agt_status agt_gpu_rows_norm2(const float *G, size_t n, size_t d, double *out);
agt_status agt_gpu_rows_sqdist(const float *G, size_t n, size_t d, const float *v, double *out);
/* Twins of agt_rows_mean and agt_rows_std (device G, mean, out): the same bits. */
agt_status agt_gpu_rows_mean(const float *G, size_t n, size_t d, float *out);
agt_status agt_gpu_rows_std(const float *G, size_t n, size_t d, const float *mean, int ddof,
                            float *out);
/* Batches ahead of use: copies a host range (page-locked for the copy to be asynchronous) to
 * the device on a copy stream, after the work already queued on the default stream, and
 * returns at once. agt_gpu_copy_async_join makes the work queued next on the default stream
 * wait for every copy queued so far (the host does not wait); agt_gpu_copy_async_wait waits on
 * the host for them (the host ranges may then change). */
agt_status agt_gpu_copy_h2d_async(void *dst_dev, const void *src_host, size_t bytes);
agt_status agt_gpu_copy_async_join(void);
agt_status agt_gpu_copy_async_wait(void);

/* Rules: twins of gar.h with device pointers for G, out and v (host pointers for the small
 * index arrays rows, perm, selected). Same arguments, same definitions. */
agt_status agt_gpu_gar_average(const float *G, size_t n, size_t d, float *out);
agt_status agt_gpu_gar_average_nan(const float *G, size_t n, size_t d, float *out);
agt_status agt_gpu_gar_median(const float *G, size_t n, size_t d, float *out);
agt_status agt_gpu_gar_trimmed_mean(const float *G, size_t n, size_t d, size_t f, float *out);
agt_status agt_gpu_gar_meamed(const float *G, size_t n, size_t d, size_t beta, float *out);
agt_status agt_gpu_gar_phocas(const float *G, size_t n, size_t d, size_t f, float *out);
agt_status agt_gpu_gar_rows_meamed(const float *G, size_t d, const int64_t *rows, size_t m,
                                   size_t beta, float *out);
/* D_host: n x n doubles on the host, diagonal 0, non-finite -> +inf. */
agt_status agt_gpu_gar_sqdist(const float *G, size_t n, size_t d, double *D_host);
agt_status agt_gpu_gar_rows_average(const float *G, size_t n, size_t d, const int64_t *rows,
                                    size_t m, float *out);
agt_status agt_gpu_gar_multi_krum(const float *G, size_t n, size_t d, size_t f, size_t m,
                                  float *out, int64_t *selected);
agt_status agt_gpu_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                              int64_t *selected);
agt_status agt_gpu_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                           int64_t *selected);
agt_status agt_gpu_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget,
                           float *out, int64_t *selected);
agt_status agt_gpu_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                        size_t max_iter, double tol, float *out,
                                        int64_t *iterations);
/* v: device, d floats: in, the previous output (the centre); out, the new one. */
agt_status agt_gpu_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                         size_t iters, float *v);
/* Pre-aggregation steps: out is rows x d on the device; clipping and arc accept out == G. */
agt_status agt_gpu_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out);
agt_status agt_gpu_gar_bucketing(const float *G, size_t n, size_t d, size_t s,
                                 const int64_t *perm, float *out);
agt_status agt_gpu_gar_clipping(const float *G, size_t n, size_t d, double c, float *out);
agt_status agt_gpu_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out);
/* Pipelined upload: copies host G (n x d) into G_dev in column chunks on a copy stream and,
 * for a per-coordinate rule, computes it on each chunk as soon as the chunk has arrived, so the
 * copy and the rule overlap (out_dev: d floats). rule: one of AGT_GPU_RULE_* (p = f for
 * trimmed-mean and phocas, beta for meamed), or AGT_GPU_RULE_NONE to copy only. Page-lock G
 * first (agt_gpu_host_register) for the copies to be asynchronous. Returns when both are done. */
enum {
  AGT_GPU_RULE_NONE = -1, AGT_GPU_RULE_AVERAGE = 0, AGT_GPU_RULE_AVERAGE_NAN = 1,
  AGT_GPU_RULE_MEDIAN = 2, AGT_GPU_RULE_TRIMMED_MEAN = 3, AGT_GPU_RULE_MEAMED = 4,
  AGT_GPU_RULE_PHOCAS = 5
};
agt_status agt_gpu_upload_rule(const float *G_host, size_t n, size_t d, float *G_dev, int rule,
                               size_t p, float *out_dev);
/* ffi:end */

#endif
