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
 * comes with a message, and nothing is allocated (LSan and libFuzzer's malloc limit watch). */
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

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
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
