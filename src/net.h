/* net.h — the message transport between the parameter server (PS) and its workers, over
 * ZeroMQ on TCP.
 *
 * The PS binds one ROUTER socket; each worker connects one DEALER socket to it. A message of up
 * to AGT_NET_CHUNK (1 MiB) payload bytes is one ZeroMQ frame: a fixed 48-byte header, then
 * `len` payload bytes. A larger one is sent as ceil(len / AGT_NET_CHUNK) ZeroMQ messages of one
 * frame each, its chunks, in order: chunk i is the same header with `chunk` = i, then the
 * payload's bytes [i * AGT_NET_CHUNK, min(len, (i + 1) * AGT_NET_CHUNK)). The receiver puts them
 * together in a buffer it keeps per peer (mapped once, reused by the peer's next messages: a row
 * of 100 MB does not cost 25,000 page faults per step, as a fresh ZeroMQ message of that size
 * did), or straight where the caller wants the message (agt_net_expect: a row lands in its
 * place in the PS's matrix, one copy of it fewer), and returns the message once its last chunk
 * is in.
 *
 *   off  size  field
 *     0     4  magic    "AGTN"
 *     4     2  version  AGT_NET_VERSION (a frame of another version is rejected)
 *     6     2  type     AGT_NET_HELLO .. AGT_NET_STATE
 *     8     4  worker   the worker's index (as the sender states it; the PS checks it)
 *    12     4  chunk    this frame's chunk index (0 for a message of one frame)
 *    16     8  session  the run's session id (0 only in HELLO: a worker does not know it yet)
 *    24     8  step     the step the message belongs to (-1 outside steps)
 *    32     8  aux      a double: the loss of a GRAD row, the model size d of a READY
 *    40     8  len      the message's payload bytes; the frame carries its chunk's part of them
 *   all little-endian (the only byte order agt is built for; checked at compile time).
 *
 * Bounds: the largest frame a socket accepts is fixed before it binds or connects
 * (ZMQ_MAXMSGSIZE = 48 + min(max_payload, AGT_NET_CHUNK), at least 1 KiB for the CURVE
 * handshake, plus CURVE's per-message overhead with CURVE): a bigger one makes ZeroMQ drop the
 * connection before allocating anything; a len above max_payload is rejected on its first chunk,
 * before the receiver allocates its buffer (at most max_payload bytes per peer). Each connection
 * queues at most 4 messages' chunks each way (ZMQ_SNDHWM, ZMQ_RCVHWM = 4 ceil(max_payload /
 * AGT_NET_CHUNK) frames of at most a chunk), so what a connection can make the other side hold
 * is bounded. The PS holds at most max_peers connections at once,
 * with or without CURVE: one accepted beyond that is shut down at once and counted
 * (agt_net_refused), and its slot comes back when one closes; a connection that has not
 * finished its handshake within 10 s (ZMQ_HANDSHAKE_IVL), or whose peer stops answering
 * heartbeats for 5 s, is closed by ZeroMQ. So what strangers can make the PS hold is bounded
 * (max_peers connections, each with at most one frame's buffer), and connections already open
 * keep working while others are refused. Every wait is bounded (agt_net_recv's timeout), a send
 * never blocks (a peer that cannot take a message now does not get it), and closing never
 * lingers.
 *
 * A received frame that is not a well-formed message of this version, or that carries another
 * session id once one is set, or a chunk that does not continue its peer's message under way
 * (same header, next index; the message is then dropped), is rejected: agt_net_recv returns AGT_NET_REJECTED with the
 * reason in agt_last_error() and the sending peer in m->peer, and counts it. The step, the
 * worker and the size of a GRAD row are the caller's to check: it knows what it expects.
 *
 * Peers (PS side): each connection is a peer with a 64-bit id that is never reused; at most
 * max_peers are open and remembered (the one heard from least recently is forgotten first, and a
 * message to a forgotten or disconnected peer is not sent). A worker side has one peer, 0.
 *
 * Ownership: agt_net_new returns a handle owned by the caller, released by agt_net_close.
 * m->data points into the last received frame or the sender's message buffer, valid until the
 * next agt_net_recv or close, or is the caller's destination (agt_net_expect). */
#ifndef AGT_NET_H
#define AGT_NET_H

#include "status.h"

/* ffi:begin */
typedef struct agt_net agt_net;
enum {
  AGT_NET_VERSION = 2,  /* 2: messages above AGT_NET_CHUNK bytes travel in chunks */
  AGT_NET_HEADER = 48,
  /* message types */
  AGT_NET_HELLO = 1,   /* worker -> PS: "I am worker `worker`" (session 0) */
  AGT_NET_CONFIG = 2,  /* PS -> worker: the run (JSON payload); sets the session */
  AGT_NET_READY = 3,   /* worker -> PS: data loaded; aux = its model size d */
  AGT_NET_THETA = 4,   /* PS -> worker: the parameters at `step` (d floats) */
  AGT_NET_GRAD = 5,    /* worker -> PS: its row at `step` (d floats), aux = its loss */
  AGT_NET_BYE = 6,     /* PS -> worker: the run is over */
  AGT_NET_ERROR = 7,   /* worker -> PS: why it cannot take part (text payload) */
  AGT_NET_STATE = 8,   /* worker -> PS: its random streams after its row of `step` (sent just
                          before that GRAD; the PS keeps it for its checkpoints) */
  /* roles */
  AGT_NET_SERVER = 1,
  AGT_NET_CLIENT = 2,
  /* agt_net_recv's results besides AGT_OK (a message in m) and the failures */
  AGT_NET_TIMEOUT = 1,  /* nothing arrived before the timeout */
  AGT_NET_REJECTED = 2  /* a frame arrived and was dropped: reason in agt_last_error() */
};
typedef struct {
  int type;
  uint32_t worker;
  int64_t peer;        /* the sending connection (PS side), 0 on a worker */
  int32_t auth;        /* with CURVE: the index of the sender's key; -1 without */
  uint64_t session;
  int64_t step;
  double aux;
  int64_t len;         /* payload bytes */
  const void *data;    /* the payload, valid until the next agt_net_recv */
} agt_net_msg;

/* A socket of `role` that accepts frames of up to max_payload payload bytes, remembering up to
 * max_peers connections (PS side; >= 1). Set the options below, then bind or connect. */
agt_status agt_net_new(int role, int64_t max_payload, int max_peers, agt_net **out);
void agt_net_close(agt_net *n);
/* Binds (PS) "tcp://host:port" / connects (worker). host "*" binds every interface. */
agt_status agt_net_bind(agt_net *n, const char *endpoint);
agt_status agt_net_connect(agt_net *n, const char *endpoint);
/* The endpoint bound last, with the port the system chose for "tcp://host:*"; "" if none. */
const char *agt_net_endpoint(agt_net *n);
/* CURVE (ZeroMQ's authenticated encryption; libsodium underneath). Keys are Z85 text, 40
 * characters. A keypair: pub and sec receive 41 bytes each (40 + NUL). */
agt_status agt_net_curve_keypair(char *pub, char *sec);
/* PS side, before agt_net_bind: encrypt with the PS's secret key and admit only the clients whose
 * public key is one of the nkeys given (keys: nkeys × 40 characters, concatenated); the client
 * with key i is "worker i": its messages carry m->auth = i, whatever they claim. Connections
 * with any other key are refused during the handshake and counted (agt_net_denied). A ZAP
 * handler thread answers the handshakes; it ends with the socket. */
agt_status agt_net_curve_server(agt_net *n, const char *secret, const char *keys, int nkeys);
/* Worker side, before agt_net_connect: the PS's public key and this worker's keypair. */
agt_status agt_net_curve_client(agt_net *n, const char *server_public, const char *pub, const char *sec);
/* Handshakes refused so far (unknown key). */
int64_t agt_net_denied(const agt_net *n);
/* Connections shut down at accept so far, max_peers being open (PS). */
int64_t agt_net_refused(const agt_net *n);
/* Frames of another session id (other than HELLO) are rejected from now on; 0: none checked. */
void agt_net_set_session(agt_net *n, uint64_t session);
/* Sends one message to each of npeers peers (PS; a worker passes NULL, 1); sent[i] = 1 when
 * peer i took it, 0 when it is gone (disconnected or forgotten), -1 when its queue is full
 * (it is not reading: stalled) (sent may be NULL). The PS never waits; a worker waits up to
 * AGT_NET_SEND_WAIT_MS for room in its queue (the PS reads its rows between its other work)
 * before it says -1 (for each chunk of a large message; a peer that missed a chunk gets none of
 * the rest, and its receiver drops the message). The payload is copied once whatever npeers. Fails only on bad arguments
 * or a broken socket. */
enum { AGT_NET_SEND_WAIT_MS = 10000 };
agt_status agt_net_send(agt_net *n, const int64_t *peers, int npeers, int type, uint32_t worker,
                        int64_t step, double aux, const void *data, int64_t len, int8_t *sent);
/* Waits up to timeout_ms (>= 0) for one frame: AGT_OK with the message in m, AGT_NET_TIMEOUT,
 * AGT_NET_REJECTED (m->peer says who sent it), or a failure (AGT_EINTR on Ctrl-C). */
agt_status agt_net_recv(agt_net *n, int timeout_ms, agt_net_msg *m);
/* Receiving in place: the next message of `type` at `step` (INT64_MIN: at any step; agt.net's
 * N.ANY_STEP) of exactly len payload bytes from
 * `peer` (PS; a worker: 0) is put together in dest (len bytes that the caller keeps valid until
 * agt_net_unexpect) as its chunks arrive, instead of in the peer's buffer: agt_net_recv returns it
 * with m->data == dest, one copy of its bytes fewer. Once: a message completed there ends the
 * wait for it (the next goes to the buffer as before; dest stays the caller's until
 * agt_net_unexpect). A message that does not continue or is dropped mid-way leaves dest partly
 * written, and the next message that fits starts there again: dest holds a message only when
 * agt_net_recv returned it there. Nothing is written into dest outside agt_net_recv, none after
 * agt_net_unexpect, and never by two peers: expecting into bytes that another peer's dest
 * covers ends that one (agt_net_unexpect then says 1 for it). A peer unknown (gone, forgotten)
 * sends nothing more: AGT_OK. Fails only on bad arguments (len above max_payload). */
agt_status agt_net_expect(agt_net *n, int64_t peer, int type, int64_t step, void *dest, int64_t len);
/* Ends peer's destination (a message under way there goes on in the peer's buffer): 1 when a
 * chunk was written into it since agt_net_expect (a message that agt_net_recv returned there, or
 * part of one), or the peer is unknown now (it may have been); 0 when dest is untouched. */
int agt_net_unexpect(agt_net *n, int64_t peer);
/* Frames rejected so far (all reasons). */
int64_t agt_net_rejected(const agt_net *n);
/* The libzmq version as "4.3.4". */
const char *agt_net_zmq_version(void);
/* ffi:end */

/* The payload bytes of one chunk (see the frame format above). */
#define AGT_NET_CHUNK (1 << 20)
/* The frame decoder of agt_net_recv: checks a received frame's header (magic, version, type,
 * the payload length against max_payload, the chunk index against the length, the frame's size
 * against its chunk's, the session when one is set and the type is not HELLO) and fills m's
 * type, worker, session, step, aux, len (the whole message's) and data (the chunk's bytes, in
 * frame) and *chunk (the index); m's peer and auth are left as they are. AGT_OK, or
 * AGT_NET_REJECTED with the reason in agt_last_error() (not counted: agt_net_recv counts).
 * Reads only the size bytes given; allocates nothing. */
agt_status agt_net_decode_chunk(const void *frame, size_t size, uint64_t session, int64_t max_payload,
                                agt_net_msg *m, uint32_t *chunk);
/* What agt_net_recv does with a frame received from peer (PS; a worker: 0), without ZeroMQ:
 * decodes it and takes it into that peer's message under way (in its buffer or its
 * agt_net_expect destination). Same results as agt_net_recv (AGT_NET_TIMEOUT: a chunk taken,
 * the message not complete); m->data may point into frame. For the fuzzer (tools/fuzz/net.c). */
agt_status agt_net_take(agt_net *n, int64_t peer, const void *frame, size_t size, agt_net_msg *m);
/* The same for a transport that carries whole messages only (src/net_mpi.c): a frame is the
 * header (chunk 0) and all len payload bytes, whatever len (up to max_payload); a chunk of a
 * larger message is rejected. */
agt_status agt_net_decode(const void *frame, size_t size, uint64_t session, int64_t max_payload,
                          agt_net_msg *m);
/* The highest message type: what agt_net_send, agt_net_decode and the other transports accept
 * (AGT_NET_HELLO .. AGT_NET_LAST_TYPE). */
#define AGT_NET_LAST_TYPE AGT_NET_STATE
/* Its writer: the 48-byte header of a message into h (len: payload bytes; chunk 0), for
 * agt_net_send and the other transports that carry the same messages (src/net_mpi.c). */
void agt_net_header(void *h, int type, uint32_t worker, uint64_t session, int64_t step, double aux,
                    int64_t len);

#endif
