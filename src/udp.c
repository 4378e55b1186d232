/* udp.c — lossy gradient rows over UDP (see udp.h for the datagram format, the checks and
 * the threads).
 *
 * Every buffer is allocated when a handle is made: the PS's 32 receive slots of 64 KiB (a UDP
 * payload is at most 65507 bytes, so a datagram never spills out of its slot), its keys,
 * bitmaps and counts; a worker's 32 send slots. The header is packed and read field by field
 * with memcpy, as in net.c. */
#include "udp.h"
#include "rng.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the datagram format is little-endian");

static const unsigned char MAGIC[4] = { 'A', 'G', 'T', 'U' };

enum { BATCH = 32, SLOT = 65536, NONCE = 12, POLL_MS = 100, DRAIN_MAX = 4096 /* batches */ };

struct agt_udp {
  int fd;
  int server;
  int port;
  int nworkers;
  int64_t d;
  int64_t chunk;   /* floats per chunk */
  int64_t nchunks; /* per row */
  uint64_t session;
  unsigned char *slots; /* BATCH × SLOT */
  struct mmsghdr *hdr;
  struct iovec *iov;
  int64_t rcvbuf;
  /* worker side */
  int worker;
  uint64_t seq;
  double rate; /* bytes/s, 0: unpaced */
  unsigned char key[AGT_UDP_KEY];
  /* PS side, under mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int running;
  volatile int stop;
  unsigned char *keys;   /* nworkers × AGT_UDP_KEY */
  unsigned char *has_key;
  uint64_t *bits;        /* nworkers × words */
  int64_t words;
  int64_t *have;         /* chunks received this step, per worker */
  agt_udp_stats *st;
  int64_t unattributed;
  int64_t kdrops;
  float *rows;
  int64_t step;
  int open;
  union { char buf[CMSG_SPACE(sizeof(uint32_t))]; struct cmsghdr align; } *ctrl; /* BATCH */
};

static agt_status sysfail(agt_status code, const char *what) {
  return AGT_FAIL(code, "%s: %s", what, strerror(errno));
}

/* Shared checks of the geometry; sets chunk and nchunks. */
static agt_status geometry(agt_udp *u, int64_t d, int chunk_bytes, const char *fn) {
  if (d < 1) return AGT_FAIL(AGT_EINVAL, "%s: the row size d must be >= 1, got %lld", fn, (long long)d);
  if (chunk_bytes < 4 || chunk_bytes > AGT_UDP_MAX_CHUNK || chunk_bytes % 4)
    return AGT_FAIL(AGT_EINVAL, "%s: the chunk size must be a multiple of 4 bytes in [4, %d], got %d", fn,
                    AGT_UDP_MAX_CHUNK, chunk_bytes);
  u->d = d;
  u->chunk = chunk_bytes / 4;
  u->nchunks = (d + u->chunk - 1) / u->chunk;
  if (u->nchunks > UINT32_MAX) return AGT_FAIL(AGT_EINVAL, "%s: %lld chunks per row, above 2^32", fn, (long long)u->nchunks);
  return AGT_OK;
}

static agt_status alloc_slots(agt_udp *u) {
  u->slots = malloc((size_t)BATCH * SLOT);
  u->hdr = calloc(BATCH, sizeof *u->hdr);
  u->iov = calloc(BATCH, sizeof *u->iov);
  if (!u->slots || !u->hdr || !u->iov) return AGT_FAIL(AGT_ENOMEM, "out of memory for the UDP buffers");
  for (int i = 0; i < BATCH; i++) {
    u->iov[i].iov_base = u->slots + (size_t)i * SLOT;
    u->iov[i].iov_len = SLOT;
    u->hdr[i].msg_hdr.msg_iov = &u->iov[i];
    u->hdr[i].msg_hdr.msg_iovlen = 1;
  }
  return AGT_OK;
}

/* The addresses of host:port (host "*" or "": any, for binding). */
static agt_status resolve(const char *host, int port, int passive, struct addrinfo **res) {
  if (port < 0 || port > 65535) return AGT_FAIL(AGT_EINVAL, "UDP port must be in [0, 65535], got %d", port);
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_protocol = IPPROTO_UDP;
  /* IPv4, but for an IPv6 literal: the PS's "*" is every IPv4 interface, so a worker must not
   * pick a host name's IPv6 address (a UDP socket connects to any address, and its datagrams
   * would all be lost) */
  const char *h = host && *host && strcmp(host, "*") != 0 ? host : NULL;
  hints.ai_family = h && strchr(h, ':') ? AF_INET6 : AF_INET;
  if (passive) hints.ai_flags = AI_PASSIVE;
  int r = getaddrinfo(h, ps, &hints, res);
  if (r) return AGT_FAIL(AGT_ENET, "cannot resolve '%s' for UDP: %s", host ? host : "", gai_strerror(r));
  return AGT_OK;
}

int agt_udp_port(const agt_udp *u) { return u ? u->port : 0; }
int64_t agt_udp_rcvbuf(const agt_udp *u) { return u ? u->rcvbuf : 0; }
int64_t agt_udp_chunks(const agt_udp *u) { return u ? u->nchunks : 0; }

static void nonce_of(unsigned char *nonce, uint64_t seq, uint32_t chunk) {
  memcpy(nonce, &seq, 8);
  memcpy(nonce + 8, &chunk, 4);
}

/* --- the PS's receive side --------------------------------------------------------------- */

/* One datagram, under u->mu. Returns 1 when it completed a row. */
static int take(agt_udp *u, const unsigned char *p, size_t len) {
  if (len < AGT_UDP_HEADER + AGT_UDP_TAG || memcmp(p, MAGIC, 4) != 0) { u->unattributed++; return 0; }
  uint16_t version, zero;
  uint32_t worker, count;
  uint64_t session, seq, offset;
  int64_t step;
  memcpy(&version, p + 4, 2);
  memcpy(&zero, p + 6, 2);
  memcpy(&worker, p + 8, 4);
  memcpy(&count, p + 12, 4);
  memcpy(&session, p + 16, 8);
  memcpy(&step, p + 24, 8);
  memcpy(&seq, p + 32, 8);
  memcpy(&offset, p + 40, 8);
  if (version != AGT_UDP_VERSION || zero != 0 || worker >= (uint32_t)u->nworkers) { u->unattributed++; return 0; }
  agt_udp_stats *s = &u->st[worker];
  if (!u->has_key[worker] || offset >= (uint64_t)u->d || offset % (uint64_t)u->chunk != 0) { s->rejected++; return 0; }
  int64_t want = u->d - (int64_t)offset < u->chunk ? u->d - (int64_t)offset : u->chunk;
  size_t bytes = (size_t)count * 4;
  if ((int64_t)count != want || len != AGT_UDP_HEADER + bytes + AGT_UDP_TAG || session != u->session || session == 0) {
    s->rejected++;
    return 0;
  }
  uint32_t c = (uint32_t)(offset / (uint64_t)u->chunk);
  unsigned char nonce[NONCE];
  nonce_of(nonce, seq, c);
  const unsigned char *key = u->keys + (size_t)worker * AGT_UDP_KEY;
  const unsigned char *ct = p + AGT_UDP_HEADER, *tag = ct + bytes;
  /* m = NULL: the tag only, nothing written */
  if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(NULL, NULL, ct, bytes, tag, p, AGT_UDP_HEADER, nonce, key) != 0) {
    s->rejected++;
    return 0;
  }
  if (!u->open || step != u->step) { s->late++; return 0; }
  uint64_t *w = u->bits + (size_t)worker * (size_t)u->words;
  uint64_t bit = (uint64_t)1 << (c % 64);
  if (w[c / 64] & bit) { s->duplicate++; return 0; }
  unsigned char *dst = (unsigned char *)(u->rows + (size_t)worker * (size_t)u->d + offset);
  crypto_stream_chacha20_ietf_xor_ic(dst, ct, bytes, nonce, 1, key); /* block 0 was the MAC key */
  w[c / 64] |= bit;
  s->received++;
  return ++u->have[worker] == u->nchunks;
}

/* Takes one batch of what is queued on the socket, under u->mu (so a datagram is never held
 * outside the lock: what the kernel has queued when a step closes is taken by agt_udp_finish,
 * not left to a thread that may not have run). Returns the datagrams taken, 0 when none. */
static int drain_batch(agt_udp *u) {
  for (int i = 0; i < BATCH; i++) {
    struct msghdr *h = &u->hdr[i].msg_hdr;
    h->msg_name = NULL;
    h->msg_namelen = 0;
    h->msg_control = u->ctrl[i].buf;
    h->msg_controllen = sizeof u->ctrl[i].buf;
    h->msg_flags = 0;
    u->hdr[i].msg_len = 0;
  }
  int k = recvmmsg(u->fd, u->hdr, BATCH, MSG_DONTWAIT, NULL);
  if (k <= 0) return 0;
  int completed = 0;
  for (int i = 0; i < k; i++) {
    struct msghdr *h = &u->hdr[i].msg_hdr;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_RXQ_OVFL && cm->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
        uint32_t drops;
        memcpy(&drops, CMSG_DATA(cm), sizeof drops);
        if ((int64_t)drops > u->kdrops) u->kdrops = drops;
      }
    }
    if (h->msg_flags & MSG_TRUNC) { u->unattributed++; continue; }
    completed |= take(u, u->slots + (size_t)i * SLOT, u->hdr[i].msg_len);
  }
  if (completed) pthread_cond_broadcast(&u->cv);
  return k;
}

static void *recv_main(void *arg) {
  agt_udp *u = arg;
  while (!__atomic_load_n(&u->stop, __ATOMIC_SEQ_CST)) {
    struct pollfd pf = { u->fd, POLLIN, 0 };
    if (poll(&pf, 1, POLL_MS) <= 0) continue;
    pthread_mutex_lock(&u->mu);
    drain_batch(u);
    pthread_mutex_unlock(&u->mu);
  }
  return NULL;
}

agt_status agt_udp_server(const char *host, int port, int nworkers, int64_t d, int chunk_bytes,
                          int64_t rcvbuf, agt_udp **out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "agt_udp_server: out is NULL");
  *out = NULL;
  if (nworkers < 1 || nworkers > 1 << 16)
    return AGT_FAIL(AGT_EINVAL, "agt_udp_server: nworkers must be in [1, 65536], got %d", nworkers);
  if (sodium_init() < 0) return AGT_FAIL(AGT_ENOTSUP, "libsodium failed to initialise");
  agt_udp *u = calloc(1, sizeof *u);
  if (!u) return AGT_FAIL(AGT_ENOMEM, "agt_udp_server: out of memory");
  u->fd = -1;
  u->server = 1;
  u->nworkers = nworkers;
  pthread_mutex_init(&u->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&u->cv, &ca);
  pthread_condattr_destroy(&ca);
  agt_status st = geometry(u, d, chunk_bytes, "agt_udp_server");
  if (st) goto fail;
  if ((st = alloc_slots(u))) goto fail;
  u->words = (u->nchunks + 63) / 64;
  u->keys = calloc((size_t)nworkers, AGT_UDP_KEY);
  u->has_key = calloc((size_t)nworkers, 1);
  u->bits = calloc((size_t)nworkers * (size_t)u->words, sizeof *u->bits);
  u->have = calloc((size_t)nworkers, sizeof *u->have);
  u->st = calloc((size_t)nworkers, sizeof *u->st);
  u->ctrl = calloc(BATCH, sizeof *u->ctrl);
  if (!u->keys || !u->has_key || !u->bits || !u->have || !u->st || !u->ctrl) {
    st = AGT_FAIL(AGT_ENOMEM, "agt_udp_server: out of memory for %d workers", nworkers);
    goto fail;
  }
  struct addrinfo *ai = NULL;
  if ((st = resolve(host, port, 1, &ai))) goto fail;
  for (struct addrinfo *a = ai; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0) { u->fd = fd; break; }
    close(fd);
  }
  freeaddrinfo(ai);
  if (u->fd < 0) {
    st = AGT_FAIL(AGT_ENET, "cannot listen for UDP rows on %s:%d: %s", host && *host ? host : "*", port, strerror(errno));
    goto fail;
  }
  /* The buffer that absorbs bursts while the thread is not running: beyond the system's
   * limit as root (SO_RCVBUFFORCE), up to it otherwise. */
  if (rcvbuf > 0) {
    int want = rcvbuf > INT32_MAX / 2 ? INT32_MAX / 2 : (int)rcvbuf;
    if (setsockopt(u->fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
      setsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  }
  int got = 0, one = 1;
  socklen_t gl = sizeof got;
  if (getsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &got, &gl) == 0) u->rcvbuf = got;
  setsockopt(u->fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  if (getsockname(u->fd, (struct sockaddr *)&sa, &sl) == 0)
    u->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port : ((struct sockaddr_in *)&sa)->sin_port);
  if (pthread_create(&u->thread, NULL, recv_main, u)) {
    st = AGT_FAIL(AGT_ENOMEM, "cannot start the UDP receive thread");
    goto fail;
  }
  u->running = 1;
  *out = u;
  return AGT_OK;
fail:
  agt_udp_close(u);
  return st;
}

void agt_udp_close(agt_udp *u) {
  if (!u) return;
  if (u->running) {
    __atomic_store_n(&u->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(u->thread, NULL);
  }
  if (u->fd >= 0) close(u->fd);
  if (u->keys) sodium_memzero(u->keys, (size_t)u->nworkers * AGT_UDP_KEY);
  sodium_memzero(u->key, sizeof u->key);
  free(u->keys);
  free(u->has_key);
  free(u->bits);
  free(u->have);
  free(u->st);
  free(u->ctrl);
  free(u->slots);
  free(u->hdr);
  free(u->iov);
  pthread_cond_destroy(&u->cv);
  pthread_mutex_destroy(&u->mu);
  free(u);
}

void agt_udp_set_session(agt_udp *u, uint64_t session) {
  pthread_mutex_lock(&u->mu);
  u->session = session;
  pthread_mutex_unlock(&u->mu);
}

static agt_status server_worker(agt_udp *u, int worker, const char *fn) {
  if (!u || !u->server) return AGT_FAIL(AGT_EINVAL, "%s: not a PS socket", fn);
  if (worker < 0 || worker >= u->nworkers)
    return AGT_FAIL(AGT_EINVAL, "%s: worker %d is not a UDP worker (0..%d)", fn, worker, u->nworkers - 1);
  return AGT_OK;
}

agt_status agt_udp_new_key(agt_udp *u, int worker, uint8_t *key) {
  AGT_TRY(server_worker(u, worker, "agt_udp_new_key"));
  if (!key) return AGT_FAIL(AGT_EINVAL, "agt_udp_new_key: key is NULL");
  randombytes_buf(key, AGT_UDP_KEY);
  pthread_mutex_lock(&u->mu);
  memcpy(u->keys + (size_t)worker * AGT_UDP_KEY, key, AGT_UDP_KEY);
  u->has_key[worker] = 1;
  pthread_mutex_unlock(&u->mu);
  return AGT_OK;
}

agt_status agt_udp_open(agt_udp *u, int64_t step, float *rows) {
  if (!u || !u->server) return AGT_FAIL(AGT_EINVAL, "agt_udp_open: not a PS socket");
  if (!rows) return AGT_FAIL(AGT_EINVAL, "agt_udp_open: rows is NULL");
  pthread_mutex_lock(&u->mu);
  size_t n = (size_t)u->nworkers * (size_t)u->d;
  for (size_t i = 0; i < n; i++) rows[i] = NAN;
  memset(u->bits, 0, (size_t)u->nworkers * (size_t)u->words * sizeof *u->bits);
  memset(u->have, 0, (size_t)u->nworkers * sizeof *u->have);
  u->rows = rows;
  u->step = step;
  u->open = 1;
  pthread_mutex_unlock(&u->mu);
  return AGT_OK;
}

static double mono(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

agt_status agt_udp_finish(agt_udp *u, const uint8_t *want, int timeout_ms, int64_t *lost, int *complete) {
  if (!u || !u->server) return AGT_FAIL(AGT_EINVAL, "agt_udp_finish: not a PS socket");
  if (!want) return AGT_FAIL(AGT_EINVAL, "agt_udp_finish: want is NULL");
  if (timeout_ms < 0) return AGT_FAIL(AGT_EINVAL, "agt_udp_finish: timeout must be >= 0 ms, got %d", timeout_ms);
  agt_status st = AGT_OK;
  double end = mono() + timeout_ms / 1000.0;
  pthread_mutex_lock(&u->mu);
  for (;;) {
    int all = 1;
    for (int w = 0; w < u->nworkers && all; w++)
      if (want[w] && u->have[w] < u->nchunks) all = 0;
    double left = end - mono();
    if (all || left <= 0 || !u->open) break;
    if (agt_interrupted()) { st = AGT_FAIL(AGT_EINTR, "interrupted"); break; }
    /* wake at least every 100 ms for Ctrl-C */
    double until = mono() + (left < 0.1 ? left : 0.1);
    struct timespec ts;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&u->cv, &u->mu, &ts);
  }
  /* What the kernel holds now arrived before the step closed: taken (bounded, so that a flood
   * cannot hold the PS here). */
  for (int b = 0; b < DRAIN_MAX && u->open && drain_batch(u) == BATCH; b++) {}
  int done = 0;
  for (int w = 0; w < u->nworkers; w++) {
    int64_t miss = 0;
    if (want[w] && u->open) {
      miss = u->nchunks - u->have[w];
      u->st[w].lost += miss;
      done += miss == 0;
    }
    if (lost) lost[w] = miss;
  }
  u->open = 0;
  u->rows = NULL;
  pthread_mutex_unlock(&u->mu);
  if (complete) *complete = done;
  return st;
}

agt_status agt_udp_stats_of(agt_udp *u, int worker, agt_udp_stats *out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "agt_udp_stats_of: out is NULL");
  memset(out, 0, sizeof *out);
  if (u && u->server && worker == -1) {
    pthread_mutex_lock(&u->mu);
    out->rejected = u->unattributed;
    pthread_mutex_unlock(&u->mu);
    return AGT_OK;
  }
  AGT_TRY(server_worker(u, worker, "agt_udp_stats_of"));
  pthread_mutex_lock(&u->mu);
  *out = u->st[worker];
  pthread_mutex_unlock(&u->mu);
  return AGT_OK;
}

int64_t agt_udp_kernel_drops(agt_udp *u) {
  if (!u || !u->server) return 0;
  pthread_mutex_lock(&u->mu);
  int64_t k = u->kdrops;
  pthread_mutex_unlock(&u->mu);
  return k;
}

/* --- the worker's send side --------------------------------------------------------------- */

agt_status agt_udp_client(const char *host, int port, int worker, int64_t d, int chunk_bytes,
                          uint64_t session, const uint8_t *key, agt_udp **out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "agt_udp_client: out is NULL");
  *out = NULL;
  if (!host || !*host || strcmp(host, "*") == 0) return AGT_FAIL(AGT_EINVAL, "agt_udp_client: the PS's host is required");
  if (port < 1 || port > 65535) return AGT_FAIL(AGT_EINVAL, "agt_udp_client: the PS's UDP port must be in [1, 65535], got %d", port);
  if (worker < 0) return AGT_FAIL(AGT_EINVAL, "agt_udp_client: worker must be >= 0, got %d", worker);
  if (!key) return AGT_FAIL(AGT_EINVAL, "agt_udp_client: key is NULL");
  if (sodium_init() < 0) return AGT_FAIL(AGT_ENOTSUP, "libsodium failed to initialise");
  agt_udp *u = calloc(1, sizeof *u);
  if (!u) return AGT_FAIL(AGT_ENOMEM, "agt_udp_client: out of memory");
  u->fd = -1;
  u->worker = worker;
  u->session = session;
  memcpy(u->key, key, AGT_UDP_KEY);
  pthread_mutex_init(&u->mu, NULL);
  pthread_cond_init(&u->cv, NULL);
  agt_status st = geometry(u, d, chunk_bytes, "agt_udp_client");
  if (st) goto fail;
  if ((st = alloc_slots(u))) goto fail;
  struct addrinfo *ai = NULL;
  if ((st = resolve(host, port, 0, &ai))) goto fail;
  for (struct addrinfo *a = ai; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) { u->fd = fd; break; }
    close(fd);
  }
  freeaddrinfo(ai);
  if (u->fd < 0) {
    st = AGT_FAIL(AGT_ENET, "cannot open a UDP socket to %s:%d: %s", host, port, strerror(errno));
    goto fail;
  }
  /* a send waits at most 1 s for room in the socket's buffer */
  struct timeval tv = { 1, 0 };
  setsockopt(u->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  u->port = port;
  *out = u;
  return AGT_OK;
fail:
  agt_udp_close(u);
  return st;
}

/* splitmix64: the stream id of (worker, step, chunk) */
static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int agt_udp_dropped(uint64_t drop_seed, int worker, int64_t step, int64_t chunk, double drop) {
  if (!(drop > 0)) return 0;
  if (drop >= 1) return 1;
  agt_rng r;
  agt_rng_init(&r, drop_seed, mix(mix(mix(0x7564702d64726f70ULL /* "udp-drop" */ ^ (uint64_t)worker) ^ (uint64_t)step) ^ (uint64_t)chunk));
  return agt_rng_double(&r) < drop;
}

/* Sends slots 0..k-1; a datagram the system refuses (its buffer full past the send timeout,
 * no route, the PS not listening: ECONNREFUSED from an earlier ICMP) is given up. */
static agt_status flush_slots(agt_udp *u, int k) {
  int i = 0;
  while (i < k) {
    int r = sendmmsg(u->fd, u->hdr + i, (unsigned)(k - i), 0);
    if (r > 0) { i += r; continue; }
    if (errno == EINTR) {
      if (agt_interrupted()) return AGT_FAIL(AGT_EINTR, "interrupted");
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED ||
        errno == EHOSTUNREACH || errno == ENETUNREACH || errno == EMSGSIZE) {
      i++; /* this datagram is lost; the rest are tried */
      continue;
    }
    return sysfail(AGT_ENET, "sendmmsg");
  }
  return AGT_OK;
}

agt_status agt_udp_set_rate(agt_udp *u, double bytes_per_s) {
  if (!u || u->server) return AGT_FAIL(AGT_EINVAL, "agt_udp_set_rate: not a worker socket");
  if (!(bytes_per_s >= 0) || isinf(bytes_per_s))
    return AGT_FAIL(AGT_EINVAL, "agt_udp_set_rate: the rate must be finite and >= 0 bytes/s, got %g", bytes_per_s);
  u->rate = bytes_per_s;
  return AGT_OK;
}

/* With a rate: sleeps until `bytes` sent since t0 are within it. */
static void pace(const agt_udp *u, double t0, double bytes) {
  if (u->rate <= 0) return;
  double wait = t0 + bytes / u->rate - mono();
  if (wait <= 0) return;
  struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !agt_interrupted()) {}
}

agt_status agt_udp_send(agt_udp *u, int64_t step, const float *row, double drop, uint64_t drop_seed,
                        int64_t *dropped) {
  if (!u || u->server) return AGT_FAIL(AGT_EINVAL, "agt_udp_send: not a worker socket");
  if (!row) return AGT_FAIL(AGT_EINVAL, "agt_udp_send: row is NULL");
  if (!(drop >= 0 && drop <= 1)) return AGT_FAIL(AGT_EINVAL, "agt_udp_send: drop must be in [0, 1], got %g", drop);
  if (u->seq == UINT64_MAX) return AGT_FAIL(AGT_EINVAL, "agt_udp_send: no nonce left under this key");
  uint64_t seq = u->seq++;
  int64_t nd = 0;
  int k = 0;
  double t0 = mono(), out = 0;
  for (int64_t c = 0; c < u->nchunks; c++) {
    if (agt_udp_dropped(drop_seed, u->worker, step, c, drop)) { nd++; continue; }
    uint64_t offset = (uint64_t)(c * u->chunk);
    uint32_t count = (uint32_t)(u->d - (int64_t)offset < u->chunk ? u->d - (int64_t)offset : u->chunk);
    size_t bytes = (size_t)count * 4;
    unsigned char *p = u->slots + (size_t)k * SLOT;
    uint16_t version = AGT_UDP_VERSION, zero = 0;
    uint32_t w = (uint32_t)u->worker;
    memcpy(p, MAGIC, 4);
    memcpy(p + 4, &version, 2);
    memcpy(p + 6, &zero, 2);
    memcpy(p + 8, &w, 4);
    memcpy(p + 12, &count, 4);
    memcpy(p + 16, &u->session, 8);
    memcpy(p + 24, &step, 8);
    memcpy(p + 32, &seq, 8);
    memcpy(p + 40, &offset, 8);
    unsigned char nonce[NONCE];
    nonce_of(nonce, seq, (uint32_t)c);
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(p + AGT_UDP_HEADER, p + AGT_UDP_HEADER + bytes, NULL,
                                                       (const unsigned char *)(row + offset), bytes, p,
                                                       AGT_UDP_HEADER, NULL, nonce, u->key);
    u->iov[k].iov_len = AGT_UDP_HEADER + bytes + AGT_UDP_TAG;
    out += (double)u->iov[k].iov_len;
    /* paced: one datagram at a time; otherwise BATCH at once */
    if (++k == BATCH || u->rate > 0) {
      AGT_TRY(flush_slots(u, k));
      k = 0;
      pace(u, t0, out);
    }
  }
  if (k) AGT_TRY(flush_slots(u, k));
  if (dropped) *dropped = nd;
  return AGT_OK;
}
