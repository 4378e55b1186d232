/* attack.h — per-coordinate kernels of the Byzantine attacks that vec.h lacks.
 *
 * The attacks themselves are Lua (lua/attacks/); these are the loops over d coordinates
 * they would otherwise run in Lua. Plain pointers and sizes; every kernel is element-wise
 * (or a column reduction over n rows), so its result does not depend on the thread count.
 * Random draws are made by the caller (agt_rng_uniform into the buffer passed in), which
 * keeps the draws on the attack's seeded stream. */
#ifndef AGT_ATTACK_H
#define AGT_ATTACK_H

#include "status.h"

/* ffi:begin */
/* lo[d], hi[d]: coordinate-wise minimum and maximum of the n rows of G (n × d, n >= 1).
 * NaN values are skipped (a coordinate that is NaN in every row gives NaN). */
agt_status agt_attack_minmax(const float *G, size_t n, size_t d, float *lo, float *hi);
/* Fang et al.'s trim attack on one row. On entry x[d] holds uniform draws u in [0, 1); on
 * exit x[j] = a + u (z - a) where, with m = mu[j]:
 *   m > 0: [a, z] = [lo/b, lo] if lo > 0, else [b lo, lo]   (below the honest minimum)
 *   m < 0: [a, z] = [hi, b hi] if hi > 0, else [hi, hi/b]   (above the honest maximum)
 *   m = 0 (or NaN): x[j] = m.   b > 1. */
agt_status agt_attack_fang_trim(float *x, const float *mu, const float *lo, const float *hi,
                                size_t d, double b);
/* Zeroes x[j] wherever u[j] < p; *dropped (may be NULL) receives how many. */
agt_status agt_attack_drop(float *x, const float *u, size_t d, double p, size_t *dropped);
/* ffi:end */

#endif
