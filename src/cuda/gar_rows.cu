/* gar_rows.cu — the rules that choose or weigh whole rows, on the GPU: multi-krum (krum),
 * bulyan, cge, mda, geometric-median, centered-clipping, and the pre-aggregation steps nnm,
 * bucketing, clipping and arc.
 *
 * Each rule makes one pass over G for the squared distances (gar_dist.cu: D among the n rows,
 * plus the distance to a centre vector or to zero where the rule needs it), then does its n x n
 * work on the host in double (a few microseconds for n <= 64, and the chosen indices are the
 * rule's answer anyway), then one pass over the chosen rows for the output. The iterative rules
 * never iterate over G: every iterate is kept as centre + sum_j b_j (x_j - centre), and the
 * distance of a row to it follows exactly from D and the distances to the centre
 * (y_i.y_j = (|y_i|^2 + |y_j|^2 - D_ij) / 2), so an iteration costs O(n^2), and the output is
 * one weighted mixture of the rows.
 *
 * As on the CPU (gar_dist.c, gar_iter.c): a non-finite distance or norm is +inf; among equal
 * scores the lower row index comes first; a Krum score sums the sorted distances in ascending
 * order; averages of rows add them in float in ascending row order (bucketing: in the
 * permutation's order) and divide by the count, so once the same rows are chosen the output is
 * bit-identical. The distances themselves are computed differently (exact differences here, a
 * Gram matrix with exact recomputation of close pairs there), so they agree to rounding; the
 * iterative rules agree to rounding too (their iterates are exact here, rounded to float
 * there). */
#include "gpu_internal.h"

#include <algorithm>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

namespace {

struct Key {
  double v;
  int64_t i;
};
inline bool key_less(const Key &a, const Key &b) { return a.v < b.v || (a.v == b.v && a.i < b.i); }

/* Sum of the k smallest D[rows[r]][rows[s]], s != r, in ascending order. */
double krum_score(const double *D, size_t n, const std::vector<int64_t> &rows, size_t r, size_t k) {
  std::vector<double> v;
  v.reserve(rows.size());
  for (size_t s = 0; s < rows.size(); s++)
    if (s != r) v.push_back(D[(size_t)rows[r] * n + (size_t)rows[s]]);
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (size_t t = 0; t < k && t < v.size(); t++) sum += v[t];
  return sum;
}

/* Average of the m rows in the given order (the CPU's avg_lists with one list). */
agt_status average_rows(const float *G, size_t d, const int64_t *rows, size_t m, float *out) {
  size_t off[2] = {0, m};
  return agt_gpu_avg_lists(G, d, rows, off, 1, out);
}

/* Average of the m rows in ascending index order (the CPU's avg_sorted). */
agt_status average_sorted(const float *G, size_t d, const int64_t *rows, size_t m, float *out) {
  std::vector<int64_t> r(rows, rows + m);
  std::sort(r.begin(), r.end());
  return average_rows(G, d, r.data(), m, out);
}

/* D among the n rows (+ extra, + zero row), on the host. */
agt_status distances(const float *G, size_t n, size_t d, const float *extra, int zero_row,
                     std::vector<double> &D) {
  const size_t R = n + (extra ? 1 : 0) + (zero_row ? 1 : 0);
  D.assign(R * R, 0.0);
  return agt_gpu_pairdist(G, n, d, extra, zero_row, D.data());
}

}  // namespace

extern "C" agt_status agt_gpu_gar_rows_average(const float *G, size_t n, size_t d,
                                               const int64_t *rows, size_t m, float *out) {
  AGT_TRY(agt_gpu_check_shape("rows_average", G, n, d, out));
  if (!rows || m < 1) return AGT_FAIL(AGT_EINVAL, "rows_average needs m >= 1, got m=%zu", m);
  for (size_t k = 0; k < m; k++)
    if (rows[k] < 0 || (size_t)rows[k] >= n)
      return AGT_FAIL(AGT_EINVAL, "rows-average: row %lld is not in 0..%zu", (long long)rows[k], n - 1);
  return average_rows(G, d, rows, m, out);
}

extern "C" agt_status agt_gpu_gar_multi_krum(const float *G, size_t n, size_t d, size_t f,
                                             size_t m, float *out, int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("multi-krum", G, n, d, out));
  if (n < f + 3) return AGT_FAIL(AGT_EINVAL, "multi-krum needs n >= f+3, got n=%zu f=%zu", n, f);
  if (m < 1 || m > n) return AGT_FAIL(AGT_EINVAL, "multi-krum needs 1 <= m <= n, got m=%zu n=%zu", m, n);
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  std::vector<int64_t> all(n);
  for (size_t i = 0; i < n; i++) all[i] = (int64_t)i;
  std::vector<Key> sc(n);
  for (size_t i = 0; i < n; i++) sc[i] = Key{krum_score(D.data(), n, all, i, n - f - 2), (int64_t)i};
  std::sort(sc.begin(), sc.end(), key_less);
  std::vector<int64_t> chosen(m);
  for (size_t k = 0; k < m; k++) chosen[k] = sc[k].i;
  if (selected) memcpy(selected, chosen.data(), m * sizeof(int64_t));
  return average_sorted(G, d, chosen.data(), m, out);
}

extern "C" agt_status agt_gpu_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                                         int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("bulyan", G, n, d, out));
  if (n < 4 * f + 3) return AGT_FAIL(AGT_EINVAL, "bulyan needs n >= 4f+3, got n=%zu f=%zu", n, f);
  const size_t theta = n - 2 * f, beta = theta - 2 * f;
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  /* Each row's other rows sorted by distance once; a round's score walks that list, skipping
   * the rows already chosen: the k smallest remaining distances, added in ascending order (the
   * CPU's sum, without re-sorting). */
  std::vector<int64_t> nbr(n * (n - 1));
  {
    std::vector<Key> row(n - 1);
    for (size_t i = 0; i < n; i++) {
      size_t t = 0;
      for (size_t j = 0; j < n; j++)
        if (j != i) row[t++] = Key{D[i * n + j], (int64_t)j};
      std::sort(row.begin(), row.end(), key_less);
      for (size_t q = 0; q < n - 1; q++) nbr[i * (n - 1) + q] = row[q].i;
    }
  }
  std::vector<char> gone(n, 0);
  std::vector<int64_t> chosen;
  size_t r = n;
  while (chosen.size() < theta) {
    const size_t k = r >= f + 2 ? r - f - 2 : 0;
    int64_t best = -1;
    double best_score = 0;
    for (size_t i = 0; i < n; i++) {   /* ascending: ties keep the lower index */
      if (gone[i]) continue;
      double sc = 0;
      size_t taken = 0;
      for (size_t q = 0; q < n - 1 && taken < k; q++) {
        const int64_t j = nbr[i * (n - 1) + q];
        if (gone[j]) continue;
        sc += D[i * n + (size_t)j];
        taken++;
      }
      if (best < 0 || sc < best_score) { best = (int64_t)i; best_score = sc; }
    }
    chosen.push_back(best);
    gone[(size_t)best] = 1;
    r--;
  }
  if (selected) memcpy(selected, chosen.data(), theta * sizeof(int64_t));
  return agt_gpu_gar_rows_meamed(G, d, chosen.data(), theta, beta, out);
}

extern "C" agt_status agt_gpu_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                                      int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("cge", G, n, d, out));
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "cge needs n > f, got n=%zu f=%zu", n, f);
  std::vector<double> sq(n);
  AGT_TRY(agt_gpu_row_sqnorms(G, n, d, sq.data()));
  std::vector<Key> nk(n);
  for (size_t i = 0; i < n; i++) nk[i] = Key{sq[i], (int64_t)i};
  std::sort(nk.begin(), nk.end(), key_less);
  std::vector<int64_t> chosen(n - f);
  for (size_t k = 0; k < n - f; k++) chosen[k] = nk[k].i;
  if (selected) memcpy(selected, chosen.data(), (n - f) * sizeof(int64_t));
  return average_sorted(G, d, chosen.data(), n - f, out);
}

namespace {
struct MdaSearch {
  const double *D;
  size_t n, size;
  std::vector<int64_t> cur, best;
  double best_diam;
  void go(size_t start, double diam) {
    if (cur.size() == size) {
      if (best.empty() || diam < best_diam) { best = cur; best_diam = diam; }
      return;
    }
    for (size_t i = start; i + (size - cur.size()) <= n; i++) {
      double dm = diam;
      for (int64_t j : cur) dm = std::max(dm, D[i * n + (size_t)j]);
      if (!best.empty() && !(dm < best_diam)) continue;  /* cannot win strictly */
      cur.push_back((int64_t)i);
      go(i + 1, dm);
      cur.pop_back();
    }
  }
};
}  // namespace

extern "C" agt_status agt_gpu_gar_mda(const float *G, size_t n, size_t d, size_t f, double budget,
                                      float *out, int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("mda", G, n, d, out));
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "mda needs n > f, got n=%zu f=%zu", n, f);
  double subsets = 1;
  for (size_t k = 1; k <= f; k++) subsets = subsets * (double)(n - f + k) / (double)k;
  if (n > 256) return AGT_FAIL(AGT_EINVAL, "mda: n=%zu is more than the 256 rows it enumerates", n);
  if (subsets > budget)
    return AGT_FAIL(AGT_EINVAL,
                    "mda: C(n,f) = C(%zu,%zu) = %.0f subsets exceed the budget %.0f "
                    "(raise budget, or use another rule)", n, f, subsets, budget);
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  for (size_t i = 0; i < n; i++) D[i * n + i] = 0.0;
  MdaSearch s{D.data(), n, n - f, {}, {}, 0};
  s.go(0, 0.0);
  if (selected) memcpy(selected, s.best.data(), (n - f) * sizeof(int64_t));
  return average_rows(G, d, s.best.data(), n - f, out);
}

/* ---- iterative rules in the span of the rows around a centre c ----
 * D holds the n rows, then c (index n), then (geometric median, for |z|) the zero vector. */
namespace {
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
}  // namespace

extern "C" agt_status agt_gpu_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                                   size_t max_iter, double tol, float *out,
                                                   int64_t *iterations) {
  AGT_TRY(agt_gpu_check_shape("geometric-median", G, n, d, out));
  if (!(nu > 0.0) || !(tol >= 0.0))
    return AGT_FAIL(AGT_EINVAL, "geometric-median needs nu > 0 and tol >= 0, got nu=%g tol=%g", nu, tol);
  float *z0 = NULL;
  AGT_TRY(agt_gpu_vec_scratch(d * sizeof(float), (void **)&z0));
  AGT_TRY(agt_gpu_coord_median(G, n, d, z0));
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, z0, 1, D));
  Span sp;
  sp.n = n;
  sp.build(D, true);
  std::vector<double> b(n, 0.0), nb(n), d2, delta(n);
  size_t it = 0;
  sp.dist2(b, d2);
  while (it < max_iter) {
    double W = 0;
    for (size_t i = 0; i < n; i++) {
      const double r = sqrt(d2[i]);
      nb[i] = isfinite(r) ? 1.0 / (r > nu ? r : nu) : 0.0;
      W += nb[i];
    }
    if (!(W > 0.0)) break;  /* no finite row: stay at the start */
    for (size_t i = 0; i < n; i++) { nb[i] /= W; delta[i] = nb[i] - b[i]; }
    /* z_new - z_old = sum delta_j y_j, since both have the centre's weight folded in */
    const double dz = sp.quad(delta), zz = sp.norm2(b);
    b = nb;
    it++;
    sp.dist2(b, d2);
    if (sqrt(dz) <= tol * sqrt(zz)) break;
  }
  if (iterations) *iterations = (int64_t)it;
  if (it == 0) return agt_gpu_copy_d2d(out, z0, d * sizeof(float));
  return write_span(G, n, d, z0, b, out);
}

extern "C" agt_status agt_gpu_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                                    size_t iters, float *v) {
  AGT_TRY(agt_gpu_check_shape("centered-clipping", G, n, d, v));
  if (!(tau > 0.0)) return AGT_FAIL(AGT_EINVAL, "centered-clipping needs tau > 0, got tau=%g", tau);
  if (iters == 0) return AGT_OK;
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, v, 0, D));
  Span sp;
  sp.n = n;
  sp.build(D, false);
  std::vector<double> b(n, 0.0), d2;
  for (size_t l = 0; l < iters; l++) {
    sp.dist2(b, d2);
    std::vector<double> nb(b);
    for (size_t i = 0; i < n; i++) {
      const double r = sqrt(d2[i]);
      const double ci = !isfinite(r) ? 0.0 : (r <= tau ? 1.0 : tau / r);
      if (ci == 0.0) continue;
      /* v += (ci/n)(x_i - v): in span coordinates, b += (ci/n)(e_i - b) */
      for (size_t j = 0; j < n; j++) nb[j] -= ci / (double)n * b[j];
      nb[i] += ci / (double)n;
    }
    b = nb;
  }
  /* in place: the mixture reads v[c] before it writes v[c] (one thread per coordinate) */
  return write_span(G, n, d, v, b, v);
}

extern "C" agt_status agt_gpu_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out) {
  AGT_TRY(agt_gpu_check_shape("nnm", G, n, d, out));
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "nnm needs n > f, got n=%zu f=%zu", n, f);
  if (out == G) return AGT_FAIL(AGT_EINVAL, "nnm: out must not be G");
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  bool finite = true;
  for (size_t e = 0; e < n * n; e++)
    if (e % (n + 1) != 0 && !isfinite(D[e])) finite = false;
  const size_t k = n - f;
  std::vector<int64_t> lists(n * k);
  std::vector<size_t> off(n + 1);
  std::vector<Key> row(n);
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < n; j++) row[j] = Key{j == i ? -1.0 : D[i * n + j], (int64_t)j};
    std::sort(row.begin(), row.end(), key_less);   /* the row itself always counts first */
    for (size_t t = 0; t < k; t++) lists[i * k + t] = row[t].i;
    std::sort(lists.begin() + (long)(i * k), lists.begin() + (long)((i + 1) * k));
    off[i] = i * k;
  }
  off[n] = n * k;
  if (!finite)  /* exact list sums: a non-finite row reaches only the lists it is in */
    return agt_gpu_avg_lists(G, d, lists.data(), off.data(), n, out);
  /* finite rows: the same sums, the rows read once into registers (up to 64 rows) */
  if (n > 64) return agt_gpu_avg_lists(G, d, lists.data(), off.data(), n, out);
  return agt_gpu_avg_lists_dense(G, n, d, lists.data(), k, out);
}

extern "C" agt_status agt_gpu_gar_bucketing(const float *G, size_t n, size_t d, size_t s,
                                            const int64_t *perm, float *out) {
  AGT_TRY(agt_gpu_check_shape("bucketing", G, n, d, out));
  if (!perm) return AGT_FAIL(AGT_EINVAL, "bucketing: null pointer");
  if (s < 1) return AGT_FAIL(AGT_EINVAL, "bucketing needs n >= 1 and s >= 1, got n=%zu s=%zu", n, s);
  if (out == G) return AGT_FAIL(AGT_EINVAL, "bucketing: out must not be G");
  for (size_t i = 0; i < n; i++)
    if (perm[i] < 0 || (size_t)perm[i] >= n)
      return AGT_FAIL(AGT_EINVAL, "bucketing: perm[%zu]=%lld out of 0..%zu", i, (long long)perm[i], n - 1);
  const size_t nb = (n + s - 1) / s;
  std::vector<size_t> off(nb + 1);
  for (size_t b = 0; b < nb; b++) off[b] = b * s;
  off[nb] = n;
  return agt_gpu_avg_lists(G, d, perm, off.data(), nb, out);
}

static agt_status row_sqnorms(const float *G, size_t n, size_t d, std::vector<double> &sq) {
  sq.resize(n);
  return agt_gpu_row_sqnorms(G, n, d, sq.data());
}

/* The CPU's clip_factor: 1 for a non-finite norm (such a row cannot be scaled) or threshold. */
static double clip_factor(double sq, double c) {
  const double nr = sqrt(sq);
  if (!isfinite(nr) || !isfinite(c) || nr <= c) return 1.0;
  return (double)(float)(c / nr);
}

extern "C" agt_status agt_gpu_gar_clipping(const float *G, size_t n, size_t d, double c, float *out) {
  AGT_TRY(agt_gpu_check_shape("clipping", G, n, d, out));
  if (!(c >= 0.0)) return AGT_FAIL(AGT_EINVAL, "clipping needs c >= 0, got c=%g", c);
  std::vector<double> sq, scale(n);
  AGT_TRY(row_sqnorms(G, n, d, sq));
  for (size_t i = 0; i < n; i++) scale[i] = clip_factor(sq[i], c);
  return agt_gpu_scale_rows(G, n, d, scale.data(), out);
}

extern "C" agt_status agt_gpu_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out) {
  AGT_TRY(agt_gpu_check_shape("arc", G, n, d, out));
  if (f > n) return AGT_FAIL(AGT_EINVAL, "arc needs n >= f and n >= 1, got n=%zu f=%zu", n, f);
  const size_t k = (2 * f * (n - f)) / n; /* floor(2 (f/n) (n-f)) */
  std::vector<double> sq, scale(n, 1.0);
  AGT_TRY(row_sqnorms(G, n, d, sq));
  if (k < n) {
    std::vector<Key> order(n);
    for (size_t i = 0; i < n; i++) order[i] = Key{-sq[i], (int64_t)i};  /* largest first */
    std::sort(order.begin(), order.end(), key_less);
    const double thr = sqrt(sq[(size_t)order[k].i]);
    for (size_t t = 0; t < k; t++) {
      const size_t i = (size_t)order[t].i;
      scale[i] = clip_factor(sq[i], thr);
    }
  }
  return agt_gpu_scale_rows(G, n, d, scale.data(), out);
}
