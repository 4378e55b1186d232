/* rng.h — counter-based random numbers (Philox4x32-10).
 *
 * A stream is identified by (seed, stream id): independent streams per worker
 * and per purpose come from distinct stream ids under one seed. The state is a
 * plain struct (key, counter, buffered words), so it is saved and restored
 * exactly by copying its bytes. Output does not depend on the machine or the
 * thread count. */
#ifndef AGT_RNG_H
#define AGT_RNG_H

#include "status.h"

/* ffi:begin */
typedef struct agt_rng {
  uint32_t key[2];
  uint32_t ctr[4];
  uint32_t buf[4];
  uint32_t pos;        /* next unused word in buf, 4 = empty */
  uint32_t spare_ok;   /* a cached normal deviate is valid */
  float spare;
} agt_rng;

void agt_rng_init(agt_rng *r, uint64_t seed, uint64_t stream);
uint32_t agt_rng_u32(agt_rng *r);
uint64_t agt_rng_u64(agt_rng *r);
double agt_rng_double(agt_rng *r);               /* [0, 1), 53 bits */
uint64_t agt_rng_below(agt_rng *r, uint64_t n);  /* uniform in [0, n), unbiased; n >= 1 */
double agt_rng_normal1(agt_rng *r);              /* standard normal */
void agt_rng_uniform(agt_rng *r, float *out, size_t n, float lo, float hi);
void agt_rng_normal(agt_rng *r, float *out, size_t n, float mean, float stddev);
void agt_rng_truncnormal(agt_rng *r, float *out, size_t n, float mean, float stddev); /* resample beyond 2 stddev */
void agt_rng_permutation(agt_rng *r, int64_t *out, size_t n); /* a permutation of 0..n-1 */
void agt_rng_shuffle_i64(agt_rng *r, int64_t *a, size_t n);
double agt_rng_gamma(agt_rng *r, double shape);  /* Gamma(shape, 1), shape > 0 */
/* ffi:end */

#endif
