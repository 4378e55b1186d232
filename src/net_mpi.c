/* net_mpi.c — the PS/worker transport over MPI (see net_mpi.h). Built into libagt_mpi.so only.
 *
 * Process-wide state (MPI is per process): the sends in flight with their buffers, and the
 * spare buffers. A handle holds one receive slot per rank: a buffer (reused) and the receive in
 * flight from that rank, if any. Receives are posted per source (MPI_Improbe on each rank whose
 * slot is idle), so a rank that stalls mid-message holds only its own slot. The handles of a
 * process share MPI_COMM_WORLD. A channel (agt_mpi_channel) claims its ranks: only it probes
 * them, and it takes its own tag only. Every other handle probes the ranks no channel claims
 * and takes agt's tag: a message from an unclaimed rank goes to whichever of them probes first,
 * so a process receives on one such handle at a time (a worker closes its HELLO handle before
 * it opens its step handle). */
#include "net_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum {
  TAG = 0x4147,          /* every agt message ("AG") */
  TAG_BYZ = 0x4142,      /* the Byzantine ranks' channel ("AB") */
  HWM = 4,               /* sends in flight per peer before it counts as not receiving */
  SPARE = 4,             /* send buffers kept for reuse */
  SINK_CHUNK = 4 << 20,  /* the physical size of a sink (see make_sink) */
  IDLE = 0, FRAME = 1, DROP = 2
};

struct sbuf {
  int refs;              /* sends in flight from it */
  size_t cap;
  unsigned char data[];
};

/* An MPI request still in flight: a send (buf shared with the other peers of that message) or,
 * dest -1, a receive left behind by a closed handle (rbuf freed, or the sink of sink_len bytes
 * unmapped, when it completes). */
struct op {
  MPI_Request req;
  int dest;
  struct sbuf *buf;
  unsigned char *rbuf;
  void *sink;
  size_t sink_len;
};

static struct {
  int inited, finalized, rank, size;
  struct op *ops;
  int nops, cap_ops;
  struct sbuf *spare[SPARE];
  int nspare;
  struct agt_mpi **owner; /* per rank: the channel that claims it, or NULL */
  char version[MPI_MAX_LIBRARY_VERSION_STRING + 1];
} G;

typedef struct {
  MPI_Request req;
  unsigned char *buf;    /* the frames received from this rank (reused) */
  size_t cap;
  int64_t count;         /* bytes of the message being received */
  int kind;              /* IDLE, FRAME (into buf, to decode) or DROP (into sink; why says why) */
  void *sink;
  size_t sink_len;
  char why[200];
} slot;

struct agt_mpi {
  int64_t max_payload;
  uint64_t session;
  int64_t rejected;
  slot *slots;           /* one per rank */
  int next;              /* the slot looked at first: rotates, so no rank is served first always */
  int tag;               /* TAG, or TAG_BYZ for a channel */
  int *ranks;            /* a channel: the ranks it speaks with, in its creator's order */
  int nranks;            /* 0: not a channel */
};

static agt_status mfail(int rc, const char *what) {
  char s[MPI_MAX_ERROR_STRING + 1];
  int len = 0;
  if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) len = snprintf(s, sizeof s, "MPI error %d", rc);
  s[len < 0 ? 0 : len > MPI_MAX_ERROR_STRING ? MPI_MAX_ERROR_STRING : len] = 0;
  return AGT_FAIL(AGT_ENET, "%s: %s", what, s);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void nap(long us) {
  struct timespec t = { us / 1000000, (us % 1000000) * 1000 };
  nanosleep(&t, NULL);
}

/* --- process-wide ------------------------------------------------------------------------ */

agt_status agt_mpi_init(int *rank, int *size) {
  if (G.finalized) return AGT_FAIL(AGT_EINVAL, "agt_mpi_init: MPI was finalised already (once per process)");
  if (!G.inited) {
    int already = 0, provided = 0, rc;
    MPI_Initialized(&already);
    if (!already && (rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided)) != MPI_SUCCESS)
      return mfail(rc, "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &G.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &G.size);
    G.inited = 1;
  }
  if (rank) *rank = G.rank;
  if (size) *size = G.size;
  return AGT_OK;
}

const char *agt_mpi_version(void) {
  int len = 0;
  if (!G.version[0] && MPI_Get_library_version(G.version, &len) == MPI_SUCCESS) {
    G.version[len > 0 && len <= MPI_MAX_LIBRARY_VERSION_STRING ? len : 0] = 0;
    char *nl = strchr(G.version, '\n'); /* the first line only */
    if (nl) *nl = 0;
  }
  return G.version;
}

void agt_mpi_abort(int code) {
  if (G.inited && !G.finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

static struct sbuf *take_sbuf(size_t size) {
  for (int i = 0; i < G.nspare; i++)
    if (G.spare[i]->cap >= size) {
      struct sbuf *b = G.spare[i];
      G.spare[i] = G.spare[--G.nspare];
      return b;
    }
  struct sbuf *b = malloc(sizeof *b + size);
  if (!b) return NULL;
  b->refs = 0;
  b->cap = size;
  return b;
}

/* A buffer no send uses any more: kept as a spare (the smallest one goes when full). */
static void give_sbuf(struct sbuf *b) {
  if (G.nspare < SPARE) {
    G.spare[G.nspare++] = b;
    return;
  }
  int small = 0;
  for (int i = 1; i < SPARE; i++)
    if (G.spare[i]->cap < G.spare[small]->cap) small = i;
  if (G.spare[small]->cap < b->cap) {
    free(G.spare[small]);
    G.spare[small] = b;
  } else {
    free(b);
  }
}

/* A message that is not taken is still received (MPI has no other way to drop it; a receive
 * into a smaller buffer is no way either: OpenMPI 4.1 writes a large truncated message past the
 * buffer's end) into a sink: size bytes of address space that are one SINK_CHUNK of memory
 * mapped again and again, so a message of any size costs at most SINK_CHUNK bytes of memory. */
static void *make_sink(size_t size, size_t *len) {
  size_t total = (size + SINK_CHUNK - 1) / SINK_CHUNK * SINK_CHUNK;
  if (total == 0) total = SINK_CHUNK;
  unsigned char *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return NULL;
  int fd = memfd_create("agt-mpi-sink", MFD_CLOEXEC);
  int ok = fd >= 0 && ftruncate(fd, SINK_CHUNK) == 0;
  for (size_t off = 0; ok && off < total; off += SINK_CHUNK)
    ok = mmap(base + off, SINK_CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != MAP_FAILED;
  if (fd >= 0) close(fd);
  if (!ok) {
    munmap(base, total);
    return NULL;
  }
  *len = total;
  return base;
}

static void op_done(int i) {
  struct op *o = &G.ops[i];
  if (o->buf && --o->buf->refs == 0) give_sbuf(o->buf);
  free(o->rbuf);
  if (o->sink) munmap(o->sink, o->sink_len);
  G.ops[i] = G.ops[--G.nops];
}

/* Completes what MPI has finished (a failed request counts as finished: its buffer is free). */
static void reap(void) {
  for (int i = 0; i < G.nops;) {
    int done = 0;
    if (MPI_Test(&G.ops[i].req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) done = 1;
    if (done) op_done(i);
    else i++;
  }
}

static struct op *push_op(void) {
  if (G.nops == G.cap_ops) {
    int cap = G.cap_ops ? 2 * G.cap_ops : 64;
    struct op *p = realloc(G.ops, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    G.ops = p;
    G.cap_ops = cap;
  }
  struct op *o = &G.ops[G.nops++];
  memset(o, 0, sizeof *o);
  o->req = MPI_REQUEST_NULL;
  return o;
}

agt_status agt_mpi_finalize(void) {
  if (!G.inited || G.finalized) return AGT_OK;
  double t_end = now() + 2;
  for (reap(); G.nops > 0 && now() < t_end; reap()) nap(200);
  /* What is left goes with MPI_Finalize (a send to a rank that stopped receiving cannot be
   * cancelled reliably); its buffers are freed after. */
  for (int i = 0; i < G.nops; i++) MPI_Request_free(&G.ops[i].req);
  int rc = MPI_Finalize();
  G.finalized = 1;
  while (G.nops > 0) op_done(G.nops - 1);
  for (int i = 0; i < G.nspare; i++) free(G.spare[i]);
  G.nspare = 0;
  free(G.ops);
  G.ops = NULL;
  G.cap_ops = 0;
  free(G.owner);
  G.owner = NULL;
  return rc == MPI_SUCCESS ? AGT_OK : mfail(rc, "MPI_Finalize");
}

/* --- handles ----------------------------------------------------------------------------- */

static int live(void) { return G.inited && !G.finalized; }

agt_status agt_mpi_new(int64_t max_payload, agt_mpi **out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "agt_mpi_new: out is NULL");
  *out = NULL;
  if (!live()) return AGT_FAIL(AGT_EINVAL, "agt_mpi_new: MPI is not initialised (agt_mpi_init first)");
  if (max_payload < 0 || max_payload > INT_MAX - AGT_NET_HEADER)
    return AGT_FAIL(AGT_EINVAL, "agt_mpi_new: max_payload must be in [0, 2 GiB - 48] (one MPI message), got %lld",
                    (long long)max_payload);
  agt_mpi *t = calloc(1, sizeof *t);
  if (!t || !(t->slots = calloc((size_t)G.size, sizeof *t->slots))) {
    free(t);
    return AGT_FAIL(AGT_ENOMEM, "agt_mpi_new: out of memory");
  }
  for (int i = 0; i < G.size; i++) t->slots[i].req = MPI_REQUEST_NULL;
  t->max_payload = max_payload;
  t->tag = TAG;
  *out = t;
  return AGT_OK;
}

agt_status agt_mpi_channel(int64_t max_payload, const int64_t *ranks, int nranks, agt_mpi **out) {
  if (!out) return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: out is NULL");
  *out = NULL;
  if (!live()) return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: MPI is not initialised (agt_mpi_init first)");
  if (G.rank == 0) return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: rank 0 is the PS, which takes part in no channel");
  if (nranks < 1 || nranks > G.size || !ranks)
    return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: expects 1 to %d ranks, got %d", G.size, nranks);
  if (!G.owner && !(G.owner = calloc((size_t)G.size, sizeof *G.owner)))
    return AGT_FAIL(AGT_ENOMEM, "agt_mpi_channel: out of memory");
  for (int i = 0; i < nranks; i++) {
    if (ranks[i] < 1 || ranks[i] >= G.size)
      return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: rank %lld is not a worker rank of this run (1..%d)",
                      (long long)ranks[i], G.size - 1);
    for (int j = 0; j < i; j++)
      if (ranks[j] == ranks[i]) return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: rank %lld given twice", (long long)ranks[i]);
    if (ranks[i] != G.rank && G.owner[ranks[i]])
      return AGT_FAIL(AGT_EINVAL, "agt_mpi_channel: rank %lld is in another open channel", (long long)ranks[i]);
  }
  agt_mpi *t;
  AGT_TRY(agt_mpi_new(max_payload, &t));
  if (!(t->ranks = malloc((size_t)nranks * sizeof *t->ranks))) {
    agt_mpi_close(t);
    return AGT_FAIL(AGT_ENOMEM, "agt_mpi_channel: out of memory");
  }
  for (int i = 0; i < nranks; i++) {
    t->ranks[i] = (int)ranks[i];
    if (ranks[i] != G.rank) G.owner[ranks[i]] = t;
  }
  t->nranks = nranks;
  t->tag = TAG_BYZ;
  *out = t;
  return AGT_OK;
}

/* The index of rank r among a channel's ranks, or -1. */
static int rank_index(const agt_mpi *t, int r) {
  for (int i = 0; i < t->nranks; i++)
    if (t->ranks[i] == r) return i;
  return -1;
}

/* Whether handle t probes rank src: a channel its own ranks, another handle the unclaimed. */
static int probes(const agt_mpi *t, int src) {
  if (src == G.rank) return 0;
  agt_mpi *o = G.owner ? G.owner[src] : NULL;
  return t->nranks ? o == t : o == NULL;
}

void agt_mpi_close(agt_mpi *t) {
  if (!t) return;
  for (int i = 0; i < G.size; i++) {
    slot *s = &t->slots[i];
    struct op *o;
    if (s->kind != IDLE && live() && (o = push_op())) {
      o->req = s->req; /* still receiving: the buffers go with the request */
      o->dest = -1;
      o->rbuf = s->buf;
      o->sink = s->sink;
      o->sink_len = s->sink_len;
    } else {
      free(s->buf);
      if (s->sink) munmap(s->sink, s->sink_len);
    }
  }
  if (G.owner)
    for (int i = 0; i < G.size; i++)
      if (G.owner[i] == t) G.owner[i] = NULL;
  free(t->ranks);
  free(t->slots);
  free(t);
}

void agt_mpi_set_session(agt_mpi *t, uint64_t session) { t->session = session; }

int64_t agt_mpi_rejected(const agt_mpi *t) { return t->rejected; }

static int in_flight_to(int dest) {
  int k = 0;
  for (int i = 0; i < G.nops; i++) k += G.ops[i].dest == dest;
  return k;
}

agt_status agt_mpi_send(agt_mpi *t, const int64_t *peers, int npeers, int type, uint32_t worker,
                        int64_t step, double aux, const void *data, int64_t len, int8_t *sent) {
  if (!t) return AGT_FAIL(AGT_EINVAL, "agt_mpi_send: no transport");
  if (!live()) return AGT_FAIL(AGT_EINVAL, "agt_mpi_send: MPI is not running");
  if (type < AGT_NET_HELLO || type > AGT_NET_LAST_TYPE)
    return AGT_FAIL(AGT_EINVAL, "agt_mpi_send: unknown message type %d", type);
  if (len < 0 || (len > 0 && !data))
    return AGT_FAIL(AGT_EINVAL, "agt_mpi_send: bad payload (len %lld)", (long long)len);
  if (len > INT_MAX - AGT_NET_HEADER)
    return AGT_FAIL(AGT_EINVAL, "agt_mpi_send: a %lld-byte payload is above one MPI message (2 GiB)", (long long)len);
  int ps = G.rank == 0, listed = ps || (t->nranks && peers);
  if (listed ? (npeers < 0 || (npeers > 0 && !peers)) : npeers != 1)
    return AGT_FAIL(AGT_EINVAL, "agt_mpi_send: bad peer list (%d peers)", npeers);
  reap();
  size_t size = (size_t)(AGT_NET_HEADER + len);
  struct sbuf *b = take_sbuf(size);
  if (!b) return AGT_FAIL(AGT_ENOMEM, "agt_mpi_send: no memory for a %lld-byte message", (long long)len);
  agt_net_header(b->data, type, worker, t->session, step, aux, len);
  if (len > 0) memcpy(b->data + AGT_NET_HEADER, data, (size_t)len);
  agt_status st = AGT_OK;
  for (int i = 0; i < npeers; i++) {
    /* a worker's handle: to rank 0; a channel: to the ranks given, or its first rank */
    int64_t dest = listed ? peers[i] : t->nranks ? t->ranks[0] : 0;
    if (sent) sent[i] = 0;
    if (dest < 0 || dest >= G.size || dest == G.rank) continue; /* not a peer of this run */
    if (t->nranks && rank_index(t, (int)dest) < 0) continue;    /* nor of this channel */
    if (in_flight_to((int)dest) >= HWM) {
      if (sent) sent[i] = -1;
      continue;
    }
    struct op *o = push_op();
    if (!o) {
      st = AGT_FAIL(AGT_ENOMEM, "agt_mpi_send: out of memory");
      break;
    }
    int rc = MPI_Isend(b->data, (int)size, MPI_BYTE, (int)dest, t->tag, MPI_COMM_WORLD, &o->req);
    if (rc != MPI_SUCCESS) {
      G.nops--;
      st = mfail(rc, "MPI_Isend");
      break;
    }
    o->dest = (int)dest;
    o->buf = b;
    b->refs++;
    if (sent) sent[i] = 1;
  }
  if (b->refs == 0) give_sbuf(b);
  return st;
}

/* Starts receiving the message probed from rank src: into the slot's buffer when it may be
 * taken, else into a sink (make_sink), marked DROP with the reason. */
static agt_status start_recv(agt_mpi *t, int src, MPI_Message *msg, const MPI_Status *status) {
  slot *s = &t->slots[src];
  MPI_Count count = 0;
  if (MPI_Get_elements_x(status, MPI_BYTE, &count) != MPI_SUCCESS || count < 0) count = 0;
  int64_t cap = AGT_NET_HEADER + (t->max_payload > 1024 ? t->max_payload : 1024);
  s->why[0] = 0;
  if (status->MPI_TAG != t->tag)
    snprintf(s->why, sizeof s->why, "a message of tag %d from rank %d (agt's tag %s is %d)", status->MPI_TAG, src,
             t->nranks ? "between Byzantine ranks" : "to and from the PS", t->tag);
  else if (G.rank != 0 && src != 0 && !t->nranks)
    snprintf(s->why, sizeof s->why, "a message from rank %d (a worker takes messages from the PS, rank 0, only)", src);
  else if (count > cap)
    snprintf(s->why, sizeof s->why, "a message of %lld bytes from rank %d, above the cap of %lld (dropped unread)",
             (long long)count, src, (long long)cap);
  if (!s->why[0] && (size_t)count > s->cap) {
    unsigned char *p = realloc(s->buf, (size_t)count);
    if (p) {
      s->buf = p;
      s->cap = (size_t)count;
    } else {
      snprintf(s->why, sizeof s->why, "a message of %lld bytes from rank %d: no memory to receive it",
               (long long)count, src);
    }
  }
  int rc;
  s->count = count;
  if (!s->why[0]) {
    s->kind = FRAME;
    rc = MPI_Imrecv(s->buf, (int)count, MPI_BYTE, msg, &s->req);
  } else {
    s->kind = DROP;
    if (!(s->sink = make_sink((size_t)count, &s->sink_len)))
      return AGT_FAIL(AGT_ENOMEM, "agt_mpi_recv: cannot map a sink for a %lld-byte message", (long long)count);
    /* count bytes exactly (no truncation): whole chunks of SINK_CHUNK, then the rest */
    MPI_Datatype chunk, type;
    int lens[2] = { (int)(count / SINK_CHUNK), (int)(count % SINK_CHUNK) };
    MPI_Aint disp[2] = { 0, (MPI_Aint)(count / SINK_CHUNK) * SINK_CHUNK };
    MPI_Type_contiguous(SINK_CHUNK, MPI_BYTE, &chunk);
    MPI_Datatype types[2] = { chunk, MPI_BYTE };
    MPI_Type_create_struct(2, lens, disp, types, &type);
    MPI_Type_commit(&type);
    rc = MPI_Imrecv(s->sink, 1, type, msg, &s->req);
    MPI_Type_free(&type);
    MPI_Type_free(&chunk);
  }
  if (rc != MPI_SUCCESS) {
    s->kind = IDLE;
    return mfail(rc, "MPI_Imrecv");
  }
  return AGT_OK;
}

/* The message of a finished receive, decoded as agt_net_recv does. */
static agt_status finish_recv(agt_mpi *t, int src, agt_net_msg *m) {
  slot *s = &t->slots[src];
  int kind = s->kind;
  s->kind = IDLE;
  if (s->sink) {
    munmap(s->sink, s->sink_len);
    s->sink = NULL;
  }
  agt_status st = kind == DROP ? AGT_FAIL(AGT_NET_REJECTED, "%s", s->why)
                               : agt_net_decode(s->buf, (size_t)s->count, t->session, t->max_payload, m);
  if (st == AGT_NET_REJECTED) t->rejected++;
  m->peer = src;
  m->auth = st != AGT_OK ? -1 : G.rank == 0 ? src - 1 : t->nranks ? rank_index(t, src) : -1;
  return st;
}

agt_status agt_mpi_recv(agt_mpi *t, int timeout_ms, agt_net_msg *m) {
  if (!t || !m) return AGT_FAIL(AGT_EINVAL, "agt_mpi_recv: NULL argument");
  if (timeout_ms < 0) return AGT_FAIL(AGT_EINVAL, "agt_mpi_recv: timeout must be >= 0 ms, got %d", timeout_ms);
  if (!live()) return AGT_FAIL(AGT_EINVAL, "agt_mpi_recv: MPI is not running");
  memset(m, 0, sizeof *m);
  m->auth = -1;
  double t_end = now() + timeout_ms / 1000.0;
  long sleep_us = 0;
  for (;;) {
    if (agt_interrupted()) return AGT_FAIL(AGT_EINTR, "interrupted");
    reap();
    int started = 0, waiting = 0;
    /* Receives in flight first (in rank order from a rotating start), then new messages. */
    for (int k = 0; k < G.size; k++) {
      int src = (t->next + k) % G.size;
      slot *s = &t->slots[src];
      if (s->kind == IDLE) continue;
      int done = 0;
      MPI_Status status;
      int rc = MPI_Test(&s->req, &done, &status);
      if (rc != MPI_SUCCESS && s->kind == FRAME) {
        s->kind = IDLE;
        return mfail(rc, "receiving a message (MPI_Test)");
      }
      /* a sink's receive that failed is over too: its message is dropped either way */
      if (!done && rc == MPI_SUCCESS) {
        waiting = 1;
        continue;
      }
      t->next = (src + 1) % G.size;
      return finish_recv(t, src, m);
    }
    for (int src = 0; src < G.size; src++) {
      if (!probes(t, src) || t->slots[src].kind != IDLE) continue;
      int flag = 0;
      MPI_Message msg;
      MPI_Status status;
      int rc = MPI_Improbe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &msg, &status);
      if (rc != MPI_SUCCESS) return mfail(rc, "MPI_Improbe");
      if (!flag) continue;
      AGT_TRY(start_recv(t, src, &msg, &status));
      started = 1;
    }
    if (started) {
      sleep_us = 0;
      continue;
    }
    if (now() >= t_end) return AGT_NET_TIMEOUT;
    /* Nothing new: back off from 10 µs to 0.25 ms (0.1 ms while a message is in flight either
     * way: MPI moves a message only inside its calls, on both sides). A 1 ms cap cost a third of
     * the steps/s of fashion-mnist with 4 worker ranks (440 against 590–690 with 0.1–0.25 ms). */
    long cap = waiting || G.nops > 0 ? 100 : 250;
    sleep_us = sleep_us ? (sleep_us * 2 > cap ? cap : sleep_us * 2) : 10;
    nap(sleep_us);
  }
}
