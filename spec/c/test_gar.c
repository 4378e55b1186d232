/* test_gar.c — the aggregation kernels against naive C references, and their
 * determinism: AVX2 vs portable code, and 1 vs 2 vs 3 threads, bit for bit.
 * Inputs have ties (small integers), duplicate rows, NaN and ±inf rows, and
 * d not a multiple of any vector width. */
#include "check.h"
#include "gar.h"
#include "gar_host.h"
#include "mem.h"
#include "pool.h"
#include "rng.h"
#include "status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float key(float x) { return isfinite(x) ? x : INFINITY; }
static int cmpf(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* G with small-integer values (ties), some duplicate rows, and (if bad) a NaN
 * row, a +inf row, a -inf row and scattered non-finite values. */
static void make_G(agt_rng *r, float *G, size_t n, size_t d, int bad) {
  for (size_t i = 0; i < n * d; i++) G[i] = (float)((int)agt_rng_below(r, 9) - 4) * 0.5f;
  if (n >= 4) memcpy(G + 3 * d, G + 1 * d, d * sizeof(float)); /* duplicate row */
  if (!bad) return;
  const float special[3] = {NAN, INFINITY, -INFINITY};
  for (size_t k = 0; k < 3 && k < n / 4; k++) {
    size_t i = agt_rng_below(r, n);
    for (size_t j = 0; j < d; j++) G[i * d + j] = special[k];
  }
  for (size_t k = 0; k < d / 3; k++) G[agt_rng_below(r, n * d)] = special[agt_rng_below(r, 3)];
}

/* naive per-coordinate rule on one column (mode 0 median, 1 trimmed, 2 meamed, 3 phocas) */
static float naive_coord(const float *col, size_t n, int mode, size_t f, size_t beta) {
  float v[512];
  for (size_t i = 0; i < n; i++) v[i] = key(col[i]);
  qsort(v, n, sizeof(float), cmpf);
  float med = (n & 1) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) * 0.5f;
  if (mode == 0) return med;
  float tm = 0.0f;
  for (size_t i = f; i < n - f; i++) tm += v[i];
  tm /= (float)(n - 2 * f);
  if (mode == 1) return tm;
  float m = mode == 2 ? med : tm;
  /* pick beta values by (distance, value), greedily */
  int used[512] = {0};
  float s = 0.0f;
  size_t chosen[512], nc = 0;
  for (size_t q = 0; q < beta; q++) {
    size_t best = n;
    float bd = 0.0f;
    for (size_t i = 0; i < n; i++) {
      if (used[i]) continue;
      float di = v[i] == m ? 0.0f : fabsf(v[i] - m);
      if (best == n || di < bd) best = i, bd = di; /* ascending scan: ties keep smaller value */
    }
    used[best] = 1;
    chosen[nc++] = best;
  }
  for (size_t i = 0; i < n; i++)
    if (used[i]) s += v[i];
  (void)chosen;
  return s / (float)beta;
}

static int same_bits(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof(float)) == 0;
}
/* equal bits, or both NaN (a NaN's sign and payload mean nothing) */
static int same_vals(const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i]))) return 0;
  return 1;
}

static void test_coord(void) {
  agt_rng r;
  agt_rng_init(&r, 1, 1);
  size_t d = 37;
  float *G = malloc(80 * d * sizeof(float)), *o = malloc(d * sizeof(float)),
        *o2 = malloc(d * sizeof(float)), col[80];
  int bad_coord = 0, bad_simd = 0;
  for (size_t n = 1; n <= 70; n++) {
    make_G(&r, G, n, d, n % 2);
    for (int mode = 0; mode < 4; mode++) {
      size_t f = mode == 0 ? 0 : (n - 1) / 2 / (1 + n % 3);
      size_t beta = mode == 2 ? n - f : n - f;
      for (int simd = 1; simd >= 0; simd--) {
        agt_gar_set_simd(simd);
        agt_status s = mode == 0 ? agt_gar_median(G, n, d, o)
                     : mode == 1 ? agt_gar_trimmed_mean(G, n, d, f, o)
                     : mode == 2 ? agt_gar_meamed(G, n, d, beta, o)
                                 : agt_gar_phocas(G, n, d, f, o);
        CHECK(s == AGT_OK);
        if (simd) memcpy(o2, o, d * sizeof(float));
        else if (!same_bits(o, o2, d)) bad_simd++;
      }
      for (size_t j = 0; j < d; j++) {
        for (size_t i = 0; i < n; i++) col[i] = G[i * d + j];
        float e = naive_coord(col, n, mode, f, beta);
        if (memcmp(&e, &o[j], 4) != 0) {
          if (bad_coord < 5)
            fprintf(stderr, "coord mode %d n=%zu f=%zu col %zu: got %g want %g\n", mode, n, f, j, o[j], e);
          bad_coord++;
        }
      }
    }
  }
  agt_gar_set_simd(1);
  CHECK(bad_coord == 0);
  CHECK(bad_simd == 0);
  /* average-nan */
  make_G(&r, G, 9, d, 1);
  for (size_t i = 0; i < 9; i++) G[i * d + 5] = NAN; /* a column with no finite value */
  CHECK(agt_gar_average_nan(G, 9, d, o) == AGT_OK);
  int bad = 0;
  for (size_t j = 0; j < d; j++) {
    float s = 0.0f, c = 0.0f;
    for (size_t i = 0; i < 9; i++)
      if (isfinite(G[i * d + j])) s += G[i * d + j], c += 1.0f;
    float e = c > 0 ? s / c : 0.0f;
    if (e != o[j]) bad++;
  }
  CHECK(bad == 0);
  CHECK(o[5] == 0.0f);
  free(G), free(o), free(o2);
}

static double naive_sqdist(const float *a, const float *b, size_t d) {
  double s = 0.0;
  for (size_t j = 0; j < d; j++) s += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
  return isfinite(s) ? s : INFINITY;
}

static void test_sqdist(void) {
  agt_rng r;
  agt_rng_init(&r, 2, 1);
  size_t n = 9, d = 20011;
  float *G = malloc(n * d * sizeof(float));
  double D[81];
  /* close rows far from the origin: the plain Gram form would lose every digit */
  agt_rng_normal(&r, G, d, 1000.0f, 1.0f);
  for (size_t i = 1; i < n; i++)
    for (size_t j = 0; j < d; j++) G[i * d + j] = G[j] + 1e-3f * (float)agt_rng_normal1(&r);
  CHECK(agt_gar_sqdist(G, n, d, D) == AGT_OK);
  double worst = 0.0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      double e = i == j ? 0.0 : naive_sqdist(G + i * d, G + j * d, d);
      double rel = fabs(D[i * n + j] - e) / (e > 0 ? e : 1.0);
      if (rel > worst) worst = rel;
    }
  CHECK(worst < 1e-5);
  /* far rows, one NaN row */
  agt_rng_normal(&r, G, n * d, 0.0f, 1.0f);
  G[4 * d + 17] = NAN;
  CHECK(agt_gar_sqdist(G, n, d, D) == AGT_OK);
  worst = 0.0;
  int inf_ok = 1;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      if (i == j) { inf_ok &= D[i * n + j] == 0.0; continue; }
      if (i == 4 || j == 4) { inf_ok &= isinf(D[i * n + j]) && D[i * n + j] > 0; continue; }
      double e = naive_sqdist(G + i * d, G + j * d, d);
      double rel = fabs(D[i * n + j] - e) / e;
      if (rel > worst) worst = rel;
    }
  CHECK(worst < 1e-5);
  CHECK(inf_ok);
  free(G);
}

/* naive Krum scores from exact distances */
static void naive_scores(const float *G, size_t d, const int64_t *rows, size_t m, size_t k,
                         double *sc) {
  for (size_t a = 0; a < m; a++) {
    double t[256];
    size_t q = 0;
    for (size_t b = 0; b < m; b++)
      if (b != a) t[q++] = naive_sqdist(G + rows[a] * d, G + rows[b] * d, d);
    for (size_t i = 1; i < q; i++)
      for (size_t j = i; j > 0 && t[j - 1] > t[j]; j--) { double x = t[j]; t[j] = t[j - 1]; t[j - 1] = x; }
    sc[a] = 0.0;
    for (size_t i = 0; i < k; i++) sc[a] += t[i];
  }
}

static void test_krum_bulyan(void) {
  agt_rng r;
  agt_rng_init(&r, 3, 1);
  size_t d = 45;
  float *G = malloc(64 * d * sizeof(float)), o[64], e[64];
  int64_t sel[64], rows[64], esel[64];
  double sc[64];
  int bad_k = 0, bad_b = 0;
  for (size_t n = 3; n <= 40; n++) {
    make_G(&r, G, n, d, n % 3 == 0);
    for (size_t f = 0; 2 * f + 3 <= n; f++) {
      size_t m = 1 + (n * 7 + f) % (n - f);
      CHECK(agt_gar_multi_krum(G, n, d, f, m, o, sel) == AGT_OK);
      for (size_t i = 0; i < n; i++) rows[i] = (int64_t)i;
      naive_scores(G, d, rows, n, n - f - 2, sc);
      /* selection: m lowest by (score, index) */
      int used[64] = {0};
      for (size_t q = 0; q < m; q++) {
        size_t b = n;
        for (size_t i = 0; i < n; i++)
          if (!used[i] && (b == n || sc[i] < sc[b])) b = i;
        used[b] = 1;
        esel[q] = (int64_t)b;
      }
      if (memcmp(sel, esel, m * sizeof(int64_t)) != 0) { bad_k++; if (bad_k < 3) fprintf(stderr, "multi-krum n=%zu f=%zu m=%zu sel[0]=%lld want %lld\n", n, f, m, (long long)sel[0], (long long)esel[0]); }
      for (size_t j = 0; j < d; j++) {
        float s = 0.0f;
        for (size_t i = 0; i < n; i++)
          if (used[i]) s += G[i * d + j];
        e[j] = s / (float)m;
      }
      if (!same_vals(o, e, d)) { bad_k++; for (size_t j = 0; j < d; j++) if (memcmp(&o[j], &e[j], 4)) { fprintf(stderr, "mk n=%zu f=%zu m=%zu col %zu got %g want %g\n", n, f, m, j, o[j], e[j]); break; } }
      if (n >= 4 * f + 3) {
        CHECK(agt_gar_bulyan(G, n, d, f, o, sel) == AGT_OK);
        size_t theta = n - 2 * f, rem = n;
        for (size_t i = 0; i < n; i++) rows[i] = (int64_t)i;
        for (size_t t = 0; t < theta; t++) {
          size_t k = rem >= f + 2 ? rem - f - 2 : 0;
          naive_scores(G, d, rows, rem, k, sc);
          size_t b = 0;
          for (size_t i = 1; i < rem; i++)
            if (sc[i] < sc[b]) b = i;
          esel[t] = rows[b];
          memmove(rows + b, rows + b + 1, (rem - b - 1) * sizeof(int64_t));
          rem--;
        }
        if (memcmp(sel, esel, theta * sizeof(int64_t)) != 0) bad_b++;
        float col[64];
        for (size_t j = 0; j < d; j++) {
          for (size_t t = 0; t < theta; t++) col[t] = G[esel[t] * d + j];
          e[j] = naive_coord(col, theta, 2, 0, theta - 2 * f);
        }
        if (!same_vals(o, e, d)) bad_b++;
      }
    }
  }
  CHECK(bad_k == 0);
  CHECK(bad_b == 0);
  agt_clear_error();
  CHECK(agt_gar_bulyan(G, 10, d, 2, o, sel) == AGT_EINVAL);
  CHECK(strstr(agt_last_error(), "n >= 4f+3, got n=10 f=2") != NULL);
  free(G);
}

static void test_mda_cge(void) {
  agt_rng r;
  agt_rng_init(&r, 4, 1);
  size_t d = 21;
  float *G = malloc(16 * d * sizeof(float)), o[32], e[32];
  int64_t sel[16];
  int bad = 0;
  for (size_t n = 2; n <= 12; n++)
    for (size_t f = 0; 2 * f < n; f++) {
      make_G(&r, G, n, d, n % 4 == 0);
      CHECK(agt_gar_mda(G, n, d, f, 1e6, o, sel) == AGT_OK);
      /* brute force over bitmasks with n-f bits, lexicographic order of kept rows */
      double best = 0;
      int found = 0;
      unsigned bm = 0;
      /* enumerate combinations in lexicographic order via sorted masks of kept sets */
      size_t k = n - f, idx[16];
      for (size_t i = 0; i < k; i++) idx[i] = i;
      for (;;) {
        double dm = 0;
        for (size_t a = 0; a < k; a++)
          for (size_t b = a + 1; b < k; b++) {
            double v = naive_sqdist(G + idx[a] * d, G + idx[b] * d, d);
            if (v > dm) dm = v;
          }
        if (!found || dm < best) {
          found = 1, best = dm, bm = 0;
          for (size_t a = 0; a < k; a++) bm |= 1u << idx[a];
        }
        size_t i = k;
        while (i > 0 && idx[i - 1] == n - k + i - 1) i--;
        if (i == 0) break;
        idx[i - 1]++;
        for (size_t j = i; j < k; j++) idx[j] = idx[j - 1] + 1;
      }
      unsigned got = 0;
      for (size_t a = 0; a < k; a++) got |= 1u << sel[a];
      if (got != bm) bad++;
    }
  CHECK(bad == 0);
  CHECK(agt_gar_mda(G, 40, d, 10, 1000, o, sel) == AGT_EINVAL);
  /* cge: the n-f smallest norms */
  size_t n = 11, f = 3;
  make_G(&r, G, n, d, 1);
  CHECK(agt_gar_cge(G, n, d, f, o, sel) == AGT_OK);
  double nr[16];
  for (size_t i = 0; i < n; i++) nr[i] = naive_sqdist(G + i * d, e, 0) + 0 * i;
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (size_t j = 0; j < d; j++) s += (double)G[i * d + j] * G[i * d + j];
    nr[i] = isfinite(s) ? s : INFINITY;
  }
  int ok = 1;
  for (size_t a = 0; a < n - f; a++)
    for (size_t i = 0; i < n; i++) {
      int in = 0;
      for (size_t b = 0; b < n - f; b++) in |= (size_t)sel[b] == i;
      if (!in && nr[i] < nr[sel[a]]) ok = 0;
    }
  CHECK(ok);
  free(G);
}

static void test_iterative(void) {
  agt_rng r;
  agt_rng_init(&r, 5, 1);
  size_t n = 12, d = 1001;
  float *G = malloc(n * d * sizeof(float)), *z = malloc(d * sizeof(float));
  agt_rng_normal(&r, G, n * d, 1.0f, 1.0f);
  for (size_t j = 0; j < d; j++) G[5 * d + j] = INFINITY; /* ignored by both rules */
  int64_t it = 0;
  CHECK(agt_gar_geometric_median(G, n, d, 1e-6, 200, 1e-7, z, &it) == AGT_OK);
  CHECK(it > 0 && it <= 200);
  /* at the geometric median of the finite rows, the sum of unit vectors is ~0 */
  double g[1001] = {0}, gn = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 5) continue;
    double dd = sqrt(naive_sqdist(G + i * d, z, d));
    for (size_t j = 0; j < d; j++) g[j] += (G[i * d + j] - z[j]) / dd;
  }
  for (size_t j = 0; j < d; j++) gn += g[j] * g[j];
  CHECK(sqrt(gn) < 1e-2);
  int fin = 1;
  for (size_t j = 0; j < d; j++) fin &= isfinite(z[j]);
  CHECK(fin);
  /* centered clipping with a huge tau from 0 is the average of the finite rows, in one step */
  for (size_t j = 0; j < d; j++) z[j] = 0.0f;
  CHECK(agt_gar_centered_clipping(G, n, d, 1e30, 1, z) == AGT_OK);
  double err = 0;
  for (size_t j = 0; j < d; j++) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
      if (i != 5) s += G[i * d + j];
    err = fmax(err, fabs(s / (double)n - z[j]));
  }
  CHECK(err < 1e-5);
  /* The Gram-span iterations (AVX2) against the direct passes (portable), on spread rows
   * (span path) and on rows close to a large common mean (span refused, direct fallback). */
  float *z2 = malloc(d * sizeof(float));
  for (int close = 0; close < 2; close++) {
    agt_rng_normal(&r, G, n * d, close ? 100.0f : 0.0f, 1.0f);
    if (close)
      for (size_t i = 1; i < n; i++)
        for (size_t j = 0; j < d; j++) G[i * d + j] = G[j] + 0.01f * (float)agt_rng_normal1(&r);
    for (size_t j = 0; j < d; j++) G[7 * d + j] = NAN;
    double worst_g = 0, worst_c = 0, scale = 0;
    for (int simd = 1; simd >= 0; simd--) {
      agt_gar_set_simd(simd);
      float *o = simd ? z : z2;
      CHECK(agt_gar_geometric_median(G, n, d, 1e-6, 6, 0.0, o, &it) == AGT_OK);
      CHECK(it == 6);
    }
    for (size_t j = 0; j < d; j++) worst_g = fmax(worst_g, fabs(z[j] - z2[j])), scale = fmax(scale, fabs(z2[j]));
    CHECK(worst_g <= 1e-4 * scale + 1e-5);
    for (int simd = 1; simd >= 0; simd--) {
      agt_gar_set_simd(simd);
      float *o = simd ? z : z2;
      for (size_t j = 0; j < d; j++) o[j] = close ? 99.0f : 0.5f;
      CHECK(agt_gar_centered_clipping(G, n, d, 3.0, 4, o) == AGT_OK);
    }
    for (size_t j = 0; j < d; j++) worst_c = fmax(worst_c, fabs(z[j] - z2[j]));
    CHECK(worst_c <= 1e-4 * scale + 1e-5);
    if (worst_g > 1e-4 * scale + 1e-5 || worst_c > 1e-4 * scale + 1e-5)
      fprintf(stderr, "span vs direct (close=%d): geomed %g cclip %g scale %g\n", close, worst_g, worst_c, scale);
  }
  agt_gar_set_simd(1);
  free(z2);
  free(G), free(z);
}

static void test_pre(void) {
  agt_rng r;
  agt_rng_init(&r, 6, 1);
  size_t n = 10, d = 33, f = 3;
  float *G = malloc(n * d * sizeof(float)), *O = malloc(n * d * sizeof(float));
  make_G(&r, G, n, d, 0);
  CHECK(agt_gar_nnm(G, n, d, f, O) == AGT_OK);
  /* row i of the result averages i and its n-f-1 nearest others */
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double key[16];
    int used[16] = {0};
    for (size_t j = 0; j < n; j++) key[j] = j == i ? -1.0 : naive_sqdist(G + i * d, G + j * d, d);
    for (size_t q = 0; q < n - f; q++) {
      size_t b = n;
      for (size_t j = 0; j < n; j++)
        if (!used[j] && (b == n || key[j] < key[b])) b = j;
      used[b] = 1;
    }
    for (size_t c = 0; c < d; c++) {
      float s = 0.0f;
      for (size_t j = 0; j < n; j++)
        if (used[j]) s += G[j * d + c];
      if (s / (float)(n - f) != O[i * d + c]) bad++;
    }
  }
  CHECK(bad == 0);
  int64_t perm[10] = {3, 1, 4, 0, 5, 9, 2, 6, 8, 7};
  CHECK(agt_gar_bucketing(G, n, d, 3, perm, O) == AGT_OK);
  CHECK(O[3 * d + 2] == G[7 * d + 2]); /* last bucket holds one row */
  CHECK(O[0 * d + 1] == (G[3 * d + 1] + G[1 * d + 1] + G[4 * d + 1]) / 3.0f);
  CHECK(agt_gar_clipping(G, n, d, 1.0, O) == AGT_OK);
  double mx = 0;
  for (size_t i = 0; i < n; i++) mx = fmax(mx, sqrt(naive_sqdist(O + i * d, O, 0) + naive_sqdist(O + i * d, G, 0) * 0));
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (size_t c = 0; c < d; c++) s += (double)O[i * d + c] * O[i * d + c];
    mx = fmax(mx, sqrt(s));
  }
  CHECK(mx <= 1.0 + 1e-5);
  CHECK(agt_gar_arc(G, n, d, f, O) == AGT_OK); /* k = floor(2*3*7/10) = 4 rows clipped */
  double nr[10];
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (size_t c = 0; c < d; c++) s += (double)O[i * d + c] * O[i * d + c];
    nr[i] = sqrt(s);
  }
  double sorted[10];
  memcpy(sorted, nr, sizeof nr);
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && sorted[j - 1] < sorted[j]; j--) { double t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t; }
  CHECK(fabs(sorted[0] - sorted[4]) < 1e-4 * sorted[4]); /* the 4 largest now share the 5th norm */
  free(G), free(O);
}

/* Every rule, 1 vs 2 vs 3 threads, bit-identical, on a d large enough for many chunks. */
static void test_threads(void) {
  agt_rng r;
  agt_rng_init(&r, 7, 1);
  size_t n = 15, f = 3, d = 70001;
  float *G = agt_alloc(n * d * sizeof(float)), *out[3], *O[3];
  agt_rng_normal(&r, G, n * d, 0.0f, 1.0f);
  for (size_t j = 0; j < d; j += 7) G[2 * d + j] = NAN;
  memcpy(G + 9 * d, G + 8 * d, d * sizeof(float));
  for (int t = 0; t < 3; t++) out[t] = agt_alloc(d * sizeof(float)), O[t] = agt_alloc(n * d * sizeof(float));
  const char *names[] = {"average", "average-nan", "median", "trimmed-mean", "meamed", "phocas",
                         "multi-krum", "bulyan", "cge", "mda", "geomed", "cclip", "nnm", "clip", "arc"};
  int64_t perm[15];
  for (size_t i = 0; i < n; i++) perm[i] = (int64_t)((i * 7) % n);
  for (int k = 0; k < 15; k++) {
    for (int t = 0; t < 3; t++) {
      agt_pool_set_threads(t + 1);
      float *o = out[t];
      memset(o, 0, d * sizeof(float));
      agt_status s;
      switch (k) {
        case 0: s = agt_gar_average(G, n, d, o); break;
        case 1: s = agt_gar_average_nan(G, n, d, o); break;
        case 2: s = agt_gar_median(G, n, d, o); break;
        case 3: s = agt_gar_trimmed_mean(G, n, d, f, o); break;
        case 4: s = agt_gar_meamed(G, n, d, n - f, o); break;
        case 5: s = agt_gar_phocas(G, n, d, f, o); break;
        case 6: s = agt_gar_multi_krum(G, n, d, f, n - f, o, NULL); break;
        case 7: s = agt_gar_bulyan(G, n, d, f, o, NULL); break;
        case 8: s = agt_gar_cge(G, n, d, f, o, NULL); break;
        case 9: s = agt_gar_mda(G, n, d, f, 1e6, o, NULL); break;
        case 10: s = agt_gar_geometric_median(G, n, d, 1e-6, 5, 0.0, o, NULL); break;
        case 11: s = agt_gar_centered_clipping(G, n, d, 10.0, 3, o); break;
        case 12: s = agt_gar_nnm(G, n, d, f, O[t]); break;
        case 13: s = agt_gar_bucketing(G, n, d, 2, perm, O[t]); break;
        default: s = agt_gar_arc(G, n, d, f, O[t]); break;
      }
      CHECK(s == AGT_OK);
    }
    int same = k >= 12 ? same_bits(O[0], O[1], n * d) && same_bits(O[0], O[2], n * d)
                       : same_bits(out[0], out[1], d) && same_bits(out[0], out[2], d);
    if (!same) fprintf(stderr, "thread count changes %s\n", names[k]);
    CHECK(same);
  }
  agt_pool_set_threads(0);
  for (int t = 0; t < 3; t++) agt_free(out[t], d * sizeof(float)), agt_free(O[t], n * d * sizeof(float));
  agt_free(G, n * d * sizeof(float));
}

/* ---- the shared decisions (gar_host.c) on another device's passes --------------------------
 * A reference "device" whose passes are naive loops in double (and one that counts its passes
 * over G): the shared layer must choose the rows the CPU entries choose and give their values
 * bit for bit, NaN equal to NaN (small-integer inputs, so every distance is exact on both), agree on the iterative rules to
 * rounding, touch G only through the passes, and stop MDA's search on the interrupt flag. */
static size_t ref_passes_over_G;

static agt_status ref_sqdist(const float *G, size_t n, size_t d, double *D) {
  ref_passes_over_G++;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      double v = i == j ? 0.0 : naive_sqdist(G + i * d, G + j * d, d);
      D[i * n + j] = isfinite(v) ? v : INFINITY;
    }
  return AGT_OK;
}
static agt_status ref_sqnorms(const float *G, size_t n, size_t d, double *sq) {
  ref_passes_over_G++;
  for (size_t i = 0; i < n; i++) {
    double v = 0.0;
    for (size_t j = 0; j < d; j++) v += (double)G[i * d + j] * G[i * d + j];
    sq[i] = isfinite(v) ? v : INFINITY;
  }
  return AGT_OK;
}
static agt_status ref_avg_lists(const float *G, size_t d, const int64_t *rows, const size_t *off,
                                size_t R, int finite, float *out) {
  ref_passes_over_G++;
  for (size_t r = 0; r < R; r++)
    for (size_t j = 0; j < d; j++) {
      float s = 0.0f;
      for (size_t t = off[r]; t < off[r + 1]; t++) s += G[rows[t] * d + j];
      out[r * d + j] = s / (float)(off[r + 1] - off[r]);
    }
  return AGT_OK;
}
static agt_status ref_rows_meamed(const float *G, size_t d, const int64_t *rows, size_t m,
                                  size_t beta, float *out) {
  ref_passes_over_G++;
  float col[64];
  for (size_t j = 0; j < d; j++) {
    for (size_t t = 0; t < m; t++) col[t] = G[rows[t] * d + j];
    out[j] = naive_coord(col, m, 2, 0, beta);
  }
  return AGT_OK;
}
static agt_status ref_scale_rows(const float *G, size_t n, size_t d, const float *a, float *out) {
  ref_passes_over_G++;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) out[i * d + j] = a[i] == 1.0f ? G[i * d + j] : G[i * d + j] * a[i];
  return AGT_OK;
}
/* the point as d doubles, moved and measured directly */
typedef struct { const float *G; size_t n, d; float *z; double *p; } ref_point;
static void ref_dist2(const ref_point *q, double *dist2) {
  for (size_t i = 0; i < q->n; i++) {
    double v = 0.0;
    for (size_t j = 0; j < q->d; j++) v += (q->G[i * q->d + j] - q->p[j]) * (q->G[i * q->d + j] - q->p[j]);
    dist2[i] = isfinite(v) ? v : INFINITY;
  }
}
static agt_status ref_point_start(const float *G, size_t n, size_t d, int median, int moves,
                                  float *z, double *dist2, void **pt) {
  ref_passes_over_G++;
  ref_point *q = calloc(1, sizeof *q);
  *pt = q;
  q->G = G, q->n = n, q->d = d, q->z = z, q->p = malloc(d * sizeof(double));
  float col[64];
  for (size_t j = 0; j < d; j++) {
    if (median) {
      for (size_t i = 0; i < n; i++) col[i] = G[i * d + j];
      z[j] = naive_coord(col, n, 0, 0, 0);
    }
    q->p[j] = z[j];
  }
  ref_dist2(q, dist2);
  return AGT_OK;
}
static agt_status ref_point_move(void *pt, const double *a, int centered, double *dist2,
                                 double *dz2, double *z2) {
  ref_passes_over_G++;
  ref_point *q = pt;
  double dz = 0.0, zz = 0.0;
  for (size_t j = 0; j < q->d; j++) {
    double v = centered ? q->p[j] : 0.0;
    for (size_t i = 0; i < q->n; i++)
      if (a[i] != 0.0) v += a[i] * (q->G[i * q->d + j] - (centered ? q->p[j] : 0.0));
    dz += (v - q->p[j]) * (v - q->p[j]);
    zz += q->p[j] * q->p[j];
    q->p[j] = v;
  }
  if (dz2) *dz2 = dz;
  if (z2) *z2 = zz;
  ref_dist2(q, dist2);
  return AGT_OK;
}
static agt_status ref_point_end(void *pt, int write) {
  ref_point *q = pt;
  if (!q) return AGT_OK;
  if (write)
    for (size_t j = 0; j < q->d; j++) q->z[j] = (float)q->p[j];
  free(q->p);
  free(q);
  return AGT_OK;
}
static const agt_gar_passes ref_passes = {
  ref_sqdist, ref_sqnorms, ref_avg_lists, ref_rows_meamed, ref_scale_rows,
  ref_point_start, ref_point_move, ref_point_end,
};

static int near_or_same(float a, float b) {
  return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)) ||
         fabsf(a - b) <= 1e-4f * (1.0f + fabsf(b));
}

static void test_shared_layer(void) {
  agt_rng r;
  agt_rng_init(&r, 11, 1);
  size_t d = 37;
  float *G = malloc(40 * d * sizeof(float)), o[40], e[40];
  float *O = malloc(40 * d * sizeof(float)), *E = malloc(40 * d * sizeof(float));
  int64_t sel[40], esel[40];
  int bad_rows = 0, bad_vals = 0, bad_iter = 0;
  for (size_t n = 3; n <= 40; n += 1 + n / 8) {
    make_G(&r, G, n, d, n % 2 == 0);
    for (size_t f = 0; 2 * f + 3 <= n; f += 1 + f) {
      size_t m = n - f;
      CHECK(agt_gar_multi_krum(G, n, d, f, m, e, esel) == AGT_OK);
      CHECK(agt_gar_host_multi_krum(&ref_passes, G, n, d, f, m, o, sel) == AGT_OK);
      bad_rows += memcmp(sel, esel, m * sizeof(int64_t)) != 0, bad_vals += !same_vals(o, e, d);
      if (n >= 4 * f + 3) {
        CHECK(agt_gar_bulyan(G, n, d, f, e, esel) == AGT_OK);
        CHECK(agt_gar_host_bulyan(&ref_passes, G, n, d, f, o, sel) == AGT_OK);
        bad_rows += memcmp(sel, esel, (n - 2 * f) * sizeof(int64_t)) != 0, bad_vals += !same_vals(o, e, d);
      }
      CHECK(agt_gar_cge(G, n, d, f, e, esel) == AGT_OK);
      CHECK(agt_gar_host_cge(&ref_passes, G, n, d, f, o, sel) == AGT_OK);
      bad_rows += memcmp(sel, esel, (n - f) * sizeof(int64_t)) != 0, bad_vals += !same_vals(o, e, d);
      if (n <= 16 && f <= 3) {
        CHECK(agt_gar_mda(G, n, d, f, 1e6, e, esel) == AGT_OK);
        CHECK(agt_gar_host_mda(&ref_passes, G, n, d, f, 1e6, o, sel) == AGT_OK);
        bad_rows += memcmp(sel, esel, (n - f) * sizeof(int64_t)) != 0, bad_vals += !same_vals(o, e, d);
      }
      CHECK(agt_gar_nnm(G, n, d, f, E) == AGT_OK);
      CHECK(agt_gar_host_nnm(&ref_passes, G, n, d, f, O) == AGT_OK);
      bad_vals += !same_vals(O, E, n * d);
      CHECK(agt_gar_arc(G, n, d, f, E) == AGT_OK);
      CHECK(agt_gar_host_arc(&ref_passes, G, n, d, f, O) == AGT_OK);
      bad_vals += !same_vals(O, E, n * d);
    }
    CHECK(agt_gar_clipping(G, n, d, 3.0, E) == AGT_OK);
    CHECK(agt_gar_host_clipping(&ref_passes, G, n, d, 3.0, O) == AGT_OK);
    bad_vals += !same_vals(O, E, n * d);
    int64_t ie = 0, io = 0;
    CHECK(agt_gar_geometric_median(G, n, d, 0.1, 6, 1e-9, e, &ie) == AGT_OK);
    CHECK(agt_gar_host_geometric_median(&ref_passes, G, n, d, 0.1, 6, 1e-9, o, &io) == AGT_OK);
    for (size_t j = 0; j < d; j++) bad_iter += !near_or_same(o[j], e[j]);
    bad_iter += ie != io;
    for (size_t j = 0; j < d; j++) o[j] = e[j] = (float)j / (float)d;
    CHECK(agt_gar_centered_clipping(G, n, d, 2.0, 3, e) == AGT_OK);
    CHECK(agt_gar_host_centered_clipping(&ref_passes, G, n, d, 2.0, 3, o) == AGT_OK);
    for (size_t j = 0; j < d; j++) bad_iter += !near_or_same(o[j], e[j]);
  }
  CHECK(bad_rows == 0);
  CHECK(bad_vals == 0);
  CHECK(bad_iter == 0);
  /* the decisions read G only through the passes: one distance pass and one average */
  make_G(&r, G, 20, d, 0);
  ref_passes_over_G = 0;
  CHECK(agt_gar_host_multi_krum(&ref_passes, G, 20, d, 4, 10, o, sel) == AGT_OK);
  CHECK(ref_passes_over_G == 2);
  /* MDA's search polls the interrupt flag whatever the device: 40 points on a line, C(40,14)
   * subsets, far more than the 65536 visits between two polls */
  for (size_t i = 0; i < 40; i++) G[i] = (float)agt_rng_below(&r, 1000);
  agt_interrupt_set(1);
  agt_status st = agt_gar_host_mda(&ref_passes, G, 40, 1, 14, 1e12, o, sel);
  agt_interrupt_set(0);
  CHECK(st == AGT_EINTR);
  CHECK(strstr(agt_last_error(), "mda: interrupted") != NULL);
  agt_clear_error();
  free(G);
  free(O);
  free(E);
}

int main(void) {
  test_coord();
  test_sqdist();
  test_krum_bulyan();
  test_mda_cge();
  test_iterative();
  test_pre();
  test_threads();
  test_shared_layer();
  return check_summary();
}
