/* data.c — IDX and CIFAR-10 readers, the gather kernel, worker shards.
 *
 * Invariants: nothing read from a file is trusted before it is checked (magic,
 * element type, dims, total size); every read is bounded by the caller's buffer
 * size, which must equal what the header announces; every error path closes its
 * file and frees its scratch. Decoding converts bytes to the caller's dtype on the
 * fly in fixed-size chunks, so no second copy of a data set is ever held. */
#include "data.h"
#include "mem.h"
#include "pool.h"
#include "tensor.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define CHUNK_BYTES ((size_t)1 << 20)
/* The byte-to-float loops vectorise only with a cost model the default -O2 does not use;
 * asking for it here makes them 3-4 times faster (they run over every pixel of a data set). */
#define VECTORIZE __attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
/* No real data set comes near this; a foreign file that claims more is refused
 * before its size is trusted for an allocation. */
#define MAX_DATA_BYTES ((uint64_t)1 << 40)

static uint32_t be32(const unsigned char *b) {
  return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static const char *idx_type_name(int code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return NULL;
  }
}

/* Reads exactly len bytes from gz, or says why not (0 bytes read at EOF is not an
 * error here: *got tells how many came). */
static agt_status gz_read_full(gzFile gz, const char *path, void *buf, size_t len, size_t *got) {
  size_t done = 0;
  while (done < len) {
    size_t want = len - done;
    if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
    int r = gzread(gz, (char *)buf + done, (unsigned)want);
    if (r < 0) {
      int zerr = 0;
      const char *m = gzerror(gz, &zerr);
      *got = done;
      return AGT_FAIL(AGT_EFORMAT, "%s: corrupt or truncated gzip data after %zu bytes (%s)", path,
                      done, m ? m : "zlib error");
    }
    if (r == 0) {
      /* zlib reports a stream cut short as a soft error at end of input. */
      int zerr = Z_OK;
      gzerror(gz, &zerr);
      if (zerr == Z_BUF_ERROR) {
        *got = done;
        return AGT_FAIL(AGT_EFORMAT, "%s: truncated gzip data (the stream ends unexpectedly)",
                        path);
      }
      break;
    }
    done += (size_t)r;
  }
  *got = done;
  return AGT_OK;
}

typedef struct {
  int ndim;
  int type;
  int64_t dims[AGT_IDX_MAX_DIMS];
  uint64_t numel;
  size_t header_bytes;
} idx_header;

/* Parses and validates the header from the (possibly gzip'd) stream. */
static agt_status idx_parse_header(gzFile gz, const char *path, idx_header *h) {
  unsigned char m[4];
  size_t got = 0;
  AGT_TRY(gz_read_full(gz, path, m, 4, &got));
  if (got < 4)
    return AGT_FAIL(AGT_EFORMAT, "%s: truncated: %zu bytes, too short for an IDX header", path, got);
  if (m[0] != 0 || m[1] != 0 || !idx_type_name(m[2]) || m[3] < 1 || m[3] > 8)
    return AGT_FAIL(AGT_EFORMAT,
                    "%s: not an IDX file (magic bytes %02x %02x %02x %02x; expected 00 00 08 0N)",
                    path, m[0], m[1], m[2], m[3]);
  if (m[2] != 0x08)
    return AGT_FAIL(AGT_EFORMAT, "%s: IDX element type 0x%02X (%s) is not supported; agt reads "
                    "unsigned-byte IDX files (type 0x08)", path, m[2], idx_type_name(m[2]));
  if (m[3] > AGT_IDX_MAX_DIMS)
    return AGT_FAIL(AGT_EFORMAT, "%s: IDX file has %d dimensions; at most %d are supported", path,
                    m[3], AGT_IDX_MAX_DIMS);
  h->type = m[2];
  h->ndim = m[3];
  unsigned char d[4 * AGT_IDX_MAX_DIMS];
  AGT_TRY(gz_read_full(gz, path, d, 4 * (size_t)h->ndim, &got));
  if (got < 4 * (size_t)h->ndim)
    return AGT_FAIL(AGT_EFORMAT, "%s: truncated IDX header (%zu of %d dimension bytes)", path, got,
                    4 * h->ndim);
  uint64_t numel = 1;
  for (int i = 0; i < h->ndim; i++) {
    uint32_t v = be32(d + 4 * i);
    if (v == 0) return AGT_FAIL(AGT_EFORMAT, "%s: IDX dimension %d is zero", path, i + 1);
    h->dims[i] = v;
    numel *= v;
    if (numel > MAX_DATA_BYTES)
      return AGT_FAIL(AGT_EFORMAT, "%s: IDX header announces more than 2^40 elements: not a data "
                      "set agt can read", path);
  }
  h->numel = numel;
  h->header_bytes = 4 + 4 * (size_t)h->ndim;
  return AGT_OK;
}

/* Is the file gzip'd? Sets *is_gz and, when it is, the trailer's ISIZE field
 * (uncompressed length mod 2^32); *size is the file's byte size. */
static agt_status probe_file(const char *path, int *is_gz, uint32_t *isize, uint64_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return AGT_FAIL(AGT_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return AGT_FAIL(AGT_EIO, "%s: not a regular file", path);
  }
  *size = (uint64_t)st.st_size;
  unsigned char b[4] = {0, 0, 0, 0};
  size_t got = fread(b, 1, 2, f);
  *is_gz = got == 2 && b[0] == 0x1f && b[1] == 0x8b;
  *isize = 0;
  if (*is_gz) {
    if (st.st_size < 18 || fseeko(f, -4, SEEK_END) != 0 || fread(b, 1, 4, f) != 4) {
      fclose(f);
      return AGT_FAIL(AGT_EFORMAT, "%s: truncated gzip file (%lld bytes)", path,
                      (long long)st.st_size);
    }
    *isize = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
  }
  fclose(f);
  return AGT_OK;
}

/* Decodes the rest of the stream (already past `at` bytes) and checks it ends at `want`. */
static agt_status gz_count(gzFile gz, const char *path, uint64_t at, uint64_t want) {
  size_t cap = CHUNK_BYTES;
  uint8_t *buf = agt_alloc(cap);
  if (!buf) return AGT_FAIL(AGT_ENOMEM, "%s: no memory for a read buffer", path);
  uint64_t total = at;
  agt_status s = AGT_OK;
  for (;;) {
    if (agt_interrupted()) {
      s = AGT_FAIL(AGT_EINTR, "%s: reading interrupted", path);
      break;
    }
    size_t n = 0;
    s = gz_read_full(gz, path, buf, cap, &n);
    total += n;
    if (s != AGT_OK || n < cap || total > want) break;
  }
  agt_free(buf, cap);
  if (s != AGT_OK) return s;
  if (total != want)
    return AGT_FAIL(AGT_EFORMAT, "%s: %s: it holds %s%llu bytes but its IDX header announces %llu",
                    path, total < want ? "truncated" : "trailing bytes",
                    total > want ? "more than " : "", (unsigned long long)total,
                    (unsigned long long)want);
  return AGT_OK;
}

static agt_status idx_open(const char *path, gzFile *out, idx_header *h) {
  if (!path) return AGT_FAIL(AGT_EINVAL, "IDX path is NULL");
  int is_gz = 0;
  uint32_t isize = 0;
  uint64_t size = 0;
  AGT_TRY(probe_file(path, &is_gz, &isize, &size));
  gzFile gz = gzopen(path, "rb");
  if (!gz) return AGT_FAIL(AGT_EIO, "%s: cannot open: %s", path, strerror(errno ? errno : ENOMEM));
  gzbuffer(gz, 1 << 18);
  agt_status s = idx_parse_header(gz, path, h);
  if (s != AGT_OK) {
    gzclose(gz);
    return s;
  }
  uint64_t want = h->header_bytes + h->numel;
  if (!is_gz && size != want) {
    gzclose(gz);
    return AGT_FAIL(AGT_EFORMAT, "%s: %s: the file has %llu bytes but its IDX header announces "
                    "%llu", path, size < want ? "truncated" : "trailing bytes",
                    (unsigned long long)size, (unsigned long long)want);
  }
  /* A single-member gzip stores the uncompressed length mod 2^32 in its last four
   * bytes; a cut-off download leaves other bytes there. When they disagree (a truncated
   * file, or a rarer multi-member one) the stream is decoded once to count its bytes, so
   * that only a file of exactly the announced size gets past this point. */
  if (is_gz && isize != (uint32_t)want) {
    agt_status s = gz_count(gz, path, h->header_bytes, want);
    if (s == AGT_OK && gzrewind(gz) == 0) s = idx_parse_header(gz, path, h);
    else if (s == AGT_OK) s = AGT_FAIL(AGT_EIO, "%s: cannot rewind", path);
    if (s != AGT_OK) {
      gzclose(gz);
      return s;
    }
  }
  *out = gz;
  return AGT_OK;
}

agt_status agt_data_idx_info(const char *path, int *ndim, int64_t *dims) {
  if (!ndim || !dims) return AGT_FAIL(AGT_EINVAL, "agt_data_idx_info: NULL output");
  gzFile gz = NULL;
  idx_header h;
  AGT_TRY(idx_open(path, &gz, &h));
  gzclose(gz);
  *ndim = h.ndim;
  for (int i = 0; i < h.ndim; i++) dims[i] = h.dims[i];
  return AGT_OK;
}

VECTORIZE static void u8_to_f32(const uint8_t *restrict s, size_t n, float scale,
                                float *restrict o) {
  for (size_t i = 0; i < n; i++) o[i] = (float)s[i] * scale;
}

VECTORIZE static void convert_u8(const uint8_t *src, size_t n, int dtype, float scale,
                                 void *out, size_t at) {
  switch (dtype) {
    case AGT_F32:
      u8_to_f32(src, n, scale, (float *)out + at);
      break;
    case AGT_I32: {
      int32_t *o = (int32_t *)out + at;
      for (size_t i = 0; i < n; i++) o[i] = src[i];
      break;
    }
    case AGT_I64: {
      int64_t *o = (int64_t *)out + at;
      for (size_t i = 0; i < n; i++) o[i] = src[i];
      break;
    }
    default: break;  /* AGT_U8 is read in place */
  }
}

agt_status agt_data_idx_read(const char *path, int dtype, float scale, void *out, size_t numel) {
  if (!out && numel) return AGT_FAIL(AGT_EINVAL, "agt_data_idx_read: NULL output buffer");
  if (dtype != AGT_F32 && dtype != AGT_I32 && dtype != AGT_I64 && dtype != AGT_U8)
    return AGT_FAIL(AGT_EINVAL, "agt_data_idx_read: unsupported output dtype %d", dtype);
  gzFile gz = NULL;
  idx_header h;
  AGT_TRY(idx_open(path, &gz, &h));
  if (h.numel != numel) {
    gzclose(gz);
    return AGT_FAIL(AGT_EINVAL, "%s: holds %llu elements but the output buffer has %zu", path,
                    (unsigned long long)h.numel, numel);
  }
  agt_status s = AGT_OK;
  size_t got = 0;
  if (dtype == AGT_U8) {
    s = gz_read_full(gz, path, out, numel, &got);
  } else {
    uint8_t *buf = agt_alloc(CHUNK_BYTES);
    if (!buf) {
      gzclose(gz);
      return AGT_FAIL(AGT_ENOMEM, "%s: no memory for a read buffer", path);
    }
    while (got < numel) {
      if (agt_interrupted()) {
        s = AGT_FAIL(AGT_EINTR, "%s: reading interrupted", path);
        break;
      }
      size_t want = numel - got < CHUNK_BYTES ? numel - got : CHUNK_BYTES;
      size_t n = 0;
      s = gz_read_full(gz, path, buf, want, &n);
      convert_u8(buf, n, dtype, scale, out, got);
      got += n;
      if (s != AGT_OK || n < want) break;
    }
    agt_free(buf, CHUNK_BYTES);
  }
  if (s == AGT_OK && got < numel)
    s = AGT_FAIL(AGT_EFORMAT, "%s: truncated: the data ends after %zu of the %zu bytes its IDX "
                 "header announces", path, got, numel);
  if (s == AGT_OK) {
    unsigned char extra;
    size_t n = 0;
    s = gz_read_full(gz, path, &extra, 1, &n);
    if (s == AGT_OK && n)
      s = AGT_FAIL(AGT_EFORMAT, "%s: trailing bytes after the %zu data bytes its IDX header "
                   "announces", path, numel);
  }
  gzclose(gz);
  return s;
}

/* ---- CIFAR-10 binary batches ------------------------------------------------------ */

agt_status agt_data_cifar_info(const char *path, int64_t *records) {
  if (!path || !records) return AGT_FAIL(AGT_EINVAL, "agt_data_cifar_info: NULL argument");
  struct stat st;
  if (stat(path, &st) != 0) return AGT_FAIL(AGT_EIO, "%s: cannot open: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return AGT_FAIL(AGT_EIO, "%s: not a regular file", path);
  if (st.st_size == 0 || st.st_size % AGT_CIFAR_RECORD != 0)
    return AGT_FAIL(AGT_EFORMAT, "%s: %lld bytes is not a whole number of 3073-byte CIFAR-10 "
                    "records (truncated, or not a CIFAR-10 binary batch)", path,
                    (long long)st.st_size);
  *records = st.st_size / AGT_CIFAR_RECORD;
  return AGT_OK;
}

agt_status agt_data_cifar_read(const char *path, float *x, int32_t *y, size_t records,
                               float scale) {
  if ((!x || !y) && records) return AGT_FAIL(AGT_EINVAL, "agt_data_cifar_read: NULL output");
  int64_t have = 0;
  AGT_TRY(agt_data_cifar_info(path, &have));
  if ((uint64_t)have != records)
    return AGT_FAIL(AGT_EINVAL, "%s: holds %lld records but the output has room for %zu", path,
                    (long long)have, records);
  FILE *f = fopen(path, "rb");
  if (!f) return AGT_FAIL(AGT_EIO, "%s: cannot open: %s", path, strerror(errno));
  const size_t per = 256;  /* records per read */
  size_t bytes = per * AGT_CIFAR_RECORD;
  uint8_t *buf = agt_alloc(bytes);
  if (!buf) {
    fclose(f);
    return AGT_FAIL(AGT_ENOMEM, "%s: no memory for a read buffer", path);
  }
  agt_status s = AGT_OK;
  for (size_t r0 = 0; r0 < records && s == AGT_OK; r0 += per) {
    size_t k = records - r0 < per ? records - r0 : per;
    size_t got = fread(buf, AGT_CIFAR_RECORD, k, f);
    if (got != k) {
      s = ferror(f) ? AGT_FAIL(AGT_EIO, "%s: read error: %s", path, strerror(errno))
                    : AGT_FAIL(AGT_EFORMAT, "%s: truncated: ends after record %zu of %zu", path,
                               r0 + got, records);
      break;
    }
    for (size_t i = 0; i < k; i++) {
      const uint8_t *rec = buf + i * AGT_CIFAR_RECORD;
      if (rec[0] > 9) {
        s = AGT_FAIL(AGT_EFORMAT, "%s: record %zu has label %d, expected 0..9 (not a CIFAR-10 "
                     "binary batch?)", path, r0 + i, rec[0]);
        break;
      }
      y[r0 + i] = rec[0];
      u8_to_f32(rec + 1, AGT_CIFAR_PIXELS, scale, x + (r0 + i) * AGT_CIFAR_PIXELS);
    }
  }
  agt_free(buf, bytes);
  fclose(f);
  return s;
}

/* ---- gather ------------------------------------------------------------------------- */

static agt_status check_idx(const int64_t *idx, size_t k, size_t rows) {
  for (size_t i = 0; i < k; i++)
    if (idx[i] < 0 || (uint64_t)idx[i] >= rows)
      return AGT_FAIL(AGT_EINVAL, "gather: index %lld (position %zu) is outside 0..%zu",
                      (long long)idx[i], i, rows ? rows - 1 : 0);
  return AGT_OK;
}

typedef struct {
  const void *src;
  size_t row_len;
  const int64_t *idx;
  float scale;
  float *dst;
} gather_ctx;

static void gather_f32_range(void *p, size_t b, size_t e, size_t chunk) {
  const gather_ctx *c = p;
  const float *src = c->src;
  for (size_t i = b; i < e; i++)
    memcpy(c->dst + i * c->row_len, src + (size_t)c->idx[i] * c->row_len,
           c->row_len * sizeof(float));
}

static void gather_u8_range(void *p, size_t b, size_t e, size_t chunk) {
  const gather_ctx *c = p;
  const uint8_t *src = c->src;
  for (size_t i = b; i < e; i++)
    u8_to_f32(src + (size_t)c->idx[i] * c->row_len, c->row_len, c->scale,
              c->dst + i * c->row_len);
}

/* Small batches are copied by the caller's thread: waking the pool costs more. */
static agt_status run_gather(agt_range_fn fn, gather_ctx *c, size_t k) {
  size_t grain = c->row_len ? ((size_t)1 << 16) / c->row_len + 1 : k + 1;
  if (k <= grain) {
    fn(c, 0, k, 0);
    return AGT_OK;
  }
  return agt_parallel_for(k, grain, fn, c);
}

agt_status agt_data_gather_f32(const float *src, size_t rows, size_t row_len,
                               const int64_t *idx, size_t k, float *dst) {
  if (k && (!src || !idx || !dst)) return AGT_FAIL(AGT_EINVAL, "gather: NULL pointer");
  AGT_TRY(check_idx(idx, k, rows));
  gather_ctx c = {src, row_len, idx, 1.0f, dst};
  return run_gather(gather_f32_range, &c, k);
}

agt_status agt_data_gather_u8(const uint8_t *src, size_t rows, size_t row_len,
                              const int64_t *idx, size_t k, float scale, float *dst) {
  if (k && (!src || !idx || !dst)) return AGT_FAIL(AGT_EINVAL, "gather: NULL pointer");
  AGT_TRY(check_idx(idx, k, rows));
  gather_ctx c = {src, row_len, idx, scale, dst};
  return run_gather(gather_u8_range, &c, k);
}

agt_status agt_data_gather_i32(const int32_t *src, size_t rows, const int64_t *idx, size_t k,
                               int32_t *dst) {
  if (k && (!src || !idx || !dst)) return AGT_FAIL(AGT_EINVAL, "gather: NULL pointer");
  AGT_TRY(check_idx(idx, k, rows));
  for (size_t i = 0; i < k; i++) dst[i] = src[idx[i]];
  return AGT_OK;
}

/* ---- preprocessing ------------------------------------------------------------------ */

static void standardize_one(float *x, size_t n) {
  double sum = 0, sq = 0;
  for (size_t i = 0; i < n; i++) sum += x[i];
  double mean = sum / (double)n;
  for (size_t i = 0; i < n; i++) {
    double d = x[i] - mean;
    sq += d * d;
  }
  /* TF's floor 1/sqrt(n) is in byte units; our pixels are bytes/255. */
  double sd = sqrt(sq / (double)n), floor_sd = 1.0 / (255.0 * sqrt((double)n));
  float inv = (float)(1.0 / (sd > floor_sd ? sd : floor_sd)), m = (float)mean;
  for (size_t i = 0; i < n; i++) x[i] = (x[i] - m) * inv;
}

agt_status agt_data_standardize(float *x, size_t bs, size_t per_image) {
  if (bs && (!x || per_image == 0)) return AGT_FAIL(AGT_EINVAL, "standardize: empty images");
  for (size_t b = 0; b < bs; b++) standardize_one(x + b * per_image, per_image);
  return AGT_OK;
}

agt_status agt_data_cifarnet(float *x, size_t bs, size_t C, size_t H, size_t W, int train,
                             agt_rng *r) {
  size_t per = C * H * W;
  if (bs && (!x || per == 0)) return AGT_FAIL(AGT_EINVAL, "cifarnet: empty images");
  if (!train) return agt_data_standardize(x, bs, per);
  if (!r) return AGT_FAIL(AGT_EINVAL, "cifarnet training preprocessing needs a random stream");
  const int pad = 4;
  const double max_delta = 63.0 / 255.0, lo = 0.2, hi = 1.8;
  float *tmp = agt_alloc(per * sizeof(float));
  if (!tmp) return AGT_FAIL(AGT_ENOMEM, "cifarnet: no memory");
  for (size_t b = 0; b < bs; b++) {
    float *img = x + b * per;
    /* crop offsets into the padded image, in 0..2*pad */
    long oy = (long)agt_rng_below(r, 2 * pad + 1) - pad;
    long ox = (long)agt_rng_below(r, 2 * pad + 1) - pad;
    int flip = agt_rng_below(r, 2) == 1;
    float delta = (float)((2 * agt_rng_double(r) - 1) * max_delta);
    float factor = (float)(lo + (hi - lo) * agt_rng_double(r));
    for (size_t c = 0; c < C; c++)
      for (size_t i = 0; i < H; i++) {
        long si = (long)i + oy;
        float *o = tmp + (c * H + i) * W;
        for (size_t j = 0; j < W; j++) {
          long sj = (long)(flip ? W - 1 - j : j) + ox;
          o[j] = (si < 0 || si >= (long)H || sj < 0 || sj >= (long)W)
                     ? 0.0f
                     : img[(c * H + (size_t)si) * W + (size_t)sj];
        }
      }
    for (size_t c = 0; c < C; c++) {
      float *ch = tmp + c * H * W;
      double m = 0;
      for (size_t k = 0; k < H * W; k++) m += ch[k] += delta;
      float mean = (float)(m / (double)(H * W));
      for (size_t k = 0; k < H * W; k++) ch[k] = (ch[k] - mean) * factor + mean;
    }
    standardize_one(tmp, per);
    memcpy(img, tmp, per * sizeof(float));
  }
  agt_free(tmp, per * sizeof(float));
  return AGT_OK;
}

/* ---- shards ------------------------------------------------------------------------- */

static void even_offsets(size_t N, size_t n, int64_t *offsets) {
  for (size_t j = 0; j <= n; j++) offsets[j] = (int64_t)((uint64_t)j * N / n);
}

/* Splits each label's examples (already shuffled, grouped by label in `by_label`
 * with starts cstart[c]) among the n workers by Dirichlet(alpha) shares; cnt[c*n+j]
 * receives how many of label c go to worker j. Returns 1 when every worker got
 * at least min_size. */
static int dirichlet_draw(agt_rng *r, const int64_t *ccount, int classes, size_t n, double alpha,
                          size_t min_size, double *p, int64_t *cnt, int64_t *total) {
  for (size_t j = 0; j < n; j++) total[j] = 0;
  for (int c = 0; c < classes; c++) {
    double sum = 0;
    for (size_t j = 0; j < n; j++) {
      p[j] = agt_rng_gamma(r, alpha);
      sum += p[j];
    }
    int64_t nc = ccount[c];
    if (!(sum > 0) || !isfinite(sum)) {
      /* Every share underflowed (tiny alpha): the whole label goes to one worker,
       * the limit of Dirichlet(alpha) as alpha -> 0. */
      size_t w = (size_t)agt_rng_below(r, n);
      for (size_t j = 0; j < n; j++) p[j] = j == w;
      sum = 1;
    }
    double acc = 0;
    int64_t prev = 0;
    for (size_t j = 0; j < n; j++) {
      acc += p[j];
      int64_t cut = j + 1 == n ? nc : (int64_t)floor(acc / sum * (double)nc + 0.5);
      if (cut < prev) cut = prev;
      if (cut > nc) cut = nc;
      cnt[(size_t)c * n + j] = cut - prev;
      total[j] += cut - prev;
      prev = cut;
    }
  }
  for (size_t j = 0; j < n; j++)
    if ((size_t)total[j] < min_size) return 0;
  return 1;
}

agt_status agt_data_shard(const int32_t *y, size_t N, int classes, size_t n, int mode,
                          double alpha, size_t min_size, agt_rng *r,
                          int64_t *order, int64_t *offsets) {
  if (!order || !offsets || (N && !y)) return AGT_FAIL(AGT_EINVAL, "shard: NULL pointer");
  if (n < 1) return AGT_FAIL(AGT_EINVAL, "shard needs at least 1 worker, got n=%zu", n);
  if (n > N)
    return AGT_FAIL(AGT_EINVAL, "shard: n=%zu workers but only N=%zu examples", n, N);
  if (classes < 1) return AGT_FAIL(AGT_EINVAL, "shard needs classes >= 1, got %d", classes);
  if (mode == AGT_SHARD_IID) {
    if (!r) return AGT_FAIL(AGT_EINVAL, "iid shards need a random stream");
    agt_rng_permutation(r, order, N);
    even_offsets(N, n, offsets);
    return AGT_OK;
  }
  if (mode != AGT_SHARD_SORTED && mode != AGT_SHARD_DIRICHLET)
    return AGT_FAIL(AGT_EINVAL, "shard mode %d is not iid (0), sorted (1) or dirichlet (2)", mode);
  if (mode == AGT_SHARD_DIRICHLET) {
    if (!r) return AGT_FAIL(AGT_EINVAL, "dirichlet shards need a random stream");
    if (!(alpha > 0) || !isfinite(alpha))
      return AGT_FAIL(AGT_EINVAL, "dirichlet shards need alpha > 0, got %g", alpha);
    if (min_size > N / n)
      return AGT_FAIL(AGT_EINVAL, "dirichlet shards: min_size=%zu per worker is impossible with "
                      "N=%zu examples and n=%zu workers", min_size, N, n);
  }
  /* Group indices by label (counting sort, stable: ascending index within a label). */
  size_t C = (size_t)classes;
  size_t sz_cc = (C + 1) * sizeof(int64_t);
  int64_t *cstart = agt_calloc(sz_cc);
  if (!cstart) return AGT_FAIL(AGT_ENOMEM, "shard: no memory");
  for (size_t i = 0; i < N; i++) {
    if (y[i] < 0 || y[i] >= classes) {
      agt_free(cstart, sz_cc);
      return AGT_FAIL(AGT_EINVAL, "shard: label %d at index %zu is outside 0..%d", y[i], i,
                      classes - 1);
    }
    cstart[y[i] + 1]++;
  }
  for (size_t c = 0; c < C; c++) cstart[c + 1] += cstart[c];
  int64_t *fill = agt_alloc(sz_cc);
  if (!fill) {
    agt_free(cstart, sz_cc);
    return AGT_FAIL(AGT_ENOMEM, "shard: no memory");
  }
  memcpy(fill, cstart, sz_cc);
  if (mode == AGT_SHARD_SORTED) {
    for (size_t i = 0; i < N; i++) order[fill[y[i]]++] = (int64_t)i;
    even_offsets(N, n, offsets);
    agt_free(fill, sz_cc);
    agt_free(cstart, sz_cc);
    return AGT_OK;
  }
  /* Dirichlet. */
  size_t sz_by = N * sizeof(int64_t), sz_cnt = C * n * sizeof(int64_t);
  size_t sz_p = n * sizeof(double), sz_tot = n * sizeof(int64_t);
  int64_t *by_label = agt_alloc(sz_by ? sz_by : 1);
  int64_t *cnt = agt_alloc(sz_cnt);
  double *p = agt_alloc(sz_p);
  int64_t *total = agt_alloc(sz_tot);
  int64_t *ccount = agt_alloc(C * sizeof(int64_t));
  agt_status s = AGT_OK;
  if (!by_label || !cnt || !p || !total || !ccount) {
    s = AGT_FAIL(AGT_ENOMEM, "shard: no memory");
    goto done;
  }
  for (size_t i = 0; i < N; i++) by_label[fill[y[i]]++] = (int64_t)i;
  for (size_t c = 0; c < C; c++) {
    ccount[c] = cstart[c + 1] - cstart[c];
    agt_rng_shuffle_i64(r, by_label + cstart[c], (size_t)ccount[c]);
  }
  int ok = 0;
  for (int attempt = 0; attempt < 1000 && !ok; attempt++)
    ok = dirichlet_draw(r, ccount, classes, n, alpha, min_size, p, cnt, total);
  if (!ok) {
    s = AGT_FAIL(AGT_EINVAL, "dirichlet shards: 1000 draws with alpha=%g left some of the n=%zu "
                 "workers with fewer than %zu examples; raise alpha or lower n", alpha, n,
                 min_size);
    goto done;
  }
  offsets[0] = 0;
  for (size_t j = 0; j < n; j++) offsets[j + 1] = offsets[j] + total[j];
  /* Worker j takes, label by label, the next cnt[c, j] of that label's shuffled examples. */
  memcpy(fill, cstart, sz_cc);
  for (size_t j = 0; j < n; j++) {
    int64_t at = offsets[j];
    for (size_t c = 0; c < C; c++) {
      int64_t k = cnt[c * n + j];
      memcpy(order + at, by_label + fill[c], (size_t)k * sizeof(int64_t));
      fill[c] += k;
      at += k;
    }
  }
done:
  agt_free(ccount, C * sizeof(int64_t));
  agt_free(total, sz_tot);
  agt_free(p, sz_p);
  agt_free(cnt, sz_cnt);
  agt_free(by_label, sz_by ? sz_by : 1);
  agt_free(fill, sz_cc);
  agt_free(cstart, sz_cc);
  return s;
}
