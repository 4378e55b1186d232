/* gar_host.h — the host-side decisions of the rules that choose, weigh or iterate over whole
 * rows, written once for every device (internal: not part of the FFI).
 *
 * A device supplies its O(n·d) passes in an agt_gar_passes table (the CPU's in gar_dist.c, the
 * CUDA backend's in src/cuda/gar_rows.cu): distances, row norms, averages of lists of rows,
 * Bulyan's per-coordinate stage, row scaling and the moving point of the iterative rules. The
 * functions below take that table and make every decision on the host from the passes' results:
 * Krum scores and Multi-Krum's choice, Bulyan's rounds, CGE's and ARC's orders, MDA's search
 * (its budget, and the interrupt flag polled while it runs), NNM's neighbour lists, the clipping
 * factors, and the iteration control of geometric median and centered clipping (weights,
 * stopping test, iteration count). So both devices choose the same rows by construction, and a
 * rule's host logic lives in one place.
 *
 * The device entries (agt_gar_* of gar.h, agt_gpu_gar_* of gpu.h) check their pointers and
 * shapes for their device, then call these; these check the rule's own requirements on n, f and
 * its arguments, with the messages the Lua layer and the specs rely on.
 *
 * Conventions (as gar.h): G is n x d float32, row-major, in the device's memory; out, v and z
 * likewise; D, sq, dist2, rows, perm and selected are host arrays. Ties order by the lower row
 * index; a non-finite distance or norm is +inf. */
#ifndef AGT_GAR_HOST_H
#define AGT_GAR_HOST_H

#include "status.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct agt_gar_passes {
  /* D[n*n]: squared distances among the n rows, diagonal 0, non-finite -> +inf. */
  agt_status (*sqdist)(const float *G, size_t n, size_t d, double *D);
  /* sq[n]: squared norms of the rows, +inf when not finite. */
  agt_status (*row_sqnorms)(const float *G, size_t n, size_t d, double *sq);
  /* out[r] (R rows of d) = the average of rows[off[r] .. off[r+1]): the rows added in list
   * order in float from +0, divided by the count. finite: the caller knows every listed row is
   * finite and every list ascending (a device may then take a faster path, same bits). */
  agt_status (*avg_lists)(const float *G, size_t d, const int64_t *rows, const size_t *off,
                          size_t R, int finite, float *out);
  /* agt_gar_rows_meamed of gar.h: meamed over the m listed rows. */
  agt_status (*rows_meamed)(const float *G, size_t d, const int64_t *rows, size_t m, size_t beta,
                            float *out);
  /* out[i] = scale[i] * G[i] (scale[i] == 1: the row as it is); out may be G. */
  agt_status (*scale_rows)(const float *G, size_t n, size_t d, const float *scale, float *out);
  /* The moving point z of the iterative rules, kept by the device in the form that serves it
   * (e.g. as a combination of the rows, so that an iteration needs no pass over G).
   * point_start: z starts at the coordinate median of G (median = 1, written into z) or at z as
   *   given (median = 0); dist2[i] = |x_i - z|^2 (+inf when not finite) unless moves = 0 (no
   *   move will follow: dist2 need not be filled). *pt receives the device's state.
   * point_move: z' = sum_i a_i x_i (centered = 0) or z' = z + sum_i a_i (x_i - z) (centered = 1),
   *   with a_i = 0 skipping row i; dist2 to z'; dz2 = |z' - z|^2 and z2 = |z|^2 where not NULL.
   * point_end: write = 1 writes the point into z; always releases the state (pt may be NULL). */
  agt_status (*point_start)(const float *G, size_t n, size_t d, int median, int moves, float *z,
                            double *dist2, void **pt);
  agt_status (*point_move)(void *pt, const double *a, int centered, double *dist2, double *dz2,
                           double *z2);
  agt_status (*point_end)(void *pt, int write);
} agt_gar_passes;

/* The rules, with the arguments and results of gar.h. */
agt_status agt_gar_host_rows_average(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                     const int64_t *rows, size_t m, float *out);
agt_status agt_gar_host_multi_krum(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                   size_t f, size_t m, float *out, int64_t *selected);
agt_status agt_gar_host_bulyan(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                               size_t f, float *out, int64_t *selected);
agt_status agt_gar_host_cge(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            float *out, int64_t *selected);
agt_status agt_gar_host_mda(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            double budget, float *out, int64_t *selected);
agt_status agt_gar_host_nnm(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            float *out);
agt_status agt_gar_host_bucketing(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                  size_t s, const int64_t *perm, float *out);
agt_status agt_gar_host_clipping(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                 double c, float *out);
agt_status agt_gar_host_arc(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            float *out);
agt_status agt_gar_host_geometric_median(const agt_gar_passes *P, const float *G, size_t n,
                                         size_t d, double nu, size_t max_iter, double tol,
                                         float *out, int64_t *iterations);
agt_status agt_gar_host_centered_clipping(const agt_gar_passes *P, const float *G, size_t n,
                                          size_t d, double tau, size_t iters, float *v);

#ifdef __cplusplus
}
#endif

#endif
