/* test_core.c — the engine core without Lua: status messages, memory accounting, the pool's
 * chunking and determinism, Philox against its known answer, vector kernels, tensors. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gpu.h"
#include "mem.h"
#include "pool.h"
#include "rng.h"
#include "tensor.h"
#include "vec.h"

typedef struct { size_t *seen; } cover_ctx;
static void cover(void *vctx, size_t b, size_t e, size_t chunk) {
  cover_ctx *c = vctx;
  (void)chunk;
  for (size_t i = b; i < e; i++) c->seen[i]++;
}

static void test_status(void) {
  agt_status s = AGT_FAIL(AGT_EINVAL, "bad %s %d", "thing", 3);
  CHECK(s == AGT_EINVAL);
  CHECK(strstr(agt_last_error(), "bad thing 3") != NULL);
  CHECK(strstr(agt_last_error(), "test_core.c:") != NULL);
  CHECK(strcmp(agt_status_name(AGT_ENOMEM), "out of memory") == 0);
}

static void test_mem(void) {
  size_t before = agt_mem_in_use();
  float *p = agt_alloc(1000 * sizeof(float));
  CHECK(p != NULL);
  if (agt_mem_guarded()) {
    /* AGT_DEBUG: the buffer ends where a page ends (the guard page follows), its start as
     * aligned as its size (4000 bytes: 32) */
    CHECK(((uintptr_t)(p + 1000) % (uintptr_t)sysconf(_SC_PAGESIZE)) == 0);
    CHECK(((uintptr_t)p % 32) == 0);
  } else {
    CHECK(((uintptr_t)p % 64) == 0);
  }
  CHECK(agt_mem_in_use() == before + 1000 * sizeof(float));
  agt_free(p, 1000 * sizeof(float));
  CHECK(agt_mem_in_use() == before);
  void *huge = agt_alloc((size_t)1 << 62);
  CHECK(huge == NULL);
  CHECK(strstr(agt_last_error(), "out of memory") != NULL);
  CHECK(agt_mem_gc_hint() == 1);
  agt_mem_gc_done();
  CHECK(agt_mem_gc_hint() == 0);
}

static void test_pool(void) {
  for (int th = 1; th <= 4; th++) {
    CHECK(agt_pool_set_threads(th) == AGT_OK);
    CHECK(agt_pool_threads() == th);
    size_t n = 100003;
    size_t *seen = calloc(n, sizeof *seen);
    cover_ctx c = {seen};
    CHECK(agt_parallel_for(n, 1000, cover, &c) == AGT_OK);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= seen[i] == 1;
    CHECK(ok);
    free(seen);
  }
  CHECK(agt_chunk_count(100003, 1000) == 101);
  CHECK(agt_chunk_count(0, 10) == 0);
  agt_interrupt_set(1);
  size_t seen1[10] = {0};
  cover_ctx c1 = {seen1};
  CHECK(agt_parallel_for(10, 1, cover, &c1) == AGT_EINTR);
  agt_interrupt_set(0);
  CHECK(agt_pool_set_threads(0) == AGT_OK);
}

/* A chunk that takes a while, then says it is done. */
static void slow_chunk(void *ctx, size_t b, size_t e, size_t c) {
  (void)b;
  (void)e;
  (void)c;
  usleep(300);
  atomic_fetch_add((atomic_int *)ctx, 1);
}

/* Threads started again after agt_pool_set_threads take part in the next job, and
 * agt_parallel_for returns only once every chunk is done (a new thread once counted itself done
 * with a job it had not seen, so the call could return while it still ran a chunk). */
static void test_pool_restart(void) {
  int early = 0;
  for (int k = 0; k < 300; k++) {
    CHECK(agt_pool_set_threads(2 + k % 3) == AGT_OK);
    atomic_int done = 0;
    CHECK(agt_parallel_for(24, 1, slow_chunk, &done) == AGT_OK);
    early += atomic_load(&done) != 24;
    usleep(2000); /* (a chunk still running would count itself here) */
  }
  CHECK(early == 0);
  CHECK(agt_pool_set_threads(0) == AGT_OK);
}

static void test_rng(void) {
  agt_rng r;
  agt_rng_init(&r, 0, 0);
  CHECK(agt_rng_u32(&r) == 0x6627e8d5u);
  CHECK(agt_rng_u32(&r) == 0xe169c58du);
  CHECK(agt_rng_u32(&r) == 0xbc57ac4cu);
  CHECK(agt_rng_u32(&r) == 0x9b00dbd8u);
  agt_rng a, b;
  agt_rng_init(&a, 99, 5);
  agt_rng_normal1(&a);
  b = a; /* the state is plain bytes */
  CHECK(agt_rng_normal1(&a) == agt_rng_normal1(&b));
  CHECK(agt_rng_u64(&a) == agt_rng_u64(&b));
  int64_t perm[50];
  agt_rng_permutation(&a, perm, 50);
  int seen[50] = {0};
  for (int i = 0; i < 50; i++) seen[perm[i]]++;
  int ok = 1;
  for (int i = 0; i < 50; i++) ok &= seen[i] == 1;
  CHECK(ok);
}

static void test_vec(void) {
  size_t n = 300007;
  float *x = agt_alloc(n * sizeof(float)), *y = agt_alloc(n * sizeof(float));
  agt_rng r;
  agt_rng_init(&r, 1, 2);
  agt_rng_uniform(&r, x, n, -1, 1);
  agt_rng_uniform(&r, y, n, -1, 1);
  double s = 0, d = 0, sq = 0;
  for (size_t i = 0; i < n; i++) {
    s += x[i];
    d += (double)x[i] * y[i];
    sq += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
  }
  CHECK_NEAR(agt_vec_sum(x, n), s, 1e-6);
  CHECK_NEAR(agt_vec_dot(x, y, n), d, 1e-6);
  CHECK_NEAR(agt_vec_sqdist(x, y, n), sq, 1e-6);
  double s1 = agt_vec_sum(x, n);
  agt_pool_set_threads(3);
  CHECK(agt_vec_sum(x, n) == s1); /* bit-identical across thread counts */
  agt_pool_set_threads(0);
  /* rows: 3 rows of 1001 of x, their norms and squared distances to y against plain sums; a
   * NaN in row 1 and an inf in row 2 give NaN and inf */
  {
    size_t rn = 3, rd = 1001;
    double nrm[3], sqd[3];
    x[1001 + 17] = NAN;
    x[2002 + 5] = INFINITY;
    agt_rows_norm2(x, rn, rd, nrm);
    agt_rows_sqdist(x, rn, rd, y, sqd);
    double a0 = 0, b0 = 0;
    for (size_t j = 0; j < rd; j++) {
      a0 += (double)x[j] * x[j];
      b0 += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    }
    CHECK_NEAR(nrm[0], sqrt(a0), 1e-9);
    CHECK_NEAR(sqd[0], b0, 1e-9);
    CHECK(isnan(nrm[1]) && isnan(sqd[1]));
    CHECK(isinf(nrm[2]) && isinf(sqd[2]));
  }
  x[5] = NAN;
  CHECK(isnan(agt_vec_max(x, n)));
  CHECK(agt_vec_count_nonfinite(x, n) == 3);
  agt_free(x, n * sizeof(float));
  agt_free(y, n * sizeof(float));
}

static void test_tensor(void) {
  int64_t shape[2] = {4, 3};
  agt_tensor *t = NULL, *v = NULL;
  CHECK(agt_tensor_new(AGT_F32, 2, shape, &t) == AGT_OK);
  CHECK(agt_tensor_numel(t) == 12);
  float *p = agt_tensor_data(t);
  for (int i = 0; i < 12; i++) p[i] = (float)i;
  int64_t row[1] = {3};
  CHECK(agt_tensor_view(t, 1, row, 6, &v) == AGT_OK);
  CHECK(((float *)agt_tensor_data(v))[0] == 6.0f);
  CHECK(agt_tensor_refcount(t) == 2);
  int64_t big[1] = {10};
  agt_tensor *bad = NULL;
  CHECK(agt_tensor_view(t, 1, big, 6, &bad) == AGT_EINVAL);
  CHECK(bad == NULL);
  agt_tensor_release(t);
  CHECK(((float *)agt_tensor_data(v))[2] == 8.0f); /* storage outlives the first handle */
  agt_tensor_release(v);
  int64_t neg[1] = {-2};
  CHECK(agt_tensor_new(AGT_F32, 1, neg, &t) == AGT_EINVAL);
  int64_t over[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 1 << 20};
  CHECK(agt_tensor_new(AGT_F32, 3, over, &t) == AGT_EINVAL);
  /* 25M parameters x 64 workers: the element count does not overflow */
  int64_t g[2] = {64, 25000000};
  size_t numel = (size_t)g[0] * (size_t)g[1];
  CHECK(numel == 1600000000u);
}

/* Devices: a CPU tensor says so; to() and clone() copy; a CUDA tensor and a pin either work
 * (a device is seen: values survive the round trip, a second pin is a no-op) or fail with a
 * status and leave nothing behind (no device, or built without CUDA). */
static void test_tensor_device(void) {
  int64_t shape[2] = {3, 5};
  agt_tensor *t = NULL, *c = NULL, *d = NULL, *back = NULL;
  CHECK(agt_tensor_new_on(AGT_DEV_CPU, AGT_F32, 2, shape, &t) == AGT_OK);
  CHECK(agt_tensor_device(t) == AGT_DEV_CPU && agt_tensor_device_index(t) == 0);
  float *p = agt_tensor_data(t);
  for (int i = 0; i < 15; i++) p[i] = (float)i - 7.5f;
  CHECK(agt_tensor_to(t, AGT_DEV_CPU, &c) == AGT_OK);
  CHECK(agt_tensor_data(c) != agt_tensor_data(t));
  CHECK(memcmp(agt_tensor_data(c), p, 15 * sizeof(float)) == 0);
  CHECK(agt_tensor_new_on(7, AGT_F32, 2, shape, &d) == AGT_EINVAL && d == NULL);
  if (agt_gpu_available()) {
    CHECK(agt_tensor_new_on(AGT_DEV_CUDA, AGT_F32, 2, shape, &d) == AGT_OK);
    CHECK(agt_tensor_device(d) == AGT_DEV_CUDA);
    CHECK(agt_tensor_copy(d, t) == AGT_OK);
    CHECK(agt_tensor_to(d, AGT_DEV_CPU, &back) == AGT_OK);
    CHECK(memcmp(agt_tensor_data(back), p, 15 * sizeof(float)) == 0);
    CHECK(agt_tensor_pin(t) == AGT_OK && agt_tensor_pinned(t) == 1);
    CHECK(agt_tensor_pin(t) == AGT_OK);                 /* once per storage */
    CHECK(agt_tensor_pin(d) == AGT_EINVAL);             /* device memory is not pinned */
    agt_tensor_release(back);
    agt_tensor_release(d);
  } else {
    CHECK(agt_tensor_new_on(AGT_DEV_CUDA, AGT_F32, 2, shape, &d) == AGT_ENOTSUP && d == NULL);
    CHECK(agt_tensor_pin(t) == AGT_ENOTSUP && agt_tensor_pinned(t) == 0);
  }
  agt_tensor_release(c);
  agt_tensor_release(t);
}

/* agt_gemm against a naive double product, every transpose, with alpha and beta, on 1 and 3
 * pool threads; the same product twice is the same bits. */
static void test_gemm(void) {
  static const size_t shapes[][3] = { { 40, 700, 300 }, { 600, 24, 400 }, { 5, 7, 3 } };
  agt_rng r;
  agt_rng_init(&r, 11, 0);
  for (size_t s = 0; s < 3; s++) {
    size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
    float *A = malloc(m * k * 4), *B = malloc(k * n * 4), *C0 = malloc(m * n * 4), *C1 = malloc(m * n * 4);
    float *C2 = malloc(m * n * 4);
    agt_rng_uniform(&r, A, m * k, -1.0f, 1.0f);
    agt_rng_uniform(&r, B, k * n, -1.0f, 1.0f);
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        size_t lda = ta ? m : k, ldb = tb ? k : n;
        for (size_t i = 0; i < m * n; i++) C0[i] = C1[i] = C2[i] = 0.5f;
        agt_pool_set_threads(1);
        CHECK(agt_gemm(ta, tb, m, n, k, 1.5f, A, lda, B, ldb, 0.25f, C0, n) == AGT_OK);
        agt_pool_set_threads(3);
        CHECK(agt_gemm(ta, tb, m, n, k, 1.5f, A, lda, B, ldb, 0.25f, C1, n) == AGT_OK);
        CHECK(agt_gemm(ta, tb, m, n, k, 1.5f, A, lda, B, ldb, 0.25f, C2, n) == AGT_OK);
        CHECK(memcmp(C1, C2, m * n * 4) == 0);
        double worst = 0;
        for (size_t i = 0; i < m; i++)
          for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t q = 0; q < k; q++)
              acc += (double)(ta ? A[q * lda + i] : A[i * lda + q]) * (tb ? B[j * ldb + q] : B[q * ldb + j]);
            double want = 1.5 * acc + 0.25 * 0.5;
            double e = fmax(fabs(C0[i * n + j] - want), fabs(C1[i * n + j] - want));
            if (e > worst) worst = e;
          }
        CHECK(worst < 1e-3);
      }
    free(A); free(B); free(C0); free(C1); free(C2);
  }
  agt_pool_set_threads(0);
}

int main(void) {
  test_status();
  test_mem();
  test_pool();
  test_pool_restart();
  test_rng();
  test_vec();
  test_gemm();
  test_tensor();
  test_tensor_device();
  return check_summary();
}
