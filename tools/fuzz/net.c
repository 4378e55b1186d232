/* net.c — the libFuzzer target "net" (build-fuzz/fuzz-net, built with src/net.c and
 * src/status.c under the fuzzer's coverage and ASAN/UBSan): the transport's frame decoder
 * (agt_net_decode_chunk, what agt_net_recv runs on every frame a peer sends, and agt_net_decode,
 * the MPI transport's, whole messages only) against a reference written from net.h's table, on
 * any bytes.
 *
 * The input's first byte chooses the receiver's state (session set or not, the payload cap,
 * chunks taken or not); the rest is the frame, copied into a buffer of exactly its size so that ASAN sees any read
 * past it. For every input: the decoder accepts exactly the frames the reference accepts, an
 * accepted frame's fields are the header's and its payload lies inside the frame, a refusal
 * comes with a message, and nothing is allocated (LSan and libFuzzer's malloc limit watch).
 *
 * Target "net-chunks" (the same binary, AGT_FUZZ_TARGET=net-chunks, as `make fuzz` runs it):
 * the input is a sequence of operations on a worker's socket that agt_net_take feeds (what agt_net_recv does with each frame, ZeroMQ aside), its payload
 * cap 3.25 chunks: frames (any header, a payload of the size its chunk should have, one byte
 * less or more, or a small one, filled with a pattern of the input), agt_net_expect into a
 * destination inside a guarded buffer (any type, step 0..6 or any, one of a few sizes) and
 * agt_net_unexpect. Against a reference of net.h's rules: a chunk is taken, completes a message
 * or is rejected exactly as the reference says; a message comes back with each chunk's bytes
 * as sent, in the destination exactly when its first chunk came while one was expected that
 * fits; unexpect says whether a chunk was written there; nothing is written outside the
 * destination (its guards) nor into it once ended. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"

#define FUZZ_SESSION 0x1122334455667788ull

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* net.h's frame, checked field by field: 1 when a receiver in this state accepts it. */
static int reference_accepts(const unsigned char *f, size_t size, uint64_t session, int64_t cap, int chunks) {
  if (size < 48) return 0;
  if (f[0] != 'A' || f[1] != 'G' || f[2] != 'T' || f[3] != 'N') return 0;
  if (le(f + 4, 2) != AGT_NET_VERSION) return 0;
  uint64_t type = le(f + 6, 2);
  if (type < AGT_NET_HELLO || type > AGT_NET_LAST_TYPE) return 0;
  uint64_t len = le(f + 40, 8), idx = le(f + 12, 4);
  if (len > (uint64_t)cap) return 0;
  if (!chunks && idx != 0) return 0;
  /* chunk idx holds the bytes [idx * CHUNK, min(len, (idx + 1) * CHUNK)): non-empty unless the
   * message is empty and idx 0; a whole message (no chunks) all len bytes */
  uint64_t start = idx * (uint64_t)AGT_NET_CHUNK, end = start + AGT_NET_CHUNK;
  if (end > len || !chunks) end = len;
  if (idx > 0 && start >= len) return 0;
  if (size - 48 != end - start) return 0;
  if (session != 0 && type != AGT_NET_HELLO && le(f + 16, 8) != session) return 0;
  return 1;
}

static void fail(const char *what, size_t size) {
  fprintf(stderr, "fuzz net: %s (a %zu-byte frame)\n", what, size);
  abort();
}

/* --- the assembly mode ------------------------------------------------------------------ */

enum { CAP = 3 * AGT_NET_CHUNK + AGT_NET_CHUNK / 4, GUARD = 64, MAXCHUNKS = 4 };
static const unsigned char CANARY = 0xC3;

static unsigned char pattern(unsigned fill, uint32_t idx) { return (unsigned char)(fill ^ (idx * 7u)); }

static int all_canary(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != CANARY) return 0;
  return 1;
}

/* Nothing written outside the destination, nor into it once ended (sealed). Checked before
 * the buffer is reset (expect, unexpect) and at the end: a stray write stays until then. */
static void guards(const unsigned char *area, int sealed, int64_t dlen, size_t n) {
  size_t used = dlen > 0 && !sealed ? (size_t)dlen : 0;
  if (!all_canary(area, GUARD) || !all_canary(area + GUARD + used, CAP + GUARD - used))
    fail(sealed ? "a write into an ended destination, or outside it" : "a write outside the destination", n);
}

static void assembly_mode(const unsigned char *in, size_t n) {
  static agt_net *net;
  static unsigned char *area;
  if (!net) {
    if (agt_net_new(AGT_NET_CLIENT, CAP, 0, &net) != AGT_OK || !(area = malloc(CAP + 2 * GUARD)))
      fail("cannot set up the worker socket", n);
  }
  unsigned char *dest = area + GUARD;
  /* from a clean state: no destination, no message under way (a whole one drops it) */
  memset(area, CANARY, CAP + 2 * GUARD);
  agt_net_unexpect(net, 0);
  unsigned char hello[48];
  agt_net_header(hello, AGT_NET_HELLO, 0, 0, -1, 0, 0);
  agt_net_msg m;
  if (agt_net_take(net, 0, hello, sizeof hello, &m) != AGT_OK) fail("a HELLO not taken", n);
  /* the reference: the message under way (next chunk, its header, its chunks' fills), whether
   * it goes to the destination, and the destination's state */
  uint32_t ref_next = 0;
  unsigned char ref_head[48];
  unsigned fills[MAXCHUNKS];
  int in_dest = 0, armed = 0, touched = 0, sealed = 1; /* sealed: dest must stay all canary */
  int dtype = 0;
  int64_t dstep = 0, dlen = -1;
  size_t at = 0;
  int frames = 0;
  while (at < n) {
    unsigned op = in[at++] % 3;
    if (op == 1) { /* expect */
      if (n - at < 3) break;
      static const int64_t lens[5] = { 0, 100, AGT_NET_CHUNK, AGT_NET_CHUNK + 100, CAP };
      int type = 1 + in[at] % 9; /* 9: unknown, refused */
      int64_t step = in[at + 1] % 8 == 7 ? INT64_MIN : in[at + 1] % 8;
      int64_t len = lens[in[at + 2] % 5] + (in[at + 2] / 5 % 2); /* +1 over CAP: refused */
      at += 3;
      int ok = type <= AGT_NET_LAST_TYPE && len <= CAP;
      agt_status st = agt_net_expect(net, 0, type, step, dest, len);
      if ((st == AGT_OK) != ok) fail("agt_net_expect accepted or refused wrongly", n);
      if (!ok) continue;
      guards(area, sealed, dlen, n);
      memset(area, CANARY, CAP + 2 * GUARD);
      in_dest = 0, armed = 1, touched = 0, sealed = 0;
      dtype = type, dstep = step, dlen = len;
      continue;
    }
    if (op == 2) { /* unexpect */
      if (agt_net_unexpect(net, 0) != touched) fail("agt_net_unexpect misreports the destination", n);
      guards(area, sealed, dlen, n);
      in_dest = 0, armed = 0, touched = 0, sealed = 1;
      memset(area, CANARY, CAP + 2 * GUARD);
      continue;
    }
    /* a frame: its header, a size mode and a fill (at most 24 an input: a chunk is 1 MiB) */
    if (n - at < 50 || ++frames > 24) break;
    const unsigned char *h = in + at;
    unsigned mode = in[at + 48], fill = in[at + 49];
    at += 50;
    uint64_t len = le(h + 40, 8), idx = le(h + 12, 4);
    uint64_t piece = 0;
    if (len <= CAP && (idx == 0 || idx * AGT_NET_CHUNK < len)) {
      uint64_t off = idx * AGT_NET_CHUNK;
      piece = len - off < AGT_NET_CHUNK ? len - off : AGT_NET_CHUNK;
    }
    size_t psize = mode % 4 == 0 ? piece : mode % 4 == 1 ? (piece ? piece - 1 : 0) : mode % 4 == 2 ? piece + 1 : mode / 4;
    unsigned char *frame = malloc(48 + psize);
    if (!frame) return;
    memcpy(frame, h, 48);
    memset(frame + 48, pattern(fill, (uint32_t)idx), psize);
    int accepted = reference_accepts(frame, 48 + psize, 0, CAP, 1);
    /* the reference's verdict: rejected, taken (message incomplete), or complete */
    int want; /* 0 rejected, 1 incomplete, 2 complete */
    unsigned char head[48];
    memcpy(head, h, 48);
    memset(head + 12, 0, 4);
    if (!accepted) {
      want = 0;
    } else if (idx == 0) {
      ref_next = 0;
      in_dest = armed && (int)le(h + 6, 2) == dtype && (dstep == INT64_MIN || (int64_t)le(h + 24, 8) == dstep) &&
                (int64_t)len == dlen;
      memcpy(ref_head, head, 48);
      fills[0] = fill;
      want = piece == len ? 2 : 1;
      if (want == 1) ref_next = 1;
    } else if (ref_next == idx && memcmp(ref_head, head, 48) == 0) {
      fills[idx] = fill;
      want = (idx + 1) * AGT_NET_CHUNK >= len ? 2 : 1;
      ref_next = want == 1 ? (uint32_t)idx + 1 : 0;
    } else {
      ref_next = 0, in_dest = 0;
      want = 0;
    }
    if (want && in_dest) touched = 1;
    agt_clear_error();
    agt_status st = agt_net_take(net, 0, frame, 48 + psize, &m);
    int got = st == AGT_OK ? 2 : st == AGT_NET_TIMEOUT ? 1 : st == AGT_NET_REJECTED ? 0 : -1;
    if (got != want) {
      fprintf(stderr, "fuzz net: chunk %llu of %llu bytes: taken as %d, the reference says %d (%s)\n",
              (unsigned long long)idx, (unsigned long long)len, got, want, agt_last_error());
      fail("agt_net_take and the reference differ", n);
    }
    if (got == 0 && strcmp(agt_last_error(), "no error") == 0) fail("a rejection without a message", n);
    if (got == 2) {
      if ((m.data == dest) != in_dest) fail("a message in the destination, or not, against the reference", n);
      if ((uint64_t)m.len != len || m.type != (int)le(h + 6, 2)) fail("a message's fields differ from its header", n);
      const unsigned char *d = m.data;
      for (uint64_t c = 0; c * AGT_NET_CHUNK < len; c++) {
        uint64_t off = c * AGT_NET_CHUNK, p = len - off < AGT_NET_CHUNK ? len - off : AGT_NET_CHUNK;
        for (uint64_t i = 0; i < p; i++)
          if (d[off + i] != pattern(fills[c], (uint32_t)c)) fail("a message's bytes differ from its chunks'", n);
      }
      if (in_dest) armed = 0, in_dest = 0; /* once */
    }
    free(frame);
  }
  guards(area, sealed, dlen, n);
  agt_net_unexpect(net, 0);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  static int chunks_target = -1;
  if (chunks_target < 0) {
    const char *t = getenv("AGT_FUZZ_TARGET");
    chunks_target = t && strcmp(t, "net-chunks") == 0;
  }
  if (chunks_target) {
    assembly_mode(data, size);
    return 0;
  }
  if (size < 1) return 0;
  static const int64_t caps[4] = { 0, 16, 1024, INT64_MAX - 48 };
  uint64_t session = (data[0] & 1) ? FUZZ_SESSION : 0;
  int64_t cap = caps[(data[0] >> 1) & 3];
  int chunks = (data[0] >> 3) & 1;
  size_t n = size - 1;
  unsigned char *frame = malloc(n ? n : 1);
  if (!frame) return 0;
  memcpy(frame, data + 1, n);

  agt_net_msg m;
  memset(&m, 0xA5, sizeof m);
  m.peer = 77;
  m.auth = 5;
  agt_clear_error();
  uint32_t idx = 0xDEADBEEF;
  agt_status st = chunks ? agt_net_decode_chunk(frame, n, session, cap, &m, &idx)
                         : agt_net_decode(frame, n, session, cap, &m);
  int want = reference_accepts(frame, n, session, cap, chunks);
  if (st != AGT_OK && st != AGT_NET_REJECTED) fail("a status other than OK or REJECTED", n);
  if ((st == AGT_OK) != want) fail(want ? "the decoder refused a well-formed frame" : "the decoder accepted a bad frame", n);
  if (st == AGT_OK) {
    if (m.type != (int)le(frame + 6, 2) || m.worker != (uint32_t)le(frame + 8, 4) ||
        m.session != le(frame + 16, 8) || m.step != (int64_t)le(frame + 24, 8) ||
        m.len != (int64_t)le(frame + 40, 8) || m.data != frame + 48 ||
        (chunks && idx != (uint32_t)le(frame + 12, 4)))
      fail("an accepted frame's fields differ from its header", n);
    uint64_t aux = le(frame + 32, 8), got;
    memcpy(&got, &m.aux, 8);
    if (aux != got) fail("aux differs from the header's", n);
    if (m.peer != 77 || m.auth != 5) fail("the decoder wrote peer or auth", n);
    /* the payload is readable to its end (ASAN checks the bytes) */
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < n - 48; i++) sum ^= ((const unsigned char *)m.data)[i];
    (void)sum;
  } else if (strcmp(agt_last_error(), "no error") == 0) {
    fail("a refusal without a message", n);
  }
  free(frame);
  return 0;
}
