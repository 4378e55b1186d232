/* gar_host.c — the host decisions of the row rules, once for every device (see gar_host.h).
 *
 * Everything here is O(n^2) or less on host arrays (n rows, not d coordinates); the passes over
 * G are the device's. Orders are stable: among equal keys the lower row index comes first. Krum
 * scores add the k smallest distances in ascending order. A chosen set of rows is averaged in
 * ascending row order (bucketing: in the permutation's order), so that, once two devices choose
 * the same rows, their averages are the same bits. */
#include "gar_host.h"
#include "gar.h"
#include "mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MDA_MAX_N 256           /* rows MDA enumerates at most */
#define MDA_POLL_MASK 0xffff    /* the search polls the interrupt flag every 65536 visits */

/* ---- small helpers ------------------------------------------------------------------------- */

/* Order of m keys ascending (ties: lower position first); keys may be +inf. Insertion sort:
 * stable, and m is a row count. */
static void argsort(const double *key, size_t m, int64_t *idx) {
  for (size_t i = 0; i < m; i++) idx[i] = (int64_t)i;
  for (size_t i = 1; i < m; i++) {
    int64_t t = idx[i];
    size_t j = i;
    while (j > 0 && key[idx[j - 1]] > key[t]) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = t;
  }
}

static void sort_doubles(double *a, size_t m) {
  for (size_t i = 1; i < m; i++) {
    double t = a[i];
    size_t j = i;
    while (j > 0 && a[j - 1] > t) a[j] = a[j - 1], j--;
    a[j] = t;
  }
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double *alloc_D(size_t n, size_t *bytes) {
  *bytes = (n ? n * n : 1) * sizeof(double);
  return agt_alloc(*bytes);
}

/* Average of m rows in ascending index order (rows is not modified). */
static agt_status avg_sorted(const agt_gar_passes *P, const float *G, size_t d,
                             const int64_t *rows, size_t m, float *out) {
  int64_t *r = malloc((m ? m : 1) * sizeof(int64_t));
  if (!r) return AGT_FAIL(AGT_ENOMEM, "average of rows: no memory");
  memcpy(r, rows, m * sizeof(int64_t));
  qsort(r, m, sizeof(int64_t), cmp_i64);
  size_t off[2] = {0, m};
  agt_status s = P->avg_lists(G, d, r, off, 1, 0, out);
  free(r);
  return s;
}

/* ---- averages of listed rows ---------------------------------------------------------------- */

agt_status agt_gar_host_rows_average(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                     const int64_t *rows, size_t m, float *out) {
  if (!rows) return AGT_FAIL(AGT_EINVAL, "rows_average: null pointer");
  if (m == 0) return AGT_FAIL(AGT_EINVAL, "rows_average needs m >= 1, got m=0");
  for (size_t i = 0; i < m; i++)
    if (rows[i] < 0 || (size_t)rows[i] >= n)
      return AGT_FAIL(AGT_EINVAL, "rows_average: row %lld out of 0..%zu", (long long)rows[i], n - 1);
  size_t off[2] = {0, m};
  return P->avg_lists(G, d, rows, off, 1, 0, out);
}

/* ---- Krum scores, Multi-Krum ------------------------------------------------------------------ */

agt_status agt_gar_krum_scores(const double *D, size_t n, const int64_t *rows, size_t m,
                               size_t k, double *scores) {
  if (!D || !scores) return AGT_FAIL(AGT_EINVAL, "krum_scores: null pointer");
  if (!rows && m != n) return AGT_FAIL(AGT_EINVAL, "krum_scores: m=%zu must be n=%zu", m, n);
  if (m == 0 || k > m - 1)
    return AGT_FAIL(AGT_EINVAL, "krum_scores needs k <= m-1, got m=%zu k=%zu", m, k);
  double *tmp = malloc(m * sizeof(double));
  if (!tmp) return AGT_FAIL(AGT_ENOMEM, "krum_scores: no memory");
  for (size_t r = 0; r < m; r++) {
    size_t i = rows ? (size_t)rows[r] : r, t = 0;
    for (size_t s = 0; s < m; s++) {
      if (s == r) continue;
      size_t j = rows ? (size_t)rows[s] : s;
      tmp[t++] = D[i * n + j];
    }
    sort_doubles(tmp, t);
    double sc = 0.0;
    for (size_t q = 0; q < k; q++) sc += tmp[q];
    scores[r] = sc;
  }
  free(tmp);
  return AGT_OK;
}

agt_status agt_gar_host_multi_krum(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                   size_t f, size_t m, float *out, int64_t *selected) {
  if (n < f + 3) return AGT_FAIL(AGT_EINVAL, "multi-krum needs n >= f+3, got n=%zu f=%zu", n, f);
  if (m < 1 || m > n) return AGT_FAIL(AGT_EINVAL, "multi-krum needs 1 <= m <= n, got m=%zu n=%zu", m, n);
  size_t db;
  double *D = alloc_D(n, &db);
  double *sc = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!D || !sc || !idx) s = AGT_FAIL(AGT_ENOMEM, "multi-krum: no memory (n=%zu)", n);
  if (s == AGT_OK) s = P->sqdist(G, n, d, D);
  if (s == AGT_OK) s = agt_gar_krum_scores(D, n, NULL, n, n - f - 2, sc);
  if (s == AGT_OK) {
    argsort(sc, n, idx);
    if (selected) memcpy(selected, idx, m * sizeof(int64_t));
    s = avg_sorted(P, G, d, idx, m, out);
  }
  agt_free(D, db);
  free(sc);
  free(idx);
  return s;
}

/* ---- Bulyan ------------------------------------------------------------------------------------ */

/* theta = n - 2f rounds of Krum among the rows left, then meamed of the chosen rows (beta =
 * theta - 2f). Each row's other rows are sorted by distance once; a round's score walks that
 * list skipping the rows already chosen, adding the k = r-f-2 smallest remaining distances in
 * ascending order: Krum's score on the remaining rows without sorting again. */
agt_status agt_gar_host_bulyan(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                               size_t f, float *out, int64_t *selected) {
  if (n < 4 * f + 3) return AGT_FAIL(AGT_EINVAL, "bulyan needs n >= 4f+3, got n=%zu f=%zu", n, f);
  size_t theta = n - 2 * f, beta = theta - 2 * f, db;
  double *D = alloc_D(n, &db), *key = malloc(n * sizeof(double));
  int64_t *nbr = malloc(n * n * sizeof(int64_t)), *idx = malloc(n * sizeof(int64_t));
  int64_t *sel = malloc(theta * sizeof(int64_t));
  char *gone = calloc(n, 1);
  agt_status s = AGT_OK;
  if (!D || !key || !nbr || !idx || !sel || !gone)
    s = AGT_FAIL(AGT_ENOMEM, "bulyan: no memory (n=%zu)", n);
  if (s == AGT_OK) s = P->sqdist(G, n, d, D);
  if (s == AGT_OK) {
    for (size_t i = 0; i < n; i++) { /* nbr[i]: the other rows, nearest first */
      for (size_t j = 0; j < n; j++) key[j] = j == i ? INFINITY : D[i * n + j];
      argsort(key, n, idx);
      for (size_t q = 0, t = 0; q < n; q++)
        if ((size_t)idx[q] != i) nbr[i * n + t++] = idx[q];
    }
    for (size_t t = 0, r = n; t < theta; t++, r--) {
      size_t k = r >= f + 2 ? r - f - 2 : 0;
      int64_t best = -1;
      double best_score = 0.0;
      for (size_t i = 0; i < n; i++) { /* ascending: ties keep the lower index */
        if (gone[i]) continue;
        double sc = 0.0;
        for (size_t q = 0, taken = 0; q + 1 < n && taken < k; q++) {
          int64_t j = nbr[i * n + q];
          if (gone[j]) continue;
          sc += D[i * n + (size_t)j];
          taken++;
        }
        if (best < 0 || sc < best_score) best = (int64_t)i, best_score = sc;
      }
      sel[t] = best;
      gone[best] = 1;
    }
    if (selected) memcpy(selected, sel, theta * sizeof(int64_t));
    s = P->rows_meamed(G, d, sel, theta, beta, out);
  }
  agt_free(D, db);
  free(key);
  free(nbr);
  free(idx);
  free(sel);
  free(gone);
  return s;
}

/* ---- CGE ------------------------------------------------------------------------------------- */

agt_status agt_gar_host_cge(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            float *out, int64_t *selected) {
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "cge needs n > f, got n=%zu f=%zu", n, f);
  double *sq = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!sq || !idx) s = AGT_FAIL(AGT_ENOMEM, "cge: no memory");
  if (s == AGT_OK) s = P->row_sqnorms(G, n, d, sq);
  if (s == AGT_OK) {
    argsort(sq, n, idx);
    if (selected) memcpy(selected, idx, (n - f) * sizeof(int64_t));
    s = avg_sorted(P, G, d, idx, n - f, out);
  }
  free(sq);
  free(idx);
  return s;
}

/* ---- MDA: exact enumeration with branch and bound ---------------------------------------------- */

typedef struct {
  const double *D;
  size_t n, need;
  size_t keep[MDA_MAX_N], bestset[MDA_MAX_N];
  double best;
  int found;
  unsigned long long visits;
  int interrupted;
} mda_ctx;

/* Subsets of `need` rows in lexicographic order; a branch stops as soon as its diameter reaches
 * the best one found (a lexicographically earlier set already has it), so ties keep the first
 * set. The interrupt flag is polled every MDA_POLL_MASK + 1 visits: Ctrl-C stops a long search
 * on every device. */
static void mda_dfs(mda_ctx *c, size_t depth, size_t next, double diam) {
  if (c->interrupted) return;
  if (depth == c->need) {
    if (!c->found || diam < c->best) {
      c->found = 1;
      c->best = diam;
      memcpy(c->bestset, c->keep, c->need * sizeof(size_t));
    }
    return;
  }
  if ((++c->visits & MDA_POLL_MASK) == 0 && agt_interrupted()) {
    c->interrupted = 1;
    return;
  }
  for (size_t i = next; i + (c->need - depth) <= c->n; i++) {
    double nd = diam;
    for (size_t q = 0; q < depth; q++) {
      double v = c->D[i * c->n + c->keep[q]];
      if (v > nd) nd = v;
    }
    if (c->found && nd >= c->best) continue;
    c->keep[depth] = i;
    mda_dfs(c, depth + 1, i + 1, nd);
  }
}

static double binom(size_t n, size_t k) {
  double r = 1.0;
  for (size_t i = 1; i <= k; i++) r = r * (double)(n - k + i) / (double)i;
  return r;
}

agt_status agt_gar_host_mda(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            double budget, float *out, int64_t *selected) {
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "mda needs n > f, got n=%zu f=%zu", n, f);
  if (n > MDA_MAX_N)
    return AGT_FAIL(AGT_EINVAL, "mda: n=%zu is more than the %d rows it enumerates", n, MDA_MAX_N);
  double cnt = binom(n, f);
  if (cnt > budget)
    return AGT_FAIL(AGT_EINVAL,
                    "mda: C(n,f) = C(%zu,%zu) = %.0f subsets exceed the budget %.0f "
                    "(raise budget, or use another rule)", n, f, cnt, budget);
  size_t db;
  double *D = alloc_D(n, &db);
  mda_ctx *c = calloc(1, sizeof(mda_ctx));
  int64_t *sel = malloc(n * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!D || !c || !sel) s = AGT_FAIL(AGT_ENOMEM, "mda: no memory");
  if (s == AGT_OK) s = P->sqdist(G, n, d, D);
  if (s == AGT_OK) {
    c->D = D, c->n = n, c->need = n - f;
    mda_dfs(c, 0, 0, 0.0);
    if (c->interrupted) s = AGT_FAIL(AGT_EINTR, "mda: interrupted");
  }
  if (s == AGT_OK) {
    for (size_t i = 0; i < n - f; i++) sel[i] = (int64_t)c->bestset[i];
    if (selected) memcpy(selected, sel, (n - f) * sizeof(int64_t));
    size_t off[2] = {0, n - f};
    s = P->avg_lists(G, d, sel, off, 1, 0, out); /* ascending: enumeration order */
  }
  agt_free(D, db);
  free(c);
  free(sel);
  return s;
}

/* ---- NNM, bucketing ------------------------------------------------------------------------------ */

agt_status agt_gar_host_nnm(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            float *out) {
  if (f >= n) return AGT_FAIL(AGT_EINVAL, "nnm needs n > f, got n=%zu f=%zu", n, f);
  if (out == G) return AGT_FAIL(AGT_EINVAL, "nnm: out must not be G");
  size_t k = n - f, db;
  double *D = alloc_D(n, &db);
  double *key = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t)), *rows = malloc(n * k * sizeof(int64_t));
  size_t *off = malloc((n + 1) * sizeof(size_t));
  agt_status s = AGT_OK;
  if (!D || !key || !idx || !rows || !off) s = AGT_FAIL(AGT_ENOMEM, "nnm: no memory (n=%zu)", n);
  if (s == AGT_OK) s = P->sqdist(G, n, d, D);
  if (s == AGT_OK) {
    int finite = 1; /* every distance finite: every row is */
    for (size_t i = 0; i < n; i++) {
      for (size_t j = 0; j < n; j++) {
        key[j] = D[i * n + j];
        if (j != i && !isfinite(key[j])) finite = 0;
      }
      key[i] = -1.0; /* the row itself always counts first */
      argsort(key, n, idx);
      memcpy(rows + i * k, idx, k * sizeof(int64_t));
      qsort(rows + i * k, k, sizeof(int64_t), cmp_i64);
      off[i] = i * k;
    }
    off[n] = n * k;
    s = P->avg_lists(G, d, rows, off, n, finite && n > 1, out);
  }
  agt_free(D, db);
  free(key);
  free(idx);
  free(rows);
  free(off);
  return s;
}

agt_status agt_gar_host_bucketing(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                  size_t s, const int64_t *perm, float *out) {
  if (!perm) return AGT_FAIL(AGT_EINVAL, "bucketing: null pointer");
  if (s < 1 || n < 1) return AGT_FAIL(AGT_EINVAL, "bucketing needs n >= 1 and s >= 1, got n=%zu s=%zu", n, s);
  if (out == G) return AGT_FAIL(AGT_EINVAL, "bucketing: out must not be G");
  for (size_t i = 0; i < n; i++)
    if (perm[i] < 0 || (size_t)perm[i] >= n)
      return AGT_FAIL(AGT_EINVAL, "bucketing: perm[%zu]=%lld out of 0..%zu", i, (long long)perm[i], n - 1);
  size_t nb = (n + s - 1) / s;
  size_t *off = malloc((nb + 1) * sizeof(size_t));
  if (!off) return AGT_FAIL(AGT_ENOMEM, "bucketing: no memory");
  for (size_t b = 0; b < nb; b++) off[b] = b * s;
  off[nb] = n;
  agt_status st = P->avg_lists(G, d, perm, off, nb, 0, out);
  free(off);
  return st;
}

/* ---- clipping, ARC ----------------------------------------------------------------------------- */

/* Factor that brings a row of squared norm sq to norm at most c; 1 for a non-finite norm (such a
 * row cannot be scaled; it is left as it is) or threshold. */
static float clip_factor(double sq, double c) {
  double nr = sqrt(sq);
  if (!isfinite(nr) || !isfinite(c) || nr <= c) return 1.0f;
  return (float)(c / nr);
}

agt_status agt_gar_host_clipping(const agt_gar_passes *P, const float *G, size_t n, size_t d,
                                 double c, float *out) {
  if (!(c >= 0.0)) return AGT_FAIL(AGT_EINVAL, "clipping needs c >= 0, got c=%g", c);
  double *sq = malloc((n ? n : 1) * sizeof(double));
  float *a = malloc((n ? n : 1) * sizeof(float));
  agt_status s = AGT_OK;
  if (!sq || !a) s = AGT_FAIL(AGT_ENOMEM, "clipping: no memory");
  if (s == AGT_OK && n) s = P->row_sqnorms(G, n, d, sq);
  if (s == AGT_OK && n) {
    for (size_t i = 0; i < n; i++) a[i] = clip_factor(sq[i], c);
    s = P->scale_rows(G, n, d, a, out);
  }
  free(sq);
  free(a);
  return s;
}

agt_status agt_gar_host_arc(const agt_gar_passes *P, const float *G, size_t n, size_t d, size_t f,
                            float *out) {
  if (f > n || n == 0) return AGT_FAIL(AGT_EINVAL, "arc needs n >= f and n >= 1, got n=%zu f=%zu", n, f);
  size_t k = (2 * f * (n - f)) / n; /* floor(2 (f/n) (n-f)) rows clipped */
  double *sq = malloc(n * sizeof(double)), *neg = malloc(n * sizeof(double));
  int64_t *idx = malloc(n * sizeof(int64_t));
  float *a = malloc(n * sizeof(float));
  agt_status s = AGT_OK;
  if (!sq || !neg || !idx || !a) s = AGT_FAIL(AGT_ENOMEM, "arc: no memory");
  if (s == AGT_OK) s = P->row_sqnorms(G, n, d, sq);
  if (s == AGT_OK) {
    for (size_t i = 0; i < n; i++) neg[i] = -sq[i], a[i] = 1.0f; /* largest first */
    argsort(neg, n, idx);
    if (k < n) {
      double thr = sqrt(sq[idx[k]]);
      for (size_t q = 0; q < k; q++) a[idx[q]] = clip_factor(sq[idx[q]], thr);
    }
    s = P->scale_rows(G, n, d, a, out);
  }
  free(sq);
  free(neg);
  free(idx);
  free(a);
  return s;
}

/* ---- iterative rules: the control; the device moves the point ------------------------------------ */

/* Smoothed Weiszfeld from the coordinate median: weights 1 / max(|x_i - z|, nu) (0 for a row at
 * a non-finite distance), normalised; stops after max_iter moves, when no row has a finite
 * distance, or when the move is at most tol times the norm of the point it left. */
agt_status agt_gar_host_geometric_median(const agt_gar_passes *P, const float *G, size_t n,
                                         size_t d, double nu, size_t max_iter, double tol,
                                         float *out, int64_t *iterations) {
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "geometric-median needs n >= 1, got n=0");
  if (!(nu > 0.0) || !(tol >= 0.0))
    return AGT_FAIL(AGT_EINVAL, "geometric-median needs nu > 0 and tol >= 0, got nu=%g tol=%g", nu, tol);
  double *dist2 = malloc(n * sizeof(double)), *w = malloc(n * sizeof(double));
  agt_status s = AGT_OK;
  size_t it = 0;
  void *pt = NULL;
  if (!dist2 || !w) s = AGT_FAIL(AGT_ENOMEM, "geometric-median: no memory");
  if (s == AGT_OK) s = P->point_start(G, n, d, 1, max_iter > 0, out, dist2, &pt);
  while (s == AGT_OK && it < max_iter) {
    double W = 0.0;
    for (size_t i = 0; i < n; i++) {
      double r = sqrt(dist2[i]);
      w[i] = isfinite(r) ? 1.0 / (r > nu ? r : nu) : 0.0;
      W += w[i];
    }
    if (!(W > 0.0)) break; /* no finite row: stay where we are */
    for (size_t i = 0; i < n; i++) w[i] /= W;
    double dz = 0.0, zz = 0.0;
    s = P->point_move(pt, w, 0, dist2, &dz, &zz);
    it++;
    if (s == AGT_OK && sqrt(dz) <= tol * sqrt(zz)) break;
  }
  agt_status e = P->point_end(pt, s == AGT_OK);
  if (s == AGT_OK) s = e;
  if (iterations) *iterations = (int64_t)it;
  free(dist2);
  free(w);
  return s;
}

/* iters rounds of v += (1/n) sum_i min(1, tau / |x_i - v|) (x_i - v), a row at a non-finite
 * distance weighing 0; v is updated in place. */
agt_status agt_gar_host_centered_clipping(const agt_gar_passes *P, const float *G, size_t n,
                                          size_t d, double tau, size_t iters, float *v) {
  if (n == 0) return AGT_FAIL(AGT_EINVAL, "centered-clipping needs n >= 1, got n=0");
  if (!(tau > 0.0)) return AGT_FAIL(AGT_EINVAL, "centered-clipping needs tau > 0, got tau=%g", tau);
  if (iters == 0) return AGT_OK;
  double *dist2 = malloc(n * sizeof(double)), *a = malloc(n * sizeof(double));
  agt_status s = AGT_OK;
  void *pt = NULL;
  if (!dist2 || !a) s = AGT_FAIL(AGT_ENOMEM, "centered-clipping: no memory");
  if (s == AGT_OK) s = P->point_start(G, n, d, 0, 1, v, dist2, &pt);
  for (size_t l = 0; s == AGT_OK && l < iters; l++) {
    for (size_t i = 0; i < n; i++) {
      double r = sqrt(dist2[i]);
      double c = !isfinite(r) ? 0.0 : (r <= tau ? 1.0 : tau / r);
      a[i] = c / (double)n;
    }
    s = P->point_move(pt, a, 1, dist2, NULL, NULL);
  }
  agt_status e = P->point_end(pt, s == AGT_OK);
  if (s == AGT_OK) s = e;
  free(dist2);
  free(a);
  return s;
}
