/* rng.c — Philox4x32-10 (Salmon et al., SC'11) and the distributions built on it.
 *
 * key = the 64-bit seed; counter = (64-bit block index, 64-bit stream id), so streams of one
 * seed never share a block. Each block yields four 32-bit words, consumed in order. */
#include "rng.h"

#include <math.h>
#include <string.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void philox_block(const uint32_t key_in[2], const uint32_t ctr_in[4], uint32_t out[4]) {
  uint32_t k0 = key_in[0], k1 = key_in[1];
  uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void agt_rng_init(agt_rng *r, uint64_t seed, uint64_t stream) {
  memset(r, 0, sizeof *r);
  r->key[0] = (uint32_t)seed;
  r->key[1] = (uint32_t)(seed >> 32);
  r->ctr[2] = (uint32_t)stream;
  r->ctr[3] = (uint32_t)(stream >> 32);
  r->pos = 4;
}

uint32_t agt_rng_u32(agt_rng *r) {
  if (r->pos >= 4) {
    philox_block(r->key, r->ctr, r->buf);
    if (++r->ctr[0] == 0) ++r->ctr[1];
    r->pos = 0;
  }
  return r->buf[r->pos++];
}

uint64_t agt_rng_u64(agt_rng *r) {
  uint64_t hi = agt_rng_u32(r);
  return (hi << 32) | agt_rng_u32(r);
}

double agt_rng_double(agt_rng *r) { return (double)(agt_rng_u64(r) >> 11) * 0x1.0p-53; }

uint64_t agt_rng_below(agt_rng *r, uint64_t n) {
  if (n <= 1) return 0;
  uint64_t threshold = (0 - n) % n; /* 2^64 mod n: reject below it for an unbiased result */
  for (;;) {
    uint64_t x = agt_rng_u64(r);
    if (x >= threshold) return x % n;
  }
}

double agt_rng_normal1(agt_rng *r) {
  if (r->spare_ok) {
    r->spare_ok = 0;
    return r->spare;
  }
  double u1 = 1.0 - agt_rng_double(r); /* (0, 1]: log is finite */
  double u2 = agt_rng_double(r);
  double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
  r->spare = (float)(rad * sin(th));
  r->spare_ok = 1;
  return rad * cos(th);
}

void agt_rng_uniform(agt_rng *r, float *out, size_t n, float lo, float hi) {
  float w = hi - lo;
  for (size_t i = 0; i < n; i++) out[i] = lo + w * ((float)(agt_rng_u32(r) >> 8) * 0x1.0p-24f);
}

void agt_rng_normal(agt_rng *r, float *out, size_t n, float mean, float stddev) {
  for (size_t i = 0; i < n; i++) out[i] = mean + stddev * (float)agt_rng_normal1(r);
}

void agt_rng_truncnormal(agt_rng *r, float *out, size_t n, float mean, float stddev) {
  for (size_t i = 0; i < n; i++) {
    double z;
    do z = agt_rng_normal1(r); while (z < -2.0 || z > 2.0);
    out[i] = mean + stddev * (float)z;
  }
}

void agt_rng_shuffle_i64(agt_rng *r, int64_t *a, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)agt_rng_below(r, i);
    int64_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

void agt_rng_permutation(agt_rng *r, int64_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = (int64_t)i;
  agt_rng_shuffle_i64(r, out, n);
}

/* Marsaglia & Tsang (2000); shape < 1 through Gamma(shape+1)·U^(1/shape). */
double agt_rng_gamma(agt_rng *r, double shape) {
  if (!(shape > 0)) return NAN;
  if (shape < 1.0) {
    double u = 1.0 - agt_rng_double(r);
    return agt_rng_gamma(r, shape + 1.0) * pow(u, 1.0 / shape);
  }
  double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = agt_rng_normal1(r);
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    double u = 1.0 - agt_rng_double(r);
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
  }
}
