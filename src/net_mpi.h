/* net_mpi.h — the PS/worker transport over MPI (`agt run --MPI` under mpirun): the messages of
 * net.h (same header, same types, same checks: agt_net_decode), one MPI message each, on
 * MPI_COMM_WORLD. Rank 0 is the PS; rank r >= 1 is worker r-1.
 *
 * Built only where OpenMPI's headers are found, into its own library, libagt_mpi.so (linked
 * with libmpi), which the Lua binding (bindings/agt/mpi.lua) loads when --MPI is given: agt
 * itself neither links nor needs MPI. Its engine symbols (agt_fail_at, agt_net_decode, ...)
 * come from the agt binary that loads it.
 *
 * MPI is initialised once per process (agt_mpi_init, MPI_THREAD_FUNNELED: only the thread that
 * initialised it calls MPI) with errors returned, not fatal, and finalised once
 * (agt_mpi_finalize) after the last message.
 *
 * Semantics, as agt_net's:
 * - A peer is a rank (int64). The PS sends to ranks 1..size-1; a worker sends to rank 0 only
 *   (peers NULL, npeers 1) and takes messages from rank 0 only.
 * - A send never blocks: the frame is copied once into a buffer shared by its peers and handed
 *   to MPI_Isend; sent[i] = -1 ("full") when peer i already has 4 sends not yet completed (it is
 *   not receiving: stalled), 0 when i is not a rank of the run, 1 when started. Buffers are
 *   reused once MPI is done with them (no fresh pages each step).
 * - A receive waits at most timeout_ms: it probes (MPI_Improbe), checks the message's size and
 *   source before receiving it, and receives it with MPI_Imrecv, tested until done or the
 *   deadline (a receive not done by then carries on in the next call; no blocking MPI_Recv, so
 *   a sender that stalls mid-message cannot hang the PS). A message above 48 + max_payload
 *   bytes (at least 1 KiB), of another tag, or from a rank that may not send here is received
 *   into a 48-byte buffer (truncated: nothing is allocated for it) and rejected; a frame that
 *   agt_net_decode refuses is rejected. Rejections return AGT_NET_REJECTED with the reason in
 *   agt_last_error() and the rank in m->peer, and are counted.
 * - On the PS, m->auth = rank - 1: the worker index that rank is (MPI's launcher assigns the
 *   ranks, so a rank cannot speak for another); on a worker -1.
 * - A channel (agt_mpi_channel) is the Byzantine worker ranks' own: a handle on a worker rank
 *   that speaks with the ranks it is given only, on a tag of its own. It claims those ranks:
 *   the process's other handles no longer probe them (their messages wait for the channel),
 *   and it probes no other rank; a message from them of another tag, above the cap or that
 *   agt_net_decode refuses is rejected as above. m->auth is the index of the sender's rank in
 *   the list given (so a rank cannot speak for another there either). A send goes to the
 *   ranks given (peers; others are not sent to: sent[i] = 0), or with peers NULL and npeers 1
 *   to the list's first rank. A rank is in at most one open channel; rank 0 in none.
 * - The PS holds at most one receive buffer per rank (reused), so what the workers can make it
 *   allocate is bounded by size × (48 + max_payload) bytes. (Eager messages that MPI itself
 *   buffers before they are probed are MPI's; the ranks are the processes mpirun started.)
 *
 * Ownership: agt_mpi_new returns a handle owned by the caller, released by agt_mpi_close (a
 * receive still in flight then is completed or cancelled by agt_mpi_finalize). m->data points
 * into the handle's buffer for that rank, valid until the next agt_mpi_recv or close. */
#ifndef AGT_NET_MPI_H
#define AGT_NET_MPI_H

#include "net.h"

/* ffi:begin */
typedef struct agt_mpi agt_mpi;
/* MPI_Init_thread once (later calls return the same rank and size). */
agt_status agt_mpi_init(int *rank, int *size);
/* Waits up to 2 s for the sends still in flight (a BYE), cancels the rest, MPI_Finalize. */
agt_status agt_mpi_finalize(void);
/* MPI_Abort: ends every rank of the run with this exit code. */
void agt_mpi_abort(int code);
/* The MPI library's version line ("Open MPI v4.1.4, ..."). */
const char *agt_mpi_version(void);
/* A transport endpoint on this rank, taking payloads of up to max_payload bytes. */
agt_status agt_mpi_new(int64_t max_payload, agt_mpi **out);
/* A channel with the worker ranks ranks[0..nranks-1] (this rank may be among them), taking
 * payloads of up to max_payload bytes; released by agt_mpi_close. */
agt_status agt_mpi_channel(int64_t max_payload, const int64_t *ranks, int nranks, agt_mpi **out);
void agt_mpi_close(agt_mpi *t);
void agt_mpi_set_session(agt_mpi *t, uint64_t session);
agt_status agt_mpi_send(agt_mpi *t, const int64_t *peers, int npeers, int type, uint32_t worker,
                        int64_t step, double aux, const void *data, int64_t len, int8_t *sent);
agt_status agt_mpi_recv(agt_mpi *t, int timeout_ms, agt_net_msg *m);
int64_t agt_mpi_rejected(const agt_mpi *t);
/* ffi:end */

#endif
