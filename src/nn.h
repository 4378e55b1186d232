/* nn.h — neural-network layer kernels: forward and backward on raw float32 buffers.
 *
 * These are the leaves a model is built from (the model itself is composed in Lua,
 * lua/agt/nn.lua). Every kernel takes plain pointers and sizes; parameters are
 * slices of one flat vector θ owned by the caller, and parameter gradients are
 * written (overwritten, never accumulated) into slices of a caller-given flat
 * gradient vector, so nothing is ever copied to flatten or inflate a model.
 *
 * Layouts (row-major, batch first):
 *   dense activations  (B, n)                 linear weight W (in, out), bias (out)
 *   images             (B, C, H, W)  (NCHW)   conv weight   W (OC, C, KH, KW), bias (OC)
 * Padding is given explicitly as (top, left) plus the output size; the bottom and
 * right padding follow from them. TF's SAME (out = ceil(in/stride), the odd pixel
 * of padding at the bottom/right) and VALID are computed by agt_nn_conv_geometry.
 * Padded pixels are zeros for convolution, ignored by max-pool, and left out of the
 * average of avg-pool (TF's convention).
 *
 * Results do not depend on the thread count: kernels split work on fixed chunks and
 * reduce partial sums in chunk order. GEMMs go through agt_gemm (vec.h). */
#ifndef AGT_NN_H
#define AGT_NN_H

#include "status.h"
#include "rng.h"

/* ffi:begin */
/* Output size and leading padding along one axis. same: 1 = TF SAME, 0 = VALID. */
agt_status agt_nn_conv_geometry(size_t in, size_t k, size_t stride, int same,
                                size_t *out, size_t *pad_before);

/* y (B,out) = x (B,in) · W (in,out) + b (out); b may be NULL. */
agt_status agt_nn_linear_forward(const float *x, const float *W, const float *b, float *y,
                                 size_t B, size_t in, size_t out);
/* dW (in,out) = xᵀ·dy; db (out) = Σ_batch dy (skipped when NULL);
 * dx (B,in) = dy·Wᵀ (skipped when NULL: the first layer needs no input gradient). */
agt_status agt_nn_linear_backward(const float *x, const float *W, const float *dy,
                                  float *dx, float *dW, float *db,
                                  size_t B, size_t in, size_t out);

/* Scratch floats conv2d needs (the unfolded input patches of a chunk of samples, kept from
 * forward to backward when the batch is one chunk, and the product before it is laid out as
 * NCHW). */
size_t agt_nn_conv2d_scratch(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH, size_t KW,
                             size_t sh, size_t sw, size_t OH, size_t OW);
/* y (B,OC,OH,OW) = act(conv(x (B,C,H,W), W (OC,C,KH,KW)) + b (OC)); act: -1 none, else
 * AGT_NN_*. col: scratch of agt_nn_conv2d_scratch floats, which backward reads again (pass
 * the same buffer). */
agt_status agt_nn_conv2d_forward(const float *x, const float *W, const float *b, float *y,
                                 float *col, size_t B, size_t C, size_t H, size_t Wd,
                                 size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                 size_t pt, size_t pl, size_t OH, size_t OW, int act);
/* dW, db (NULL: skipped) and dx (NULL: skipped) from dy (B,OC,OH,OW). col holds forward's
 * patches on entry and is clobbered; x is read again where the batch is unfolded in chunks
 * (large batches: see agt_nn_conv2d_scratch). */
agt_status agt_nn_conv2d_backward(const float *x, const float *W, const float *dy,
                                  float *dx, float *dW, float *db, float *col,
                                  size_t B, size_t C, size_t H, size_t Wd,
                                  size_t OC, size_t KH, size_t KW, size_t sh, size_t sw,
                                  size_t pt, size_t pl, size_t OH, size_t OW);

/* Pooling over P = B·C planes of H×W into OH×OW. Max-pool records the flat in-plane
 * index of each maximum in idx (P·OH·OW int32) for backward (ties: the first in row-major
 * order); a window that holds NaN yields NaN. Max-pool's backward can fold in the
 * backward of a ReLU applied just before it: pass the pool's output as relu_y and only
 * windows whose max is > 0 pass their gradient (NULL: plain max-pool); it takes the forward's
 * window geometry (the device twin gathers over the windows that hold each pixel). Avg-pool divides by
 * the number of non-padded pixels of each window. */
agt_status agt_nn_maxpool_forward(const float *x, float *y, int32_t *idx, size_t P,
                                  size_t H, size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                  size_t pt, size_t pl, size_t OH, size_t OW);
agt_status agt_nn_maxpool_backward(const float *dy, const int32_t *idx, const float *relu_y,
                                   float *dx, size_t P, size_t H, size_t Wd, size_t KH, size_t KW,
                                   size_t sh, size_t sw, size_t pt, size_t pl, size_t OH, size_t OW);
agt_status agt_nn_avgpool_forward(const float *x, float *y, size_t P,
                                  size_t H, size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                  size_t pt, size_t pl, size_t OH, size_t OW);
agt_status agt_nn_avgpool_backward(const float *dy, float *dx, size_t P,
                                   size_t H, size_t Wd, size_t KH, size_t KW, size_t sh, size_t sw,
                                   size_t pt, size_t pl, size_t OH, size_t OW);

/* Element-wise activations on n values; backward reads the forward OUTPUT y.
 * act: 0 relu, 1 tanh, 2 sigmoid. In place (y == x, dx == dy) is allowed. */
enum { AGT_NN_RELU = 0, AGT_NN_TANH = 1, AGT_NN_SIGMOID = 2 };
agt_status agt_nn_act_forward(int act, const float *x, float *y, size_t n);
agt_status agt_nn_act_backward(int act, const float *y, const float *dy, float *dx, size_t n);
/* Adds bias b (C) to x viewed as (B, C, S) (S = 1 for dense) and applies act (-1: none). */
agt_status agt_nn_bias_act(float *x, const float *b, size_t B, size_t C, size_t S, int act);

/* y = act(a + b) over n values (act -1: none): a residual connection's sum. y may be a or b. */
agt_status agt_nn_add_act(const float *a, const float *b, float *y, size_t n, int act);

/* Inverted dropout: mask[i] = 0 with probability p, else 1/(1-p); y = x·mask.
 * The mask is drawn from r in index order (reproducible). p in [0, 1). */
agt_status agt_nn_dropout_forward(const float *x, float *y, float *mask, size_t n, float p,
                                  agt_rng *r);
agt_status agt_nn_dropout_backward(const float *dy, const float *mask, float *dx, size_t n);

/* Batch normalisation of x viewed as (B, C, S) (S = H·W for images, 1 for dense), per channel c:
 * y = gamma[c]·((x − mean_c)·invstd_c) + beta[c], then act (-1 none, else AGT_NN_*).
 * train = 1: mean_c and the biased variance var_c are the batch's (summed in double, two
 * passes), invstd_c = 1/√(var_c + eps), both saved (save_mean, save_invstd: C floats each, for
 * backward), and the running statistics move: run = (1 − momentum)·run + momentum·stat, the
 * variance's unbiased (N/(N − 1), N = B·S; momentum 0 leaves them, 1 replaces them).
 * train = 0: the running statistics normalise (save_* untouched, may be NULL). */
agt_status agt_nn_batchnorm_forward(const float *x, const float *gamma, const float *beta,
                                    float *y, float *save_mean, float *save_invstd,
                                    float *run_mean, float *run_var, size_t B, size_t C, size_t S,
                                    float momentum, float eps, int train, int act);
/* The training-mode backward from forward's saved statistics: dgamma_c = Σ dy·x̂, dbeta_c = Σ dy
 * (double sums), dx = gamma·invstd·(dy − dbeta/N − x̂·dgamma/N) (dx NULL: skipped). */
agt_status agt_nn_batchnorm_backward(const float *x, const float *gamma, const float *dy,
                                     const float *save_mean, const float *save_invstd, float *dx,
                                     float *dgamma, float *dbeta, size_t B, size_t C, size_t S);

/* Softmax cross-entropy of logits (B,K) against labels y (B) in [0,K): *loss = mean over
 * the batch, computed stably (log-sum-exp shifted by the row max). dlogits (B,K), when
 * not NULL, receives d(mean loss)/d(logits) = (softmax − onehot)/B. A label out of range
 * is AGT_EINVAL. */
agt_status agt_nn_softmax_xent(const float *logits, const int32_t *y, size_t B, size_t K,
                               double *loss, float *dlogits);
/* Evaluation: *loss_sum = Σ per-example cross-entropy, *correct = #(argmax == label);
 * ties go to the lowest class index, a row holding NaN is never correct. */
agt_status agt_nn_eval_batch(const float *logits, const int32_t *y, size_t B, size_t K,
                             double *loss_sum, size_t *correct);
/* ffi:end */

/* The shape checks the kernels above share with their device twins (src/cuda/): AGT_EINVAL
 * naming what is wrong. */
agt_status agt_nn_conv2d_check(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH,
                               size_t KW, size_t sh, size_t sw, size_t pt, size_t pl, size_t OH,
                               size_t OW);
agt_status agt_nn_pool_check(size_t P, size_t H, size_t W, size_t KH, size_t KW, size_t sh,
                             size_t sw, size_t OH, size_t OW);
agt_status agt_nn_dropout_check(float p);
agt_status agt_nn_batchnorm_check(size_t B, size_t C, size_t S, float momentum, float eps,
                                  int train, int act);

#endif
