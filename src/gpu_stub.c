/* gpu_stub.c — the GPU entries when agt is built without CUDA.
 *
 * Compiled always; its content exists only when AGT_HAVE_CUDA is not defined (otherwise the
 * src/cuda/ files define these names). Every entry fails with AGT_ENOTSUP and the message "agt
 * was built without CUDA"; agt_gpu_available() and agt_gpu_device_count() return 0, and the
 * functions that cannot fail do nothing. */
#include "gpu.h"
#include <stdio.h>
#include "gpu_nn.h"

#ifndef AGT_HAVE_CUDA

#define NOCUDA() AGT_FAIL(AGT_ENOTSUP, "agt was built without CUDA")

int agt_gpu_available(void) { return 0; }
int agt_gpu_device_count(void) { return 0; }
agt_status agt_gpu_set_device(int ordinal) { return NOCUDA(); }
int agt_gpu_device(void) { return 0; }
agt_status agt_gpu_describe(char *buf, size_t cap) { return NOCUDA(); }
agt_status agt_gpu_mem_info(size_t *free_bytes, size_t *total_bytes) { return NOCUDA(); }
agt_status agt_gpu_malloc(void **p, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_free(void *p) { return p ? NOCUDA() : AGT_OK; }
agt_status agt_gpu_memset(void *p, int byte, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_copy_h2d(void *dst_dev, const void *src_host, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_copy_d2h(void *dst_host, const void *src_dev, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_copy_d2d(void *dst_dev, const void *src_dev, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_host_register(void *p, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_host_unregister(void *p) { return NOCUDA(); }
agt_status agt_gpu_synchronize(void) { return NOCUDA(); }
void agt_gpu_release_scratch(void) {}
agt_status agt_gpu_timer_start(void) { return NOCUDA(); }
agt_status agt_gpu_timer_stop(double *ms) { return NOCUDA(); }
agt_status agt_gpu_fill_normal(float *x_dev, size_t count, uint64_t seed, float mean, float std) {
  return NOCUDA();
}
agt_status agt_gpu_vec_fill(float *x, size_t n, float v) { return NOCUDA(); }
agt_status agt_gpu_vec_scale(float *x, size_t n, float a) { return NOCUDA(); }
agt_status agt_gpu_vec_axpy(float *y, const float *x, size_t n, float a) { return NOCUDA(); }
agt_status agt_gpu_vec_add(float *o, const float *a, const float *b, size_t n) { return NOCUDA(); }
agt_status agt_gpu_vec_sub(float *o, const float *a, const float *b, size_t n) { return NOCUDA(); }
agt_status agt_gpu_vec_mul(float *o, const float *a, const float *b, size_t n) { return NOCUDA(); }
agt_status agt_gpu_vec_sum(const float *x, size_t n, double *out) { return NOCUDA(); }
agt_status agt_gpu_vec_dot(const float *x, const float *y, size_t n, double *out) { return NOCUDA(); }
agt_status agt_gpu_vec_norm2(const float *x, size_t n, double *out) { return NOCUDA(); }
agt_status agt_gpu_vec_sqdist(const float *x, const float *y, size_t n, double *out) { return NOCUDA(); }
agt_status agt_gpu_rows_norm2(const float *G, size_t n, size_t d, double *out) { return NOCUDA(); }
agt_status agt_gpu_rows_sqdist(const float *G, size_t n, size_t d, const float *v, double *out) {
  return NOCUDA();
}
agt_status agt_gpu_rows_mean(const float *G, size_t n, size_t d, float *out) { return NOCUDA(); }
agt_status agt_gpu_rows_std(const float *G, size_t n, size_t d, const float *mean, int ddof, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_copy_h2d_async(void *dst, const void *src, size_t bytes) { return NOCUDA(); }
agt_status agt_gpu_copy_async_join(void) { return NOCUDA(); }
agt_status agt_gpu_copy_async_wait(void) { return NOCUDA(); }
/* gpu_nn.h: GEMM, layers, loss, optimizers */
agt_status agt_gpu_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *A,
                        size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
  return NOCUDA();
}
agt_status agt_gpu_nn_linear_forward(const float *x, const float *W, const float *b, float *y,
                                     size_t B, size_t in, size_t out) {
  return NOCUDA();
}
agt_status agt_gpu_nn_linear_backward(const float *x, const float *W, const float *dy, float *dx,
                                      float *dW, float *db, size_t B, size_t in, size_t out) {
  return NOCUDA();
}
agt_status agt_gpu_nn_act_forward(int act, const float *x, float *y, size_t n) { return NOCUDA(); }
agt_status agt_gpu_nn_act_backward(int act, const float *y, const float *dy, float *dx, size_t n) {
  return NOCUDA();
}
agt_status agt_gpu_nn_bias_act(float *x, const float *b, size_t B, size_t C, size_t S, int act) {
  return NOCUDA();
}
agt_status agt_gpu_nn_softmax_xent(const float *logits, const int32_t *y, size_t B, size_t K,
                                   double *loss, float *dlogits) {
  return NOCUDA();
}
agt_status agt_gpu_nn_eval_batch(const float *logits, const int32_t *y, size_t B, size_t K,
                                 double *loss_sum, size_t *correct) {
  return NOCUDA();
}
agt_status agt_gpu_nn_conv2d_forward(const float *x, const float *W, const float *b, float *y,
                                     float *col, size_t B, size_t C, size_t H, size_t Wd,
                                     size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                     size_t pt, size_t pl, size_t OH, size_t OW, int act) {
  return NOCUDA();
}
agt_status agt_gpu_nn_conv2d_backward(const float *x, const float *W, const float *dy, float *dx,
                                      float *dW, float *db, float *col, size_t B, size_t C,
                                      size_t H, size_t Wd, size_t OC, size_t KH, size_t KW,
                                      size_t sh, size_t sw, size_t pt, size_t pl, size_t OH,
                                      size_t OW) {
  return NOCUDA();
}
int agt_gpu_nn_conv_path(char *buf, size_t cap) {
  if (buf && cap) snprintf(buf, cap, "conv2d: agt was built without CUDA");
  return 0;
}
void agt_gpu_nn_use_cudnn(int on) {}
void agt_gpu_nn_set_math(int mode) {}
int agt_gpu_nn_math(void) { return 0; }
void agt_gpu_nn_conv_calls(size_t *im2col, size_t *cudnn) {
  if (im2col) *im2col = 0;
  if (cudnn) *cudnn = 0;
}
agt_status agt_gpu_nn_maxpool_forward(const float *x, float *y, int32_t *idx, size_t P, size_t H,
                                      size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                      size_t pt, size_t pl, size_t OH, size_t OW) {
  return NOCUDA();
}
agt_status agt_gpu_nn_maxpool_backward(const float *dy, const int32_t *idx, const float *relu_y,
                                       float *dx, size_t P, size_t H, size_t Wd, size_t KH,
                                       size_t KW, size_t sh, size_t sw, size_t pt, size_t pl,
                                       size_t OH, size_t OW) {
  return NOCUDA();
}
agt_status agt_gpu_nn_avgpool_forward(const float *x, float *y, size_t P, size_t H, size_t Wd,
                                      size_t KH, size_t KW, size_t sh, size_t sw, size_t pt,
                                      size_t pl, size_t OH, size_t OW) {
  return NOCUDA();
}
agt_status agt_gpu_nn_avgpool_backward(const float *dy, float *dx, size_t P, size_t H, size_t Wd,
                                       size_t KH, size_t KW, size_t sh, size_t sw, size_t pt,
                                       size_t pl, size_t OH, size_t OW) {
  return NOCUDA();
}
agt_status agt_gpu_nn_dropout_forward(const float *x, float *y, float *mask, size_t n, float p,
                                      agt_rng *r) {
  return NOCUDA();
}
agt_status agt_gpu_nn_dropout_backward(const float *dy, const float *mask, float *dx, size_t n) {
  return NOCUDA();
}
agt_status agt_gpu_nn_add_act(const float *a, const float *b, float *y, size_t n, int act) {
  return NOCUDA();
}
agt_status agt_gpu_nn_batchnorm_forward(const float *x, const float *gamma, const float *beta,
                                        float *y, float *save_mean, float *save_invstd,
                                        float *run_mean, float *run_var, size_t B, size_t C,
                                        size_t S, float momentum, float eps, int train, int act) {
  return NOCUDA();
}
agt_status agt_gpu_nn_batchnorm_backward(const float *x, const float *gamma, const float *dy,
                                         const float *save_mean, const float *save_invstd,
                                         float *dx, float *dgamma, float *dbeta, size_t B,
                                         size_t C, size_t S) {
  return NOCUDA();
}
agt_status agt_gpu_optim_sgd(float *theta, const float *g, size_t d, float lr) { return NOCUDA(); }
agt_status agt_gpu_optim_momentum(float *theta, float *accum, const float *g, size_t d, float lr,
                                  float momentum, int nesterov) {
  return NOCUDA();
}
agt_status agt_gpu_optim_adam(float *theta, float *m, float *v, const float *g, size_t d, float lr,
                              float beta1, float beta2, float eps, double t) {
  return NOCUDA();
}
agt_status agt_gpu_optim_adagrad(float *theta, float *accum, const float *g, size_t d, float lr) {
  return NOCUDA();
}
agt_status agt_gpu_optim_adadelta(float *theta, float *accum, float *accum_update, const float *g,
                                  size_t d, float lr, float rho, float eps) {
  return NOCUDA();
}
agt_status agt_gpu_optim_rmsprop(float *theta, float *ms, float *mg, float *mom, const float *g,
                                 size_t d, float lr, float decay, float momentum, float eps) {
  return NOCUDA();
}
agt_status agt_gpu_optim_l1(const float *theta, float *g, size_t d, float lambda, double *penalty) {
  return NOCUDA();
}
agt_status agt_gpu_optim_l2(const float *theta, float *g, size_t d, float lambda, double *penalty) {
  return NOCUDA();
}
agt_status agt_gpu_gar_average(const float *G, size_t n, size_t d, float *out) { return NOCUDA(); }
agt_status agt_gpu_gar_average_nan(const float *G, size_t n, size_t d, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_median(const float *G, size_t n, size_t d, float *out) { return NOCUDA(); }
agt_status agt_gpu_gar_trimmed_mean(const float *G, size_t n, size_t d, size_t f, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_meamed(const float *G, size_t n, size_t d, size_t beta, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_phocas(const float *G, size_t n, size_t d, size_t f, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_rows_meamed(const float *G, size_t d, const int64_t *rows, size_t m, size_t beta, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_sqdist(const float *G, size_t n, size_t d, double *D_host) {
  return NOCUDA();
}
agt_status agt_gpu_gar_rows_average(const float *G, size_t n, size_t d, const int64_t *rows, size_t m, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_multi_krum(const float *G, size_t n, size_t d, size_t f, size_t m, float *out, int64_t *selected) {
  return NOCUDA();
}
agt_status agt_gpu_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out, int64_t *selected) {
  return NOCUDA();
}
agt_status agt_gpu_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out, int64_t *selected) {
  return NOCUDA();
}
agt_status agt_gpu_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget, float *out, int64_t *selected) {
  return NOCUDA();
}
agt_status agt_gpu_gar_geometric_median(const float *G, size_t n, size_t d, double nu, size_t max_iter, double tol, float *out, int64_t *iterations) {
  return NOCUDA();
}
agt_status agt_gpu_gar_centered_clipping(const float *G, size_t n, size_t d, double tau, size_t iters, float *v) {
  return NOCUDA();
}
agt_status agt_gpu_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_bucketing(const float *G, size_t n, size_t d, size_t s, const int64_t *perm, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_clipping(const float *G, size_t n, size_t d, double c, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out) {
  return NOCUDA();
}
agt_status agt_gpu_upload_rule(const float *G_host, size_t n, size_t d, float *G_dev, int rule, size_t p, float *out_dev) {
  return NOCUDA();
}

#endif /* AGT_HAVE_CUDA */
