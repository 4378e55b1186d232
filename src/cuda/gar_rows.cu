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
 * Ordering, as on the CPU: a non-finite distance or norm is +inf; among equal scores the lower
 * row index comes first; sums of sorted distances run in ascending order. */
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

agt_status average_rows(const float *G, size_t d, const int64_t *rows, size_t m, float *out) {
  std::vector<const float *> p(m);
  std::vector<double> w(m, 1.0 / (double)m);
  for (size_t k = 0; k < m; k++) p[k] = G + (size_t)rows[k] * d;
  return agt_gpu_mix_rows(p.data(), m, d, w.data(), 1, out);
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
  AGT_TRY(agt_gpu_check_shape("rows-average", G, n, d, out));
  if (!rows || m < 1) return AGT_FAIL(AGT_EINVAL, "rows-average needs m >= 1 rows, got m=%zu", m);
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
  return average_rows(G, d, chosen.data(), m, out);
}

extern "C" agt_status agt_gpu_gar_bulyan(const float *G, size_t n, size_t d, size_t f, float *out,
                                         int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("bulyan", G, n, d, out));
  if (n < 4 * f + 3) return AGT_FAIL(AGT_EINVAL, "bulyan needs n >= 4f+3, got n=%zu f=%zu", n, f);
  const size_t theta = n - 2 * f, beta = theta - 2 * f;
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  std::vector<int64_t> rest(n), chosen;
  for (size_t i = 0; i < n; i++) rest[i] = (int64_t)i;
  while (chosen.size() < theta) {
    const size_t r = rest.size(), k = r - f - 2;
    size_t best = 0;
    double best_score = 0;
    for (size_t s = 0; s < r; s++) {
      const double sc = krum_score(D.data(), n, rest, s, k);
      if (s == 0 || sc < best_score) { best = s; best_score = sc; }
    }
    chosen.push_back(rest[best]);
    rest.erase(rest.begin() + (long)best);
  }
  if (selected) memcpy(selected, chosen.data(), theta * sizeof(int64_t));
  return agt_gpu_gar_rows_meamed(G, d, chosen.data(), theta, beta, out);
}

extern "C" agt_status agt_gpu_gar_cge(const float *G, size_t n, size_t d, size_t f, float *out,
                                      int64_t *selected) {
  AGT_TRY(agt_gpu_check_shape("cge", G, n, d, out));
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "cge needs n > f, got n=%zu f=%zu", n, f);
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 1, D));
  std::vector<Key> nk(n);
  for (size_t i = 0; i < n; i++) nk[i] = Key{D[i * (n + 1) + n], (int64_t)i};
  std::sort(nk.begin(), nk.end(), key_less);
  std::vector<int64_t> chosen(n - f);
  for (size_t k = 0; k < n - f; k++) chosen[k] = nk[k].i;
  if (selected) memcpy(selected, chosen.data(), (n - f) * sizeof(int64_t));
  return average_rows(G, d, chosen.data(), n - f, out);
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
  if (subsets > budget)
    return AGT_FAIL(AGT_EINVAL, "mda: C(n,f) = C(%zu,%zu) = %.0f subsets exceed the budget %.0f",
                    n, f, subsets, budget);
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  for (size_t i = 0; i < n; i++) D[i * n + i] = 0.0;
  MdaSearch s{D.data(), n, n - f, {}, {}, 0};
  s.go(0, 0.0);
  if (selected) memcpy(selected, s.best.data(), (n - f) * sizeof(int64_t));
  return average_rows(G, d, s.best.data(), n - f, out);
}

/* ---- iterative rules in the span of the rows around a centre c (row n of D) ---- */
namespace {
struct Span {
  size_t n;
  std::vector<double> Y;   /* Y[i][j] = (x_i - c).(x_j - c); rows with non-finite D unused */
  std::vector<char> ok;    /* row usable */
  void build(const std::vector<double> &D) {
    const size_t R = n + 1;
    Y.assign(n * n, 0.0);
    ok.assign(n, 1);
    for (size_t i = 0; i < n; i++) ok[i] = isfinite(D[i * R + n]) ? 1 : 0;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n; j++)
        if (ok[i] && ok[j])
          Y[i * n + j] = i == j ? D[i * R + n]
                                : 0.5 * (D[i * R + n] + D[j * R + n] - D[i * R + j]);
  }
  /* |x_i - (c + sum b_j y_j)|^2, exact up to D's rounding; +inf for unusable rows. */
  void dist2(const std::vector<double> &b, std::vector<double> &out) const {
    std::vector<double> Yb(n, 0.0);
    double bYb = 0;
    for (size_t i = 0; i < n; i++) {
      if (!ok[i]) continue;
      double s = 0;
      for (size_t j = 0; j < n; j++) if (ok[j] && b[j] != 0) s += Y[i * n + j] * b[j];
      Yb[i] = s;
      bYb += b[i] * s;
    }
    out.assign(n, INFINITY);
    for (size_t i = 0; i < n; i++)
      if (ok[i]) out[i] = std::max(0.0, Y[i * n + i] - 2 * Yb[i] + bYb);
  }
  double norm2_of(const std::vector<double> &a) const {  /* |sum a_j y_j|^2 */
    double s = 0;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n; j++)
        if (ok[i] && ok[j] && a[i] != 0 && a[j] != 0) s += a[i] * a[j] * Y[i * n + j];
    return std::max(0.0, s);
  }
};

/* out = (1 - sum b) c + sum b_j x_j */
agt_status write_span(const float *G, size_t n, size_t d, const float *c, const std::vector<double> &b,
                      float *out) {
  std::vector<const float *> p(n + 1);
  std::vector<double> w(n + 1);
  double sb = 0;
  for (size_t j = 0; j < n; j++) { p[j] = G + j * d; w[j] = b[j]; sb += b[j]; }
  p[n] = c;
  w[n] = 1.0 - sb;
  if (fabs(w[n]) < 1e-12) w[n] = 0;
  return agt_gpu_mix_rows(p.data(), n + 1, d, w.data(), 1, out);
}
}  // namespace

extern "C" agt_status agt_gpu_gar_geometric_median(const float *G, size_t n, size_t d, double nu,
                                                   size_t max_iter, double tol, float *out,
                                                   int64_t *iterations) {
  AGT_TRY(agt_gpu_check_shape("geometric-median", G, n, d, out));
  if (!(nu > 0)) return AGT_FAIL(AGT_EINVAL, "geometric-median needs nu > 0, got %g", nu);
  float *z0 = NULL;
  AGT_TRY(agt_gpu_vec_scratch(d * sizeof(float), (void **)&z0));
  AGT_TRY(agt_gpu_coord_median(G, n, d, z0));
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, z0, 0, D));
  Span sp{n, {}, {}};
  sp.build(D);
  std::vector<double> b(n, 0.0), nb(n), d2, delta(n);
  size_t it = 0;
  while (it < max_iter) {
    sp.dist2(b, d2);
    double sw = 0;
    for (size_t i = 0; i < n; i++) {
      nb[i] = sp.ok[i] ? 1.0 / std::max(nu, sqrt(d2[i])) : 0.0;
      sw += nb[i];
    }
    if (!(sw > 0)) break;
    for (size_t i = 0; i < n; i++) { nb[i] /= sw; delta[i] = nb[i] - b[i]; }
    /* the centre's own weight changes too: z = c + sum b_j y_j, so the step is sum delta_j y_j */
    const double step = sqrt(sp.norm2_of(delta));
    b = nb;
    it++;
    if (step <= tol) break;
  }
  if (iterations) *iterations = (int64_t)it;
  return write_span(G, n, d, z0, b, out);
}

extern "C" agt_status agt_gpu_gar_centered_clipping(const float *G, size_t n, size_t d, double tau,
                                                    size_t iters, float *v) {
  AGT_TRY(agt_gpu_check_shape("centered-clipping", G, n, d, v));
  if (!(tau > 0)) return AGT_FAIL(AGT_EINVAL, "centered-clipping needs tau > 0, got %g", tau);
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, v, 0, D));
  Span sp{n, {}, {}};
  sp.build(D);
  std::vector<double> b(n, 0.0), d2;
  for (size_t l = 0; l < iters; l++) {
    sp.dist2(b, d2);
    std::vector<double> nb(b);
    for (size_t i = 0; i < n; i++) {
      if (!sp.ok[i]) continue;
      const double r = sqrt(d2[i]);
      const double w = r > 0 ? std::min(1.0, tau / r) : 1.0;
      /* v += (1/n) w (x_i - v): in span coordinates, b += (w/n)(e_i - b) */
      for (size_t j = 0; j < n; j++) nb[j] -= w / (double)n * b[j];
      nb[i] += w / (double)n;
    }
    b = nb;
  }
  /* write in place: the mixture reads v[c] before it writes out[c] (one thread per c). */
  return write_span(G, n, d, v, b, v);
}

extern "C" agt_status agt_gpu_gar_nnm(const float *G, size_t n, size_t d, size_t f, float *out) {
  AGT_TRY(agt_gpu_check_shape("nnm", G, n, d, out));
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "nnm needs n > f, got n=%zu f=%zu", n, f);
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 0, D));
  for (size_t i = 0; i < n; i++) D[i * n + i] = 0.0;
  const size_t k = n - f;
  std::vector<double> W(n * n, 0.0);
  std::vector<Key> row(n);
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < n; j++) row[j] = Key{D[i * n + j], (int64_t)j};
    std::sort(row.begin(), row.end(), key_less);
    for (size_t t = 0; t < k; t++) W[i * n + (size_t)row[t].i] = 1.0 / (double)k;
  }
  std::vector<const float *> p(n);
  for (size_t j = 0; j < n; j++) p[j] = G + j * d;
  return agt_gpu_mix_rows(p.data(), n, d, W.data(), n, out);
}

extern "C" agt_status agt_gpu_gar_bucketing(const float *G, size_t n, size_t d, size_t s,
                                            const int64_t *perm, float *out) {
  AGT_TRY(agt_gpu_check_shape("bucketing", G, n, d, out));
  if (s < 1) return AGT_FAIL(AGT_EINVAL, "bucketing needs s >= 1, got s=%zu", s);
  if (!perm) return AGT_FAIL(AGT_EINVAL, "bucketing needs a permutation of the %zu rows", n);
  const size_t nb = (n + s - 1) / s;
  std::vector<double> W(nb * n, 0.0);
  for (size_t b = 0; b < nb; b++) {
    const size_t lo = b * s, hi = std::min(n, lo + s);
    for (size_t k = lo; k < hi; k++) {
      if (perm[k] < 0 || (size_t)perm[k] >= n)
        return AGT_FAIL(AGT_EINVAL, "bucketing: perm[%zu] = %lld is not a row", k, (long long)perm[k]);
      W[b * n + (size_t)perm[k]] = 1.0 / (double)(hi - lo);
    }
  }
  std::vector<const float *> p(n);
  for (size_t j = 0; j < n; j++) p[j] = G + j * d;
  return agt_gpu_mix_rows(p.data(), n, d, W.data(), nb, out);
}

static agt_status row_norms(const float *G, size_t n, size_t d, std::vector<double> &norm) {
  std::vector<double> D;
  AGT_TRY(distances(G, n, d, NULL, 1, D));
  norm.resize(n);
  for (size_t i = 0; i < n; i++) norm[i] = sqrt(D[i * (n + 1) + n]);
  return AGT_OK;
}

extern "C" agt_status agt_gpu_gar_clipping(const float *G, size_t n, size_t d, double c, float *out) {
  AGT_TRY(agt_gpu_check_shape("clipping", G, n, d, out));
  if (!(c > 0)) return AGT_FAIL(AGT_EINVAL, "clipping needs c > 0, got %g", c);
  std::vector<double> norm, scale(n);
  AGT_TRY(row_norms(G, n, d, norm));
  for (size_t i = 0; i < n; i++) scale[i] = norm[i] > c ? c / norm[i] : 1.0;
  return agt_gpu_scale_rows(G, n, d, scale.data(), out);
}

extern "C" agt_status agt_gpu_gar_arc(const float *G, size_t n, size_t d, size_t f, float *out) {
  AGT_TRY(agt_gpu_check_shape("arc", G, n, d, out));
  if (f > n) return AGT_FAIL(AGT_EINVAL, "arc needs f <= n, got n=%zu f=%zu", n, f);
  std::vector<double> norm, scale(n, 1.0);
  AGT_TRY(row_norms(G, n, d, norm));
  const size_t k = (size_t)floor(2.0 * ((double)f / (double)n) * (double)(n - f));
  if (k > 0 && k < n) {
    std::vector<Key> order(n);
    for (size_t i = 0; i < n; i++) order[i] = Key{-norm[i], (int64_t)i};  /* largest first */
    std::sort(order.begin(), order.end(), key_less);
    const double thr = -order[k].v;
    for (size_t t = 0; t < k; t++) {
      const size_t i = (size_t)order[t].i;
      scale[i] = norm[i] > thr ? thr / norm[i] : 1.0;
    }
  }
  return agt_gpu_scale_rows(G, n, d, scale.data(), out);
}
