/* optim.h — fused optimizer updates and regularization on flat float32 vectors.
 *
 * One pass over the d parameters per step: each update reads the gradient g and its
 * slots (same length d, owned by the caller, saved with a checkpoint) and writes θ in
 * place. The formulas are TensorFlow 1's Apply* kernels, so a run matches the
 * original system's optimizer semantics:
 *   sgd        θ −= lr·g
 *   momentum   a = μ·a + g;  θ −= lr·a            (nesterov: θ −= lr·(g + μ·a))
 *   adam       m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
 *              θ −= lr·√(1−β2ᵗ)/(1−β1ᵗ) · m/(√v + ε)         (t = 1 on the first step)
 *   adagrad    a += g²;  θ −= lr·g/√a                          (a starts at 0.1)
 *   adadelta   a = ρ·a + (1−ρ)·g²;  u = √(au + ε)/√(a + ε)·g;  θ −= lr·u;
 *              au = ρ·au + (1−ρ)·u²
 *   rmsprop    ms = ρ·ms + (1−ρ)·g²;  [centered: mg = ρ·mg + (1−ρ)·g, den = ms − mg²]
 *              mom = μ·mom + lr·g/√(den + ε);  θ −= mom        (ms starts at 1)
 * Element-wise, split on fixed chunks of the pool: bit-identical for any thread count.
 * Regularization adds its gradient into g and returns its value in double. */
#ifndef AGT_OPTIM_H
#define AGT_OPTIM_H

#include "status.h"

/* ffi:begin */
agt_status agt_optim_sgd(float *theta, const float *g, size_t d, float lr);
agt_status agt_optim_momentum(float *theta, float *accum, const float *g, size_t d, float lr,
                              float momentum, int nesterov);
/* t: the 1-based index of this update (bias correction). */
agt_status agt_optim_adam(float *theta, float *m, float *v, const float *g, size_t d, float lr,
                          float beta1, float beta2, float eps, double t);
agt_status agt_optim_adagrad(float *theta, float *accum, const float *g, size_t d, float lr);
agt_status agt_optim_adadelta(float *theta, float *accum, float *accum_update, const float *g,
                              size_t d, float lr, float rho, float eps);
/* mg: NULL for the plain (uncentered) form. */
agt_status agt_optim_rmsprop(float *theta, float *ms, float *mg, float *mom, const float *g,
                             size_t d, float lr, float decay, float momentum, float eps);

/* g += λ·sign(θ) (sign(0) = 0); *penalty = λ·Σ|θ|. */
agt_status agt_optim_l1(const float *theta, float *g, size_t d, float lambda, double *penalty);
/* g += λ·θ; *penalty = (λ/2)·Σθ² (half the squared norm). */
agt_status agt_optim_l2(const float *theta, float *g, size_t d, float lambda, double *penalty);
/* ffi:end */

#endif
