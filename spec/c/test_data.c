/* test_data.c — the IDX and CIFAR-10 readers, gather, shards, SHA-256 and tar
 * extraction, on small files this test writes into a fresh temporary directory. */
#include "check.h"
#include "data.h"
#include "download.h"
#include "rng.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64];

static const char *tmp_path(const char *name) {
  static char buf[8][256];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static void write_bytes(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  fwrite(b, 1, n, f);
  fclose(f);
}

static void write_gz(const char *path, const void *b, size_t n) {
  gzFile g = gzopen(path, "wb");
  gzwrite(g, b, (unsigned)n);
  gzclose(g);
}

static long file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long s = ftell(f);
  fclose(f);
  return s;
}

static int msg_has(const char *needle) {
  const char *m = agt_last_error();
  int ok = strstr(m, needle) != NULL;
  if (!ok) fprintf(stderr, "  message '%s' lacks '%s'\n", m, needle);
  return ok;
}

/* An IDX3 file of 3 images 2×3 with pixel value i*6+j; returns its size. */
static size_t make_idx3(unsigned char *buf) {
  unsigned char h[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3};
  memcpy(buf, h, 16);
  for (int i = 0; i < 18; i++) buf[16 + i] = (unsigned char)(i * 14);
  return 34;
}

static void test_idx(void) {
  unsigned char buf[64];
  size_t n = make_idx3(buf);
  write_bytes(tmp_path("a-idx3-ubyte"), buf, n);
  write_gz(tmp_path("a-idx3-ubyte.gz"), buf, n);
  const char *paths[2] = {tmp_path("a-idx3-ubyte"), tmp_path("a-idx3-ubyte.gz")};
  for (int p = 0; p < 2; p++) {
    int ndim = 0;
    int64_t dims[4] = {0};
    CHECK(agt_data_idx_info(paths[p], &ndim, dims) == AGT_OK);
    CHECK(ndim == 3 && dims[0] == 3 && dims[1] == 2 && dims[2] == 3);
    float x[18];
    CHECK(agt_data_idx_read(paths[p], AGT_F32, 1.0f / 255, x, 18) == AGT_OK);
    int good = 1;
    for (int i = 0; i < 18; i++) good &= x[i] == (float)(i * 14) * (1.0f / 255);
    CHECK(good);
    CHECK(x[17] <= 1.0f && x[0] == 0.0f);
    int32_t y[18];
    CHECK(agt_data_idx_read(paths[p], AGT_I32, 1, y, 18) == AGT_OK);
    CHECK(y[5] == 70);
    uint8_t u[18];
    CHECK(agt_data_idx_read(paths[p], AGT_U8, 1, u, 18) == AGT_OK);
    CHECK(u[17] == 238);
    /* the buffer must match the header */
    CHECK(agt_data_idx_read(paths[p], AGT_F32, 1, x, 17) == AGT_EINVAL);
  }
  /* labels: IDX1 */
  unsigned char lab[8 + 5] = {0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5};
  write_gz(tmp_path("l-idx1-ubyte.gz"), lab, sizeof lab);
  int64_t y64[5];
  CHECK(agt_data_idx_read(tmp_path("l-idx1-ubyte.gz"), AGT_I64, 1, y64, 5) == AGT_OK);
  CHECK(y64[0] == 3 && y64[4] == 5);

  int ndim;
  int64_t dims[4];
  float x[18];
  /* truncated plain file: refused at the header check, naming the file */
  write_bytes(tmp_path("cut-idx3-ubyte"), buf, n - 5);
  CHECK(agt_data_idx_info(tmp_path("cut-idx3-ubyte"), &ndim, dims) == AGT_EFORMAT);
  CHECK(msg_has("cut-idx3-ubyte") && msg_has("truncated"));
  CHECK(agt_data_idx_read(tmp_path("cut-idx3-ubyte"), AGT_F32, 1, x, 18) == AGT_EFORMAT);
  /* trailing bytes */
  unsigned char longer[64];
  memcpy(longer, buf, n);
  longer[n] = 7;
  write_bytes(tmp_path("long-idx3-ubyte"), longer, n + 1);
  CHECK(agt_data_idx_info(tmp_path("long-idx3-ubyte"), &ndim, dims) == AGT_EFORMAT);
  CHECK(msg_has("trailing"));
  /* truncated gzip: a cut-off download */
  long gzs = file_size(tmp_path("a-idx3-ubyte.gz"));
  unsigned char gzb[256];
  FILE *f = fopen(tmp_path("a-idx3-ubyte.gz"), "rb");
  CHECK(fread(gzb, 1, (size_t)gzs, f) == (size_t)gzs);
  fclose(f);
  write_bytes(tmp_path("cut-idx3-ubyte.gz"), gzb, (size_t)gzs - 6);
  CHECK(agt_data_idx_info(tmp_path("cut-idx3-ubyte.gz"), &ndim, dims) == AGT_EFORMAT);
  CHECK(msg_has("cut-idx3-ubyte.gz"));
  CHECK(agt_data_idx_read(tmp_path("cut-idx3-ubyte.gz"), AGT_F32, 1, x, 18) == AGT_EFORMAT);
  /* a multi-member gzip (the trailer counts only the last member) is read whole */
  {
    gzFile g = gzopen(tmp_path("multi-idx3-ubyte.gz"), "wb");
    gzwrite(g, buf, 20);
    gzclose(g);
    g = gzopen(tmp_path("multi-idx3-ubyte.gz"), "ab");
    gzwrite(g, buf + 20, (unsigned)n - 20);
    gzclose(g);
    CHECK(agt_data_idx_info(tmp_path("multi-idx3-ubyte.gz"), &ndim, dims) == AGT_OK);
    uint8_t u[18];
    CHECK(agt_data_idx_read(tmp_path("multi-idx3-ubyte.gz"), AGT_U8, 1, u, 18) == AGT_OK);
    CHECK(u[17] == 238 && u[3] == 42);
  }
  /* gzip'd with the right length field but the data cut short: the read refuses it */
  unsigned char shortdata[64];
  memcpy(shortdata, buf, 16);
  write_gz(tmp_path("short-idx3-ubyte.gz"), shortdata, 16 + 10);
  CHECK(agt_data_idx_read(tmp_path("short-idx3-ubyte.gz"), AGT_F32, 1, x, 18) == AGT_EFORMAT);
  /* wrong magic */
  unsigned char bad[34];
  memcpy(bad, buf, n);
  bad[0] = 'P';
  bad[1] = 'K';
  write_bytes(tmp_path("zip-idx3-ubyte"), bad, n);
  CHECK(agt_data_idx_info(tmp_path("zip-idx3-ubyte"), &ndim, dims) == AGT_EFORMAT);
  CHECK(msg_has("not an IDX file") && msg_has("zip-idx3-ubyte"));
  /* an element type other than u8 */
  memcpy(bad, buf, n);
  bad[2] = 0x0D;
  write_bytes(tmp_path("f32-idx3"), bad, n);
  CHECK(agt_data_idx_info(tmp_path("f32-idx3"), &ndim, dims) == AGT_EFORMAT);
  CHECK(msg_has("float32"));
  /* a zero dimension */
  memcpy(bad, buf, n);
  bad[11] = 0;
  write_bytes(tmp_path("zero-idx3"), bad, 16);
  CHECK(agt_data_idx_info(tmp_path("zero-idx3"), &ndim, dims) == AGT_EFORMAT);
  /* too short for a header, and missing */
  write_bytes(tmp_path("tiny"), buf, 3);
  CHECK(agt_data_idx_info(tmp_path("tiny"), &ndim, dims) == AGT_EFORMAT);
  CHECK(agt_data_idx_info(tmp_path("missing.gz"), &ndim, dims) == AGT_EIO);
  CHECK(msg_has("missing.gz"));
}

static void test_cifar(void) {
  enum { R = 5 };
  static unsigned char b[R * AGT_CIFAR_RECORD];
  for (int r = 0; r < R; r++) {
    b[r * AGT_CIFAR_RECORD] = (unsigned char)(r * 2);
    for (int j = 0; j < AGT_CIFAR_PIXELS; j++)
      b[r * AGT_CIFAR_RECORD + 1 + j] = (unsigned char)((r + j) & 255);
  }
  write_bytes(tmp_path("data_batch_1.bin"), b, sizeof b);
  int64_t recs = 0;
  CHECK(agt_data_cifar_info(tmp_path("data_batch_1.bin"), &recs) == AGT_OK && recs == R);
  static float x[R * AGT_CIFAR_PIXELS];
  int32_t y[R];
  CHECK(agt_data_cifar_read(tmp_path("data_batch_1.bin"), x, y, R, 1.0f / 255) == AGT_OK);
  CHECK(y[0] == 0 && y[4] == 8);
  CHECK(x[3 * AGT_CIFAR_PIXELS + 1024] == (float)((3 + 1024) & 255) * (1.0f / 255));
  /* truncated */
  write_bytes(tmp_path("cut.bin"), b, sizeof b - 100);
  CHECK(agt_data_cifar_info(tmp_path("cut.bin"), &recs) == AGT_EFORMAT);
  CHECK(msg_has("cut.bin") && msg_has("3073"));
  /* a label out of range: a foreign file of a lucky size */
  b[2 * AGT_CIFAR_RECORD] = 77;
  write_bytes(tmp_path("foreign.bin"), b, sizeof b);
  CHECK(agt_data_cifar_read(tmp_path("foreign.bin"), x, y, R, 1) == AGT_EFORMAT);
  CHECK(msg_has("label 77"));
  CHECK(agt_data_cifar_read(tmp_path("data_batch_1.bin"), x, y, R - 1, 1) == AGT_EINVAL);
}

static void test_gather(void) {
  float src[4 * 3];
  uint8_t src8[4 * 3];
  int32_t lab[4] = {10, 11, 12, 13};
  for (int i = 0; i < 12; i++) {
    src[i] = (float)i;
    src8[i] = (uint8_t)(i * 20);
  }
  int64_t idx[3] = {3, 0, 3};
  float dst[9];
  int32_t yl[3];
  CHECK(agt_data_gather_f32(src, 4, 3, idx, 3, dst) == AGT_OK);
  CHECK(dst[0] == 9 && dst[2] == 11 && dst[3] == 0 && dst[8] == 11);
  CHECK(agt_data_gather_u8(src8, 4, 3, idx, 3, 0.5f, dst) == AGT_OK);
  CHECK(dst[0] == 90 && dst[4] == 10);
  CHECK(agt_data_gather_i32(lab, 4, idx, 3, yl) == AGT_OK);
  CHECK(yl[0] == 13 && yl[1] == 10);
  int64_t bad[2] = {1, 4};
  CHECK(agt_data_gather_f32(src, 4, 3, bad, 2, dst) == AGT_EINVAL);
  CHECK(msg_has("index 4"));
  bad[1] = -1;
  CHECK(agt_data_gather_i32(lab, 4, bad, 2, yl) == AGT_EINVAL);
  /* a large gather goes through the pool: same result */
  enum { N = 5000, D = 50 };
  float *big = malloc(sizeof(float) * N * D), *out = malloc(sizeof(float) * N * D);
  int64_t *perm = malloc(sizeof(int64_t) * N);
  for (size_t i = 0; i < (size_t)N * D; i++) big[i] = (float)i;
  agt_rng r;
  agt_rng_init(&r, 1, 2);
  agt_rng_permutation(&r, perm, N);
  CHECK(agt_data_gather_f32(big, N, D, perm, N, out) == AGT_OK);
  int good = 1;
  for (size_t i = 0; i < N; i++)
    good &= out[i * D + 7] == big[(size_t)perm[i] * D + 7];
  CHECK(good);
  free(big);
  free(out);
  free(perm);
}

/* Every index 0..N-1 appears exactly once across the shards. */
static int is_partition(const int64_t *order, const int64_t *off, size_t N, size_t n) {
  if (off[0] != 0 || off[n] != (int64_t)N) return 0;
  char *seen = calloc(N, 1);
  int ok = 1;
  for (size_t j = 0; j < n; j++)
    if (off[j + 1] < off[j]) ok = 0;
  for (size_t i = 0; i < N && ok; i++) {
    if (order[i] < 0 || order[i] >= (int64_t)N || seen[order[i]]) ok = 0;
    else seen[order[i]] = 1;
  }
  free(seen);
  return ok;
}

/* Mean over workers of the largest share one label has in the worker's shard. */
static double mean_top_share(const int32_t *y, const int64_t *order, const int64_t *off, size_t n,
                             int classes) {
  double acc = 0;
  for (size_t j = 0; j < n; j++) {
    int cnt[16] = {0};
    for (int64_t k = off[j]; k < off[j + 1]; k++) cnt[y[order[k]]]++;
    int top = 0;
    for (int c = 0; c < classes; c++) top = cnt[c] > top ? cnt[c] : top;
    acc += (double)top / (double)(off[j + 1] - off[j]);
  }
  return acc / (double)n;
}

static void test_shard(void) {
  enum { N = 2000, C = 10 };
  static int32_t y[N];
  static int64_t order[N], order2[N];
  int64_t off[17], off2[17];
  for (int i = 0; i < N; i++) y[i] = (i * 7) % C;
  agt_rng r;
  agt_rng_init(&r, 42, 0);
  /* iid: near-equal sizes */
  CHECK(agt_data_shard(y, N, C, 7, AGT_SHARD_IID, 0, 0, &r, order, off) == AGT_OK);
  CHECK(is_partition(order, off, N, 7));
  int sizes_ok = 1;
  for (int j = 0; j < 7; j++) {
    int64_t s = off[j + 1] - off[j];
    sizes_ok &= s == N / 7 || s == N / 7 + 1;
  }
  CHECK(sizes_ok);
  /* reproducible */
  agt_rng_init(&r, 42, 0);
  CHECK(agt_data_shard(y, N, C, 7, AGT_SHARD_IID, 0, 0, &r, order2, off2) == AGT_OK);
  CHECK(memcmp(order, order2, sizeof order) == 0);
  /* sorted: labels non-decreasing along the order, each worker one or two labels */
  CHECK(agt_data_shard(y, N, C, 10, AGT_SHARD_SORTED, 0, 0, NULL, order, off) == AGT_OK);
  CHECK(is_partition(order, off, N, 10));
  int mono = 1;
  for (int i = 1; i < N; i++) mono &= y[order[i]] >= y[order[i - 1]];
  CHECK(mono);
  CHECK_NEAR(mean_top_share(y, order, off, 10, C), 1.0, 1e-12);
  /* dirichlet: a partition; small alpha is skewed, large alpha is close to iid */
  agt_rng_init(&r, 7, 1);
  CHECK(agt_data_shard(y, N, C, 10, AGT_SHARD_DIRICHLET, 0.1, 5, &r, order, off) == AGT_OK);
  CHECK(is_partition(order, off, N, 10));
  int minok = 1;
  for (int j = 0; j < 10; j++) minok &= off[j + 1] - off[j] >= 5;
  CHECK(minok);
  double skew = mean_top_share(y, order, off, 10, C);
  CHECK(agt_data_shard(y, N, C, 10, AGT_SHARD_DIRICHLET, 1000.0, 1, &r, order, off) == AGT_OK);
  CHECK(is_partition(order, off, N, 10));
  double flat = mean_top_share(y, order, off, 10, C);
  CHECK(skew > 0.5);
  CHECK(flat < 0.2);
  /* bad arguments */
  CHECK(agt_data_shard(y, N, C, 10, AGT_SHARD_DIRICHLET, 0, 1, &r, order, off) == AGT_EINVAL);
  CHECK(msg_has("alpha"));
  CHECK(agt_data_shard(y, N, C, N + 1, AGT_SHARD_IID, 0, 0, &r, order, off) == AGT_EINVAL);
  CHECK(agt_data_shard(y, N, 5, 3, AGT_SHARD_SORTED, 0, 0, &r, order, off) == AGT_EINVAL);
  CHECK(msg_has("label"));
  CHECK(agt_data_shard(y, N, C, 3, 9, 0, 0, &r, order, off) == AGT_EINVAL);
}

/* The one-channel cifarnet output is a standardised crop/flip of the padded input (brightness
 * and a single channel's contrast are undone by the standardisation). */
static int matches_some_crop(const float *in, const float *out, int H, int W) {
  float cand[64], tmp[64];
  for (int oy = -4; oy <= 4; oy++)
    for (int ox = -4; ox <= 4; ox++)
      for (int flip = 0; flip < 2; flip++) {
        for (int i = 0; i < H; i++)
          for (int j = 0; j < W; j++) {
            int si = i + oy, sj = (flip ? W - 1 - j : j) + ox;
            cand[i * W + j] = (si < 0 || si >= H || sj < 0 || sj >= W) ? 0 : in[si * W + sj];
          }
        memcpy(tmp, cand, sizeof(float) * (size_t)(H * W));
        agt_data_standardize(tmp, 1, (size_t)(H * W));
        int same = 1;
        for (int k = 0; k < H * W; k++) same &= fabsf(tmp[k] - out[k]) < 1e-4f;
        if (same) return 1;
      }
  return 0;
}

static void test_preprocess(void) {
  float x[2 * 12];
  for (int i = 0; i < 24; i++) x[i] = (float)(i * i % 7) / 7.0f;
  CHECK(agt_data_standardize(x, 2, 12) == AGT_OK);
  for (int b = 0; b < 2; b++) {
    double m = 0, v = 0;
    for (int i = 0; i < 12; i++) m += x[b * 12 + i];
    m /= 12;
    for (int i = 0; i < 12; i++) v += (x[b * 12 + i] - m) * (x[b * 12 + i] - m);
    CHECK_NEAR(m, 0, 1e-6);
    CHECK_NEAR(v / 12, 1, 1e-5);
  }
  /* a constant image: the 1/sqrt(n) floor keeps it finite (all zeros) */
  float k[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  CHECK(agt_data_standardize(k, 1, 4) == AGT_OK && k[0] == 0 && k[3] == 0);
  /* eval = standardise */
  float a[48], b2[48];
  for (int i = 0; i < 48; i++) a[i] = b2[i] = (float)((i * 37) % 11) / 11.0f;
  CHECK(agt_data_cifarnet(a, 1, 3, 4, 4, 0, NULL) == AGT_OK);
  agt_data_standardize(b2, 1, 48);
  CHECK(memcmp(a, b2, sizeof a) == 0);
  /* train: reproducible from the stream, standardised, a crop/flip of the input */
  enum { H = 6, W = 6, B = 20 };
  float in[B * H * W], o1[B * H * W], o2[B * H * W];
  for (int i = 0; i < B * H * W; i++) in[i] = (float)((i * 53) % 17) / 17.0f;
  memcpy(o1, in, sizeof in);
  memcpy(o2, in, sizeof in);
  agt_rng r1, r2;
  agt_rng_init(&r1, 3, 4);
  agt_rng_init(&r2, 3, 4);
  CHECK(agt_data_cifarnet(o1, B, 1, H, W, 1, &r1) == AGT_OK);
  CHECK(agt_data_cifarnet(o2, B, 1, H, W, 1, &r2) == AGT_OK);
  CHECK(memcmp(o1, o2, sizeof o1) == 0);
  int all = 1, moved = 0;
  for (int b = 0; b < B; b++) {
    all &= matches_some_crop(in + b * H * W, o1 + b * H * W, H, W);
    float plain[H * W];
    memcpy(plain, in + b * H * W, sizeof plain);
    agt_data_standardize(plain, 1, H * W);
    moved += memcmp(plain, o1 + b * H * W, sizeof plain) != 0;
  }
  CHECK(all);
  CHECK(moved > B / 2);
  CHECK(agt_data_cifarnet(o1, 1, 1, H, W, 1, NULL) == AGT_EINVAL);
}

static void test_sha_tar(void) {
  write_bytes(tmp_path("abc"), "abc", 3);
  char hex[65];
  CHECK(agt_download_sha256_file(tmp_path("abc"), hex) == AGT_OK);
  CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
  /* a tar.gz made by tar(1), extracted */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cd %s && mkdir -p t/sub && printf hello > t/sub/f.bin && "
           "tar czf t.tar.gz t && rm -r t", dir);
  if (system(cmd) == 0) {
    CHECK(agt_download_untar(tmp_path("t.tar.gz"), tmp_path("out")) == AGT_OK);
    CHECK(file_size(tmp_path("out/t/sub/f.bin")) == 5);
    CHECK(file_size(tmp_path("out/t/sub/f.bin.part")) == -1);
    /* a truncated archive is refused */
    long s = file_size(tmp_path("t.tar.gz"));
    snprintf(cmd, sizeof cmd, "head -c %ld %s/t.tar.gz > %s/cut.tar.gz", s / 2, dir, dir);
    CHECK(system(cmd) == 0);
    CHECK(agt_download_untar(tmp_path("cut.tar.gz"), tmp_path("out2")) == AGT_EFORMAT);
  } else {
    CHECK(!"tar(1) is needed by this test");
  }
  /* a file that is no archive */
  CHECK(agt_download_untar(tmp_path("abc"), tmp_path("out3")) == AGT_EFORMAT);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/agt-test-data-XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_idx();
  test_cifar();
  test_gather();
  test_shard();
  test_preprocess();
  test_sha_tar();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return check_summary();
}
