/* test_nn.c — layer kernels and optimizer updates against naive double-precision
 * references: direct convolution (forward and both gradients), pooling, linear,
 * softmax cross-entropy, dropout, batch norm, the residual sum, one step of each optimizer,
 * regularizers; plus bit-identical results for 1 and 3 threads. */
#include "check.h"
#include "mem.h"
#include "nn.h"
#include "optim.h"
#include "pool.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rnd(size_t n, uint64_t stream) {
  float *p = malloc(n * sizeof(float));
  agt_rng r;
  agt_rng_init(&r, 7, stream);
  agt_rng_uniform(&r, p, n, -1.0f, 1.0f);
  return p;
}

static double maxdiff(const float *a, const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - b[i]);
    if (e > m || e != e) m = e;
  }
  return m;
}

/* Direct convolution in double: y, and the gradients of L = Σ y·dy. */
static void conv_ref(const float *x, const float *W, const float *b, const float *dy,
                     double *y, double *dx, double *dW, double *db,
                     size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t KH, size_t KW,
                     size_t sh, size_t sw, size_t pt, size_t pl, size_t OH, size_t OW) {
  memset(dx, 0, B * C * H * Wd * sizeof(double));
  memset(dW, 0, OC * C * KH * KW * sizeof(double));
  memset(db, 0, OC * sizeof(double));
  for (size_t i = 0; i < B; i++)
    for (size_t o = 0; o < OC; o++)
      for (size_t oh = 0; oh < OH; oh++)
        for (size_t ow = 0; ow < OW; ow++) {
          double s = b[o];
          double g = dy[((i * OC + o) * OH + oh) * OW + ow];
          db[o] += g;
          for (size_t c = 0; c < C; c++)
            for (size_t kh = 0; kh < KH; kh++)
              for (size_t kw = 0; kw < KW; kw++) {
                long ih = (long)(oh * sh + kh) - (long)pt, iw = (long)(ow * sw + kw) - (long)pl;
                if (ih < 0 || iw < 0 || ih >= (long)H || iw >= (long)Wd) continue;
                size_t xi = ((i * C + c) * H + (size_t)ih) * Wd + (size_t)iw;
                size_t wi = ((o * C + c) * KH + kh) * KW + kw;
                s += (double)x[xi] * W[wi];
                dx[xi] += g * W[wi];
                dW[wi] += g * x[xi];
              }
          y[((i * OC + o) * OH + oh) * OW + ow] = s;
        }
}

static void test_conv(size_t B, size_t C, size_t H, size_t Wd, size_t OC, size_t K, size_t s, int same) {
  size_t OH, OW, pt, pl;
  CHECK(agt_nn_conv_geometry(H, K, s, same, &OH, &pt) == AGT_OK);
  CHECK(agt_nn_conv_geometry(Wd, K, s, same, &OW, &pl) == AGT_OK);
  size_t nx = B * C * H * Wd, nw = OC * C * K * K, ny = B * OC * OH * OW;
  float *x = rnd(nx, 1), *W = rnd(nw, 2), *b = rnd(OC, 3), *dy = rnd(ny, 4);
  float *y = malloc(ny * 4), *dx = malloc(nx * 4), *dW = malloc(nw * 4), *db = malloc(OC * 4);
  size_t ncol = agt_nn_conv2d_scratch(B, C, H, Wd, OC, K, K, s, s, OH, OW);
  float *col = malloc(ncol * 4);
  double *ry = malloc(ny * 8), *rdx = malloc(nx * 8), *rdW = malloc(nw * 8), *rdb = malloc(OC * 8);
  conv_ref(x, W, b, dy, ry, rdx, rdW, rdb, B, C, H, Wd, OC, K, K, s, s, pt, pl, OH, OW);
  CHECK(agt_nn_conv2d_forward(x, W, b, y, col, B, C, H, Wd, OC, K, K, s, s, pt, pl, OH, OW, -1) == AGT_OK);
  CHECK(maxdiff(y, ry, ny) < 1e-4);
  CHECK(agt_nn_conv2d_backward(x, W, dy, dx, dW, db, col, B, C, H, Wd, OC, K, K, s, s, pt, pl, OH, OW) == AGT_OK);
  CHECK(maxdiff(dx, rdx, nx) < 1e-4);
  CHECK(maxdiff(dW, rdW, nw) < 1e-3);
  CHECK(maxdiff(db, rdb, OC) < 1e-3);
  free(x); free(W); free(b); free(dy); free(y); free(dx); free(dW); free(db); free(col);
  free(ry); free(rdx); free(rdW); free(rdb);
}

static void test_geometry(void) {
  size_t o, p;
  CHECK(agt_nn_conv_geometry(32, 3, 2, 1, &o, &p) == AGT_OK && o == 16 && p == 0);
  CHECK(agt_nn_conv_geometry(32, 5, 1, 1, &o, &p) == AGT_OK && o == 32 && p == 2);
  CHECK(agt_nn_conv_geometry(28, 2, 2, 1, &o, &p) == AGT_OK && o == 14 && p == 0);
  CHECK(agt_nn_conv_geometry(7, 3, 2, 1, &o, &p) == AGT_OK && o == 4 && p == 1);
  CHECK(agt_nn_conv_geometry(28, 5, 1, 0, &o, &p) == AGT_OK && o == 24 && p == 0);
  CHECK(agt_nn_conv_geometry(3, 5, 1, 0, &o, &p) == AGT_EINVAL);
  CHECK(agt_nn_conv_geometry(3, 0, 1, 0, &o, &p) == AGT_EINVAL);
}

/* Max-pool 3x3 stride 2 on planes wide enough for eight whole windows in a row (the vector
 * path), with ties (values on a coarse grid), NaN and ±inf: against the row-major first
 * maximum; a window holding a NaN gives NaN. */
static void test_pool_wide(size_t H, size_t W, int same) {
  size_t P = 4, OH, OW, pt, pl;
  CHECK(agt_nn_conv_geometry(H, 3, 2, same, &OH, &pt) == AGT_OK);
  CHECK(agt_nn_conv_geometry(W, 3, 2, same, &OW, &pl) == AGT_OK);
  float *x = rnd(P * H * W, 9);
  for (size_t i = 0; i < P * H * W; i++) {
    x[i] = floorf(x[i] * 3.0f);                    /* -3 .. 2: many ties */
    if (i % 97 == 5) x[i] = NAN;
    if (i % 89 == 7) x[i] = INFINITY;
    if (i % 83 == 11) x[i] = -INFINITY;
  }
  float *y = malloc(P * OH * OW * 4);
  int32_t *idx = malloc(P * OH * OW * 4);
  CHECK(agt_nn_maxpool_forward(x, y, idx, P, H, W, 3, 3, 2, 2, pt, pl, OH, OW) == AGT_OK);
  size_t bad = 0;
  for (size_t p = 0; p < P; p++)
    for (size_t oh = 0; oh < OH; oh++)
      for (size_t ow = 0; ow < OW; ow++) {
        float best = 0;
        long bi = -1;
        int nan = 0;
        for (size_t kh = 0; kh < 3; kh++)
          for (size_t kw = 0; kw < 3; kw++) {
            long ih = (long)(oh * 2 + kh) - (long)pt, iw = (long)(ow * 2 + kw) - (long)pl;
            if (ih < 0 || iw < 0 || ih >= (long)H || iw >= (long)W) continue;
            float v = x[(p * H + (size_t)ih) * W + (size_t)iw];
            if (v != v) nan = 1;
            else if (bi < 0 || v > best) { best = v; bi = ih * (long)W + iw; }
          }
        size_t o = (p * OH + oh) * OW + ow;
        if (nan) bad += !(y[o] != y[o]);
        else if (bi >= 0) bad += !(y[o] == best && idx[o] == bi);
      }
  CHECK(bad == 0);
  free(x); free(y); free(idx);
}

static void test_pool(void) {
  size_t P = 3, H = 7, W = 6, OH, OW, pt, pl;
  agt_nn_conv_geometry(H, 3, 2, 1, &OH, &pt);
  agt_nn_conv_geometry(W, 3, 2, 1, &OW, &pl);
  float *x = rnd(P * H * W, 5), *dy = rnd(P * OH * OW, 6);
  float *y = malloc(P * OH * OW * 4), *dx = malloc(P * H * W * 4);
  int32_t *idx = malloc(P * OH * OW * 4);
  double *ry = calloc(P * OH * OW, 8), *rdx = calloc(P * H * W, 8);
  for (int avg = 0; avg < 2; avg++) {
    memset(rdx, 0, P * H * W * 8);
    for (size_t p = 0; p < P; p++)
      for (size_t oh = 0; oh < OH; oh++)
        for (size_t ow = 0; ow < OW; ow++) {
          double best = -INFINITY, sum = 0;
          size_t bi = 0, cnt = 0;
          for (size_t kh = 0; kh < 3; kh++)
            for (size_t kw = 0; kw < 3; kw++) {
              long ih = (long)(oh * 2 + kh) - (long)pt, iw = (long)(ow * 2 + kw) - (long)pl;
              if (ih < 0 || iw < 0 || ih >= (long)H || iw >= (long)W) continue;
              size_t i = (p * H + (size_t)ih) * W + (size_t)iw;
              if (x[i] > best) { best = x[i]; bi = i; }
              sum += x[i];
              cnt++;
            }
          size_t o = (p * OH + oh) * OW + ow;
          if (avg) {
            ry[o] = sum / cnt;
            for (size_t kh = 0; kh < 3; kh++)
              for (size_t kw = 0; kw < 3; kw++) {
                long ih = (long)(oh * 2 + kh) - (long)pt, iw = (long)(ow * 2 + kw) - (long)pl;
                if (ih < 0 || iw < 0 || ih >= (long)H || iw >= (long)W) continue;
                rdx[(p * H + (size_t)ih) * W + (size_t)iw] += dy[o] / cnt;
              }
          } else {
            ry[o] = best;
            rdx[bi] += dy[o];
          }
        }
    if (avg) {
      CHECK(agt_nn_avgpool_forward(x, y, P, H, W, 3, 3, 2, 2, pt, pl, OH, OW) == AGT_OK);
      CHECK(agt_nn_avgpool_backward(dy, dx, P, H, W, 3, 3, 2, 2, pt, pl, OH, OW) == AGT_OK);
    } else {
      CHECK(agt_nn_maxpool_forward(x, y, idx, P, H, W, 3, 3, 2, 2, pt, pl, OH, OW) == AGT_OK);
      CHECK(agt_nn_maxpool_backward(dy, idx, NULL, dx, P, H, W, 3, 3, 2, 2, pt, pl, OH, OW) == AGT_OK);
    }
    CHECK(maxdiff(y, ry, P * OH * OW) < 1e-6);
    CHECK(maxdiff(dx, rdx, P * H * W) < 1e-6);
  }
  /* NaN in a window propagates through max-pool */
  x[0] = NAN;
  CHECK(agt_nn_maxpool_forward(x, y, idx, P, H, W, 3, 3, 2, 2, pt, pl, OH, OW) == AGT_OK);
  CHECK(y[0] != y[0]);
  free(x); free(dy); free(y); free(dx); free(idx); free(ry); free(rdx);
}

/* Largest errors of a linear layer's output y = x·W + b and its weight gradient dW = xᵀ·dy
 * against double references. */
static void linear_ref_err(const float *x, const float *W, const float *b, const float *y,
                           const float *dy, const float *dW, size_t B, size_t I, size_t O,
                           double *ey, double *edW) {
  *ey = *edW = 0;
  for (size_t i = 0; i < B; i++)
    for (size_t o = 0; o < O; o++) {
      double s = b[o];
      for (size_t k = 0; k < I; k++) s += (double)x[i * I + k] * W[k * O + o];
      *ey = fmax(*ey, fabs(s - y[i * O + o]));
    }
  for (size_t k = 0; k < I; k++)
    for (size_t o = 0; o < O; o++) {
      double s = 0;
      for (size_t i = 0; i < B; i++) s += (double)x[i * I + k] * dy[i * O + o];
      *edW = fmax(*edW, fabs(s - dW[k * O + o]));
    }
}

static void test_linear_xent(void) {
  size_t B = 5, I = 7, O = 4;
  float *x = rnd(B * I, 8), *W = rnd(I * O, 9), *b = rnd(O, 10), *dy = rnd(B * O, 11);
  float y[20], dx[35], dW[28], db[4];
  CHECK(agt_nn_linear_forward(x, W, b, y, B, I, O) == AGT_OK);
  CHECK(agt_nn_linear_backward(x, W, dy, dx, dW, db, B, I, O) == AGT_OK);
  double e1, e2, e3 = 0, e4 = 0;
  linear_ref_err(x, W, b, y, dy, dW, B, I, O, &e1, &e2);
  for (size_t i = 0; i < B; i++)
    for (size_t k = 0; k < I; k++) {
      double s = 0;
      for (size_t o = 0; o < O; o++) s += (double)dy[i * O + o] * W[k * O + o];
      e3 = fmax(e3, fabs(s - dx[i * I + k]));
    }
  for (size_t o = 0; o < O; o++) {
    double s = 0;
    for (size_t i = 0; i < B; i++) s += dy[i * O + o];
    e4 = fmax(e4, fabs(s - db[o]));
  }
  CHECK(e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5 && e4 < 1e-5);

  /* softmax cross-entropy: value, gradient by central differences, stability */
  int32_t lab[5] = { 0, 3, 1, 2, 3 };
  float z[20], dz[20];
  for (int i = 0; i < 20; i++) z[i] = y[i] * 3.0f;
  double L;
  CHECK(agt_nn_softmax_xent(z, lab, B, O, &L, dz) == AGT_OK);
  double ref = 0;
  for (size_t i = 0; i < B; i++) {
    double s = 0;
    for (size_t k = 0; k < O; k++) s += exp(z[i * O + k]);
    ref += log(s) - z[i * O + lab[i]];
  }
  CHECK_NEAR(L, ref / B, 1e-9);
  double worst = 0;
  for (int j = 0; j < 20; j++) {
    float keep = z[j];
    double lp, lm, h = 1e-2;
    z[j] = keep + (float)h; agt_nn_softmax_xent(z, lab, B, O, &lp, NULL);
    z[j] = keep - (float)h; agt_nn_softmax_xent(z, lab, B, O, &lm, NULL);
    z[j] = keep;
    worst = fmax(worst, fabs((lp - lm) / (2 * h) - dz[j]));
  }
  CHECK(worst < 1e-4);
  float big[4] = { 1000.0f, -1000.0f, 999.0f, 0.0f };
  int32_t l0 = 2;
  CHECK(agt_nn_softmax_xent(big, &l0, 1, 4, &L, NULL) == AGT_OK);
  CHECK_NEAR(L, 1.0 + log(1.0 + exp(-1.0)), 1e-6);
  int32_t bad = 4;
  CHECK(agt_nn_softmax_xent(big, &bad, 1, 4, &L, NULL) == AGT_EINVAL);
  size_t correct;
  double lsum;
  int32_t l1 = 0;
  CHECK(agt_nn_eval_batch(big, &l1, 1, 4, &lsum, &correct) == AGT_OK && correct == 1);
  big[3] = NAN;
  CHECK(agt_nn_eval_batch(big, &l1, 1, 4, &lsum, &correct) == AGT_OK && correct == 0);
  free(x); free(W); free(b); free(dy);
}

/* The compressed-input path (mostly-zero inputs) against a double reference, for output
 * widths that exercise every register-block shape. */
static void test_sparse_linear(void) {
  size_t B = 7, I = 96;
  size_t outs[] = { 3, 10, 64, 100, 130, 300 };
  for (size_t t = 0; t < sizeof outs / sizeof outs[0]; t++) {
    size_t O = outs[t];
    float *x = rnd(B * I, 40 + t), *W = rnd(I * O, 50 + t), *b = rnd(O, 60 + t), *dy = rnd(B * O, 70 + t);
    for (size_t i = 0; i < B * I; i++) if (x[i] < 0.8f) x[i] = 0; /* ~10% non-zeros */
    float *y = malloc(B * O * 4), *dW = malloc(I * O * 4);
    CHECK(agt_nn_linear_forward(x, W, b, y, B, I, O) == AGT_OK);
    CHECK(agt_nn_linear_backward(x, W, dy, NULL, dW, NULL, B, I, O) == AGT_OK);
    double e1, e2;
    linear_ref_err(x, W, b, y, dy, dW, B, I, O, &e1, &e2);
    CHECK(e1 < 1e-5);
    CHECK(e2 < 1e-5);
    free(x); free(W); free(b); free(dy); free(y); free(dW);
  }
}

static void test_act_dropout(void) {
  float x[6] = { -2, -0.5f, 0, 0.5f, 2, 3 }, y[6], dy[6] = { 1, 1, 1, 1, 1, 1 }, dx[6];
  CHECK(agt_nn_act_forward(AGT_NN_RELU, x, y, 6) == AGT_OK && y[0] == 0 && y[4] == 2);
  CHECK(agt_nn_act_backward(AGT_NN_RELU, y, dy, dx, 6) == AGT_OK && dx[1] == 0 && dx[5] == 1);
  CHECK(agt_nn_act_forward(AGT_NN_TANH, x, y, 6) == AGT_OK);
  CHECK_NEAR(y[4], tanh(2.0), 1e-6);
  CHECK(agt_nn_act_backward(AGT_NN_TANH, y, dy, dx, 6) == AGT_OK);
  CHECK_NEAR(dx[4], 1 - tanh(2.0) * tanh(2.0), 1e-6);
  CHECK(agt_nn_act_forward(AGT_NN_SIGMOID, x, y, 6) == AGT_OK);
  CHECK_NEAR(y[0], 1 / (1 + exp(2.0)), 1e-6);
  CHECK(agt_nn_act_forward(7, x, y, 6) == AGT_EINVAL);
  float b2[3] = { 1, -10, 0 }, m[6] = { 0, 1, 2, 3, 4, 5 };
  CHECK(agt_nn_bias_act(m, b2, 2, 3, 1, AGT_NN_RELU) == AGT_OK && m[0] == 1 && m[1] == 0 && m[3] == 4);
  size_t n = 10000;
  float *a = rnd(n, 12), *o = malloc(n * 4), *mask = malloc(n * 4);
  agt_rng r;
  agt_rng_init(&r, 1, 2);
  CHECK(agt_nn_dropout_forward(a, o, mask, n, 0.3f, &r) == AGT_OK);
  size_t zeros = 0, off = 0;
  for (size_t i = 0; i < n; i++) {
    if (mask[i] == 0) zeros++;
    else if (fabs(mask[i] - 1 / 0.7) > 1e-6 || o[i] != a[i] * mask[i]) off++;
  }
  CHECK(zeros > 2700 && zeros < 3300);
  CHECK(off == 0);
  CHECK(agt_nn_dropout_forward(a, o, mask, n, 1.0f, &r) == AGT_EINVAL);
  free(a); free(o); free(mask);
}

static void test_optim(void) {
  size_t d = 40000; /* over one chunk: exercises the pool */
  float *g = rnd(d, 20), *th0 = rnd(d, 21);
  float *th = malloc(d * 4), *s1 = malloc(d * 4), *s2 = malloc(d * 4), *s3 = malloc(d * 4);
  double e;
  float lr = 0.1f;
#define RESET(v1, v2, v3) do { memcpy(th, th0, d * 4); for (size_t i = 0; i < d; i++) { s1[i] = v1; s2[i] = v2; s3[i] = v3; } } while (0)
  /* sgd */
  RESET(0, 0, 0);
  CHECK(agt_optim_sgd(th, g, d, lr) == AGT_OK);
  e = 0; for (size_t i = 0; i < d; i++) e = fmax(e, fabs(th[i] - (th0[i] - lr * g[i])));
  CHECK(e < 1e-6);
  /* momentum, twice, with and without nesterov */
  for (int nest = 0; nest < 2; nest++) {
    RESET(0, 0, 0);
    agt_optim_momentum(th, s1, g, d, lr, 0.9f, nest);
    CHECK(agt_optim_momentum(th, s1, g, d, lr, 0.9f, nest) == AGT_OK);
    e = 0;
    for (size_t i = 0; i < d; i++) {
      double a1 = g[i], a2 = 0.9 * a1 + g[i];
      double t = th0[i] - (nest ? lr * g[i] + lr * 0.9 * a1 : lr * a1);
      t -= nest ? lr * g[i] + lr * 0.9 * a2 : lr * a2;
      e = fmax(e, fabs(th[i] - t));
    }
    CHECK(e < 1e-5);
  }
  /* adam, first step: θ −= lr·√(1−β2)/(1−β1)·m/(√v+ε) with m=(1−β1)g, v=(1−β2)g² */
  RESET(0, 0, 0);
  CHECK(agt_optim_adam(th, s1, s2, g, d, lr, 0.9f, 0.999f, 1e-8f, 1.0) == AGT_OK);
  e = 0;
  for (size_t i = 0; i < d; i++) {
    double m = 0.1 * g[i], v = 0.001 * (double)g[i] * g[i];
    double t = th0[i] - lr * sqrt(0.001) / 0.1 * m / (sqrt(v) + 1e-8);
    e = fmax(e, fabs(th[i] - t));
  }
  CHECK(e < 1e-5);
  CHECK(agt_optim_adam(th, s1, s2, g, d, lr, 0.9f, 0.999f, 1e-8f, 0.0) == AGT_EINVAL);
  /* adagrad from 0.1 */
  RESET(0.1f, 0, 0);
  CHECK(agt_optim_adagrad(th, s1, g, d, lr) == AGT_OK);
  e = 0; for (size_t i = 0; i < d; i++) e = fmax(e, fabs(th[i] - (th0[i] - lr * g[i] / sqrt(0.1 + (double)g[i] * g[i]))));
  CHECK(e < 1e-5);
  /* adadelta */
  RESET(0, 0, 0);
  CHECK(agt_optim_adadelta(th, s1, s2, g, d, 1.0f, 0.95f, 1.0f) == AGT_OK);
  e = 0;
  for (size_t i = 0; i < d; i++) {
    double a = 0.05 * g[i] * g[i], u = sqrt(1.0) / sqrt(a + 1.0) * g[i];
    e = fmax(e, fabs(th[i] - (th0[i] - u)));
    e = fmax(e, fabs(s2[i] - 0.05 * u * u));
  }
  CHECK(e < 1e-5);
  /* rmsprop (ms starts at 1), plain and centered */
  for (int centered = 0; centered < 2; centered++) {
    RESET(1, 0, 0);
    CHECK(agt_optim_rmsprop(th, s1, centered ? s2 : NULL, s3, g, d, lr, 0.9f, 0.5f, 1e-10f) == AGT_OK);
    e = 0;
    for (size_t i = 0; i < d; i++) {
      double ms = 0.9 + 0.1 * g[i] * g[i], mg = 0.1 * g[i];
      double den = centered ? ms - mg * mg : ms;
      e = fmax(e, fabs(th[i] - (th0[i] - lr * g[i] / sqrt(den + 1e-10))));
    }
    CHECK(e < 1e-5);
  }
  /* regularizers */
  double pen;
  RESET(0, 0, 0);
  memset(s1, 0, d * 4);
  th[0] = 0;
  CHECK(agt_optim_l1(th, s1, d, 0.5f, &pen) == AGT_OK);
  double ref = 0; for (size_t i = 0; i < d; i++) ref += fabs(th[i]);
  CHECK_NEAR(pen, 0.5 * ref, 1e-6 * ref);
  CHECK(s1[0] == 0 && s1[1] == (th[1] > 0 ? 0.5f : -0.5f));
  memset(s1, 0, d * 4);
  CHECK(agt_optim_l2(th, s1, d, 0.5f, &pen) == AGT_OK);
  ref = 0; for (size_t i = 0; i < d; i++) ref += (double)th[i] * th[i];
  CHECK_NEAR(pen, 0.25 * ref, 1e-6 * ref);
  CHECK_NEAR(s1[5], 0.5 * th[5], 1e-7);
  free(g); free(th0); free(th); free(s1); free(s2); free(s3);
}

/* Same inputs, 1 and 3 threads: outputs must be bit-identical. */
static void test_threads(void) {
  size_t B = 4, C = 3, H = 16, W = 16, OC = 8, K = 5, OH, OW, pt, pl;
  agt_nn_conv_geometry(H, K, 1, 1, &OH, &pt);
  agt_nn_conv_geometry(W, K, 1, 1, &OW, &pl);
  size_t nx = B * C * H * W, nw = OC * C * K * K, ny = B * OC * OH * OW;
  float *x = rnd(nx, 30), *Wt = rnd(nw, 31), *b = rnd(OC, 32), *dy = rnd(ny, 33);
  float *col = malloc(agt_nn_conv2d_scratch(B, C, H, W, OC, K, K, 1, 1, OH, OW) * 4);
  float *out[2][4];
  double pen[2];
  for (int run = 0; run < 2; run++) {
    agt_pool_set_threads(run ? 3 : 1);
    float *y = malloc(ny * 4), *dx = malloc(nx * 4), *dW = malloc(nw * 4), *db = malloc(OC * 4);
    agt_nn_conv2d_forward(x, Wt, b, y, col, B, C, H, W, OC, K, K, 1, 1, pt, pl, OH, OW, AGT_NN_RELU);
    agt_nn_conv2d_backward(x, Wt, dy, dx, dW, db, col, B, C, H, W, OC, K, K, 1, 1, pt, pl, OH, OW);
    float *g = calloc(ny, 4);
    agt_optim_l2(y, g, ny, 0.1f, &pen[run]);
    out[run][0] = y; out[run][1] = dx; out[run][2] = dW; out[run][3] = db;
    free(g);
  }
  agt_pool_set_threads(0);
  CHECK(memcmp(out[0][0], out[1][0], ny * 4) == 0);
  CHECK(memcmp(out[0][1], out[1][1], nx * 4) == 0);
  CHECK(memcmp(out[0][2], out[1][2], nw * 4) == 0);
  CHECK(memcmp(out[0][3], out[1][3], OC * 4) == 0);
  CHECK(pen[0] == pen[1]);
  for (int r = 0; r < 2; r++) for (int k = 0; k < 4; k++) free(out[r][k]);
  free(x); free(Wt); free(b); free(dy); free(col);
}

/* Batch norm against double loops (training: the batch's statistics, the running ones moved;
 * evaluation: the running ones; backward from the closed form), a NaN in channel 0 and +inf in
 * channel 1 (their outputs NaN, the other channels untouched); the residual sum. */
static void test_batchnorm(size_t B, size_t C, size_t S) {
  size_t n = B * C * S, N = B * S;
  float *x = rnd(n, 60), *g = rnd(C, 61), *be = rnd(C, 62), *dy = rnd(n, 63);
  float *y = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float)), *ye = malloc(n * sizeof(float));
  float *mean = malloc(C * sizeof(float)), *inv = malloc(C * sizeof(float));
  float *rm = malloc(C * sizeof(float)), *rv = malloc(C * sizeof(float));
  float *dg = malloc(C * sizeof(float)), *db = malloc(C * sizeof(float));
  double *ref = malloc(n * sizeof(double)), *refe = malloc(n * sizeof(double)), *rdx = malloc(n * sizeof(double));
  x[0] = NAN;
  if (C > 1) x[S] = INFINITY;
  for (size_t c = 0; c < C; c++) { rm[c] = 0.5f; rv[c] = 2.0f; }
  CHECK(agt_nn_batchnorm_forward(x, g, be, y, mean, inv, rm, rv, B, C, S, 0.25f, 1e-3f, 1, -1) == AGT_OK);
  CHECK(agt_nn_batchnorm_forward(x, g, be, ye, NULL, NULL, rm, rv, B, C, S, 0.25f, 1e-3f, 0, 0) == AGT_OK);
  CHECK(agt_nn_batchnorm_backward(x, g, dy, mean, inv, dx, dg, db, B, C, S) == AGT_OK);
  int ok_rm = 1, ok_dg = 1;
  for (size_t c = 0; c < C; c++) {
    double m = 0, v = 0, sg = 0, sb = 0;
    for (size_t b = 0; b < B; b++) for (size_t j = 0; j < S; j++) m += x[(b * C + c) * S + j];
    m /= (double)N;
    for (size_t b = 0; b < B; b++) for (size_t j = 0; j < S; j++) v += pow(x[(b * C + c) * S + j] - m, 2);
    double is = 1 / sqrt(v / (double)N + 1e-3);
    double em = 0.75 * 0.5 + 0.25 * m, ev = 0.75 * 2.0 + 0.25 * v / (double)(N - 1), eis = 1 / sqrt((float)ev + 1e-3);
    if (c >= 2) ok_rm &= fabs(rm[c] - em) < 1e-5 && fabs(rv[c] - ev) < 1e-4;
    else ok_rm &= rm[c] != rm[c] || rm[c] == (float)em;   /* NaN (or inf for +inf's mean) */
    for (size_t b = 0; b < B; b++)
      for (size_t j = 0; j < S; j++) {
        size_t at = (b * C + c) * S + j;
        double xh = (x[at] - m) * is;
        ref[at] = g[c] * xh + be[c];
        double r = g[c] * ((double)x[at] - (float)em) * eis + be[c];
        refe[at] = r > 0 ? r : 0;
        sg += dy[at] * xh;
        sb += dy[at];
      }
    if (c >= 2) ok_dg &= fabs(dg[c] - sg) < 1e-4 && fabs(db[c] - sb) < 1e-4;
    for (size_t b = 0; b < B; b++)
      for (size_t j = 0; j < S; j++) {
        size_t at = (b * C + c) * S + j;
        double xh = (x[at] - m) * is;
        rdx[at] = g[c] * is * (dy[at] - sb / (double)N - xh * sg / (double)N);
      }
  }
  CHECK(ok_rm);
  CHECK(ok_dg);
  /* channels 0 and 1 hold NaN and inf: every value of theirs NaN, on the device too */
  int nan01 = 1;
  for (size_t b = 0; b < B; b++)
    for (size_t j = 0; j < S; j++) nan01 &= y[b * C * S + j] != y[b * C * S + j] && y[(b * C + 1) * S + j] != y[(b * C + 1) * S + j];
  CHECK(nan01);
  for (size_t b = 0; b < B; b++) {   /* compare channels 2.. */
    size_t off = (b * C + 2) * S, m = (C - 2) * S;
    CHECK(maxdiff(y + off, ref + off, m) < 1e-4);
    CHECK(maxdiff(ye + off, refe + off, m) < 1e-4);
    CHECK(maxdiff(dx + off, rdx + off, m) < 1e-4);
  }
  /* the residual sum, with and without ReLU, in place */
  CHECK(agt_nn_add_act(x, dy, y, n, 0) == AGT_OK);
  int ok = 1;
  for (size_t i = 0; i < n; i++) {
    float s = x[i] + dy[i], r = s > 0 ? s : 0;
    ok &= y[i] == r || (y[i] != y[i] && s != s);
  }
  CHECK(ok);
  memcpy(ye, dy, n * sizeof(float));
  CHECK(agt_nn_add_act(x, dy, dy, n, -1) == AGT_OK);
  ok = 1;
  for (size_t i = 0; i < n; i++) {
    float s = x[i] + ye[i];
    ok &= dy[i] == s || (dy[i] != dy[i] && s != s);
  }
  CHECK(ok);
  CHECK(agt_nn_batchnorm_forward(x, g, be, y, mean, inv, rm, rv, B, C, S, 1.5f, 1e-3f, 1, -1) != AGT_OK);
  CHECK(agt_nn_batchnorm_forward(x, g, be, y, NULL, NULL, rm, rv, B, C, S, 0.1f, 1e-3f, 1, -1) != AGT_OK);
  free(x); free(g); free(be); free(dy); free(y); free(dx); free(ye); free(mean); free(inv);
  free(rm); free(rv); free(dg); free(db); free(ref); free(refe); free(rdx);
}

int main(void) {
  test_geometry();
  test_conv(2, 3, 7, 6, 4, 3, 1, 1);   /* SAME, stride 1 */
  test_conv(2, 2, 9, 8, 3, 3, 2, 1);   /* SAME, stride 2, odd padding */
  test_conv(1, 3, 8, 8, 2, 5, 1, 0);   /* VALID */
  test_conv(3, 2, 11, 10, 3, 4, 3, 0); /* VALID, stride 3, even kernel */
  test_conv(2, 1, 6, 6, 2, 4, 2, 1);   /* SAME, even kernel */
  /* Large planes: the batch is unfolded a few samples at a time (2, 2, 1 here; 3, 1 strided;
   * one by one); the scratch is that of one chunk. */
  CHECK(agt_nn_conv2d_scratch(5, 4, 64, 64, 4, 5, 5, 1, 1, 64, 64) ==
        agt_nn_conv2d_scratch(2, 4, 64, 64, 4, 5, 5, 1, 1, 64, 64));
  CHECK(agt_nn_conv2d_scratch(2, 4, 64, 64, 4, 5, 5, 1, 1, 64, 64) >
        agt_nn_conv2d_scratch(1, 4, 64, 64, 4, 5, 5, 1, 1, 64, 64));
  test_conv(5, 4, 64, 64, 4, 5, 1, 1);    /* SAME, stride 1: chunks 2, 2, 1 */
  test_conv(4, 8, 128, 128, 3, 3, 2, 1);  /* SAME, stride 2 (col2im path): chunks 3, 1 */
  test_conv(3, 8, 64, 64, 4, 5, 1, 0);    /* VALID: one sample per chunk */
  test_pool();
  test_pool_wide(32, 32, 1);
  test_pool_wide(37, 41, 1);
  test_pool_wide(33, 40, 0);
  test_linear_xent();
  test_sparse_linear();
  test_act_dropout();
  test_batchnorm(4, 5, 9);
  test_batchnorm(9, 6, 1);
  test_optim();
  test_threads();
  return check_summary();
}
