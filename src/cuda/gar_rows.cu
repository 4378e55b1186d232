/* gar_rows.cu — the CUDA backend's passes for the rules that choose, weigh or iterate over
 * whole rows (multi-krum, bulyan, cge, mda, nnm, bucketing, clipping, arc, geometric-median,
 * centered-clipping), and their agt_gpu_gar_* entries.
 *
 * The decisions are not here: every entry checks its device pointers and shapes, then calls the
 * shared host layer (gar_host.c) with this backend's table of passes, the same decisions the CPU
 * entries make with theirs. The passes: squared distances (one pass over G, gar_dist.cu), row
 * norms, averages of lists of rows, Bulyan's meamed of chosen rows (gar_coord.cu), row scaling,
 * and the moving point of the iterative rules, which never iterates over G: the iterate is kept
 * as centre + sum_j b_j (x_j - centre), and the distance of a row to it follows exactly from one
 * distance pass among the rows, the centre and zero (y_i.y_j = (|y_i|^2 + |y_j|^2 - D_ij) / 2),
 * so a move costs O(n^2) on the host, and the output is one weighted mixture of the rows.
 *
 * As on the CPU: averages add the rows in float in list order and divide by the count, so once
 * the same rows are chosen the output is bit-identical. The distances themselves are computed
 * differently (exact differences or a centred Gram form here, a Gram matrix with exact
 * recomputation of close pairs there), so they agree to rounding; the iterative rules agree to
 * rounding too (their iterates are exact here, rounded to float there). */
#include "gpu_internal.h"
#include "gar_host.h"

#include <algorithm>
#include <math.h>
#include <new>
#include <stdlib.h>
#include <string.h>
#include <vector>

namespace {

/* D among the n rows (+ extra, + zero row), on the host. */
agt_status distances(const float *G, size_t n, size_t d, const float *extra, int zero_row,
                     std::vector<double> &D) {
  const size_t R = n + (extra ? 1 : 0) + (zero_row ? 1 : 0);
  D.assign(R * R, 0.0);
  return agt_gpu_pairdist(G, n, d, extra, zero_row, D.data());
}

/* ---------------------------------------------------------------- list averages */
/* Lists the caller vouches finite and ascending, R <= 64 lists of one length k over rows
 * 0 .. R-1 (NNM's): all rows read once into registers (agt_gpu_avg_lists_dense), the same
 * sums; anything else: agt_gpu_avg_lists. */
agt_status avg_lists(const float *G, size_t d, const int64_t *rows, const size_t *off, size_t R,
                     int finite, float *out) {
  bool dense = finite && R >= 1 && R <= 64 && off[1] > off[0];
  const size_t k = dense ? off[1] - off[0] : 0;
  for (size_t r = 0; dense && r < R; r++) {
    if (off[r + 1] - off[r] != k) dense = false;
    for (size_t t = off[r]; dense && t < off[r + 1]; t++)
      if (rows[t] < 0 || (size_t)rows[t] >= R || (t > off[r] && rows[t] <= rows[t - 1])) dense = false;
  }
  if (dense) return agt_gpu_avg_lists_dense(G, R, d, rows, k, out);
  return agt_gpu_avg_lists(G, d, rows, off, R, out);
}

/* ---------------------------------------------------------------- the moving point
 * The iterate z = c + sum_j b_j (x_j - c) around its start c, measured from one distance pass:
 * D holds the n rows, then c (index n), then (geometric median, for |z|) the zero vector. */
struct Span {
  size_t n;
  std::vector<double> Y;   /* Y[i][j] = (x_i - c).(x_j - c) */
  std::vector<double> cy;  /* c.(x_j - c) */
  double cc = 0;           /* |c|^2 */
  std::vector<char> ok;    /* rows at a finite distance from c; the others get weight 0 */
  void build(const std::vector<double> &D, bool has_zero) {
    const size_t R = n + (has_zero ? 2 : 1), C = n, Z = n + 1;
    Y.assign(n * n, 0.0);
    cy.assign(n, 0.0);
    ok.assign(n, 1);
    cc = has_zero ? D[C * R + Z] : 0.0;
    for (size_t i = 0; i < n; i++) ok[i] = isfinite(D[i * R + C]) ? 1 : 0;
    for (size_t i = 0; i < n; i++) {
      if (!ok[i]) continue;
      if (has_zero) cy[i] = 0.5 * (cc + D[i * R + Z] - D[i * R + C]) - cc;
      for (size_t j = 0; j < n; j++)
        if (ok[j])
          Y[i * n + j] = i == j ? D[i * R + C] : 0.5 * (D[i * R + C] + D[j * R + C] - D[i * R + j]);
    }
  }
  /* dist2[i] = |x_i - z|^2 for z = c + sum b_j y_j (+inf for unusable rows). */
  void dist2(const std::vector<double> &b, std::vector<double> &out) const {
    std::vector<double> Yb(n, 0.0);
    double bYb = 0;
    for (size_t i = 0; i < n; i++) {
      if (!ok[i]) continue;
      double s = 0;
      for (size_t j = 0; j < n; j++)
        if (ok[j] && b[j] != 0) s += Y[i * n + j] * b[j];
      Yb[i] = s;
      bYb += b[i] * s;
    }
    out.assign(n, INFINITY);
    for (size_t i = 0; i < n; i++)
      if (ok[i]) out[i] = std::max(0.0, Y[i * n + i] - 2 * Yb[i] + bYb);
  }
  double quad(const std::vector<double> &a) const {  /* |sum a_j y_j|^2 */
    double s = 0;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n; j++)
        if (ok[i] && ok[j] && a[i] != 0 && a[j] != 0) s += a[i] * a[j] * Y[i * n + j];
    return std::max(0.0, s);
  }
  double norm2(const std::vector<double> &b) const {  /* |c + sum b_j y_j|^2 */
    double s = cc + quad(b);
    for (size_t j = 0; j < n; j++)
      if (ok[j]) s += 2 * b[j] * cy[j];
    return std::max(0.0, s);
  }
};

/* out = (1 - sum b) c + sum b_j x_j, one pass over the rows with a nonzero weight. */
agt_status write_span(const float *G, size_t n, size_t d, const float *c, const std::vector<double> &b,
                      float *out) {
  std::vector<const float *> p;
  std::vector<double> w;
  double sb = 0;
  for (size_t j = 0; j < n; j++) {
    if (b[j] == 0) continue;
    p.push_back(G + j * d);
    w.push_back(b[j]);
    sb += b[j];
  }
  if (fabs(1.0 - sb) > 1e-12 || p.empty()) {
    p.push_back(c);
    w.push_back(1.0 - sb);
  }
  return agt_gpu_mix_rows(p.data(), p.size(), d, w.data(), 1, out);
}

struct Point {
  const float *G = nullptr;
  size_t n = 0, d = 0;
  float *z = nullptr;         /* where the point goes */
  const float *c = nullptr;   /* the start (the centre of the span): z, or the median's scratch */
  Span sp;
  std::vector<double> b, d2;
  bool moved = false;
};

void copy_dist2(const std::vector<double> &d2, double *dist2) {
  std::copy(d2.begin(), d2.end(), dist2);
}

agt_status point_start(const float *G, size_t n, size_t d, int median, int moves, float *z,
                       double *dist2, void **pt) {
  Point *p = new (std::nothrow) Point();
  *pt = p;
  if (!p) return AGT_FAIL(AGT_ENOMEM, "no memory for the iterate (n=%zu)", n);
  p->G = G, p->n = n, p->d = d, p->z = z, p->c = z;
  if (median) {
    float *z0 = NULL;
    AGT_TRY(agt_gpu_vec_scratch(d * sizeof(float), (void **)&z0));
    AGT_TRY(agt_gpu_coord_median(G, n, d, z0));
    p->c = z0;
  }
  if (!moves) return AGT_OK;
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, p->c, median, D));
  p->sp.n = n;
  p->sp.build(D, median != 0);
  p->b.assign(n, 0.0);
  p->sp.dist2(p->b, p->d2);
  copy_dist2(p->d2, dist2);
  return AGT_OK;
}

agt_status point_move(void *pt, const double *a, int centered, double *dist2, double *dz2,
                      double *z2) {
  Point *p = static_cast<Point *>(pt);
  const size_t n = p->n;
  std::vector<double> nb(a, a + n);
  if (centered) {
    /* z += sum a_i (x_i - z): in span coordinates, b += a_i (e_i - b) row by row */
    nb = p->b;
    for (size_t i = 0; i < n; i++) {
      if (a[i] == 0.0) continue;
      for (size_t j = 0; j < n; j++) nb[j] -= a[i] * p->b[j];
      nb[i] += a[i];
    }
  } else {
    /* z' - z = sum (a_j - b_j) y_j, both having the centre's weight folded in */
    std::vector<double> delta(n);
    for (size_t i = 0; i < n; i++) delta[i] = a[i] - p->b[i];
    if (dz2) *dz2 = p->sp.quad(delta);
    if (z2) *z2 = p->sp.norm2(p->b);
  }
  p->b = nb;
  p->moved = true;
  p->sp.dist2(p->b, p->d2);
  copy_dist2(p->d2, dist2);
  return AGT_OK;
}

agt_status point_end(void *pt, int write) {
  Point *p = static_cast<Point *>(pt);
  if (!p) return AGT_OK;
  agt_status s = AGT_OK;
  if (write && p->moved)  /* in place when c is z: the mixture reads z[c] before it writes it */
    s = write_span(p->G, p->n, p->d, p->c, p->b, p->z);
  else if (write && p->c != p->z)
    s = agt_gpu_copy_d2d(p->z, p->c, p->d * sizeof(float));
  delete p;
  return s;
}

/* out[i] = scale[i] * G[i]. */
agt_status scale_rows(const float *G, size_t n, size_t d, const float *scale, float *out) {
  return agt_gpu_scale_rows(G, n, d, scale, out);
}

const agt_gar_passes gpu_passes = {
  agt_gpu_gar_sqdist,
  agt_gpu_row_sqnorms,
  avg_lists,
  agt_gpu_gar_rows_meamed,
  scale_rows,
  point_start,
  point_move,
  point_end,
};

}  // namespace

/* ---------------------------------------------------------------- the entries */
extern "C" agt_status agt_gpu_gar_rows_average(const float *G, size_t n, size_t d,
                                               const int64_t *rows, size_t m, float *out) {
  AGT_TRY(agt_gpu_check_shape("rows_average", G, n, d, out));
  return agt_gar_host_rows_average(&gpu_passes, G, n, d, rows, m, out);
}

extern "C" agt_status agt_gpu_gar_multi_krum(const float *G, size_t n, size_t d, size_t f,
                                             size_t m, float *out, int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("multi-krum", G, n, d, out));
  return agt_gar_host_multi_krum(&gpu_passes, G, n, d, f, m, out, selected);
}

extern "C" agt_status agt_gpu_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                                         int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("bulyan", G, n, d, out));
  return agt_gar_host_bulyan(&gpu_passes, G, n, d, f, out, selected);
}

extern "C" agt_status agt_gpu_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                                      int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("cge", G, n, d, out));
  return agt_gar_host_cge(&gpu_passes, G, n, d, f, out, selected);
}

extern "C" agt_status agt_gpu_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget,
                                      float *out, int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("mda", G, n, d, out));
  return agt_gar_host_mda(&gpu_passes, G, n, d, f, budget, out, selected);
}

extern "C" agt_status agt_gpu_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                                   size_t max_iter, double tol, float *out,
                                                   int64_t *iterations) {
  AGT_TRY(agt_gpu_check_shape("geometric-median", G, n, d, out));
  return agt_gar_host_geometric_median(&gpu_passes, G, n, d, nu, max_iter, tol, out, iterations);
}

extern "C" agt_status agt_gpu_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                                    size_t iters, float *v) {
  AGT_TRY(agt_gpu_check_shape("centered-clipping", G, n, d, v));
  return agt_gar_host_centered_clipping(&gpu_passes, G, n, d, tau, iters, v);
}

extern "C" agt_status agt_gpu_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out) {
  AGT_TRY(agt_gpu_check_shape("nnm", G, n, d, out));
  return agt_gar_host_nnm(&gpu_passes, G, n, d, f, out);
}

extern "C" agt_status agt_gpu_gar_bucketing(const float *G, size_t n, size_t d, size_t s,
                                            const int64_t *perm, float *out) {
  AGT_TRY(agt_gpu_check_shape("bucketing", G, n, d, out));
  return agt_gar_host_bucketing(&gpu_passes, G, n, d, s, perm, out);
}

extern "C" agt_status agt_gpu_gar_clipping(const float *G, size_t n, size_t d, double c, float *out) {
  AGT_TRY(agt_gpu_check_shape("clipping", G, n, d, out));
  return agt_gar_host_clipping(&gpu_passes, G, n, d, c, out);
}

extern "C" agt_status agt_gpu_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out) {
  AGT_TRY(agt_gpu_check_shape("arc", G, n, d, out));
  return agt_gar_host_arc(&gpu_passes, G, n, d, f, out);
}
