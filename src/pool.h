/* pool.h — the engine's thread pool.
 *
 * One process-wide pool, sized to the machine (AGT_NUM_THREADS overrides;
 * agt_pool_set_threads at run time). agt_parallel_for splits [0, total) into
 * chunks of `grain` items whose boundaries depend only on total and grain,
 * never on the thread count: a kernel that reduces per-chunk partial results
 * in chunk order is bit-identical whatever the number of threads.
 *
 * The calling thread takes part. Nested calls run serially in the caller.
 * fn must not call back into Lua. A kernel that sees agt_interrupted() should
 * stop early; agt_parallel_for then returns AGT_EINTR. */
#ifndef AGT_POOL_H
#define AGT_POOL_H

#include "status.h"

/* ffi:begin */
int agt_pool_threads(void);
agt_status agt_pool_set_threads(int n);   /* n <= 0: back to the default */
int agt_pool_default_threads(void);
/* ffi:end */

/* fn(ctx, begin, end, chunk_index): process items [begin, end). */
typedef void (*agt_range_fn)(void *ctx, size_t begin, size_t end, size_t chunk);
agt_status agt_parallel_for(size_t total, size_t grain, agt_range_fn fn, void *ctx);
/* Number of chunks agt_parallel_for(total, grain, ...) will use. */
size_t agt_chunk_count(size_t total, size_t grain);

#endif
