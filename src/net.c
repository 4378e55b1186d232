/* net.c — the PS/worker transport over ZeroMQ (see net.h for the frame format and bounds).
 *
 * The header is packed and read field by field with memcpy (no struct overlay, so neither
 * alignment nor padding can differ between builds). A received frame stays in n->cur until the
 * next receive, so the caller copies a row straight from ZeroMQ's buffer into its own. */
#include "net.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <zmq.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the frame format is little-endian");

static const unsigned char MAGIC[4] = { 'A', 'G', 'T', 'N' };

#define ID_MAX 256 /* a ZeroMQ routing id is at most 255 bytes */

/* The message a peer is sending in chunks, put together in a buffer kept for its next ones (so
 * a row lands in memory already mapped: no page faults after the first), or in the caller's
 * destination (agt_net_expect: no copy after this one). */
typedef struct {
  unsigned char *buf;
  size_t cap;
  uint32_t next;                       /* the chunk expected next; 0: none under way */
  unsigned char head[AGT_NET_HEADER];  /* the first chunk's header, its chunk index zeroed */
  unsigned char *at;                   /* where the message under way goes: buf or dest */
  /* agt_net_expect's destination: dest != NULL from agt_net_expect to agt_net_unexpect; armed
   * until a message completes there; touched once a chunk was written there */
  unsigned char *dest;
  uint64_t dest_len;
  int64_t dest_step;
  int dest_type, armed, touched;
} assembly;

typedef struct {
  unsigned char id[ID_MAX];
  size_t id_len;
  int64_t peer;     /* 0: free slot */
  uint64_t heard;   /* n->clock when last heard from, for forgetting the stalest */
  assembly as;
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
  assembly solo; /* a worker's (its one peer, the PS) */
  char endpoint[1024];
  /* CURVE server: the admitted public keys (32 bytes each) and the ZAP socket */
  unsigned char *keys;
  int nkeys;
  void *zap;
  /* PS: the guard thread, from agt_net_bind to close: it answers the ZAP socket (CURVE) and
   * reads the socket's monitor, holding the accepted connections' descriptors (at most
   * max_peers: more are shut down at once) */
  void *mon;
  int *conn_fds;
  int nconn;
  pthread_t guard_thread;
  int guard_running;
  volatile int guard_stop;
  int64_t denied;  /* written by the guard thread, read with __atomic */
  int64_t refused; /* idem */
  struct send_buf *sbuf; /* the buffer of the last message sent, reused once ZeroMQ lets go */
};

/* A message's bytes handed to ZeroMQ without a copy (zmq_msg_init_data), one ZeroMQ message per
 * chunk of it (see agt_net_send): ZeroMQ calls release_buf from its I/O thread when a queued
 * chunk is sent or dropped. refs counts the chunks ZeroMQ still holds plus one for the socket
 * while it keeps the buffer for reuse; whoever drops the last reference frees it. The buffer is
 * reused for the next message when ZeroMQ has let go of it by then (no fresh allocation, hence no
 * page faults, for a row of 100 MB); otherwise it is orphaned and a new one made. */
struct send_buf {
  int refs;
  size_t cap;
  unsigned char data[];
};

static void unref_buf(struct send_buf *b) {
  if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) free(b);
}

static void release_buf(void *data, void *hint) {
  (void)data;
  unref_buf(hint);
}

/* A buffer of at least size bytes that ZeroMQ no longer holds; NULL when out of memory. */
static struct send_buf *take_buf(agt_net *n, size_t size) {
  struct send_buf *b = n->sbuf;
  if (b && b->cap >= size && __atomic_load_n(&b->refs, __ATOMIC_ACQUIRE) == 1) return b;
  unref_buf(b);
  n->sbuf = NULL;
  if (!(b = malloc(sizeof *b + size))) return NULL;
  b->cap = size;
  b->refs = 1;
  return n->sbuf = b;
}

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

/* The largest frame ZeroMQ may take: the header and a chunk of the payload, at least 1 KiB (the CURVE
 * handshake's commands are under the same limit), and with CURVE its per-message overhead
 * (command name, nonce, MAC: 33 bytes) since the limit applies to the encrypted frame. */
enum { CURVE_OVERHEAD = 64 };
static int64_t max_frame(int64_t max_payload, int curve) {
  int64_t piece = max_payload < AGT_NET_CHUNK ? max_payload : AGT_NET_CHUNK;
  return AGT_NET_HEADER + (piece > 1024 ? piece : 1024) + (curve ? CURVE_OVERHEAD : 0);
}

static agt_status set_curve_cap(agt_net *n) {
  int64_t maxmsg = max_frame(n->max_payload, 1);
  if (zmq_setsockopt(n->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg)) return zfail("zmq_setsockopt(ZMQ_MAXMSGSIZE)");
  return AGT_OK;
}

/* ZeroMQ receives each chunk into a fresh allocation of its I/O thread, and reads a message's
 * chunks ahead of the caller: a 100 MB row is 100 MB of them alive at once. With glibc's
 * defaults that memory goes back to the system when the caller frees them (heap tops trimmed,
 * a free heap of a thread's arena unmapped), and the next row faults it all in again: 25,000
 * page faults per row, as many as one fresh buffer of its size. So, once per process, chunks
 * come from the heap (M_MMAP_THRESHOLD above a chunk: fixed, glibc would raise it there after
 * the first one anyway) and freed heap memory is kept for the next ones (M_TRIM_THRESHOLD,
 * M_TOP_PAD): a process that has moved rows keeps the memory they took, as a caching allocator
 * would. (Other C libraries: nothing to set.) */
static void keep_heap(void) {
#ifdef M_TOP_PAD
  mallopt(M_MMAP_THRESHOLD, 4 * AGT_NET_CHUNK);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 128 << 20);
#endif
}

agt_status agt_net_new(int role, int64_t max_payload, int max_peers, agt_net **out) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, keep_heap);
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
  /* At least 1 KiB: ZeroMQ's CURVE handshake commands (up to a few hundred bytes) are under
   * the same limit. */
  int64_t maxmsg = max_frame(max_payload, 0);
  /* Queues: a worker has at most a step's messages in flight each way, so four of the largest
   * per connection suffice (a message being chunks, that is four times its chunks); they bound
   * what a connection can make the PS hold (hwm frames of at most a chunk each). */
  int64_t chunks = (max_payload + AGT_NET_CHUNK - 1) / AGT_NET_CHUNK;
  int zero = 0, one = 1, handshake_ms = 10000, hb_ivl = 1000, hb_timeout = 5000;
  int hwm = chunks > INT32_MAX / 8 ? INT32_MAX / 2 : 4 * (int)(chunks > 1 ? chunks : 1);
  if (zmq_setsockopt(n->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
      zmq_setsockopt(n->sock, ZMQ_LINGER, &zero, sizeof zero) ||
      zmq_setsockopt(n->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
      zmq_setsockopt(n->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
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
  if (n->guard_running) {
    __atomic_store_n(&n->guard_stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(n->guard_thread, NULL);
  }
  if (n->zap) zmq_close(n->zap);
  if (n->mon) zmq_close(n->mon);
  free(n->conn_fds);
  free(n->keys);
  if (n->has_cur) zmq_msg_close(&n->cur);
  if (n->sock) zmq_close(n->sock);
  if (n->ctx) zmq_ctx_term(n->ctx);
  unref_buf(n->sbuf);
  for (int i = 0; i < n->max_peers; i++) free(n->peers[i].as.buf);
  free(n->solo.buf);
  free(n->peers);
  free(n);
}

static agt_status check_endpoint(const char *endpoint, const char *fn) {
  if (!endpoint || strncmp(endpoint, "tcp://", 6) != 0 || strlen(endpoint) > 1000)
    return AGT_FAIL(AGT_EINVAL, "%s: expects an endpoint 'tcp://host:port', got '%s'", fn,
                    endpoint ? endpoint : "(null)");
  return AGT_OK;
}

static void *guard_main(void *arg);

/* The monitor of the PS's socket (accepted and closed connections) and the guard thread that
 * reads it (and answers ZAP), once, before the first bind. */
static agt_status start_guard(agt_net *n) {
  if (n->guard_running) return AGT_OK;
  char addr[64];
  snprintf(addr, sizeof addr, "inproc://agt-monitor-%p", (void *)n);
  if (zmq_socket_monitor(n->sock, addr, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED))
    return zfail("zmq_socket_monitor");
  if (!(n->mon = zmq_socket(n->ctx, ZMQ_PAIR))) return zfail("zmq_socket(monitor)");
  /* No high-water mark on the events (ZeroMQ drops them at one): a lost DISCONNECTED would
   * hold a slot for ever. They queue only as long as the guard thread lags. */
  int zero = 0;
  zmq_setsockopt(n->mon, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(n->mon, ZMQ_RCVHWM, &zero, sizeof zero);
  if (zmq_connect(n->mon, addr)) return zfail("zmq_connect(monitor)");
  if (!(n->conn_fds = calloc((size_t)n->max_peers, sizeof *n->conn_fds)))
    return AGT_FAIL(AGT_ENOMEM, "out of memory for %d connections", n->max_peers);
  if (pthread_create(&n->guard_thread, NULL, guard_main, n))
    return AGT_FAIL(AGT_ENOMEM, "cannot start the PS's guard thread");
  n->guard_running = 1;
  return AGT_OK;
}

agt_status agt_net_bind(agt_net *n, const char *endpoint) {
  AGT_TRY(check_endpoint(endpoint, "agt_net_bind"));
  if (n->role != AGT_NET_SERVER) return AGT_FAIL(AGT_EINVAL, "agt_net_bind: only the PS binds");
  AGT_TRY(start_guard(n));
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

/* --- CURVE ------------------------------------------------------------------------------- */

static int z85_ok(const char *k) { return k && strlen(k) == 40; }

agt_status agt_net_curve_keypair(char *pub, char *sec) {
  if (!pub || !sec) return AGT_FAIL(AGT_EINVAL, "agt_net_curve_keypair: NULL buffer");
  if (!zmq_has("curve")) return AGT_FAIL(AGT_ENOTSUP, "this libzmq has no CURVE support");
  if (zmq_curve_keypair(pub, sec)) return zfail("zmq_curve_keypair");
  return AGT_OK;
}

int64_t agt_net_denied(const agt_net *n) { return __atomic_load_n(&n->denied, __ATOMIC_SEQ_CST); }

int64_t agt_net_refused(const agt_net *n) { return __atomic_load_n(&n->refused, __ATOMIC_SEQ_CST); }

/* The ZAP handler (ZeroMQ's RFC 27): each request is [version, request id, domain, address,
 * routing id, mechanism, client key]; the reply [version, request id, status code, status
 * text, user id, metadata]. The user id of an admitted key is its index in decimal. */
static void zap_reply(void *sock, const char *id, size_t id_len, const char *code, const char *text,
                      const char *user) {
  zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
  zmq_send(sock, id, id_len, ZMQ_SNDMORE);
  zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
  zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
  zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
  zmq_send(sock, "", 0, 0);
}

/* Answers one ZAP request waiting on n->zap. */
static void zap_answer(agt_net *n) {
  /* Up to 7 frames, each copied into a small buffer (a key is 32 bytes; the rest is short). */
  char f[7][256];
  size_t len[7] = { 0 };
  int k = 0, more = 1;
  while (more) {
    int r = zmq_recv(n->zap, k < 7 ? f[k] : f[6], 255, ZMQ_DONTWAIT);
    if (r < 0) break;
    if (k < 7) len[k] = (size_t)(r > 255 ? 255 : r);
    k++;
    size_t sz = sizeof more;
    if (zmq_getsockopt(n->zap, ZMQ_RCVMORE, &more, &sz)) more = 0;
  }
  if (k < 2) return;
  int admitted = -1;
  if (k == 7 && len[5] == 5 && memcmp(f[5], "CURVE", 5) == 0 && len[6] == 32)
    for (int i = 0; i < n->nkeys; i++)
      if (memcmp(n->keys + 32 * i, f[6], 32) == 0) { admitted = i; break; }
  if (admitted >= 0) {
    char user[16];
    snprintf(user, sizeof user, "%d", admitted);
    zap_reply(n->zap, f[1], len[1], "200", "OK", user);
  } else {
    __atomic_add_fetch(&n->denied, 1, __ATOMIC_SEQ_CST);
    zap_reply(n->zap, f[1], len[1], "400", "unknown key", "");
  }
}

/* Reads one monitor event: a connection accepted beyond max_peers open ones is shut down at
 * once (ZeroMQ then closes it as a peer that hung up, and says so: DISCONNECTED); its slot is
 * freed when ZeroMQ reports it closed, whoever closed it (a handshake not finished within
 * ZMQ_HANDSHAKE_IVL, a heartbeat timeout, the peer). An event is [u16 event, u32 value (the
 * descriptor)] then the endpoint. Events come in the order ZeroMQ's one I/O thread made them,
 * so a descriptor number reused is seen closed before it is seen accepted again; the one race
 * left (a refused connection closed and its number reused before its ACCEPTED is read) can only
 * shut a connection that came while every slot was taken. */
static void monitor_event(agt_net *n) {
  unsigned char ev[6];
  int r = zmq_recv(n->mon, ev, sizeof ev, ZMQ_DONTWAIT);
  int more = 0;
  size_t sz = sizeof more;
  while (zmq_getsockopt(n->mon, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
    char skip[8];
    if (zmq_recv(n->mon, skip, sizeof skip, ZMQ_DONTWAIT) < 0) break;
  }
  if (r != (int)sizeof ev) return;
  uint16_t event;
  uint32_t value;
  memcpy(&event, ev, 2);
  memcpy(&value, ev + 2, 4);
  int fd = (int)value, at = -1;
  for (int i = 0; i < n->nconn; i++)
    if (n->conn_fds[i] == fd) { at = i; break; }
  if (event == ZMQ_EVENT_DISCONNECTED) {
    if (at >= 0) n->conn_fds[at] = n->conn_fds[--n->nconn];
  } else if (event == ZMQ_EVENT_ACCEPTED && at < 0) {
    /* (a descriptor already held was closed without an event seen: it is the new one now) */
    if (n->nconn < n->max_peers) {
      n->conn_fds[n->nconn++] = fd;
    } else {
      __atomic_add_fetch(&n->refused, 1, __ATOMIC_SEQ_CST);
      shutdown(fd, SHUT_RDWR);
    }
  }
}

static void *guard_main(void *arg) {
  agt_net *n = arg;
  while (!__atomic_load_n(&n->guard_stop, __ATOMIC_SEQ_CST)) {
    zmq_pollitem_t items[2] = { { n->mon, 0, ZMQ_POLLIN, 0 }, { n->zap, 0, ZMQ_POLLIN, 0 } };
    int r = zmq_poll(items, n->zap ? 2 : 1, 100);
    if (r <= 0) continue;
    if (items[0].revents & ZMQ_POLLIN) monitor_event(n);
    if (n->zap && (items[1].revents & ZMQ_POLLIN)) zap_answer(n);
  }
  return NULL;
}

agt_status agt_net_curve_server(agt_net *n, const char *secret, const char *keys, int nkeys) {
  if (!n || n->role != AGT_NET_SERVER) return AGT_FAIL(AGT_EINVAL, "agt_net_curve_server: not a PS socket");
  if (n->zap) return AGT_FAIL(AGT_EINVAL, "agt_net_curve_server: CURVE is already set");
  if (n->guard_running) return AGT_FAIL(AGT_EINVAL, "agt_net_curve_server: call it before agt_net_bind");
  if (!z85_ok(secret)) return AGT_FAIL(AGT_EINVAL, "the PS's secret key must be 40 Z85 characters");
  if (nkeys < 1 || !keys || strlen(keys) != (size_t)nkeys * 40)
    return AGT_FAIL(AGT_EINVAL, "agt_net_curve_server: expects %d worker keys of 40 characters", nkeys);
  if (!zmq_has("curve")) return AGT_FAIL(AGT_ENOTSUP, "this libzmq has no CURVE support");
  free(n->keys);
  if (!(n->keys = malloc((size_t)nkeys * 32))) return AGT_FAIL(AGT_ENOMEM, "out of memory for %d keys", nkeys);
  n->nkeys = nkeys;
  for (int i = 0; i < nkeys; i++) {
    char k[41];
    memcpy(k, keys + 40 * i, 40);
    k[40] = 0;
    if (!zmq_z85_decode(n->keys + 32 * i, k)) return AGT_FAIL(AGT_EINVAL, "worker key %d is not Z85 text", i);
  }
  uint8_t sk[32];
  if (!zmq_z85_decode(sk, secret)) return AGT_FAIL(AGT_EINVAL, "the PS's secret key is not Z85 text");
  if (!(n->zap = zmq_socket(n->ctx, ZMQ_REP))) return zfail("zmq_socket(ZAP)");
  int zero = 0;
  zmq_setsockopt(n->zap, ZMQ_LINGER, &zero, sizeof zero);
  if (zmq_bind(n->zap, "inproc://zeromq.zap.01")) return zfail("zmq_bind(ZAP)");
  int one = 1;
  if (zmq_setsockopt(n->sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
      zmq_setsockopt(n->sock, ZMQ_CURVE_SECRETKEY, sk, 32) ||
      zmq_setsockopt(n->sock, ZMQ_ZAP_DOMAIN, "agt", 3))
    return zfail("zmq_setsockopt(CURVE)");
  return set_curve_cap(n);
}

agt_status agt_net_curve_client(agt_net *n, const char *server_public, const char *pub, const char *sec) {
  if (!n || n->role != AGT_NET_CLIENT) return AGT_FAIL(AGT_EINVAL, "agt_net_curve_client: not a worker socket");
  if (!z85_ok(server_public) || !z85_ok(pub) || !z85_ok(sec))
    return AGT_FAIL(AGT_EINVAL, "CURVE keys must be 40 Z85 characters each");
  if (!zmq_has("curve")) return AGT_FAIL(AGT_ENOTSUP, "this libzmq has no CURVE support");
  if (zmq_setsockopt(n->sock, ZMQ_CURVE_SERVERKEY, server_public, 41) ||
      zmq_setsockopt(n->sock, ZMQ_CURVE_PUBLICKEY, pub, 41) ||
      zmq_setsockopt(n->sock, ZMQ_CURVE_SECRETKEY, sec, 41))
    return AGT_FAIL(AGT_EINVAL, "a CURVE key was refused: %s", zmq_strerror(zmq_errno()));
  return set_curve_cap(n);
}

void agt_net_set_session(agt_net *n, uint64_t session) { n->session = session; }

int64_t agt_net_rejected(const agt_net *n) { return n->rejected; }

/* --- assembly ---------------------------------------------------------------------------- */

/* a's buffer, at least len bytes (len is within max_payload: decoded); 0 when out of memory. */
static int reserve(assembly *a, uint64_t len) {
  if (a->cap >= len) return 1;
  free(a->buf);
  a->cap = 0;
  if (!(a->buf = malloc(len ? len : 1))) return 0;
  a->cap = len;
  return 1;
}

static uint64_t head_len(const unsigned char *head) {
  uint64_t len;
  memcpy(&len, head + 40, 8);
  return len;
}

/* Ends a's destination: from now on nothing is written there. A message under way there goes on
 * in a's buffer (its chunks so far copied over; dropped if there is no memory for it), so that
 * it ends as it would have without a destination. Returns whether a chunk was written there. */
static int end_dest(assembly *a) {
  int touched = a->touched;
  if (a->next && a->at == a->dest && a->dest) {
    uint64_t len = head_len(a->head), done = (uint64_t)a->next * AGT_NET_CHUNK;
    if (reserve(a, len)) {
      memcpy(a->buf, a->dest, done);
      a->at = a->buf;
    } else {
      a->next = 0;
    }
  }
  a->dest = NULL;
  a->dest_len = 0;
  a->armed = a->touched = 0;
  return touched;
}

/* --- peers ------------------------------------------------------------------------------- */

static peer_slot *slot_of_peer(agt_net *n, int64_t peer) {
  for (int i = 0; i < n->max_peers; i++)
    if (n->peers[i].peer == peer && peer != 0) return &n->peers[i];
  return NULL;
}

/* The slot of a routing id, remembering it (forgetting the stalest peer when full). */
static peer_slot *slot_of_id(agt_net *n, const void *id, size_t len) {
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
      return s;
    }
    if (!stalest || s->heard < stalest->heard) stalest = s;
  }
  peer_slot *s = free_slot ? free_slot : stalest;
  memcpy(s->id, id, len);
  s->id_len = len;
  s->peer = n->next_peer++;
  s->heard = n->clock;
  s->as.next = 0; /* (a forgotten peer's message under way is dropped; the buffer stays) */
  end_dest(&s->as);  /* (and its destination ended: agt_net_unexpect says 1 for a peer unknown) */
  return s;
}

/* The assembly of a peer (PS) or of the one peer 0 (worker); NULL if unknown. */
static assembly *assembly_of(agt_net *n, int64_t peer) {
  if (n->role == AGT_NET_CLIENT) return peer == 0 ? &n->solo : NULL;
  peer_slot *s = slot_of_peer(n, peer);
  return s ? &s->as : NULL;
}

agt_status agt_net_expect(agt_net *n, int64_t peer, int type, int64_t step, void *dest, int64_t len) {
  if (!n || !dest || len < 0) return AGT_FAIL(AGT_EINVAL, "agt_net_expect: no socket, no destination or a negative size");
  if (type < AGT_NET_HELLO || type > AGT_NET_LAST_TYPE)
    return AGT_FAIL(AGT_EINVAL, "agt_net_expect: unknown message type %d", type);
  if (len > n->max_payload)
    return AGT_FAIL(AGT_EINVAL, "agt_net_expect: %lld bytes, above the socket's cap of %lld", (long long)len,
                    (long long)n->max_payload);
  assembly *a = assembly_of(n, peer);
  if (!a) return AGT_OK; /* forgotten or never known: nothing comes from it */
  /* One writer per byte: a destination overlapping this one (another peer's) is ended. */
  uintptr_t lo = (uintptr_t)dest, hi = lo + (uintptr_t)len;
  for (int i = -1; i < n->max_peers; i++) {
    assembly *o = i < 0 ? &n->solo : &n->peers[i].as;
    uintptr_t olo = (uintptr_t)o->dest, ohi = olo + (uintptr_t)o->dest_len;
    if (o != a && o->dest && olo < hi && lo < ohi) end_dest(o);
  }
  end_dest(a);
  a->dest = dest;
  a->dest_len = (uint64_t)len;
  a->dest_type = type;
  a->dest_step = step;
  a->armed = 1;
  return AGT_OK;
}

int agt_net_unexpect(agt_net *n, int64_t peer) {
  assembly *a = n ? assembly_of(n, peer) : NULL;
  return a ? end_dest(a) : 1;
}

/* --- frames ------------------------------------------------------------------------------ */

void agt_net_header(void *out, int type, uint32_t worker, uint64_t session, int64_t step, double aux,
                    int64_t len) {
  unsigned char *h = out;
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

/* Monotonic milliseconds, for the deadlines of agt_net_recv and of a worker's send. */
static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Sends one ZeroMQ message to peer i (PS: its routing id first, never waiting; a worker waits
 * for room in its queue until deadline, in monotonic ms: one deadline for all the chunks of a
 * message); 1 taken, 0 gone, -1 its queue full, -2 the socket broken (zmq_errno says why), -3
 * Ctrl-C. msg is consumed. */
static int send_one(agt_net *n, const int64_t *peers, int i, zmq_msg_t *msg, int64_t deadline) {
  if (n->role == AGT_NET_SERVER) {
    peer_slot *s = slot_of_peer(n, peers[i]);
    if (!s || zmq_send(n->sock, s->id, s->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
      /* forgotten or gone (EHOSTUNREACH): 0; its queue full (EAGAIN): -1 */
      zmq_msg_close(msg);
      return s && zmq_errno() == EAGAIN ? -1 : 0;
    }
  }
  for (;;) {
    if (zmq_msg_send(msg, n->sock, ZMQ_DONTWAIT) >= 0) return 1;
    int e = zmq_errno();
    int64_t left = deadline - now_ms();
    if (e == EAGAIN && n->role == AGT_NET_CLIENT && left > 0) {
      zmq_pollitem_t item = { n->sock, 0, ZMQ_POLLOUT, 0 };
      if (zmq_poll(&item, 1, (long)left) >= 0 || zmq_errno() != EINTR) continue;
      e = EINTR;
    }
    if (e == EINTR && !agt_interrupted()) continue; /* another signal: wait on (bounded) */
    zmq_msg_close(msg);
    errno = e;
    if (e == EINTR) return -3;
    return e == EAGAIN ? -1 : e == EHOSTUNREACH ? 0 : -2;
  }
}

agt_status agt_net_send(agt_net *n, const int64_t *peers, int npeers, int type, uint32_t worker,
                        int64_t step, double aux, const void *data, int64_t len, int8_t *sent) {
  if (!n) return AGT_FAIL(AGT_EINVAL, "agt_net_send: no socket");
  if (type < AGT_NET_HELLO || type > AGT_NET_LAST_TYPE)
    return AGT_FAIL(AGT_EINVAL, "agt_net_send: unknown message type %d", type);
  if (len < 0 || (len > 0 && !data) || len > INT64_MAX / 2)
    return AGT_FAIL(AGT_EINVAL, "agt_net_send: bad payload (len %lld)", (long long)len);
  if (n->role == AGT_NET_SERVER ? (npeers < 0 || (npeers > 0 && !peers)) : npeers != 1)
    return AGT_FAIL(AGT_EINVAL, "agt_net_send: bad peer list (%d peers)", npeers);
  /* The message as its chunks, each a header (its chunk index at offset 12) and its piece of
   * the payload, laid end to end in one buffer that ZeroMQ sends from without a copy. */
  int64_t nchunks = len > AGT_NET_CHUNK ? (len + AGT_NET_CHUNK - 1) / AGT_NET_CHUNK : 1;
  struct send_buf *sb = take_buf(n, (size_t)(nchunks * AGT_NET_HEADER + len));
  if (!sb) return AGT_FAIL(AGT_ENOMEM, "agt_net_send: no memory for a %lld-byte message", (long long)len);
  int8_t one_status, *ok = sent ? sent : npeers <= 1 ? &one_status : malloc((size_t)npeers);
  if (!ok) return AGT_FAIL(AGT_ENOMEM, "agt_net_send: no memory for %d peers", npeers);
  for (int i = 0; i < npeers; i++) ok[i] = 1;
  agt_status st = AGT_OK;
  int64_t deadline = now_ms() + AGT_NET_SEND_WAIT_MS;
  unsigned char *b = sb->data;
  for (int64_t c = 0; c < nchunks && st == AGT_OK; c++) {
    int64_t off = c * AGT_NET_CHUNK, piece = len - off < AGT_NET_CHUNK ? len - off : AGT_NET_CHUNK;
    uint32_t idx = (uint32_t)c;
    agt_net_header(b, type, worker, n->session, step, aux, len);
    memcpy(b + 12, &idx, 4);
    if (piece > 0) memcpy(b + AGT_NET_HEADER, (const unsigned char *)data + off, (size_t)piece);
    size_t size = (size_t)(AGT_NET_HEADER + piece);
    for (int i = 0; i < npeers; i++) {
      if (ok[i] != 1) continue; /* (a peer that missed a chunk gets none of the rest) */
      zmq_msg_t msg;
      __atomic_add_fetch(&sb->refs, 1, __ATOMIC_ACQ_REL);
      if (zmq_msg_init_data(&msg, b, size, release_buf, sb)) {
        unref_buf(sb);
        st = zfail("zmq_msg_init_data");
        break;
      }
      int r = send_one(n, peers, i, &msg, deadline);
      if (r == -3) {
        st = AGT_FAIL(AGT_EINTR, "interrupted");
        break;
      }
      if (r == -2) {
        st = zfail("zmq_msg_send");
        break;
      }
      ok[i] = (int8_t)r;
    }
    b += size;
  }
  if (ok != sent && ok != &one_status) free(ok);
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

agt_status agt_net_decode_chunk(const void *frame, size_t size, uint64_t session, int64_t max_payload,
                                agt_net_msg *m, uint32_t *chunk) {
  const unsigned char *h = frame;
  if (size < AGT_NET_HEADER || !h)
    return AGT_FAIL(AGT_NET_REJECTED, "a %zu-byte frame, shorter than the %d-byte header", size, AGT_NET_HEADER);
  if (memcmp(h, MAGIC, 4) != 0) return AGT_FAIL(AGT_NET_REJECTED, "a frame without the AGTN magic (not an agt message)");
  uint16_t version, type;
  uint32_t worker, idx;
  uint64_t msession, ulen;
  int64_t step;
  double aux;
  memcpy(&version, h + 4, 2);
  memcpy(&type, h + 6, 2);
  memcpy(&worker, h + 8, 4);
  memcpy(&idx, h + 12, 4);
  memcpy(&msession, h + 16, 8);
  memcpy(&step, h + 24, 8);
  memcpy(&aux, h + 32, 8);
  memcpy(&ulen, h + 40, 8);
  if (version != AGT_NET_VERSION)
    return AGT_FAIL(AGT_NET_REJECTED, "a frame of version %u (this agt speaks version %d)", version, AGT_NET_VERSION);
  if (type < AGT_NET_HELLO || type > AGT_NET_LAST_TYPE) return AGT_FAIL(AGT_NET_REJECTED, "a frame of unknown type %u", type);
  if (max_payload < 0 || ulen > (uint64_t)max_payload)
    return AGT_FAIL(AGT_NET_REJECTED, "a frame of %llu payload bytes, above the cap of %lld",
                    (unsigned long long)ulen, (long long)max_payload);
  /* chunk idx carries the payload's bytes [idx * CHUNK, min(len, (idx + 1) * CHUNK)); a
   * transport of whole messages carries all len bytes in its one frame, chunk 0 */
  uint64_t off = (uint64_t)idx * AGT_NET_CHUNK;
  if (idx > 0 && (!chunk || off >= ulen))
    return AGT_FAIL(AGT_NET_REJECTED, "a frame with chunk index %u, beyond its %llu payload bytes%s", idx,
                    (unsigned long long)ulen, chunk ? "" : " (whole messages expected)");
  uint64_t piece = !chunk ? ulen : ulen - off < AGT_NET_CHUNK ? ulen - off : AGT_NET_CHUNK;
  if (piece != size - AGT_NET_HEADER)
    return AGT_FAIL(AGT_NET_REJECTED, "a frame announcing %llu payload bytes (chunk %u) and carrying %zu",
                    (unsigned long long)ulen, idx, size - AGT_NET_HEADER);
  if (session != 0 && type != AGT_NET_HELLO && msession != session)
    return AGT_FAIL(AGT_NET_REJECTED, "a frame of another session (%016llx)", (unsigned long long)msession);
  m->type = type;
  m->worker = worker;
  m->session = msession;
  m->step = step;
  m->aux = aux;
  m->len = (int64_t)ulen;
  m->data = h + AGT_NET_HEADER;
  if (chunk) *chunk = idx;
  return AGT_OK;
}

agt_status agt_net_decode(const void *frame, size_t size, uint64_t session, int64_t max_payload,
                          agt_net_msg *m) {
  return agt_net_decode_chunk(frame, size, session, max_payload, m, NULL);
}

/* Takes the chunk just decoded (frame h, m filled from it) into a's message: AGT_OK with m the
 * whole message once its last chunk is in (m->data then points into a's buffer, or is a's
 * destination), AGT_NET_TIMEOUT while chunks are missing, AGT_NET_REJECTED for a chunk that does
 * not continue the message under way (that message is dropped). A message begun and not finished
 * (its sender's queue was full) is dropped when its peer's next message begins. A message goes to
 * the destination when its first chunk shows the type, step and size expected there; its other
 * chunks are checked against that first one's header as any message's. */
static agt_status assemble(agt_net *n, assembly *a, const unsigned char *h, uint32_t idx, agt_net_msg *m) {
  uint64_t len = (uint64_t)m->len, off = (uint64_t)idx * AGT_NET_CHUNK;
  uint64_t piece = len - off < AGT_NET_CHUNK ? len - off : AGT_NET_CHUNK;
  unsigned char head[AGT_NET_HEADER];
  memcpy(head, h, AGT_NET_HEADER);
  memset(head + 12, 0, 4);
  if (idx == 0) {
    a->next = 0;
    if (a->armed && m->type == a->dest_type && (m->step == a->dest_step || a->dest_step == INT64_MIN) &&
        len == a->dest_len) {
      a->at = a->dest;
    } else if (piece == len) {
      return AGT_OK; /* a whole message in one frame: no copy */
    } else {
      if (!reserve(a, len)) return reject(n, "no memory for a %llu-byte message", (unsigned long long)len);
      a->at = a->buf;
    }
    memcpy(a->head, head, AGT_NET_HEADER);
  } else if (a->next != idx || memcmp(a->head, head, AGT_NET_HEADER) != 0) {
    uint32_t want = a->next;
    a->next = 0;
    return reject(n, "chunk %u of a message where %s", idx,
                  want ? "the next chunk of another was under way" : "its first chunk was not seen");
  }
  if (a->at == a->dest) a->touched = 1;
  if (piece > 0) memcpy(a->at + off, h + AGT_NET_HEADER, piece);
  if (off + piece < len) {
    a->next = idx + 1;
    return AGT_NET_TIMEOUT;
  }
  a->next = 0;
  if (a->at == a->dest) a->armed = 0; /* once */
  m->data = a->at;
  return AGT_OK;
}

/* Receives one frame and decodes it (AGT_OK: m filled, *a the assembly of its sender, *idx its
 * chunk index), or says why not as agt_net_recv does. */
static agt_status recv_frame(agt_net *n, int timeout_ms, agt_net_msg *m, assembly **a, uint32_t *idx) {
  memset(m, 0, sizeof *m);
  m->auth = -1;
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
  *a = &n->solo;
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
    peer_slot *s = slot_of_id(n, zmq_msg_data(&id), len);
    zmq_msg_close(&id);
    m->peer = s->peer;
    *a = &s->as;
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
  agt_status st = agt_net_decode_chunk(zmq_msg_data(&n->cur), zmq_msg_size(&n->cur), n->session,
                                       n->max_payload, m, idx);
  if (st != AGT_OK) {
    n->rejected++;
    return st;
  }
  if (n->nkeys > 0) {
    /* The key's index, as the ZAP handler named it (a frame without one cannot pass CURVE). */
    const char *user = zmq_msg_gets(&n->cur, "User-Id");
    char *end = NULL;
    long k = user ? strtol(user, &end, 10) : -1;
    if (!user || end == user || *end || k < 0 || k >= n->nkeys)
      return reject(n, "a frame without an admitted key");
    m->auth = (int32_t)k;
  }
  return AGT_OK;
}

agt_status agt_net_take(agt_net *n, int64_t peer, const void *frame, size_t size, agt_net_msg *m) {
  assembly *a = n && m && frame ? assembly_of(n, peer) : NULL;
  if (!a) return AGT_FAIL(AGT_EINVAL, "agt_net_take: no socket, no frame or no such peer");
  memset(m, 0, sizeof *m);
  m->auth = -1;
  m->peer = n->role == AGT_NET_SERVER ? peer : 0;
  uint32_t idx = 0;
  agt_status st = agt_net_decode_chunk(frame, size, n->session, n->max_payload, m, &idx);
  if (st != AGT_OK) {
    n->rejected++;
    return st;
  }
  st = assemble(n, a, frame, idx, m);
  if (st == AGT_NET_TIMEOUT) {
    memset(m, 0, sizeof *m);
    m->auth = -1;
  }
  return st;
}

agt_status agt_net_recv(agt_net *n, int timeout_ms, agt_net_msg *m) {
  if (!n || !m) return AGT_FAIL(AGT_EINVAL, "agt_net_recv: NULL argument");
  if (timeout_ms < 0) return AGT_FAIL(AGT_EINVAL, "agt_net_recv: timeout must be >= 0 ms, got %d", timeout_ms);
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    int64_t left = deadline - now_ms();
    assembly *a = NULL;
    uint32_t idx = 0;
    agt_status st = recv_frame(n, left > 0 ? (int)left : 0, m, &a, &idx);
    if (st != AGT_OK) return st;
    st = assemble(n, a, zmq_msg_data(&n->cur), idx, m);
    if (st != AGT_NET_TIMEOUT) return st;
    /* a chunk taken, its message not complete yet: wait for the rest until the deadline */
    memset(m, 0, sizeof *m);
    m->auth = -1;
    if (left <= 0) return AGT_NET_TIMEOUT;
  }
}
