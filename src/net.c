/* net.c — the PS/worker transport over ZeroMQ (see net.h for the frame format and bounds).
 *
 * The header is packed and read field by field with memcpy (no struct overlay, so neither
 * alignment nor padding can differ between builds). A received frame stays in n->cur until the
 * next receive, so the caller copies a row straight from ZeroMQ's buffer into its own. */
#include "net.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the frame format is little-endian");

static const unsigned char MAGIC[4] = { 'A', 'G', 'T', 'N' };

#define ID_MAX 256 /* a ZeroMQ routing id is at most 255 bytes */

typedef struct {
  unsigned char id[ID_MAX];
  size_t id_len;
  int64_t peer;     /* 0: free slot */
  uint64_t heard;   /* n->clock when last heard from, for forgetting the stalest */
} peer_slot;

struct agt_net {
  void *ctx, *sock;
  int role;
  int64_t max_payload;
  uint64_t session;
  int64_t rejected;
  peer_slot *peers;
  int max_peers;
  int64_t next_peer;
  uint64_t clock;
  zmq_msg_t cur;
  int has_cur;
  char endpoint[1024];
};

static agt_status zfail(const char *what) {
  return AGT_FAIL(AGT_ENET, "%s: %s", what, zmq_strerror(zmq_errno()));
}

const char *agt_net_zmq_version(void) {
  static char v[32];
  int a, b, c;
  zmq_version(&a, &b, &c);
  snprintf(v, sizeof v, "%d.%d.%d", a, b, c);
  return v;
}

agt_status agt_net_new(int role, int64_t max_payload, int max_peers, agt_net **out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "agt_net_new: out is NULL");
  *out = NULL;
  if (role != AGT_NET_SERVER && role != AGT_NET_CLIENT)
    return AGT_FAIL(AGT_EINVAL, "agt_net_new: role must be AGT_NET_SERVER or AGT_NET_CLIENT, got %d", role);
  if (max_payload < 0 || max_payload > INT64_MAX - AGT_NET_HEADER)
    return AGT_FAIL(AGT_EINVAL, "agt_net_new: max_payload must be >= 0, got %lld", (long long)max_payload);
  if (role == AGT_NET_SERVER && (max_peers < 1 || max_peers > 1 << 20))
    return AGT_FAIL(AGT_EINVAL, "agt_net_new: max_peers must be in [1, 2^20], got %d", max_peers);
  if (role == AGT_NET_CLIENT) max_peers = 0;
  agt_net *n = calloc(1, sizeof *n);
  if (!n) return AGT_FAIL(AGT_ENOMEM, "agt_net_new: out of memory");
  n->role = role;
  n->max_payload = max_payload;
  n->max_peers = max_peers;
  n->next_peer = 1;
  if (max_peers > 0 && !(n->peers = calloc((size_t)max_peers, sizeof *n->peers))) {
    free(n);
    return AGT_FAIL(AGT_ENOMEM, "agt_net_new: out of memory for %d peers", max_peers);
  }
  agt_status st = AGT_OK;
  if (!(n->ctx = zmq_ctx_new())) { st = zfail("zmq_ctx_new"); goto fail; }
  zmq_ctx_set(n->ctx, ZMQ_IO_THREADS, 1);
  if (!(n->sock = zmq_socket(n->ctx, role == AGT_NET_SERVER ? ZMQ_ROUTER : ZMQ_DEALER))) {
    st = zfail("zmq_socket");
    goto fail;
  }
  int64_t maxmsg = AGT_NET_HEADER + max_payload;
  int zero = 0, one = 1, handshake_ms = 10000, hb_ivl = 1000, hb_timeout = 5000;
  if (zmq_setsockopt(n->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
      zmq_setsockopt(n->sock, ZMQ_LINGER, &zero, sizeof zero) ||
      zmq_setsockopt(n->sock, ZMQ_HANDSHAKE_IVL, &handshake_ms, sizeof handshake_ms) ||
      zmq_setsockopt(n->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl) ||
      zmq_setsockopt(n->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout)) {
    st = zfail("zmq_setsockopt");
    goto fail;
  }
  /* A message to a peer that is not connected fails at once instead of vanishing. */
  if (role == AGT_NET_SERVER && zmq_setsockopt(n->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one)) {
    st = zfail("zmq_setsockopt(ZMQ_ROUTER_MANDATORY)");
    goto fail;
  }
  *out = n;
  return AGT_OK;
fail:
  agt_net_close(n);
  return st;
}

void agt_net_close(agt_net *n) {
  if (!n) return;
  if (n->has_cur) zmq_msg_close(&n->cur);
  if (n->sock) zmq_close(n->sock);
  if (n->ctx) zmq_ctx_term(n->ctx);
  free(n->peers);
  free(n);
}

static agt_status check_endpoint(const char *endpoint, const char *fn) {
  if (!endpoint || strncmp(endpoint, "tcp://", 6) != 0 || strlen(endpoint) > 1000)
    return AGT_FAIL(AGT_EINVAL, "%s: expects an endpoint 'tcp://host:port', got '%s'", fn,
                    endpoint ? endpoint : "(null)");
  return AGT_OK;
}

agt_status agt_net_bind(agt_net *n, const char *endpoint) {
  AGT_TRY(check_endpoint(endpoint, "agt_net_bind"));
  if (n->role != AGT_NET_SERVER) return AGT_FAIL(AGT_EINVAL, "agt_net_bind: only the PS binds");
  if (zmq_bind(n->sock, endpoint))
    return AGT_FAIL(AGT_ENET, "cannot listen on %s: %s", endpoint, zmq_strerror(zmq_errno()));
  return AGT_OK;
}

agt_status agt_net_connect(agt_net *n, const char *endpoint) {
  AGT_TRY(check_endpoint(endpoint, "agt_net_connect"));
  if (n->role != AGT_NET_CLIENT) return AGT_FAIL(AGT_EINVAL, "agt_net_connect: only a worker connects");
  if (zmq_connect(n->sock, endpoint))
    return AGT_FAIL(AGT_ENET, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
  return AGT_OK;
}

const char *agt_net_endpoint(agt_net *n) {
  size_t sz = sizeof n->endpoint;
  if (zmq_getsockopt(n->sock, ZMQ_LAST_ENDPOINT, n->endpoint, &sz)) n->endpoint[0] = 0;
  return n->endpoint;
}

void agt_net_set_session(agt_net *n, uint64_t session) { n->session = session; }

int64_t agt_net_rejected(const agt_net *n) { return n->rejected; }

/* --- peers ------------------------------------------------------------------------------- */

static peer_slot *slot_of_peer(agt_net *n, int64_t peer) {
  for (int i = 0; i < n->max_peers; i++)
    if (n->peers[i].peer == peer && peer != 0) return &n->peers[i];
  return NULL;
}

/* The peer id of a routing id, remembering it (forgetting the stalest peer when full). */
static int64_t peer_of_id(agt_net *n, const void *id, size_t len) {
  peer_slot *free_slot = NULL, *stalest = NULL;
  n->clock++;
  for (int i = 0; i < n->max_peers; i++) {
    peer_slot *s = &n->peers[i];
    if (s->peer == 0) {
      if (!free_slot) free_slot = s;
      continue;
    }
    if (s->id_len == len && memcmp(s->id, id, len) == 0) {
      s->heard = n->clock;
      return s->peer;
    }
    if (!stalest || s->heard < stalest->heard) stalest = s;
  }
  peer_slot *s = free_slot ? free_slot : stalest;
  memcpy(s->id, id, len);
  s->id_len = len;
  s->peer = n->next_peer++;
  s->heard = n->clock;
  return s->peer;
}

/* --- frames ------------------------------------------------------------------------------ */

static void put_header(unsigned char *h, int type, uint32_t worker, uint64_t session, int64_t step,
                       double aux, int64_t len) {
  uint16_t version = AGT_NET_VERSION, t = (uint16_t)type;
  uint32_t zero = 0;
  uint64_t ulen = (uint64_t)len;
  memcpy(h, MAGIC, 4);
  memcpy(h + 4, &version, 2);
  memcpy(h + 6, &t, 2);
  memcpy(h + 8, &worker, 4);
  memcpy(h + 12, &zero, 4);
  memcpy(h + 16, &session, 8);
  memcpy(h + 24, &step, 8);
  memcpy(h + 32, &aux, 8);
  memcpy(h + 40, &ulen, 8);
}

agt_status agt_net_send(agt_net *n, const int64_t *peers, int npeers, int type, uint32_t worker,
                        int64_t step, double aux, const void *data, int64_t len, int8_t *sent) {
  if (!n) return AGT_FAIL(AGT_EINVAL, "agt_net_send: no socket");
  if (type < AGT_NET_HELLO || type > AGT_NET_ERROR)
    return AGT_FAIL(AGT_EINVAL, "agt_net_send: unknown message type %d", type);
  if (len < 0 || (len > 0 && !data))
    return AGT_FAIL(AGT_EINVAL, "agt_net_send: bad payload (len %lld)", (long long)len);
  if (n->role == AGT_NET_SERVER ? (npeers < 0 || (npeers > 0 && !peers)) : npeers != 1)
    return AGT_FAIL(AGT_EINVAL, "agt_net_send: bad peer list (%d peers)", npeers);
  zmq_msg_t body;
  if (zmq_msg_init_size(&body, (size_t)(AGT_NET_HEADER + len)))
    return AGT_FAIL(AGT_ENOMEM, "agt_net_send: no memory for a %lld-byte message", (long long)len);
  unsigned char *b = zmq_msg_data(&body);
  put_header(b, type, worker, n->session, step, aux, len);
  if (len > 0) memcpy(b + AGT_NET_HEADER, data, (size_t)len);
  agt_status st = AGT_OK;
  for (int i = 0; i < npeers; i++) {
    if (sent) sent[i] = 0;
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &body); /* reference-counted: the payload is not copied again */
    if (n->role == AGT_NET_SERVER) {
      peer_slot *s = slot_of_peer(n, peers[i]);
      if (!s || zmq_send(n->sock, s->id, s->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&copy);
        continue; /* forgotten, gone (EHOSTUNREACH) or full (EAGAIN): not sent */
      }
    }
    if (zmq_msg_send(&copy, n->sock, ZMQ_DONTWAIT) < 0) {
      int e = zmq_errno();
      zmq_msg_close(&copy);
      if (e == EAGAIN || e == EHOSTUNREACH) continue;
      st = zfail("zmq_msg_send");
      break;
    }
    if (sent) sent[i] = 1;
  }
  zmq_msg_close(&body);
  return st;
}

static agt_status reject(agt_net *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static agt_status reject(agt_net *n, const char *fmt, ...) {
  char why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  n->rejected++;
  return AGT_FAIL(AGT_NET_REJECTED, "%s", why);
}

/* Drops the remaining frames of a multi-frame message. */
static void drain(agt_net *n) {
  int more = 1;
  size_t sz = sizeof more;
  while (zmq_getsockopt(n->sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, n->sock, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&m); break; }
    zmq_msg_close(&m);
  }
}

agt_status agt_net_recv(agt_net *n, int timeout_ms, agt_net_msg *m) {
  if (!n || !m) return AGT_FAIL(AGT_EINVAL, "agt_net_recv: NULL argument");
  if (timeout_ms < 0) return AGT_FAIL(AGT_EINVAL, "agt_net_recv: timeout must be >= 0 ms, got %d", timeout_ms);
  memset(m, 0, sizeof *m);
  if (n->has_cur) {
    zmq_msg_close(&n->cur);
    n->has_cur = 0;
  }
  zmq_pollitem_t item = { n->sock, 0, ZMQ_POLLIN, 0 };
  int r = zmq_poll(&item, 1, timeout_ms);
  if (r < 0) {
    if (zmq_errno() == EINTR) {
      if (agt_interrupted()) return AGT_FAIL(AGT_EINTR, "interrupted");
      return AGT_NET_TIMEOUT; /* another signal: the caller's loop waits again */
    }
    return zfail("zmq_poll");
  }
  if (r == 0) return AGT_NET_TIMEOUT;
  if (n->role == AGT_NET_SERVER) {
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, n->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&id);
      if (zmq_errno() == EAGAIN) return AGT_NET_TIMEOUT;
      return zfail("zmq_msg_recv");
    }
    size_t len = zmq_msg_size(&id);
    if (len == 0 || len >= ID_MAX || !zmq_msg_more(&id)) {
      zmq_msg_close(&id);
      drain(n);
      return reject(n, "a frame without a routing id");
    }
    m->peer = peer_of_id(n, zmq_msg_data(&id), len);
    zmq_msg_close(&id);
  }
  zmq_msg_init(&n->cur);
  n->has_cur = 1;
  if (zmq_msg_recv(&n->cur, n->sock, ZMQ_DONTWAIT) < 0) {
    if (zmq_errno() == EAGAIN) return AGT_NET_TIMEOUT;
    return zfail("zmq_msg_recv");
  }
  if (zmq_msg_more(&n->cur)) {
    drain(n);
    return reject(n, "a message of several frames (agt sends one)");
  }
  size_t size = zmq_msg_size(&n->cur);
  const unsigned char *h = zmq_msg_data(&n->cur);
  if (size < AGT_NET_HEADER) return reject(n, "a %zu-byte frame, shorter than the %d-byte header", size, AGT_NET_HEADER);
  if (memcmp(h, MAGIC, 4) != 0) return reject(n, "a frame without the AGTN magic (not an agt message)");
  uint16_t version, type;
  uint32_t zero;
  uint64_t ulen;
  memcpy(&version, h + 4, 2);
  memcpy(&type, h + 6, 2);
  memcpy(&m->worker, h + 8, 4);
  memcpy(&zero, h + 12, 4);
  memcpy(&m->session, h + 16, 8);
  memcpy(&m->step, h + 24, 8);
  memcpy(&m->aux, h + 32, 8);
  memcpy(&ulen, h + 40, 8);
  if (version != AGT_NET_VERSION)
    return reject(n, "a frame of version %u (this agt speaks version %d)", version, AGT_NET_VERSION);
  if (type < AGT_NET_HELLO || type > AGT_NET_ERROR) return reject(n, "a frame of unknown type %u", type);
  if (zero != 0) return reject(n, "a frame with its reserved field set");
  if (ulen != size - AGT_NET_HEADER)
    return reject(n, "a frame announcing %llu payload bytes and carrying %zu",
                  (unsigned long long)ulen, size - AGT_NET_HEADER);
  if (n->session != 0 && type != AGT_NET_HELLO && m->session != n->session)
    return reject(n, "a frame of another session (%016llx)", (unsigned long long)m->session);
  m->type = type;
  m->len = (int64_t)ulen;
  m->data = h + AGT_NET_HEADER;
  return AGT_OK;
}
