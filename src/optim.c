/* optim.c — fused optimizer updates (formulas in optim.h).
 *
 * Each update is one element-wise pass, run on fixed chunks of the thread pool when d
 * is large enough to pay for it. Regularization penalties reduce per-chunk partial
 * sums (double) in chunk order, so they are bit-identical for any thread count. */

#include "optim.h"
#include "mem.h"
#include "pool.h"

#include <math.h>

#define GRAIN 16384

enum { K_SGD, K_MOMENTUM, K_NESTEROV, K_ADAM, K_ADAGRAD, K_ADADELTA, K_RMSPROP, K_RMSPROP_C };

typedef struct {
  int kind;
  float *theta, *s1, *s2, *s3;
  const float *g;
  float lr, a, b, eps;
} opt_ctx;

static void opt_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const opt_ctx *t = vctx;
  float *th = t->theta;
  const float *g = t->g;
  float lr = t->lr, a = t->a, b = t->b, eps = t->eps;
  switch (t->kind) {
  case K_SGD:
    for (size_t i = begin; i < end; i++) th[i] -= lr * g[i];
    break;
  case K_MOMENTUM: {
    float *acc = t->s1;
    for (size_t i = begin; i < end; i++) {
      acc[i] = a * acc[i] + g[i];
      th[i] -= lr * acc[i];
    }
    break;
  }
  case K_NESTEROV: {
    float *acc = t->s1;
    for (size_t i = begin; i < end; i++) {
      acc[i] = a * acc[i] + g[i];
      th[i] -= lr * g[i] + lr * a * acc[i];
    }
    break;
  }
  case K_ADAM: { /* lr here is already lr·√(1−β2ᵗ)/(1−β1ᵗ) */
    float *m = t->s1, *v = t->s2;
    for (size_t i = begin; i < end; i++) {
      m[i] += (g[i] - m[i]) * (1.0f - a);
      v[i] += (g[i] * g[i] - v[i]) * (1.0f - b);
      th[i] -= lr * m[i] / (sqrtf(v[i]) + eps);
    }
    break;
  }
  case K_ADAGRAD: {
    float *acc = t->s1;
    for (size_t i = begin; i < end; i++) {
      acc[i] += g[i] * g[i];
      th[i] -= lr * g[i] / sqrtf(acc[i]);
    }
    break;
  }
  case K_ADADELTA: {
    float *acc = t->s1, *au = t->s2;
    for (size_t i = begin; i < end; i++) {
      acc[i] = acc[i] * a + g[i] * g[i] * (1.0f - a);
      float u = sqrtf(au[i] + eps) / sqrtf(acc[i] + eps) * g[i];
      th[i] -= u * lr;
      au[i] = au[i] * a + u * u * (1.0f - a);
    }
    break;
  }
  case K_RMSPROP: {
    float *ms = t->s1, *mom = t->s3;
    for (size_t i = begin; i < end; i++) {
      ms[i] += (g[i] * g[i] - ms[i]) * (1.0f - a);
      mom[i] = mom[i] * b + lr * g[i] / sqrtf(ms[i] + eps);
      th[i] -= mom[i];
    }
    break;
  }
  case K_RMSPROP_C: {
    float *ms = t->s1, *mg = t->s2, *mom = t->s3;
    for (size_t i = begin; i < end; i++) {
      ms[i] += (g[i] * g[i] - ms[i]) * (1.0f - a);
      mg[i] += (g[i] - mg[i]) * (1.0f - a);
      float den = ms[i] - mg[i] * mg[i] + eps;
      mom[i] = mom[i] * b + lr * g[i] / sqrtf(den);
      th[i] -= mom[i];
    }
    break;
  }
  }
}

static agt_status run(opt_ctx *t, size_t d) {
  if (d <= GRAIN) {
    opt_task(t, 0, d, 0);
    return AGT_OK;
  }
  return agt_parallel_for(d, GRAIN, opt_task, t);
}

#define NEED(p) do { if (!(p)) return AGT_FAIL(AGT_EINVAL, "%s: " #p " must not be NULL", __func__); } while (0)

agt_status agt_optim_sgd(float *theta, const float *g, size_t d, float lr) {
  NEED(theta); NEED(g);
  opt_ctx t = { K_SGD, theta, NULL, NULL, NULL, g, lr, 0, 0, 0 };
  return run(&t, d);
}

agt_status agt_optim_momentum(float *theta, float *accum, const float *g, size_t d, float lr,
                              float momentum, int nesterov) {
  NEED(theta); NEED(g); NEED(accum);
  opt_ctx t = { nesterov ? K_NESTEROV : K_MOMENTUM, theta, accum, NULL, NULL, g, lr, momentum, 0, 0 };
  return run(&t, d);
}

agt_status agt_optim_adam(float *theta, float *m, float *v, const float *g, size_t d, float lr,
                          float beta1, float beta2, float eps, double t) {
  NEED(theta); NEED(g); NEED(m); NEED(v);
  if (!(t >= 1.0)) return AGT_FAIL(AGT_EINVAL, "adam: the update index t must be >= 1, got %g", t);
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    return AGT_FAIL(AGT_EINVAL, "adam: betas must be in [0, 1), got beta1=%g beta2=%g", (double)beta1, (double)beta2);
  double alpha = (double)lr * sqrt(1.0 - pow((double)beta2, t)) / (1.0 - pow((double)beta1, t));
  opt_ctx c = { K_ADAM, theta, m, v, NULL, g, (float)alpha, beta1, beta2, eps };
  return run(&c, d);
}

agt_status agt_optim_adagrad(float *theta, float *accum, const float *g, size_t d, float lr) {
  NEED(theta); NEED(g); NEED(accum);
  opt_ctx t = { K_ADAGRAD, theta, accum, NULL, NULL, g, lr, 0, 0, 0 };
  return run(&t, d);
}

agt_status agt_optim_adadelta(float *theta, float *accum, float *accum_update, const float *g,
                              size_t d, float lr, float rho, float eps) {
  NEED(theta); NEED(g); NEED(accum); NEED(accum_update);
  opt_ctx t = { K_ADADELTA, theta, accum, accum_update, NULL, g, lr, rho, 0, eps };
  return run(&t, d);
}

agt_status agt_optim_rmsprop(float *theta, float *ms, float *mg, float *mom, const float *g,
                             size_t d, float lr, float decay, float momentum, float eps) {
  NEED(theta); NEED(g); NEED(ms); NEED(mom);
  opt_ctx t = { mg ? K_RMSPROP_C : K_RMSPROP, theta, ms, mg, mom, g, lr, decay, momentum, eps };
  return run(&t, d);
}

/* ---- regularization ---------------------------------------------------------------- */

typedef struct {
  const float *theta;
  float *g;
  float lambda;
  int l1;
  double *part;
} reg_ctx;

static void reg_task(void *vctx, size_t begin, size_t end, size_t chunk) {
  const reg_ctx *t = vctx;
  double s = 0.0;
  float lam = t->lambda;
  if (t->l1) {
    for (size_t i = begin; i < end; i++) {
      float w = t->theta[i];
      s += fabs((double)w);
      t->g[i] += w > 0.0f ? lam : (w < 0.0f ? -lam : 0.0f);
    }
  } else {
    for (size_t i = begin; i < end; i++) {
      float w = t->theta[i];
      s += (double)w * (double)w;
      t->g[i] += lam * w;
    }
  }
  t->part[chunk] = s;
}

static agt_status reg(const float *theta, float *g, size_t d, float lambda, int l1, double *penalty) {
  NEED(theta); NEED(g); NEED(penalty);
  size_t nc = agt_chunk_count(d, GRAIN);
  double one;
  double *part = nc <= 1 ? &one : agt_alloc(nc * sizeof(double));
  if (!part) return AGT_FAIL(AGT_ENOMEM, "regularization: no memory for %zu partial sums", nc);
  one = 0.0;
  reg_ctx t = { theta, g, lambda, l1, part };
  agt_status s;
  if (nc <= 1) {
    if (d) reg_task(&t, 0, d, 0);
    s = AGT_OK;
  } else {
    s = agt_parallel_for(d, GRAIN, reg_task, &t);
  }
  double total = 0.0;
  for (size_t c = 0; c < (nc ? nc : 1); c++) total += part[c];
  if (part != &one) agt_free(part, nc * sizeof(double));
  *penalty = l1 ? (double)lambda * total : 0.5 * (double)lambda * total;
  return s;
}

agt_status agt_optim_l1(const float *theta, float *g, size_t d, float lambda, double *penalty) {
  return reg(theta, g, d, lambda, 1, penalty);
}

agt_status agt_optim_l2(const float *theta, float *g, size_t d, float lambda, double *penalty) {
  return reg(theta, g, d, lambda, 0, penalty);
}
