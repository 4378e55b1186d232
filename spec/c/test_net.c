/* test_net.c — the PS/worker transport on 127.0.0.1: messages go through intact in both
 * directions, to several peers at once; every kind of malformed frame (sent with raw ZeroMQ
 * calls, as a hostile peer would) is rejected and counted without disturbing the next good
 * one; a frame above the size cap never arrives; waits end at their timeout; the PS holds at
 * most max_peers connections, the ones beyond are shut at once and the slots come back. */
#include "check.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Waits for the next message (skipping timeouts) up to ~2 s. */
static agt_status next(agt_net *n, agt_net_msg *m) {
  for (int i = 0; i < 40; i++) {
    agt_status st = agt_net_recv(n, 50, m);
    if (st != AGT_NET_TIMEOUT) return st;
  }
  return AGT_NET_TIMEOUT;
}

static void header(unsigned char *h, uint16_t version, uint16_t type, uint32_t reserved,
                   uint64_t session, uint64_t len) {
  uint32_t worker = 3;
  int64_t step = 7;
  double aux = 0;
  memcpy(h, "AGTN", 4);
  memcpy(h + 4, &version, 2);
  memcpy(h + 6, &type, 2);
  memcpy(h + 8, &worker, 4);
  memcpy(h + 12, &reserved, 4);
  memcpy(h + 16, &session, 8);
  memcpy(h + 24, &step, 8);
  memcpy(h + 32, &aux, 8);
  memcpy(h + 40, &len, 8);
}

static void sleep_ms(int ms) {
  struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
  nanosleep(&t, NULL);
}

/* The connection bound: a PS of max_peers 3 with one worker connected; 8 raw TCP connections
 * (no ZeroMQ greeting at all: they would hold their slot until the handshake timeout) get at
 * most the 2 free slots, the rest are shut at once and counted; the worker's exchange goes on;
 * once they close, a new worker gets in. */
static void bound(void) {
  agt_net *ps = NULL, *w = NULL, *w2 = NULL;
  agt_net_msg m;
  CHECK(agt_net_new(AGT_NET_SERVER, 64, 3, &ps) == AGT_OK);
  CHECK(agt_net_bind(ps, "tcp://127.0.0.1:*") == AGT_OK);
  char ep[256];
  snprintf(ep, sizeof ep, "%s", agt_net_endpoint(ps));
  int port = atoi(strrchr(ep, ':') + 1);
  CHECK(agt_net_new(AGT_NET_CLIENT, 64, 0, &w) == AGT_OK);
  CHECK(agt_net_connect(w, ep) == AGT_OK);
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_HELLO, 0, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_HELLO);
  int64_t wpeer = m.peer;
  int raw[8];
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 8; i++) {
    raw[i] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(raw[i] >= 0 && connect(raw[i], (struct sockaddr *)&a, sizeof a) == 0);
  }
  for (int i = 0; i < 40 && agt_net_refused(ps) < 6; i++) sleep_ms(50);
  CHECK(agt_net_refused(ps) == 6);
  /* the refused ones were shut: reading them ends (EOF or reset) after ZeroMQ's greeting
   * instead of waiting */
  int ended = 0;
  for (int i = 0; i < 8; i++) {
    struct timeval tv = { 0, 200000 };
    setsockopt(raw[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[64];
    ssize_t r;
    while ((r = read(raw[i], b, sizeof b)) > 0) {} /* ZeroMQ's greeting first */
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) ended++;
  }
  if (ended != 6) fprintf(stderr, "  ended = %d\n", ended);
  CHECK(ended == 6);
  const char theta[16] = "0123456789abcdef";
  int64_t to[1] = { wpeer };
  int8_t sent[1];
  CHECK(agt_net_send(ps, to, 1, AGT_NET_THETA, 0, 1, 0, theta, sizeof theta, sent) == AGT_OK && sent[0] == 1);
  CHECK(next(w, &m) == AGT_OK && m.type == AGT_NET_THETA && m.len == 16);
  for (int i = 0; i < 8; i++) close(raw[i]);
  sleep_ms(300);
  CHECK(agt_net_new(AGT_NET_CLIENT, 64, 0, &w2) == AGT_OK);
  CHECK(agt_net_connect(w2, ep) == AGT_OK);
  CHECK(agt_net_send(w2, NULL, 1, AGT_NET_HELLO, 1, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_HELLO && m.worker == 1);
  CHECK(agt_net_refused(ps) == 6);
  agt_net_close(w2);
  agt_net_close(w);
  agt_net_close(ps);
}

/* CURVE: only the admitted keys get through, each message carries its sender's key index
 * whatever it claims; an unknown key and a client without CURVE get nothing through. */
static void curve(void) {
  char ps_pub[41], ps_sec[41], pub[3][41], sec[3][41];
  CHECK(agt_net_curve_keypair(ps_pub, ps_sec) == AGT_OK);
  for (int i = 0; i < 3; i++) CHECK(agt_net_curve_keypair(pub[i], sec[i]) == AGT_OK);
  char keys[81];
  snprintf(keys, sizeof keys, "%s%s", pub[0], pub[1]); /* workers 0 and 1; key 2 is a stranger's */
  agt_net *ps = NULL, *c[4] = { NULL, NULL, NULL, NULL };
  CHECK(agt_net_new(AGT_NET_SERVER, 64, 8, &ps) == AGT_OK);
  CHECK(agt_net_curve_server(ps, ps_sec, keys, 3) == AGT_EINVAL);
  CHECK(agt_net_curve_server(ps, "short", keys, 2) == AGT_EINVAL);
  CHECK(agt_net_curve_server(ps, ps_sec, keys, 2) == AGT_OK);
  CHECK(agt_net_bind(ps, "tcp://127.0.0.1:*") == AGT_OK);
  char ep[1024];
  snprintf(ep, sizeof ep, "%s", agt_net_endpoint(ps));
  for (int i = 0; i < 4; i++) {
    CHECK(agt_net_new(AGT_NET_CLIENT, 64, 0, &c[i]) == AGT_OK);
    if (i < 3) CHECK(agt_net_curve_client(c[i], ps_pub, pub[i], sec[i]) == AGT_OK);
    CHECK(agt_net_connect(c[i], ep) == AGT_OK);
  }
  CHECK(agt_net_curve_client(c[0], ps_pub, "bad", sec[0]) == AGT_EINVAL);
  /* Client 1 claims to be worker 0: the PS sees key 1. */
  CHECK(agt_net_send(c[1], NULL, 1, AGT_NET_HELLO, 0, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(agt_net_send(c[2], NULL, 1, AGT_NET_HELLO, 2, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(agt_net_send(c[3], NULL, 1, AGT_NET_HELLO, 3, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(agt_net_send(c[0], NULL, 1, AGT_NET_HELLO, 0, -1, 0, "abc", 3, NULL) == AGT_OK);
  agt_net_msg m;
  int got[2] = { 0, 0 }, other = 0;
  for (int k = 0; k < 20; k++) {
    agt_status st = agt_net_recv(ps, 100, &m);
    if (st == AGT_OK && m.auth >= 0 && m.auth < 2) got[m.auth]++;
    else if (st != AGT_NET_TIMEOUT) other++;
    if (got[0] && got[1] && k > 8) break;
  }
  CHECK(got[0] == 1 && got[1] == 1 && other == 0);
  if (!(got[0] == 1 && got[1] == 1 && other == 0)) fprintf(stderr, "  got %d %d other %d denied %lld: %s\n", got[0], got[1], other, (long long)agt_net_denied(ps), agt_last_error());
  CHECK(agt_net_denied(ps) >= 1);
  /* The cap under CURVE (whose frames are bigger on the wire): 64 bytes of payload pass, one
   * byte more is rejected. */
  static char big[65];
  CHECK(agt_net_send(c[0], NULL, 1, AGT_NET_GRAD, 0, 1, 0, big, 64, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK);
  CHECK(m.len == 64 && m.auth == 0);
  CHECK(agt_net_send(c[0], NULL, 1, AGT_NET_GRAD, 0, 1, 0, big, 65, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_NET_REJECTED);
  for (int i = 0; i < 4; i++) agt_net_close(c[i]);
  agt_net_close(ps);
}

/* The decoder alone (agt_net_decode, what agt_net_recv runs on each frame; make fuzz runs it
 * on any bytes): the fields of a good frame, the payload cap at its boundary, HELLO without the
 * session, and peer/auth left alone. */
static void decode(void) {
  unsigned char f[AGT_NET_HEADER + 8];
  const uint64_t S = 0x1234ull;
  agt_net_msg m;
  memset(&m, 0, sizeof m);
  m.peer = 9;
  m.auth = 2;
  header(f, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, 8);
  memcpy(f + AGT_NET_HEADER, "abcdefgh", 8);
  CHECK(agt_net_decode(f, sizeof f, S, 8, &m) == AGT_OK);
  CHECK(m.type == AGT_NET_GRAD && m.worker == 3 && m.step == 7 && m.session == S && m.len == 8);
  CHECK(m.data == f + AGT_NET_HEADER && m.peer == 9 && m.auth == 2);
  CHECK(agt_net_decode(f, sizeof f, S, 7, &m) == AGT_NET_REJECTED);      /* one byte over the cap */
  CHECK(strstr(agt_last_error(), "above the cap of 7") != NULL);
  CHECK(agt_net_decode(f, sizeof f, S + 1, 8, &m) == AGT_NET_REJECTED);  /* another session */
  CHECK(agt_net_decode(f, sizeof f, 0, 8, &m) == AGT_OK);                /* none set yet */
  CHECK(agt_net_decode(f, sizeof f - 1, S, 8, &m) == AGT_NET_REJECTED);  /* length mismatch */
  CHECK(agt_net_decode(f, AGT_NET_HEADER - 1, S, 8, &m) == AGT_NET_REJECTED);
  CHECK(agt_net_decode(NULL, 0, S, 8, &m) == AGT_NET_REJECTED);
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, 8);
  CHECK(agt_net_decode(f, sizeof f, S, 8, &m) == AGT_OK && m.type == AGT_NET_HELLO);
}

/* The header's writer (agt_net_header, which the MPI transport shares) read back by the decoder,
 * NaN and ±inf losses included; each malformed header rejected with its reason. */
static void header_roundtrip(void) {
  unsigned char f[AGT_NET_HEADER + 8];
  const double auxes[] = { 0.25, NAN, INFINITY, -INFINITY };
  agt_net_msg m;
  memset(&m, 0, sizeof m);
  for (int k = 0; k < 4; k++) {
    agt_net_header(f, AGT_NET_GRAD, 5, 0xabcdefULL, 42, auxes[k], 8);
    memcpy(f + AGT_NET_HEADER, "12345678", 8);
    CHECK(agt_net_decode(f, sizeof f, 0xabcdefULL, 8, &m) == AGT_OK);
    CHECK(m.type == AGT_NET_GRAD && m.worker == 5 && m.session == 0xabcdefULL && m.step == 42 && m.len == 8);
    CHECK(memcmp(&m.aux, &auxes[k], sizeof m.aux) == 0);
  }
  for (int type = AGT_NET_HELLO; type <= AGT_NET_LAST_TYPE; type++) { /* every type, STATE the last */
    agt_net_header(f, type, 1, type == AGT_NET_HELLO ? 0 : 7, 3, 0, 8);
    CHECK(agt_net_decode(f, sizeof f, 7, 8, &m) == AGT_OK && m.type == type);
  }
  CHECK(AGT_NET_LAST_TYPE == AGT_NET_STATE);
  agt_net_header(f, AGT_NET_LAST_TYPE + 1, 1, 7, 3, 0, 8);
  CHECK(agt_net_decode(f, sizeof f, 7, 8, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "unknown type"));
  for (size_t size = 0; size < AGT_NET_HEADER; size++)
    CHECK(agt_net_decode(f, size, 0, 8, &m) == AGT_NET_REJECTED);              /* shorter than a header */
  unsigned char bad[AGT_NET_HEADER];
  header(bad, AGT_NET_VERSION + 1, AGT_NET_GRAD, 0, 0, 0);
  CHECK(agt_net_decode(bad, sizeof bad, 0, 8, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "version 3"));
  header(bad, AGT_NET_VERSION, 99, 0, 0, 0);
  CHECK(agt_net_decode(bad, sizeof bad, 0, 8, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "unknown type"));
  header(bad, AGT_NET_VERSION, AGT_NET_GRAD, 1, 0, 0);
  CHECK(agt_net_decode(bad, sizeof bad, 0, 8, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "chunk index 1"));
  memcpy(bad, "XGTN", 4);
  CHECK(agt_net_decode(bad, sizeof bad, 0, 8, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "magic"));
}

/* Messages above AGT_NET_CHUNK bytes travel in chunks: a 3.25-chunk THETA to two workers and
 * their GRAD rows sent at once (their chunks interleave at the PS) arrive whole, twice (the
 * buffers are reused); a raw peer's chunk without its first one, one out of order, one of a
 * wrong size, are rejected and counted; a message left unfinished is dropped when its peer's
 * next message begins, and a wait for its missing chunks ends at the timeout. */
static void chunks(void) {
  enum { D = 3 * (AGT_NET_CHUNK / 4) + AGT_NET_CHUNK / 16 };
  const int64_t bytes = (int64_t)D * 4;
  agt_net *ps = NULL, *w[2] = { NULL, NULL };
  agt_net_msg m;
  CHECK(agt_net_new(AGT_NET_SERVER, bytes, 4, &ps) == AGT_OK);
  CHECK(agt_net_bind(ps, "tcp://127.0.0.1:*") == AGT_OK);
  char ep[256];
  snprintf(ep, sizeof ep, "%s", agt_net_endpoint(ps));
  int64_t peer[2] = { 0, 0 };
  for (int k = 0; k < 2; k++) {
    CHECK(agt_net_new(AGT_NET_CLIENT, bytes, 0, &w[k]) == AGT_OK);
    CHECK(agt_net_connect(w[k], ep) == AGT_OK);
    CHECK(agt_net_send(w[k], NULL, 1, AGT_NET_HELLO, (uint32_t)k, -1, 0, NULL, 0, NULL) == AGT_OK);
  }
  for (int k = 0; k < 2; k++) {
    CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_HELLO && m.worker < 2);
    if (m.worker < 2) peer[m.worker] = m.peer;
  }
  float *theta = malloc((size_t)bytes), *row[2] = { malloc((size_t)bytes), malloc((size_t)bytes) };
  CHECK(theta && row[0] && row[1]);
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < D; i++) theta[i] = (float)(i % 1000) * 0.25f + (float)round;
    int8_t sent[2] = { 0, 0 };
    CHECK(agt_net_send(ps, peer, 2, AGT_NET_THETA, 0, round, 0, theta, bytes, sent) == AGT_OK);
    CHECK(sent[0] == 1 && sent[1] == 1);
    for (int k = 0; k < 2; k++) {
      CHECK(next(w[k], &m) == AGT_OK && m.type == AGT_NET_THETA && m.step == round);
      CHECK(m.len == bytes && memcmp(m.data, theta, (size_t)bytes) == 0);
      for (int i = 0; i < D; i++) row[k][i] = theta[i] * (float)(k + 2);
    }
    for (int k = 0; k < 2; k++)
      CHECK(agt_net_send(w[k], NULL, 1, AGT_NET_GRAD, (uint32_t)k, round, 0.5 * k, row[k], bytes, NULL) == AGT_OK);
    int seen[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
      CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_GRAD && m.step == round && m.worker < 2);
      if (m.worker >= 2) continue;
      seen[m.worker]++;
      CHECK(m.peer == peer[m.worker] && m.aux == 0.5 * m.worker);
      CHECK(m.len == bytes && memcmp(m.data, row[m.worker], (size_t)bytes) == 0);
    }
    CHECK(seen[0] == 1 && seen[1] == 1);
  }
  CHECK(agt_net_rejected(ps) == 0);

  /* A raw peer's chunks (frames of 48 + AGT_NET_CHUNK bytes). */
  void *ctx = zmq_ctx_new(), *raw = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
  CHECK(zmq_connect(raw, ep) == 0);
  static unsigned char f[AGT_NET_HEADER + AGT_NET_CHUNK];
  memset(f, 0, sizeof f);
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 1, 0, (uint64_t)bytes);  /* chunk 1 first */
  CHECK(zmq_send(raw, f, sizeof f, 0) == (int)sizeof f);
  CHECK(next(ps, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "first chunk was not seen"));
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, (uint64_t)bytes);
  zmq_send(raw, f, sizeof f, 0);
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 2, 0, (uint64_t)bytes);  /* chunk 2 after 0 */
  zmq_send(raw, f, sizeof f, 0);
  CHECK(next(ps, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "chunk 2"));
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, (uint64_t)bytes);  /* a chunk cut short */
  zmq_send(raw, f, sizeof f - 1, 0);
  CHECK(next(ps, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "carrying"));
  CHECK(agt_net_rejected(ps) == 3);
  /* a message begun, then a wait for the rest that ends at the timeout */
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, (uint64_t)bytes);
  zmq_send(raw, f, sizeof f, 0);
  double t0 = now_s();
  CHECK(agt_net_recv(ps, 300, &m) == AGT_NET_TIMEOUT && m.len == 0 && m.data == NULL);
  double dt = now_s() - t0;
  CHECK(dt >= 0.25 && dt < 1.5);
  /* ... then a whole small message from that peer: the unfinished one is dropped */
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, 16);
  zmq_send(raw, f, AGT_NET_HEADER + 16, 0);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_HELLO && m.len == 16);
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 1, 0, (uint64_t)bytes);
  zmq_send(raw, f, sizeof f, 0);
  CHECK(next(ps, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "first chunk was not seen"));

  /* the decoders: a chunk's fields; the whole-message decoder refuses it */
  uint32_t idx = 99;
  header(f, AGT_NET_VERSION, AGT_NET_GRAD, 3, 0, (uint64_t)bytes);     /* the last chunk */
  size_t last = (size_t)(bytes - 3 * AGT_NET_CHUNK);
  CHECK(agt_net_decode_chunk(f, AGT_NET_HEADER + last, 0, bytes, &m, &idx) == AGT_OK);
  CHECK(idx == 3 && m.len == bytes && m.data == f + AGT_NET_HEADER && m.step == 7);
  CHECK(agt_net_decode_chunk(f, AGT_NET_HEADER + last + 1, 0, bytes, &m, &idx) == AGT_NET_REJECTED);
  CHECK(agt_net_decode(f, AGT_NET_HEADER + last, 0, bytes, &m) == AGT_NET_REJECTED);
  header(f, AGT_NET_VERSION, AGT_NET_GRAD, 4, 0, (uint64_t)bytes);     /* beyond the end */
  CHECK(agt_net_decode_chunk(f, AGT_NET_HEADER + last, 0, bytes, &m, &idx) == AGT_NET_REJECTED);
  header(f, AGT_NET_VERSION, AGT_NET_GRAD, 0, 0, (uint64_t)bytes);
  CHECK(agt_net_decode(f, sizeof f, 0, bytes, &m) == AGT_NET_REJECTED && strstr(agt_last_error(), "carrying"));
  /* ... and takes a whole message above a chunk (the MPI transport's frames) */
  unsigned char *whole = malloc(AGT_NET_HEADER + (size_t)bytes);
  CHECK(whole != NULL);
  if (whole) {
    header(whole, AGT_NET_VERSION, AGT_NET_GRAD, 0, 0, (uint64_t)bytes);
    CHECK(agt_net_decode(whole, AGT_NET_HEADER + (size_t)bytes, 0, bytes, &m) == AGT_OK && m.len == bytes &&
          m.data == whole + AGT_NET_HEADER);
    CHECK(agt_net_decode(whole, AGT_NET_HEADER + (size_t)bytes - 1, 0, bytes, &m) == AGT_NET_REJECTED);
    CHECK(agt_net_decode_chunk(whole, AGT_NET_HEADER + (size_t)bytes, 0, bytes, &m, &idx) == AGT_NET_REJECTED);
    free(whole);
  }
  CHECK(agt_net_decode_chunk(f, sizeof f, 0, bytes - 1, &m, &idx) == AGT_NET_REJECTED);  /* above the cap */

  zmq_close(raw);
  zmq_ctx_term(ctx);
  free(theta);
  free(row[0]);
  free(row[1]);
  for (int k = 0; k < 2; k++) agt_net_close(w[k]);
  agt_net_close(ps);
}

/* 1 when the n bytes at p all equal c. */
static int all_bytes(const unsigned char *p, size_t n, unsigned char c) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != c) return 0;
  return 1;
}

/* Receiving in place (agt_net_expect): a worker's 3.25-chunk GRAD lands in the PS's destination
 * (m.data is it, the bytes are the row's, the guard bytes around it untouched), once (a second
 * row goes to the buffer, the destination keeps the first); a message of another step or size
 * never touches it; a worker's THETA lands in its own; a raw peer's message dropped mid-way
 * leaves it partly written (unexpect says so) and the next one that fits starts there again;
 * one under way when the destination ends goes on in the buffer and arrives whole, nothing
 * written there after; a destination overlapping another peer's ends that one; an unknown peer
 * is taken (unexpect: 1); bad arguments fail. */
static void in_place(void) {
  enum { D = 3 * (AGT_NET_CHUNK / 4) + AGT_NET_CHUNK / 16, GUARD = 64 };
  const int64_t bytes = (int64_t)D * 4;
  agt_net *ps = NULL, *w = NULL;
  agt_net_msg m;
  CHECK(agt_net_new(AGT_NET_SERVER, bytes, 4, &ps) == AGT_OK);
  CHECK(agt_net_bind(ps, "tcp://127.0.0.1:*") == AGT_OK);
  char ep[256];
  snprintf(ep, sizeof ep, "%s", agt_net_endpoint(ps));
  CHECK(agt_net_new(AGT_NET_CLIENT, bytes, 0, &w) == AGT_OK);
  CHECK(agt_net_connect(w, ep) == AGT_OK);
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_HELLO, 0, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_HELLO);
  int64_t peer = m.peer;
  unsigned char *area = malloc((size_t)bytes + 2 * GUARD);
  float *row = malloc((size_t)bytes), *row2 = malloc((size_t)bytes);
  CHECK(area && row && row2);
  unsigned char *dest = area + GUARD;
  for (int i = 0; i < D; i++) row[i] = (float)i * 0.5f - 3.0f, row2[i] = -(float)i;

  /* a row in place, once */
  memset(area, 0xA5, (size_t)bytes + 2 * GUARD);
  CHECK(agt_net_expect(ps, peer, AGT_NET_GRAD, 5, dest, bytes) == AGT_OK);
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_GRAD, 0, 5, 0.25, row, bytes, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_GRAD && m.step == 5 && m.len == bytes && m.aux == 0.25);
  CHECK(m.data == dest && memcmp(dest, row, (size_t)bytes) == 0);
  CHECK(all_bytes(area, GUARD, 0xA5) && all_bytes(dest + bytes, GUARD, 0xA5));
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_GRAD, 0, 5, 0, row2, bytes, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.data != dest && m.len == bytes && memcmp(m.data, row2, (size_t)bytes) == 0);
  CHECK(memcmp(dest, row, (size_t)bytes) == 0);
  CHECK(agt_net_unexpect(ps, peer) == 1);
  /* another step, another size, another type: not there */
  memset(area, 0xA5, (size_t)bytes + 2 * GUARD);
  CHECK(agt_net_expect(ps, peer, AGT_NET_GRAD, 6, dest, bytes) == AGT_OK);
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_GRAD, 0, 7, 0, row, bytes, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.step == 7 && m.data != dest && memcmp(m.data, row, (size_t)bytes) == 0);
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_GRAD, 0, 6, 0, row, bytes - 4, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.len == bytes - 4 && m.data != dest);
  CHECK(agt_net_send(w, NULL, 1, AGT_NET_STATE, 0, 6, 0, row, bytes, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_STATE && m.data != dest);
  CHECK(all_bytes(area, (size_t)bytes + 2 * GUARD, 0xA5));
  CHECK(agt_net_unexpect(ps, peer) == 0);
  /* the worker's side: θ into its own destination (peer 0) */
  memset(area, 0xA5, (size_t)bytes + 2 * GUARD);
  CHECK(agt_net_expect(w, 0, AGT_NET_THETA, 9, dest, bytes) == AGT_OK);
  CHECK(agt_net_send(ps, &peer, 1, AGT_NET_THETA, 0, 9, 0, row2, bytes, NULL) == AGT_OK);
  CHECK(next(w, &m) == AGT_OK && m.type == AGT_NET_THETA && m.data == dest && memcmp(dest, row2, (size_t)bytes) == 0);
  CHECK(all_bytes(dest + bytes, GUARD, 0xA5));
  CHECK(agt_net_unexpect(w, 0) == 1 && agt_net_unexpect(w, 3) == 1);

  /* A raw peer's chunks (worker 3, step 7: see header()). */
  void *ctx = zmq_ctx_new(), *raw = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
  CHECK(zmq_connect(raw, ep) == 0);
  static unsigned char f[AGT_NET_HEADER + AGT_NET_CHUNK];
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, 0);
  CHECK(zmq_send(raw, f, AGT_NET_HEADER, 0) == AGT_NET_HEADER);
  CHECK(next(ps, &m) == AGT_OK && m.type == AGT_NET_HELLO);
  int64_t rawp = m.peer;
  /* chunk 0 then chunk 2: dropped mid-way, dest partly written */
  memset(area, 0xA5, (size_t)bytes + 2 * GUARD);
  CHECK(agt_net_expect(ps, rawp, AGT_NET_GRAD, 7, dest, bytes) == AGT_OK);
  int64_t rejected = agt_net_rejected(ps);
  for (uint32_t c = 0; c < 3; c += 2) {
    header(f, AGT_NET_VERSION, AGT_NET_GRAD, c, 0, (uint64_t)bytes);
    memset(f + AGT_NET_HEADER, (int)(0x10 + c), AGT_NET_CHUNK);
    zmq_send(raw, f, sizeof f, 0);
  }
  CHECK(next(ps, &m) == AGT_NET_REJECTED && m.peer == rawp && strstr(agt_last_error(), "chunk 2"));
  CHECK(agt_net_rejected(ps) == rejected + 1);
  CHECK(all_bytes(dest, AGT_NET_CHUNK, 0x10) && all_bytes(dest + AGT_NET_CHUNK, (size_t)bytes - AGT_NET_CHUNK + GUARD, 0xA5));
  /* ... the next whole one starts there again and completes it */
  size_t last = (size_t)(bytes - 3 * AGT_NET_CHUNK);
  for (uint32_t c = 0; c < 4; c++) {
    header(f, AGT_NET_VERSION, AGT_NET_GRAD, c, 0, (uint64_t)bytes);
    memset(f + AGT_NET_HEADER, (int)(0x20 + c), AGT_NET_CHUNK);
    zmq_send(raw, f, AGT_NET_HEADER + (c < 3 ? AGT_NET_CHUNK : last), 0);
  }
  CHECK(next(ps, &m) == AGT_OK && m.data == dest && m.worker == 3);
  int ok = 1;
  for (uint32_t c = 0; c < 4; c++)
    ok &= all_bytes(dest + (size_t)c * AGT_NET_CHUNK, c < 3 ? AGT_NET_CHUNK : last, (unsigned char)(0x20 + c));
  CHECK(ok && all_bytes(dest + bytes, GUARD, 0xA5));
  CHECK(agt_net_unexpect(ps, rawp) == 1);
  /* under way when its destination ends: goes on in the buffer, arrives whole; dest untouched */
  CHECK(agt_net_expect(ps, rawp, AGT_NET_GRAD, 7, dest, bytes) == AGT_OK);
  for (uint32_t c = 0; c < 2; c++) {
    header(f, AGT_NET_VERSION, AGT_NET_GRAD, c, 0, (uint64_t)bytes);
    memset(f + AGT_NET_HEADER, (int)(0x30 + c), AGT_NET_CHUNK);
    zmq_send(raw, f, sizeof f, 0);
  }
  CHECK(agt_net_recv(ps, 300, &m) == AGT_NET_TIMEOUT);
  CHECK(agt_net_unexpect(ps, rawp) == 1);
  memset(area, 0xA5, (size_t)bytes + 2 * GUARD);
  for (uint32_t c = 2; c < 4; c++) {
    header(f, AGT_NET_VERSION, AGT_NET_GRAD, c, 0, (uint64_t)bytes);
    memset(f + AGT_NET_HEADER, (int)(0x30 + c), AGT_NET_CHUNK);
    zmq_send(raw, f, AGT_NET_HEADER + (c < 3 ? AGT_NET_CHUNK : last), 0);
  }
  CHECK(next(ps, &m) == AGT_OK && m.data != dest && m.len == bytes);
  ok = 1;
  for (uint32_t c = 0; c < 4; c++)
    ok &= all_bytes((const unsigned char *)m.data + (size_t)c * AGT_NET_CHUNK, c < 3 ? AGT_NET_CHUNK : last,
                    (unsigned char)(0x30 + c));
  CHECK(ok && all_bytes(area, (size_t)bytes + 2 * GUARD, 0xA5));
  /* one writer per byte: the worker's destination over the raw peer's ends the raw peer's */
  CHECK(agt_net_expect(ps, rawp, AGT_NET_GRAD, 7, dest, bytes) == AGT_OK);
  CHECK(agt_net_expect(ps, peer, AGT_NET_GRAD, 8, dest + 4, bytes - 4) == AGT_OK);
  for (uint32_t c = 0; c < 4; c++) {
    header(f, AGT_NET_VERSION, AGT_NET_GRAD, c, 0, (uint64_t)bytes);
    zmq_send(raw, f, AGT_NET_HEADER + (c < 3 ? AGT_NET_CHUNK : last), 0);
  }
  CHECK(next(ps, &m) == AGT_OK && m.peer == rawp && m.data != dest);
  CHECK(all_bytes(area, (size_t)bytes + 2 * GUARD, 0xA5));
  CHECK(agt_net_unexpect(ps, rawp) == 0 && agt_net_unexpect(ps, peer) == 0);
  /* an unknown peer; bad arguments */
  CHECK(agt_net_expect(ps, 12345, AGT_NET_GRAD, 7, dest, bytes) == AGT_OK && agt_net_unexpect(ps, 12345) == 1);
  CHECK(agt_net_expect(ps, peer, AGT_NET_GRAD, 7, dest, bytes + 1) == AGT_EINVAL && strstr(agt_last_error(), "cap"));
  CHECK(agt_net_expect(ps, peer, 99, 7, dest, bytes) == AGT_EINVAL);
  CHECK(agt_net_expect(ps, peer, AGT_NET_GRAD, 7, NULL, bytes) == AGT_EINVAL);
  CHECK(agt_net_rejected(ps) == rejected + 1);

  zmq_close(raw);
  zmq_ctx_term(ctx);
  free(area);
  free(row);
  free(row2);
  agt_net_close(w);
  agt_net_close(ps);
}

int main(void) {
  enum { D = 1000 };
  decode();
  header_roundtrip();
  chunks();
  in_place();
  agt_net *ps = NULL, *w1 = NULL, *w2 = NULL;
  CHECK(agt_net_new(AGT_NET_SERVER, D * 4, 4, &ps) == AGT_OK);
  CHECK(agt_net_bind(ps, "tcp://127.0.0.1:*") == AGT_OK);
  char ep[1024];
  snprintf(ep, sizeof ep, "%s", agt_net_endpoint(ps));
  CHECK(strncmp(ep, "tcp://127.0.0.1:", 16) == 0);
  CHECK(agt_net_new(AGT_NET_CLIENT, D * 4, 0, &w1) == AGT_OK);
  CHECK(agt_net_new(AGT_NET_CLIENT, D * 4, 0, &w2) == AGT_OK);
  CHECK(agt_net_connect(w1, ep) == AGT_OK);
  CHECK(agt_net_connect(w2, ep) == AGT_OK);
  CHECK(agt_net_bind(w1, ep) == AGT_EINVAL);
  CHECK(agt_net_connect(w1, "udp://x") == AGT_EINVAL);

  /* HELLO from both, then one THETA to both, then a GRAD row back. */
  agt_net_msg m;
  int64_t peer[2] = { 0, 0 };
  CHECK(agt_net_send(w1, NULL, 1, AGT_NET_HELLO, 0, -1, 0, NULL, 0, NULL) == AGT_OK);
  CHECK(agt_net_send(w2, NULL, 1, AGT_NET_HELLO, 1, -1, 0, NULL, 0, NULL) == AGT_OK);
  for (int k = 0; k < 2; k++) {
    CHECK(next(ps, &m) == AGT_OK);
    CHECK(m.type == AGT_NET_HELLO && m.len == 0 && m.worker < 2);
    if (m.worker < 2) peer[m.worker] = m.peer;
  }
  CHECK(peer[0] > 0 && peer[1] > 0 && peer[0] != peer[1]);
  agt_net_set_session(ps, 0xabcdef12345ull);
  float theta[D], row[D];
  for (int i = 0; i < D; i++) theta[i] = (float)i * 0.5f - 3.0f;
  int8_t sent[3] = { 0, 0, 0 };
  int64_t to[3] = { peer[0], peer[1], 999 };
  CHECK(agt_net_send(ps, to, 3, AGT_NET_THETA, 0, 5, 0, theta, sizeof theta, sent) == AGT_OK);
  CHECK(sent[0] == 1 && sent[1] == 1 && sent[2] == 0);
  agt_net *ws[2] = { w1, w2 };
  for (int k = 0; k < 2; k++) {
    CHECK(next(ws[k], &m) == AGT_OK);
    CHECK(m.type == AGT_NET_THETA && m.step == 5 && m.session == 0xabcdef12345ull);
    CHECK(m.len == (int64_t)sizeof theta && memcmp(m.data, theta, sizeof theta) == 0);
    agt_net_set_session(ws[k], m.session);
  }
  for (int i = 0; i < D; i++) row[i] = -theta[i];
  CHECK(agt_net_send(w2, NULL, 1, AGT_NET_GRAD, 1, 5, 0.25, row, sizeof row, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK);
  CHECK(m.type == AGT_NET_GRAD && m.peer == peer[1] && m.worker == 1 && m.step == 5 && m.aux == 0.25);
  CHECK(m.len == (int64_t)sizeof row && memcmp(m.data, row, sizeof row) == 0);
  CHECK(agt_net_rejected(ps) == 0);

  /* Hostile frames from a raw ZeroMQ peer: each rejected and counted, then a good one passes. */
  void *ctx = zmq_ctx_new(), *raw = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
  CHECK(zmq_connect(raw, ep) == 0);
  unsigned char f[AGT_NET_HEADER + 16];
  memset(f, 0, sizeof f);
  const uint64_t S = 0xabcdef12345ull;
  struct { const char *what; size_t size; uint16_t version, type; uint32_t reserved; uint64_t session, len; } bad[] = {
    { "short", 10, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, 0 },
    { "magic", AGT_NET_HEADER, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, 0 },
    { "version", AGT_NET_HEADER, AGT_NET_VERSION - 1, AGT_NET_GRAD, 0, S, 0 },
    { "type", AGT_NET_HEADER, AGT_NET_VERSION, 99, 0, S, 0 },
    { "chunk beyond the payload", AGT_NET_HEADER, AGT_NET_VERSION, AGT_NET_GRAD, 1, S, 0 },
    { "length", AGT_NET_HEADER + 16, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, 15 },
    { "huge length", AGT_NET_HEADER + 16, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, UINT64_MAX },
    { "session", AGT_NET_HEADER + 16, AGT_NET_VERSION, AGT_NET_GRAD, 0, S + 1, 16 },
  };
  int nbad = (int)(sizeof bad / sizeof bad[0]);
  for (int k = 0; k < nbad; k++) {
    header(f, bad[k].version, bad[k].type, bad[k].reserved, bad[k].session, bad[k].len);
    if (k == 1) f[0] = 'X';
    CHECK(zmq_send(raw, f, bad[k].size, 0) == (int)bad[k].size);
    agt_status st = next(ps, &m);
    CHECK(st == AGT_NET_REJECTED);
    if (st != AGT_NET_REJECTED) fprintf(stderr, "  (the '%s' frame was not rejected: %d)\n", bad[k].what, st);
    CHECK(strlen(agt_last_error()) > 0 && m.peer > 0);
  }
  /* Several frames in one message. */
  header(f, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, 0);
  zmq_send(raw, f, AGT_NET_HEADER, ZMQ_SNDMORE);
  zmq_send(raw, f, AGT_NET_HEADER, 0);
  CHECK(next(ps, &m) == AGT_NET_REJECTED);
  CHECK(agt_net_rejected(ps) == nbad + 1);
  /* A good frame from the same peer still passes; a HELLO needs no session. */
  header(f, AGT_NET_VERSION, AGT_NET_HELLO, 0, 0, 16);
  CHECK(zmq_send(raw, f, AGT_NET_HEADER + 16, 0) == AGT_NET_HEADER + 16);
  CHECK(next(ps, &m) == AGT_OK);
  CHECK(m.type == AGT_NET_HELLO && m.len == 16);

  /* Above the cap (48 + 4D bytes): ZeroMQ drops the connection, nothing arrives. */
  static unsigned char big[AGT_NET_HEADER + D * 4 + 1];
  header(big, AGT_NET_VERSION, AGT_NET_GRAD, 0, S, D * 4 + 1);
  zmq_send(raw, big, sizeof big, 0);
  CHECK(agt_net_recv(ps, 300, &m) == AGT_NET_TIMEOUT);
  /* ... and the other workers are not disturbed. */
  CHECK(agt_net_send(w1, NULL, 1, AGT_NET_GRAD, 0, 6, 1.5, row, sizeof row, NULL) == AGT_OK);
  CHECK(next(ps, &m) == AGT_OK);
  CHECK(m.type == AGT_NET_GRAD && m.peer == peer[0] && m.step == 6);

  /* Bounded waits. */
  double t0 = now_s();
  CHECK(agt_net_recv(ps, 200, &m) == AGT_NET_TIMEOUT);
  double dt = now_s() - t0;
  CHECK(dt >= 0.15 && dt < 1.0);
  CHECK(agt_net_recv(ps, -1, &m) == AGT_EINVAL);
  CHECK(agt_net_send(ps, to, 1, 42, 0, 0, 0, NULL, 0, NULL) == AGT_EINVAL);
  agt_net *bad_net = NULL;
  CHECK(agt_net_new(AGT_NET_SERVER, -1, 4, &bad_net) == AGT_EINVAL && bad_net == NULL);
  CHECK(agt_net_new(7, 0, 4, &bad_net) == AGT_EINVAL);

  zmq_close(raw);
  zmq_ctx_term(ctx);
  agt_net_close(w1);
  agt_net_close(w2);
  agt_net_close(ps);
  curve();
  bound();
  return check_summary();
}
