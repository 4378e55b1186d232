/* gar.h — robust gradient aggregation rules (GARs) on the CPU.
 *
 * A rule maps the gradient matrix G (n rows × d columns, float32, row-major,
 * contiguous) to one vector of d values. Every kernel here is exact (it
 * computes the rule's definition, not an approximation of it), threaded
 * through agt_parallel_for with fixed chunks (so the result is bit-identical
 * whatever the thread count), and never reads past the n rows nor writes G.
 *
 * Non-finite values: in every ordering (median, trimming, "closest to") a NaN
 * or ±inf is read as +inf; a squared distance or a norm that is not finite is
 * +inf. Rules that average whole rows (multi-krum, cge, mda, nnm, bucketing)
 * average the rows as they are.
 *
 * Row indices (selected, rows, perm) are 0-based int64. Every function checks
 * its sizes and returns AGT_EINVAL with a message naming the numbers; none
 * checks the robustness requirement of its rule on n and f beyond what it needs
 * to be defined (the Lua rule files do, with the rule's name in the message).
 *
 * A GPU backend provides twins of these functions with the same arguments
 * (pointers to device memory); the CPU ones are the reference. The host decisions of the row
 * rules (which rows, which factors, when to stop) are written once, in gar_host.c, for both;
 * a device supplies only the passes over G. */
#ifndef AGT_GAR_H
#define AGT_GAR_H

#include "status.h"

/* ffi:begin */
/* Per coordinate rules. out[d]. */
agt_status agt_gar_average(const float *G, size_t n, size_t d, float *out);
agt_status agt_gar_average_nan(const float *G, size_t n, size_t d, float *out);
agt_status agt_gar_median(const float *G, size_t n, size_t d, float *out);
agt_status agt_gar_trimmed_mean(const float *G, size_t n, size_t d, size_t f, float *out);
agt_status agt_gar_meamed(const float *G, size_t n, size_t d, size_t beta, float *out);
agt_status agt_gar_phocas(const float *G, size_t n, size_t d, size_t f, float *out);
/* meamed over the m rows listed in rows (Bulyan's last stage). */
agt_status agt_gar_rows_meamed(const float *G, size_t d, const int64_t *rows, size_t m,
                               size_t beta, float *out);

/* Pairwise squared distances D[n*n] (double), diagonal 0, non-finite -> +inf. */
agt_status agt_gar_sqdist(const float *G, size_t n, size_t d, double *D);
/* Krum scores over the m rows listed in rows (all n rows when rows is NULL,
 * then m must be n): score[r] = sum of the k smallest D[rows[r], rows[s]], s != r. */
agt_status agt_gar_krum_scores(const double *D, size_t n, const int64_t *rows, size_t m,
                               size_t k, double *scores);
/* Average of the listed rows. */
agt_status agt_gar_rows_average(const float *G, size_t n, size_t d, const int64_t *rows,
                                size_t m, float *out);

/* Row selection rules. selected[m] (may be NULL) receives the rows averaged. */
agt_status agt_gar_multi_krum(const float *G, size_t n, size_t d, size_t f, size_t m,
                              float *out, int64_t *selected);
agt_status agt_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                          int64_t *selected);              /* selected[n-2f], choice order */
agt_status agt_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                       int64_t *selected);                 /* selected[n-f] */
agt_status agt_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget,
                       float *out, int64_t *selected);     /* selected[n-f] */

/* Iterative rules. */
agt_status agt_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                    size_t max_iter, double tol, float *out,
                                    int64_t *iterations);
/* v[d]: in, the previous output (the centre); out, the new one. */
agt_status agt_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                     size_t iters, float *v);

/* Pre-aggregation steps: out is a new matrix (never G itself, except clipping
 * and arc, which accept out == G). */
agt_status agt_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out); /* n×d */
/* perm: n row indices; out: ceil(n/s) × d, bucket b = mean of rows perm[b*s .. ). */
agt_status agt_gar_bucketing(const float *G, size_t n, size_t d, size_t s,
                             const int64_t *perm, float *out);
agt_status agt_gar_clipping(const float *G, size_t n, size_t d, double c, float *out);
agt_status agt_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out);

/* 1: use the AVX2 kernels where the CPU has them (default); 0: portable code
 * only (the results are the same; this exists to test that). */
void agt_gar_set_simd(int on);
int agt_gar_simd(void);
/* ffi:end */

/* Internal helpers shared by the gar*.c files (not part of the FFI). */
/* sum over j < len of (a[j] - b[j])^2 (b NULL: a[j]^2): float lanes per block of
 * 1024, blocks summed in double; the order depends only on len. */
double agt_gar__sqdiff(const float *a, const float *b, size_t len);
/* sq[i] = squared norm of row i, summed over fixed column chunks in chunk order. */
agt_status agt_gar__rows_sqnorm(const float *G, size_t n, size_t d, double *sq);
/* median into out, and dist2[i] = |x_i - out|^2 (+inf when not finite), in one pass. */
agt_status agt_gar__median_dist(const float *G, size_t n, size_t d, float *out, double *dist2);
/* Gm[n*n] = Gram matrix (x_i . x_j) of n rows given by pointers, full and symmetric;
 * AGT_ENOTSUP without AVX2. */
agt_status agt_gar__gram_rows(const float *const *rows, size_t n, size_t d, double *Gm);
/* The per-coordinate rules (mode: 0 median, 1 trimmed mean, 2 meamed, 3 phocas) on
 * columns [c0, c1) with an unrolled network, for 2 <= n <= 32 on AVX2; returns the first
 * column not done (c0 when it cannot run). */
size_t agt_gar__coord_net(const float *const *rows, size_t n, int mode, size_t f, size_t beta,
                          float *out, size_t c0, size_t c1);
/* out = mean of the n rows, summed in row order in float. */
agt_status agt_gar__rows_mean_f32(const float *G, size_t n, size_t d, float *out);
/* The CPU's passes for the shared decisions of the row rules (gar_host.h; gar_dist.c), and the
 * moving point of the iterative rules behind them (gar_iter.c). */
struct agt_gar_passes;
extern const struct agt_gar_passes agt_gar__cpu_passes;
agt_status agt_gar__point_start(const float *G, size_t n, size_t d, int median, int moves, float *z,
                                double *dist2, void **pt);
agt_status agt_gar__point_move(void *pt, const double *a, int centered, double *dist2,
                               double *dz2, double *z2);
agt_status agt_gar__point_end(void *pt, int write);

#endif
