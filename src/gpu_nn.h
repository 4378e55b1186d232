/* gpu_nn.h — the CUDA twins of the training kernels: GEMM (vec.h's agt_gemm, through cuBLAS),
 * the dense layer, activations, bias, softmax cross-entropy (nn.h), the optimizers and the
 * L1/L2 terms (optim.h). Each entry takes the arguments of its CPU twin, with device pointers
 * for every array the twin reads or writes, except the few results a caller reads on the host:
 * the loss of agt_gpu_nn_softmax_xent, the sums of agt_gpu_nn_eval_batch and the penalty of
 * agt_gpu_optim_l1/_l2 are HOST pointers (the entry waits for them). The others are queued on the engine's default stream and
 * return at once; an error inside a kernel surfaces at the next synchronising call.
 *
 * Results against the CPU twins (spec/backend_spec.lua): element-wise ops that use only + − × ÷
 * and √ (relu, the activations' backward, the bias add, the optimizers, the L1/L2 gradient
 * terms) are bit-identical; tanh, sigmoid and softmax use the device's exp/tanh (a few ulp off
 * the C library's); GEMMs sum in cuBLAS's order (float32, no TF32). The bias gradient sums the
 * batch in the CPU's order, so it is bit-identical too.
 *
 * Built with CUDA, the binary links libcublas dynamically (the CUDA runtime stays static);
 * src/gpu_stub.c answers AGT_ENOTSUP without CUDA. */
#ifndef AGT_GPU_NN_H
#define AGT_GPU_NN_H

#include "status.h"
#include "rng.h"

/* ffi:begin */
/* C = alpha·op(A)·op(B) + beta·C, row-major, as agt_gemm. */
agt_status agt_gpu_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                        const float *A, size_t lda, const float *B, size_t ldb,
                        float beta, float *C, size_t ldc);

agt_status agt_gpu_nn_linear_forward(const float *x, const float *W, const float *b, float *y,
                                     size_t B, size_t in, size_t out);
agt_status agt_gpu_nn_linear_backward(const float *x, const float *W, const float *dy,
                                      float *dx, float *dW, float *db,
                                      size_t B, size_t in, size_t out);
agt_status agt_gpu_nn_act_forward(int act, const float *x, float *y, size_t n);
agt_status agt_gpu_nn_act_backward(int act, const float *y, const float *dy, float *dx, size_t n);
agt_status agt_gpu_nn_bias_act(float *x, const float *b, size_t B, size_t C, size_t S, int act);
/* Convolution (NCHW, nn.h's layouts and padding): im2col into the device's own scratch arena
 * and cuBLAS SGEMMs (float32, no TF32), or cuDNN where it was found (agt_gpu_nn_conv_path).
 * col is not used (it may be NULL): backward unfolds x again. The bias gradient is the CPU's bit
 * for bit (the same float partial sums, added in double in the same order). */
agt_status agt_gpu_nn_conv2d_forward(const float *x, const float *W, const float *b, float *y,
                                     float *col, size_t B, size_t C, size_t H, size_t Wd,
                                     size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                     size_t pt, size_t pl, size_t OH, size_t OW, int act);
agt_status agt_gpu_nn_conv2d_backward(const float *x, const float *W, const float *dy,
                                      float *dx, float *dW, float *db, float *col,
                                      size_t B, size_t C, size_t H, size_t Wd,
                                      size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                      size_t pt, size_t pl, size_t OH, size_t OW);
/* Which path the convolutions take: 1 for cuDNN (libcudnn.so.9 found at run time, not switched
 * off), 0 for im2col + cuBLAS; buf (may be NULL) receives one line saying which and why.
 * agt_gpu_nn_use_cudnn(0) switches cuDNN off (1 back on); AGT_CUDNN=0 in the environment keeps
 * it from being loaded. Convolutions cuDNN cannot pad as asked (TF's SAME with the odd pixel
 * after) take the im2col path either way. */
int agt_gpu_nn_conv_path(char *buf, size_t cap);
void agt_gpu_nn_use_cudnn(int on);
/* The arithmetic of the device's convolutions and GEMMs: 0 float32 (the default; FMA only,
 * deterministic summing algorithms: the CPU's results to float rounding, the same bits run to
 * run); opt-in (--gpu-math): 1 TF32 tensor cores (products of inputs rounded to 10-bit
 * mantissas, sums in float32; the same algorithm rules), 2 float32 with any cuDNN algorithm
 * (Winograd, FFT, non-deterministic ones: not bit-repeatable, inf/NaN may spread in a tile).
 * Other values mean 0. */
void agt_gpu_nn_set_math(int mode);
int agt_gpu_nn_math(void);
/* Convolution passes (forward, backward) run so far through each path. */
void agt_gpu_nn_conv_calls(size_t *im2col, size_t *cudnn);
/* Pooling: the CPU's windows, ties, NaN rule and summation order: bit-identical, idx too. */
agt_status agt_gpu_nn_maxpool_forward(const float *x, float *y, int32_t *idx, size_t P,
                                      size_t H, size_t Wd, size_t KH, size_t KW, size_t sh,
                                      size_t sw, size_t pt, size_t pl, size_t OH, size_t OW);
agt_status agt_gpu_nn_maxpool_backward(const float *dy, const int32_t *idx, const float *relu_y,
                                       float *dx, size_t P, size_t H, size_t Wd, size_t KH,
                                       size_t KW, size_t sh, size_t sw, size_t pt, size_t pl,
                                       size_t OH, size_t OW);
agt_status agt_gpu_nn_avgpool_forward(const float *x, float *y, size_t P, size_t H, size_t Wd,
                                      size_t KH, size_t KW, size_t sh, size_t sw, size_t pt,
                                      size_t pl, size_t OH, size_t OW);
agt_status agt_gpu_nn_avgpool_backward(const float *dy, float *dx, size_t P, size_t H, size_t Wd,
                                       size_t KH, size_t KW, size_t sh, size_t sw, size_t pt,
                                       size_t pl, size_t OH, size_t OW);
/* Dropout with the CPU's mask: word i of r's Philox stream decides value i, as in
 * agt_nn_dropout_forward; r (a HOST pointer) is advanced past the n words it used, as the CPU
 * twin advances it, so both devices draw the same masks from the same stream. */
agt_status agt_gpu_nn_dropout_forward(const float *x, float *y, float *mask, size_t n, float p,
                                      agt_rng *r);
agt_status agt_gpu_nn_dropout_backward(const float *dy, const float *mask, float *dx, size_t n);
agt_status agt_gpu_nn_add_act(const float *a, const float *b, float *y, size_t n, int act);
/* Batch normalisation: the per-channel sums in double in the device's order (the statistics
 * agree with the CPU's to double rounding), the element-wise passes the CPU's float operations. */
agt_status agt_gpu_nn_batchnorm_forward(const float *x, const float *gamma, const float *beta,
                                        float *y, float *save_mean, float *save_invstd,
                                        float *run_mean, float *run_var, size_t B, size_t C,
                                        size_t S, float momentum, float eps, int train, int act);
agt_status agt_gpu_nn_batchnorm_backward(const float *x, const float *gamma, const float *dy,
                                         const float *save_mean, const float *save_invstd,
                                         float *dx, float *dgamma, float *dbeta, size_t B,
                                         size_t C, size_t S);
/* logits, y (int32 labels) and dlogits on the device, loss on the host. A label out of range
 * is AGT_EINVAL naming the first such example (dlogits is then unspecified). */
agt_status agt_gpu_nn_softmax_xent(const float *logits, const int32_t *y, size_t B, size_t K,
                                   double *loss, float *dlogits);
/* logits and y on the device, loss_sum and correct on the host. */
agt_status agt_gpu_nn_eval_batch(const float *logits, const int32_t *y, size_t B, size_t K,
                                 double *loss_sum, size_t *correct);

agt_status agt_gpu_optim_sgd(float *theta, const float *g, size_t d, float lr);
agt_status agt_gpu_optim_momentum(float *theta, float *accum, const float *g, size_t d, float lr,
                                  float momentum, int nesterov);
agt_status agt_gpu_optim_adam(float *theta, float *m, float *v, const float *g, size_t d,
                              float lr, float beta1, float beta2, float eps, double t);
agt_status agt_gpu_optim_adagrad(float *theta, float *accum, const float *g, size_t d, float lr);
agt_status agt_gpu_optim_adadelta(float *theta, float *accum, float *accum_update,
                                  const float *g, size_t d, float lr, float rho, float eps);
agt_status agt_gpu_optim_rmsprop(float *theta, float *ms, float *mg, float *mom, const float *g,
                                 size_t d, float lr, float decay, float momentum, float eps);
/* penalty: a HOST pointer. */
agt_status agt_gpu_optim_l1(const float *theta, float *g, size_t d, float lambda,
                            double *penalty);
agt_status agt_gpu_optim_l2(const float *theta, float *g, size_t d, float lambda,
                            double *penalty);
/* ffi:end */

#endif
