/* download.c — libcurl downloads into a cache, SHA-256 checked; tar.gz extraction.
 *
 * Invariants: `dest` only ever appears through rename() of a `.part` file whose
 * size and SHA-256 matched, so a file at `dest` is whole (or was put there by hand,
 * and is checked before use too). The `.part` file is held under an exclusive
 * flock() for the whole transfer, so two processes never write it at once. A
 * resumed transfer appends only when the server answers 206 with a Content-Range
 * that starts exactly at the bytes we have; any other answer restarts from zero.
 * Extraction writes each member to `name.part` and renames it when complete. */
#include "download.h"
#include "fs.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define PATH_CAP 4096

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- small file helpers ------------------------------------------------------------- */

static void to_hex(const unsigned char *d, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[d[i] >> 4];
    out[2 * i + 1] = digits[d[i] & 15];
  }
  out[2 * n] = '\0';
}

/* SHA-256 and size of what fd holds, read from its start. */
static agt_status sha256_fd(int fd, const char *path, char *hex, int64_t *size) {
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  static __thread unsigned char buf[1 << 16];
  int64_t total = 0;
  if (lseek(fd, 0, SEEK_SET) < 0)
    return AGT_FAIL(AGT_EIO, "%s: cannot seek: %s", path, strerror(errno));
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return AGT_FAIL(AGT_EIO, "%s: read error: %s", path, strerror(errno));
    }
    if (r == 0) break;
    crypto_hash_sha256_update(&st, buf, (unsigned long long)r);
    total += r;
  }
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, d);
  to_hex(d, sizeof d, hex);
  if (size) *size = total;
  return AGT_OK;
}

agt_status agt_download_sha256_file(const char *path, char *hex_out) {
  if (!path || !hex_out) return AGT_FAIL(AGT_EINVAL, "sha256_file: NULL argument");
  if (sodium_init() < 0) return AGT_FAIL(AGT_ENOTSUP, "libsodium failed to initialise");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return AGT_FAIL(AGT_EIO, "%s: cannot open: %s", path, strerror(errno));
  agt_status s = sha256_fd(fd, path, hex_out, NULL);
  close(fd);
  return s;
}

/* 1 when fd's content has the expected size and digest; else 0 and `why` says how not. */
static agt_status check_fd(int fd, const char *path, const char *sha, int64_t bytes, int *ok,
                           char *why, size_t why_cap) {
  char hex[65];
  int64_t size = 0;
  AGT_TRY(sha256_fd(fd, path, hex, &size));
  *ok = 1;
  if (bytes > 0 && size != bytes) {
    *ok = 0;
    snprintf(why, why_cap, "%lld bytes, expected %lld (%s)", (long long)size, (long long)bytes,
             size < bytes ? "truncated" : "too long");
  } else if (sha && *sha && strcmp(hex, sha) != 0) {
    *ok = 0;
    snprintf(why, why_cap, "SHA-256 %s, expected %s (corrupt)", hex, sha);
  }
  return AGT_OK;
}

/* ---- the transfer ------------------------------------------------------------------- */

typedef struct {
  CURL *curl;
  int fd;
  const char *part;
  int64_t offset;       /* bytes in .part when the request was sent */
  int64_t written;      /* body bytes written by this transfer */
  int64_t range_start;  /* from Content-Range; -1 when absent */
  int started;
  agt_status err;       /* set by a callback that stopped the transfer */
  int show;             /* draw a progress bar */
  double last_draw, t0;
  int64_t total;        /* whole file size once known, else 0 */
  int64_t bytes;        /* the expected size (> 0: never write past it), else 0 */
  int over;             /* the server sent more than `bytes` */
  const char *name;
} xfer;

static size_t on_header(char *line, size_t size, size_t nitems, void *p) {
  xfer *x = p;
  size_t n = size * nitems;
  if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) x->range_start = -1; /* a new response */
  const char *key = "content-range:";
  size_t kl = strlen(key);
  if (n > kl && strncasecmp(line, key, kl) == 0) {
    const char *v = line + kl;
    while (v < line + n && (*v == ' ' || *v == '\t')) v++;
    if (v + 6 <= line + n && strncasecmp(v, "bytes ", 6) == 0) {
      char tmp[64];
      size_t m = (size_t)(line + n - (v + 6));
      if (m >= sizeof tmp) m = sizeof tmp - 1;
      memcpy(tmp, v + 6, m);
      tmp[m] = '\0';
      char *end = NULL;
      long long a = strtoll(tmp, &end, 10);
      if (end != tmp && *end == '-') x->range_start = a;
    }
  }
  return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *p) {
  xfer *x = p;
  size_t n = size * nmemb;
  if (!x->started) {
    x->started = 1;
    long code = 0;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
    if (x->offset > 0 && code == 206 && x->range_start != x->offset) {
      x->err = AGT_FAIL(AGT_ENET, "server answered a resume request from byte %lld with a range "
                        "starting at %lld", (long long)x->offset, (long long)x->range_start);
      return 0;
    }
    if (code != 206 && x->offset > 0) {
      /* The server sent the whole file (no range support): start over. */
      if (ftruncate(x->fd, 0) != 0 || lseek(x->fd, 0, SEEK_SET) < 0) {
        x->err = AGT_FAIL(AGT_EIO, "%s: cannot truncate: %s", x->part, strerror(errno));
        return 0;
      }
      x->offset = 0;
    }
  }
  /* An endless (or wrong) server must not fill the disk: nothing past the expected size. */
  if (x->bytes > 0 && x->offset + x->written + (int64_t)n > x->bytes) {
    x->over = 1;
    x->err = AGT_FAIL(AGT_ECHECKSUM, "server sent more than the expected %lld bytes; stopped "
                      "there and removed %s", (long long)x->bytes, x->part);
    return 0;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(x->fd, data + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      x->err = AGT_FAIL(AGT_EIO, "%s: write error: %s", x->part, strerror(errno));
      return 0;
    }
    done += (size_t)w;
  }
  x->written += (int64_t)n;
  return n;
}

static void draw_bar(xfer *x, int64_t have, int64_t total, int final) {
  double t = now_s();
  if (!final && t - x->last_draw < 0.1) return;
  x->last_draw = t;
  double rate = (double)x->written / (t - x->t0 > 1e-3 ? t - x->t0 : 1e-3);
  char bar[31];
  int filled = total > 0 ? (int)(30.0 * (double)have / (double)total) : 0;
  if (filled > 30) filled = 30;
  for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '.';
  bar[30] = '\0';
  if (total > 0)
    fprintf(stderr, "\r%s [%s] %5.1f%% %.1f/%.1f MB %.1f MB/s\033[K", x->name, bar,
            100.0 * (double)have / (double)total, (double)have / 1e6, (double)total / 1e6,
            rate / 1e6);
  else
    fprintf(stderr, "\r%s %.1f MB %.1f MB/s\033[K", x->name, (double)have / 1e6, rate / 1e6);
  if (final) fputc('\n', stderr);
  fflush(stderr);
}

static int on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  xfer *x = p;
  if (agt_interrupted()) return 1;
  if (dltotal > 0) x->total = x->offset + (int64_t)dltotal;
  if (x->show && (dlnow > 0 || dltotal > 0)) draw_bar(x, x->offset + (int64_t)dlnow, x->total, 0);
  return 0;
}

/* What to tell a user with no network. */
static void by_hand(char *out, size_t cap, const char *dest, const char *sha, int64_t bytes) {
  if (sha && *sha)
    snprintf(out, cap, "; without network access, fetch it elsewhere and put it at %s "
             "(SHA-256 %s)", dest, sha);
  else
    snprintf(out, cap, "; without network access, fetch it elsewhere and put it at %s "
             "(%lld bytes)", dest, (long long)bytes);
}

enum { XFER_416 = 1 };

/* One HTTP(S) request for the bytes of url past what .part holds. Returns AGT_OK,
 * XFER_416 (range not satisfiable: .part may already be whole) or a failure. */
static agt_status transfer(const char *url, const char *dest, const char *sha, int64_t bytes,
                           int fd, const char *part, int64_t offset, int flags, int *over) {
  CURL *c = curl_easy_init();
  if (!c) return AGT_FAIL(AGT_ENOTSUP, "libcurl failed to initialise");
  xfer x;
  memset(&x, 0, sizeof x);
  x.curl = c;
  x.fd = fd;
  x.part = part;
  x.offset = offset;
  x.bytes = bytes > 0 ? bytes : 0;
  x.range_start = -1;
  x.show = !(flags & AGT_DOWNLOAD_QUIET) && isatty(2);
  x.t0 = now_s();
  const char *slash = strrchr(dest, '/');
  x.name = slash ? slash + 1 : dest;
  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';
  char range[48];
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  /* A stalled connection (under 1 byte/s for a minute) fails instead of hanging. */
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "agt");
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
  if (offset > 0) {
    snprintf(range, sizeof range, "%lld-", (long long)offset);
    curl_easy_setopt(c, CURLOPT_RANGE, range);
  }
  CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(c);
  *over = x.over;
  if (x.show && x.written > 0) draw_bar(&x, x.offset + x.written, bytes > 0 ? bytes : x.total, 1);
  if (rc == CURLE_OK) return AGT_OK;
  if (x.err != AGT_OK) return x.err;
  char hint[PATH_CAP + 160];
  by_hand(hint, sizeof hint, dest, sha, bytes);
  const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_ABORTED_BY_CALLBACK:
      return AGT_FAIL(AGT_EINTR, "download of %s interrupted after %lld bytes; run again to "
                      "resume", url, (long long)(x.offset + x.written));
    case CURLE_HTTP_RETURNED_ERROR:
      if (code == 416 && offset > 0) return XFER_416;
      return AGT_FAIL(AGT_ENET, "could not download %s: HTTP %ld%s", url, code, hint);
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
      if (x.offset + x.written > 0)
        return AGT_FAIL(AGT_ENET, "download of %s stopped after %lld bytes (%s); run again to "
                        "resume from %s%s", url, (long long)(x.offset + x.written), why, part,
                        hint);
      /* fall through */
    default:
      return AGT_FAIL(AGT_ENET, "could not download %s (%s)%s", url, why, hint);
  }
}

static int is_hex64(const char *s) {
  if (strlen(s) != 64) return 0;
  for (int i = 0; i < 64; i++)
    if (!isxdigit((unsigned char)s[i])) return 0;
  return 1;
}

agt_status agt_download_fetch(const char *url, const char *dest, const char *sha256_hex,
                              int64_t bytes, int flags) {
  if (!url || !*url || !dest || !*dest)
    return AGT_FAIL(AGT_EINVAL, "download needs a URL and a destination path");
  char sha[65] = "";
  if (sha256_hex && *sha256_hex) {
    if (!is_hex64(sha256_hex))
      return AGT_FAIL(AGT_EINVAL, "download of %s: expected SHA-256 must be 64 hex digits, got "
                      "'%s'", url, sha256_hex);
    for (int i = 0; i < 64; i++) sha[i] = (char)tolower((unsigned char)sha256_hex[i]);
    sha[64] = '\0';
  }
  if (!sha[0] && bytes <= 0)
    return AGT_FAIL(AGT_EINVAL, "download of %s: give the expected SHA-256 or size, so that a "
                    "partial or corrupt file is never taken for the real one", url);
  if (strlen(dest) + 8 > PATH_CAP) return AGT_FAIL(AGT_EINVAL, "path too long: %s", dest);
  if (sodium_init() < 0) return AGT_FAIL(AGT_ENOTSUP, "libsodium failed to initialise");

  char why[256];
  int ok = 0;
  /* Already there? (Put by an earlier download, or by hand.) */
  int dfd = open(dest, O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    agt_status s = check_fd(dfd, dest, sha, bytes, &ok, why, sizeof why);
    close(dfd);
    if (s != AGT_OK) return s;
    if (ok) return AGT_OK;
    return AGT_FAIL(AGT_ECHECKSUM, "%s is there but has %s; remove it (it will be downloaded "
                    "again from %s) or replace it with the right file", dest, why, url);
  }

  char dir[PATH_CAP];
  snprintf(dir, sizeof dir, "%s", dest);
  AGT_TRY(agt_fs_mkdir_p(dirname(dir)));
  char part[PATH_CAP];
  snprintf(part, sizeof part, "%s.part", dest);
  int fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return AGT_FAIL(AGT_EIO, "%s: cannot create: %s", part, strerror(errno));
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int e = errno;
      close(fd);
      return AGT_FAIL(AGT_EIO, "%s: cannot lock: %s", part, strerror(e));
    }
  }
  /* Another process may have finished it while we waited for the lock. */
  struct stat st_dest;
  if (stat(dest, &st_dest) == 0) {
    struct stat st_fd, st_part;
    fstat(fd, &st_fd);
    if (stat(part, &st_part) == 0 && st_part.st_ino == st_fd.st_ino && st_fd.st_size == 0)
      unlink(part);
    close(fd);
    return agt_download_fetch(url, dest, sha, bytes, flags);
  }

  agt_status s = AGT_OK;
  int over = 0;
  ok = 0;
  /* At most two rounds: a resumed (or already complete) .part that fails the check may
   * hold stale bytes, so it is discarded and the file fetched once more from zero. */
  for (int round = 0; round < 2; round++) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      s = AGT_FAIL(AGT_EIO, "%s: %s", part, strerror(errno));
      break;
    }
    int64_t offset = st.st_size;
    if (bytes > 0 && offset > bytes) {
      if (ftruncate(fd, 0) != 0) {
        s = AGT_FAIL(AGT_EIO, "%s: cannot truncate: %s", part, strerror(errno));
        break;
      }
      offset = 0;
    }
    if (!(bytes > 0 && offset == bytes)) {
      if (lseek(fd, offset, SEEK_SET) < 0) {
        s = AGT_FAIL(AGT_EIO, "%s: cannot seek: %s", part, strerror(errno));
        break;
      }
      s = transfer(url, dest, sha, bytes, fd, part, offset, flags, &over);
      if (s == XFER_416) s = AGT_OK;  /* nothing past our bytes: check what we have */
      if (s != AGT_OK) break;
    }
    s = check_fd(fd, part, sha, bytes, &ok, why, sizeof why);
    if (s != AGT_OK || ok || offset == 0) break;
    if (ftruncate(fd, 0) != 0) {
      s = AGT_FAIL(AGT_EIO, "%s: cannot truncate: %s", part, strerror(errno));
      break;
    }
  }
  if (s != AGT_OK) {
    /* A failure keeps the partial bytes for the next attempt; an empty .part goes, and so
     * does one the server overran (its bytes are not the file's). */
    struct stat st;
    if (over || (fstat(fd, &st) == 0 && st.st_size == 0)) unlink(part);
    close(fd);
    return s;
  }
  if (!ok) {
    /* A whole transfer with wrong bytes: resuming it would not help. */
    unlink(part);
    s = AGT_FAIL(AGT_ECHECKSUM, "download of %s refused: got %s; the file was removed", url, why);
  }
  if (s == AGT_OK && fsync(fd) != 0)
    s = AGT_FAIL(AGT_EIO, "%s: cannot flush: %s", part, strerror(errno));
  if (s == AGT_OK && rename(part, dest) != 0)
    s = AGT_FAIL(AGT_EIO, "cannot rename %s to %s: %s", part, dest, strerror(errno));
  close(fd);
  return s;
}

/* ---- .tar.gz extraction ------------------------------------------------------------- */

static int64_t tar_number(const unsigned char *f, size_t n) {
  if (f[0] & 0x80) {  /* GNU base-256 */
    int64_t v = f[0] & 0x3f;
    for (size_t i = 1; i < n; i++) v = (v << 8) | f[i];
    return v;
  }
  int64_t v = 0;
  size_t i = 0;
  while (i < n && (f[i] == ' ' || f[i] == '\0')) i++;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) v = v * 8 + (f[i] - '0');
  return v;
}

static int safe_member(const char *name) {
  if (!*name || name[0] == '/') return 0;
  const char *p = name;
  while (*p) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.') return 0;
    if (!e) break;
    p = e + 1;
  }
  return 1;
}

static agt_status tar_read(gzFile gz, const char *archive, void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    int r = gzread(gz, (char *)buf + done, (unsigned)(n - done));
    if (r < 0) {
      int e;
      return AGT_FAIL(AGT_EFORMAT, "%s: corrupt archive (%s)", archive, gzerror(gz, &e));
    }
    if (r == 0) return AGT_FAIL(AGT_EFORMAT, "%s: truncated archive", archive);
    done += (size_t)r;
  }
  return AGT_OK;
}

/* Reads a member's data (size bytes plus padding to 512); writes it to out when
 * non-NULL, or into mem (cap bytes, NUL-terminated) when non-NULL. */
static agt_status tar_data(gzFile gz, const char *archive, int64_t size, FILE *out,
                           const char *outpath, char *mem, size_t cap) {
  static __thread unsigned char buf[1 << 16];
  int64_t left = (size + 511) / 512 * 512, data_left = size;
  size_t at = 0;
  while (left > 0) {
    if (agt_interrupted()) return AGT_FAIL(AGT_EINTR, "%s: extraction interrupted", archive);
    size_t n = left < (int64_t)sizeof buf ? (size_t)left : sizeof buf;
    AGT_TRY(tar_read(gz, archive, buf, n));
    size_t use = data_left < (int64_t)n ? (size_t)data_left : n;
    if (out && use && fwrite(buf, 1, use, out) != use)
      return AGT_FAIL(AGT_EIO, "%s: write error: %s", outpath, strerror(errno));
    if (mem) {
      size_t m = use < cap - 1 - at ? use : cap - 1 - at;
      memcpy(mem + at, buf, m);
      at += m;
      mem[at] = '\0';
    }
    data_left -= (int64_t)use;
    left -= (int64_t)n;
  }
  return AGT_OK;
}

/* The "path" record of a pax extended header, if any. */
static void pax_path(const char *rec, char *name, size_t cap) {
  const char *p = rec;
  while (*p) {
    char *end = NULL;
    long len = strtol(p, &end, 10);
    if (len <= 0 || !end || *end != ' ') return;
    const char *kv = end + 1;
    if (strncmp(kv, "path=", 5) == 0) {
      const char *v = kv + 5;
      const char *nl = memchr(v, '\n', (size_t)(p + len - v));
      size_t vl = nl ? (size_t)(nl - v) : strlen(v);
      if (vl < cap) {
        memcpy(name, v, vl);
        name[vl] = '\0';
      }
    }
    if ((size_t)len > strlen(p)) return;
    p += len;
  }
}

agt_status agt_download_untar(const char *archive, const char *dest_dir) {
  if (!archive || !dest_dir) return AGT_FAIL(AGT_EINVAL, "untar: NULL argument");
  AGT_TRY(agt_fs_mkdir_p(dest_dir));
  gzFile gz = gzopen(archive, "rb");
  if (!gz) return AGT_FAIL(AGT_EIO, "%s: cannot open: %s", archive, strerror(errno));
  gzbuffer(gz, 1 << 18);
  unsigned char h[512];
  char next_name[PATH_CAP] = "";
  char name[PATH_CAP], path[2 * PATH_CAP + 8], tmp[2 * PATH_CAP + 16];
  agt_status s = AGT_OK;
  int zero_blocks = 0, members = 0;
  for (;;) {
    int r = gzread(gz, h, 512);
    int zerr = Z_OK;
    if (r == 0) gzerror(gz, &zerr);
    /* the end without the two zero blocks is accepted, a gzip stream cut short is not */
    if (r == 0 && members > 0 && zerr != Z_BUF_ERROR) break;
    if (r != 512) {
      int e;
      s = AGT_FAIL(AGT_EFORMAT, "%s: truncated or corrupt archive (%s)", archive,
                   r < 0 ? gzerror(gz, &e) : "ends inside a header");
      break;
    }
    int all_zero = 1;
    for (int i = 0; i < 512; i++)
      if (h[i]) { all_zero = 0; break; }
    if (all_zero) {
      if (++zero_blocks == 2) break;
      continue;
    }
    zero_blocks = 0;
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
    if ((int64_t)sum != tar_number(h + 148, 8)) {
      s = AGT_FAIL(AGT_EFORMAT, "%s: not a tar archive, or corrupt (bad header checksum)",
                   archive);
      break;
    }
    members++;
    int64_t size = tar_number(h + 124, 12);
    char type = (char)h[156];
    if (size < 0) {
      s = AGT_FAIL(AGT_EFORMAT, "%s: corrupt archive (negative member size)", archive);
      break;
    }
    if (type == 'L' || type == 'x') {  /* long name for the next member */
      char *rec = calloc(1, PATH_CAP * 2);
      if (!rec) { s = AGT_FAIL(AGT_ENOMEM, "untar: no memory"); break; }
      s = tar_data(gz, archive, size, NULL, NULL, rec, PATH_CAP * 2);
      if (s == AGT_OK) {
        if (type == 'L') snprintf(next_name, sizeof next_name, "%s", rec);
        else pax_path(rec, next_name, sizeof next_name);
      }
      free(rec);
      if (s != AGT_OK) break;
      continue;
    }
    if (next_name[0]) {
      snprintf(name, sizeof name, "%s", next_name);
      next_name[0] = '\0';
    } else if (memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
      snprintf(name, sizeof name, "%.155s/%.100s", (const char *)h + 345, (const char *)h);
    } else {
      snprintf(name, sizeof name, "%.100s", (const char *)h);
    }
    const char *nm = name;
    while (nm[0] == '.' && nm[1] == '/') nm += 2;
    int is_file = type == '0' || type == '\0' || type == '7';
    int is_dir = type == '5';
    if ((is_file || is_dir) && *nm && !safe_member(nm)) {
      s = AGT_FAIL(AGT_EFORMAT, "%s: refusing member '%s' (absolute path or '..')", archive, nm);
      break;
    }
    snprintf(path, sizeof path, "%s/%s", dest_dir, nm);
    if (is_dir) {
      if (*nm) s = agt_fs_mkdir_p(path);
      if (s == AGT_OK) s = tar_data(gz, archive, size, NULL, NULL, NULL, 0);
    } else if (is_file && *nm) {
      char parent[sizeof path];
      snprintf(parent, sizeof parent, "%s", path);
      s = agt_fs_mkdir_p(dirname(parent));
      if (s != AGT_OK) break;
      snprintf(tmp, sizeof tmp, "%s.part", path);
      FILE *out = fopen(tmp, "wb");
      if (!out) {
        s = AGT_FAIL(AGT_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        break;
      }
      s = tar_data(gz, archive, size, out, tmp, NULL, 0);
      if (fclose(out) != 0 && s == AGT_OK)
        s = AGT_FAIL(AGT_EIO, "%s: write error: %s", tmp, strerror(errno));
      if (s == AGT_OK && rename(tmp, path) != 0)
        s = AGT_FAIL(AGT_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
      if (s != AGT_OK) unlink(tmp);
    } else {
      /* links, devices, fifos: not needed for a data set; skipped */
      s = tar_data(gz, archive, size, NULL, NULL, NULL, 0);
    }
    if (s != AGT_OK) break;
  }
  gzclose(gz);
  if (s == AGT_OK && members == 0)
    s = AGT_FAIL(AGT_EFORMAT, "%s: empty or not a tar archive", archive);
  return s;
}
