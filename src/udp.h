/* udp.h — lossy gradient rows over UDP (`agt run --UDP k`, AggregaThor's lossy mode).
 *
 * A worker sends its gradient row as datagrams, one chunk of the row each; the PS receives
 * every chunk straight into that worker's row of G, which starts each step as NaN. A chunk that
 * is lost, late (another step, or after the step closed), a duplicate, or fails authentication
 * writes nothing: NaN stays at ITS OWN offsets only, for the NaN-aware rules to absorb.
 * (AggregaThor filled a lost chunk at the running cursor, i.e. at the wrong offsets, with bytes
 * from an undefined float-to-byte conversion.) Control — HELLO, CONFIG, θ, the row's loss —
 * stays on agt.net's TCP path; this module carries the rows only.
 *
 * A datagram: a 48-byte header, count*4 payload bytes (encrypted), a 16-byte tag:
 *
 *   off  size  field
 *     0     4  magic    "AGTU"
 *     4     2  version  AGT_UDP_VERSION
 *     6     2  zero     reserved, must be 0
 *     8     4  worker   the sender's index (from 0)
 *    12     4  count    floats in this chunk: chunk/4, or the rest of the row for the last one
 *    16     8  session  the run's session id
 *    24     8  step     the step the row belongs to
 *    32     8  seq      the sender's row number under its key (never repeats under one key)
 *    40     8  offset   the chunk's first float in the row: chunk index × chunk/4
 *   all little-endian.
 *
 * Authentication and encryption: ChaCha20-Poly1305 (IETF, libsodium) with the header as
 * associated data, under the worker's own 32-byte key, nonce = seq (8 bytes) ‖ chunk index
 * (4 bytes): one (key, nonce) pair per chunk ever sent. The PS makes each worker's key at
 * random when it configures that worker (agt_udp_new_key) and sends it in the worker's CONFIG,
 * over the TCP path (encrypted with CURVE; in clear with --auth none, where UDP rows are then
 * no better protected than the TCP ones). Only that worker and the PS can make a chunk that
 * passes for its.
 *
 * The PS's receive thread (one per socket) takes up to 32 datagrams per recvmmsg into buffers
 * allocated once (no allocation per datagram) and checks each in this order: length >= header
 * + tag, magic, version, reserved field; worker < nworkers (else rejected, unattributed);
 * the worker has a key; count and offset on the row's chunk grid; length = header + count*4 +
 * tag; session; tag — any failure: "rejected", counted against the claimed worker. Then: an
 * authentic chunk of another step than the open one, or while none is open, is "late"; of a
 * chunk already received this step, a "duplicate"; otherwise it is decrypted into the row (the
 * tag is checked before a byte of the row is written) and its bit set in the worker's bitmap.
 * When the step closes (agt_udp_finish) it first takes what the kernel has queued (up to
 * 131072 datagrams: it arrived in time, whether or not the thread had run), then a wanted
 * row's chunks not received are "lost". The
 * kernel's own drops (receive buffer full) are read through SO_RXQ_OVFL: agt_udp_kernel_drops.
 *
 * Threads: the receive thread takes datagrams from the socket and writes rows only under the
 * handle's mutex, and only between agt_udp_open and agt_udp_finish, which takes the mutex
 * before it returns: after it, the rows are the caller's. Every other function is for one caller thread. Ownership: agt_udp_server and
 * agt_udp_client return a handle owned by the caller, released by agt_udp_close (which stops
 * the thread); `rows` stays the caller's and must outlive the open step. */
#ifndef AGT_UDP_H
#define AGT_UDP_H

#include "status.h"

/* ffi:begin */
typedef struct agt_udp agt_udp;
enum {
  AGT_UDP_VERSION = 1,
  AGT_UDP_HEADER = 48,
  AGT_UDP_TAG = 16,
  AGT_UDP_KEY = 32,
  AGT_UDP_MAX_CHUNK = 65440 /* payload bytes: header + payload + tag within a 65507-byte UDP payload */
};
typedef struct {
  int64_t received;   /* chunks written into the row */
  int64_t lost;       /* chunks of a wanted row not received when its step closed (NaN left) */
  int64_t rejected;   /* datagrams claiming this worker that failed a check or authentication */
  int64_t late;       /* authentic chunks of another step, or after the step closed */
  int64_t duplicate;  /* authentic chunks received a second time in one step */
} agt_udp_stats;

/* The PS's socket, bound to host:port (host "*" or "": every IPv4 interface; an IPv6 literal
 * binds IPv6, any other host its IPv4 address; port 0: one the system chooses, see
 * agt_udp_port), for rows of d floats from workers 0..nworkers-1 in
 * chunks of chunk_bytes payload (a multiple of 4 in [4, AGT_UDP_MAX_CHUNK]); asks for a
 * receive buffer of rcvbuf bytes (the kernel may give less: agt_udp_rcvbuf). Starts the
 * receive thread. */
agt_status agt_udp_server(const char *host, int port, int nworkers, int64_t d, int chunk_bytes,
                          int64_t rcvbuf, agt_udp **out);
/* A worker's socket, sending to the PS at host:port (IPv4, or an IPv6 literal) as worker
 * `worker` of session `session`, under key (AGT_UDP_KEY bytes, from the PS's CONFIG). */
agt_status agt_udp_client(const char *host, int port, int worker, int64_t d, int chunk_bytes,
                          uint64_t session, const uint8_t *key, agt_udp **out);
void agt_udp_close(agt_udp *u);
int agt_udp_port(const agt_udp *u);
int64_t agt_udp_rcvbuf(const agt_udp *u);
/* Chunks per row: ceil(d / (chunk_bytes / 4)). */
int64_t agt_udp_chunks(const agt_udp *u);
/* PS: the session id chunks must carry (0 until set: every chunk is rejected). */
void agt_udp_set_session(agt_udp *u, uint64_t session);
/* PS: a fresh random key for worker w (written to key, AGT_UDP_KEY bytes); chunks under its
 * previous key are rejected from now on. */
agt_status agt_udp_new_key(agt_udp *u, int worker, uint8_t *key);
/* PS: opens step `step`: rows (nworkers × d floats, worker w's row at rows + w*d) are set to
 * NaN and the bitmaps cleared; the chunks of this step land there until agt_udp_finish. */
agt_status agt_udp_open(agt_udp *u, int64_t step, float *rows);
/* PS: waits until every worker w with want[w] != 0 has its whole row, at most timeout_ms
 * (>= 0), then closes the step: nothing is written into rows after it returns. Each wanted
 * row's chunks not received are added to its lost count; lost[w] (lost may be NULL) = this
 * step's, 0 for the others. *complete (may be NULL) = the wanted rows received whole.
 * AGT_EINTR on Ctrl-C (the step is closed all the same). */
agt_status agt_udp_finish(agt_udp *u, const uint8_t *want, int timeout_ms, int64_t *lost, int *complete);
/* PS: worker w's counts so far; w = -1: the datagrams rejected before a worker could be named
 * (in `rejected`; the rest 0). */
agt_status agt_udp_stats_of(agt_udp *u, int worker, agt_udp_stats *out);
/* PS: datagrams the kernel dropped on this socket (its receive buffer full), so far. */
int64_t agt_udp_kernel_drops(agt_udp *u);
/* Worker: sends row (d floats) as step's chunks. A test's loss: each chunk is left out with
 * probability drop, decided by agt_udp_dropped (reproducible); *dropped (may be NULL) = the
 * chunks left out. A datagram the network refuses to take is simply not sent (the PS counts
 * it lost); only a broken socket fails. */
agt_status agt_udp_send(agt_udp *u, int64_t step, const float *row, double drop, uint64_t drop_seed,
                        int64_t *dropped);
/* Worker: paces agt_udp_send to at most bytes_per_s datagram bytes per second (0: as fast as
 * the socket takes them, the default). A sender that outruns the PS's link, a switch or the
 * PS's receive thread loses chunks; AggregaThor slept 400 µs after each 65 kB datagram. */
agt_status agt_udp_set_rate(agt_udp *u, double bytes_per_s);
/* 1 when chunk c of worker's row at step is left out at rate drop under drop_seed: a draw of
 * the counter-based stream (drop_seed, "udp-drop" worker step c), so tests know which. */
int agt_udp_dropped(uint64_t drop_seed, int worker, int64_t step, int64_t chunk, double drop);
/* ffi:end */

#endif
