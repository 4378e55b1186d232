/* test_udp.c — lossy rows over UDP on 127.0.0.1: a row sent whole arrives bit for bit; a
 * chunk the sender leaves out leaves NaN at exactly its own offsets and is counted lost; a
 * duplicate, a chunk of another step, a chunk after the step closed, a forged or altered
 * chunk, a chunk under a stale key, of another session or of a worker without a key, and
 * garbage, each write nothing and are counted where they belong; bad arguments are refused. */
#include "check.h"
#include "udp.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { D = 1000, CHUNK = 64, W = 3 }; /* 16 floats a chunk: 63 chunks, the last of 8 floats */

static void sleep_ms(int ms) {
  struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
  nanosleep(&t, NULL);
}

static int raw_socket(int port, int *bound) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  if (bound) {
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    *bound = ntohs(a.sin_port);
  } else {
    connect(fd, (struct sockaddr *)&a, sizeof a);
  }
  return fd;
}

static int same_bits(const float *a, const float *b, int n) { return memcmp(a, b, (size_t)n * 4) == 0; }

int main(void) {
  static float rows[W * D], sent0[D], sent1[D];
  for (int i = 0; i < D; i++) {
    sent0[i] = (float)i * 0.5f - 3.0f;
    sent1[i] = -(float)i / 7.0f;
  }
  sent0[3] = INFINITY; /* non-finite values travel as they are */
  sent1[999] = -INFINITY;

  agt_udp *u = NULL;
  CHECK(agt_udp_server("127.0.0.1", 0, W, D, 6, 1 << 20, &u) == AGT_EINVAL);      /* not a multiple of 4 */
  CHECK(agt_udp_server("127.0.0.1", 0, W, D, AGT_UDP_MAX_CHUNK + 4, 1 << 20, &u) == AGT_EINVAL);
  CHECK(agt_udp_server("127.0.0.1", 0, W, 0, CHUNK, 1 << 20, &u) == AGT_EINVAL);
  CHECK(agt_udp_server("127.0.0.1", 0, 0, D, CHUNK, 1 << 20, &u) == AGT_EINVAL);
  CHECK(agt_udp_server("127.0.0.1", 70000, W, D, CHUNK, 1 << 20, &u) == AGT_EINVAL);
  CHECK(agt_udp_server("127.0.0.1", 0, W, D, CHUNK, 1 << 20, &u) == AGT_OK);
  int port = agt_udp_port(u);
  CHECK(port > 0);
  CHECK(agt_udp_chunks(u) == 63);
  CHECK(agt_udp_rcvbuf(u) > 0);
  uint64_t session = 0x1234567890abULL;
  agt_udp_set_session(u, session);
  uint8_t key0[AGT_UDP_KEY], key1[AGT_UDP_KEY], stale[AGT_UDP_KEY], other[AGT_UDP_KEY];
  CHECK(agt_udp_new_key(u, 3, key0) == AGT_EINVAL);
  CHECK(agt_udp_new_key(u, 0, stale) == AGT_OK);
  CHECK(agt_udp_new_key(u, 0, key0) == AGT_OK); /* worker 0 configured again: a new key */
  CHECK(memcmp(stale, key0, AGT_UDP_KEY) != 0);
  CHECK(agt_udp_new_key(u, 1, key1) == AGT_OK);
  memset(other, 7, sizeof other);

  agt_udp *c0 = NULL, *c1 = NULL, *cstale = NULL, *cforge = NULL, *c2 = NULL, *csess = NULL;
  CHECK(agt_udp_client("127.0.0.1", 0, 0, D, CHUNK, session, key0, &c0) == AGT_EINVAL);
  CHECK(agt_udp_client("*", port, 0, D, CHUNK, session, key0, &c0) == AGT_EINVAL);
  CHECK(agt_udp_client("127.0.0.1", port, 0, D, CHUNK, session, key0, &c0) == AGT_OK);
  CHECK(agt_udp_client("127.0.0.1", port, 1, D, CHUNK, session, key1, &c1) == AGT_OK);
  CHECK(agt_udp_client("127.0.0.1", port, 0, D, CHUNK, session, stale, &cstale) == AGT_OK);
  CHECK(agt_udp_client("127.0.0.1", port, 1, D, CHUNK, session, other, &cforge) == AGT_OK);
  CHECK(agt_udp_client("127.0.0.1", port, 2, D, CHUNK, session, other, &c2) == AGT_OK);
  CHECK(agt_udp_client("127.0.0.1", port, 1, D, CHUNK, session + 1, key1, &csess) == AGT_OK);
  CHECK(agt_udp_send(c0, 5, sent0, 1.5, 9, NULL) == AGT_EINVAL);
  CHECK(agt_udp_send(c0, 5, sent0, NAN, 9, NULL) == AGT_EINVAL);

  /* A datagram of worker 1, step 5, captured on a socket of our own to be altered and replayed. */
  int cap_port = 0;
  int cap = raw_socket(0, &cap_port);
  agt_udp *ccap = NULL;
  CHECK(agt_udp_client("127.0.0.1", cap_port, 1, D, CHUNK, session, key1, &ccap) == AGT_OK);
  CHECK(agt_udp_send(ccap, 5, sent1, 0, 0, NULL) == AGT_OK);
  unsigned char dg[2048];
  ssize_t dl = recv(cap, dg, sizeof dg, 0);
  CHECK(dl == AGT_UDP_HEADER + CHUNK + AGT_UDP_TAG);
  int out = raw_socket(port, NULL);

  /* Before any step is open: authentic chunks are late, nothing is written. */
  CHECK(agt_udp_send(c1, 4, sent1, 0, 0, NULL) == AGT_OK);
  sleep_ms(100);

  for (int i = 0; i < W * D; i++) rows[i] = 42.0f;
  CHECK(agt_udp_open(u, 5, rows) == AGT_OK);
  int opened_nan = 1;
  for (int i = 0; i < W * D; i++) if (!isnan(rows[i])) opened_nan = 0;
  CHECK(opened_nan);
  int64_t nd = 0;
  CHECK(agt_udp_send(c0, 5, sent0, 0.3, 9, &nd) == AGT_OK);        /* worker 0: ~30% left out */
  CHECK(agt_udp_send(c1, 5, sent1, 0, 0, NULL) == AGT_OK);         /* worker 1: whole */
  CHECK(agt_udp_send(c1, 5, sent0, 0, 0, NULL) == AGT_OK);         /* ... then 63 duplicates (another row!) */
  CHECK(agt_udp_send(c1, 4, sent0, 0, 0, NULL) == AGT_OK);         /* 63 of step 4: late */
  CHECK(agt_udp_send(cstale, 5, sent1, 0, 0, NULL) == AGT_OK);     /* 63 under worker 0's old key */
  CHECK(agt_udp_send(cforge, 5, sent0, 0, 0, NULL) == AGT_OK);     /* 63 claiming worker 1, wrong key */
  CHECK(agt_udp_send(csess, 5, sent0, 0, 0, NULL) == AGT_OK);      /* 63 of another session */
  CHECK(agt_udp_send(c2, 5, sent0, 0, 0, NULL) == AGT_OK);         /* 63 of worker 2, which has no key */
  /* altered copies of the captured chunk: payload, tag, offset, worker, count, length */
  unsigned char bad[2048];
  int nbad = 0;
  for (int k = 0; k < 6; k++) {
    memcpy(bad, dg, (size_t)dl);
    size_t bl = (size_t)dl;
    uint64_t off = 16;
    uint32_t two = 2;
    if (k == 0) bad[AGT_UDP_HEADER + 5] ^= 1;
    if (k == 1) bad[dl - 1] ^= 0x80;
    if (k == 2) memcpy(bad + 40, &off, 8);
    if (k == 3) memcpy(bad + 8, &two, 4);      /* worker 2: no key there */
    if (k == 4) { uint32_t c = 15; memcpy(bad + 12, &c, 4); }
    if (k == 5) bl--;
    CHECK(send(out, bad, bl, 0) == (ssize_t)bl);
    nbad++;
  }
  /* garbage: too short, no magic, a worker index out of range */
  CHECK(send(out, "AGTU", 4, 0) == 4);
  memcpy(bad, dg, (size_t)dl);
  bad[0] = 'X';
  CHECK(send(out, bad, (size_t)dl, 0) == dl);
  memcpy(bad, dg, (size_t)dl);
  uint32_t big = 77;
  memcpy(bad + 8, &big, 4);
  CHECK(send(out, bad, (size_t)dl, 0) == dl);

  uint8_t want[W] = { 1, 1, 1 };
  int64_t lost[W];
  int complete = -1;
  CHECK(agt_udp_finish(u, want, 600, lost, &complete) == AGT_OK);
  CHECK(complete == 1);
  CHECK(nd > 5 && nd < 40);
  CHECK(lost[0] == nd && lost[1] == 0 && lost[2] == 63);

  /* Row 0: NaN exactly at the left-out chunks' offsets, the sent values bit for bit elsewhere. */
  int exact = 1;
  for (int c = 0; c < 63; c++) {
    int lo = c * 16, hi = lo + 16 > D ? D : lo + 16;
    int dropped = agt_udp_dropped(9, 0, 5, c, 0.3);
    for (int i = lo; i < hi; i++) {
      if (dropped ? !isnan(rows[i]) : memcmp(&rows[i], &sent0[i], 4) != 0) exact = 0;
    }
  }
  CHECK(exact);
  CHECK(same_bits(rows + D, sent1, D)); /* row 1: the first copy, untouched by duplicates or forgeries */
  int all_nan = 1;
  for (int i = 0; i < D; i++) if (!isnan(rows[2 * D + i])) all_nan = 0;
  CHECK(all_nan);

  agt_udp_stats s0, s1, s2, sx;
  CHECK(agt_udp_stats_of(u, 0, &s0) == AGT_OK);
  CHECK(agt_udp_stats_of(u, 1, &s1) == AGT_OK);
  CHECK(agt_udp_stats_of(u, 2, &s2) == AGT_OK);
  CHECK(agt_udp_stats_of(u, -1, &sx) == AGT_OK);
  CHECK(agt_udp_stats_of(u, 3, &sx) == AGT_EINVAL);
  CHECK(agt_udp_stats_of(u, -1, &sx) == AGT_OK);
  CHECK(s0.received == 63 - nd && s0.lost == nd && s0.rejected == 63 && s0.late == 0 && s0.duplicate == 0);
  CHECK(s1.received == 63 && s1.lost == 0 && s1.duplicate == 63 && s1.late == 63 + 63);
  CHECK(s1.rejected == 63 + 63 + (nbad - 1)); /* forged, other session, altered (less k = 3) */
  CHECK(s2.rejected == 63 + 1 && s2.received == 0 && s2.lost == 63);
  CHECK(sx.rejected == 3);
  CHECK(agt_udp_kernel_drops(u) == 0);

  /* After the step closed: nothing is written, authentic chunks are late. */
  for (int i = 0; i < D; i++) rows[D + i] = 0;
  CHECK(agt_udp_send(c1, 5, sent0, 0, 0, NULL) == AGT_OK);
  CHECK(send(out, dg, (size_t)dl, 0) == dl); /* a replay of an authentic chunk */
  sleep_ms(300);
  int zero = 1;
  for (int i = 0; i < D; i++) if (rows[D + i] != 0) zero = 0;
  CHECK(zero);
  CHECK(agt_udp_stats_of(u, 1, &s1) == AGT_OK);
  CHECK(s1.late == 63 + 63 + 64);

  /* The next step: a replay of step 5's chunk is late; a whole row completes the wait early. */
  CHECK(agt_udp_open(u, 6, rows) == AGT_OK);
  CHECK(send(out, dg, (size_t)dl, 0) == dl);
  CHECK(agt_udp_send(c1, 6, sent1, 0, 0, NULL) == AGT_OK);
  uint8_t want1[W] = { 0, 1, 0 };
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(agt_udp_finish(u, want1, 5000, lost, &complete) == AGT_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK(complete == 1 && lost[0] == 0 && lost[1] == 0 && lost[2] == 0);
  CHECK((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec) < 4.0);
  CHECK(same_bits(rows + D, sent1, D));
  CHECK(agt_udp_stats_of(u, 1, &s1) == AGT_OK);
  CHECK(s1.late == 63 + 63 + 64 + 1 && s1.received == 126);
  CHECK(agt_udp_stats_of(u, 0, &s0) == AGT_OK);
  CHECK(s0.lost == nd); /* not wanted at step 6: nothing added */

  /* 3000 mutations of an authentic chunk (bytes flipped, lengths cut or grown, fields
   * replaced): none is written, each is counted once, and a whole row still gets through. */
  CHECK(agt_udp_open(u, 5, rows) == AGT_OK);
  agt_udp_stats b0, b1, b2, bx, a0, a1, a2, ax;
  agt_udp_stats_of(u, 0, &b0);
  agt_udp_stats_of(u, 1, &b1);
  agt_udp_stats_of(u, 2, &b2);
  agt_udp_stats_of(u, -1, &bx);
  uint64_t x = 88172645463325252ULL;
  int nsent = 0;
  for (int k = 0; k < 3000; k++) {
    memcpy(bad, dg, (size_t)dl);
    size_t bl = (size_t)dl;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    int flips = 1 + (int)(x % 4);
    for (int j = 0; j < flips; j++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      bad[x % (uint64_t)dl] ^= (unsigned char)(1u << (x >> 60 & 7));
    }
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    if (x % 5 == 0) bl = (size_t)(x >> 20) % sizeof bad;
    if (bl == 0) bl = 1;
    if (send(out, bad, bl, 0) == (ssize_t)bl) nsent++;
    if (k % 64 == 63) sleep_ms(2); /* the receive thread keeps up (no kernel drops) */
  }
  CHECK(agt_udp_send(c1, 5, sent1, 0, 0, NULL) == AGT_OK);
  uint8_t want2[W] = { 0, 1, 0 };
  CHECK(agt_udp_finish(u, want2, 3000, lost, &complete) == AGT_OK);
  CHECK(complete == 1 && lost[1] == 0);
  CHECK(same_bits(rows + D, sent1, D));
  int untouched = 1;
  for (int i = 0; i < D; i++) if (!isnan(rows[i]) || !isnan(rows[2 * D + i])) untouched = 0;
  CHECK(untouched);
  agt_udp_stats_of(u, 0, &a0);
  agt_udp_stats_of(u, 1, &a1);
  agt_udp_stats_of(u, 2, &a2);
  agt_udp_stats_of(u, -1, &ax);
  CHECK(a1.received - b1.received == 63);
  int64_t counted = (a0.rejected - b0.rejected) + (a1.rejected - b1.rejected) + (a2.rejected - b2.rejected) +
                    (ax.rejected - bx.rejected) + (a0.received - b0.received) + (a1.received - b1.received - 63) +
                    (a0.late - b0.late) + (a1.late - b1.late) + (a1.duplicate - b1.duplicate);
  CHECK(counted == nsent);
  CHECK(a1.received - b1.received == 63 && a0.received == b0.received);
  CHECK(agt_udp_kernel_drops(u) == 0);

  /* Paced at 100 kB/s, a row of 63 datagrams of 128 bytes (8064 bytes) takes at least 80 ms. */
  CHECK(agt_udp_set_rate(u, 1e6) == AGT_EINVAL); /* the PS's socket sends nothing */
  CHECK(agt_udp_set_rate(c1, -1) == AGT_EINVAL);
  CHECK(agt_udp_set_rate(c1, INFINITY) == AGT_EINVAL);
  CHECK(agt_udp_set_rate(c1, 1e5) == AGT_OK);
  CHECK(agt_udp_open(u, 7, rows) == AGT_OK);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(agt_udp_send(c1, 7, sent0, 0, 0, NULL) == AGT_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec) >= 0.080);
  CHECK(agt_udp_finish(u, want1, 3000, lost, &complete) == AGT_OK);
  CHECK(complete == 1 && same_bits(rows + D, sent0, D));
  CHECK(agt_udp_set_rate(c1, 0) == AGT_OK);

  /* The drop draw: reproducible, about the rate asked, none at 0 and all at 1. */
  int64_t k = 0, k0 = 0, k1 = 0, same = 1;
  for (int64_t c = 0; c < 20000; c++) {
    int a = agt_udp_dropped(3, 1, 7, c, 0.1);
    k += a;
    same &= a == agt_udp_dropped(3, 1, 7, c, 0.1);
    k0 += agt_udp_dropped(3, 1, 7, c, 0);
    k1 += agt_udp_dropped(3, 1, 7, c, 1);
  }
  CHECK(same && k > 1800 && k < 2200 && k0 == 0 && k1 == 20000);
  CHECK(agt_udp_dropped(3, 1, 7, 5, 0.5) != agt_udp_dropped(3, 1, 8, 5, 0.5) ||
        agt_udp_dropped(3, 1, 7, 6, 0.5) != agt_udp_dropped(3, 1, 8, 6, 0.5) ||
        agt_udp_dropped(3, 1, 7, 7, 0.5) != agt_udp_dropped(3, 1, 8, 7, 0.5) ||
        agt_udp_dropped(3, 1, 7, 8, 0.5) != agt_udp_dropped(3, 1, 8, 8, 0.5));

  close(cap);
  close(out);
  agt_udp_close(ccap);
  agt_udp_close(c0);
  agt_udp_close(c1);
  agt_udp_close(cstale);
  agt_udp_close(cforge);
  agt_udp_close(c2);
  agt_udp_close(csess);
  agt_udp_close(u);
  agt_udp_close(NULL);
  return check_summary();
}
