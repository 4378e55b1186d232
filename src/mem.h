/* mem.h — aligned allocation with accounting.
 *
 * All engine buffers that can be large (tensors, gradient matrices, scratch)
 * come from agt_alloc: 64-byte aligned, counted in a process-wide total.
 * Lua cannot see these bytes, so the engine keeps a "collect hint": once the
 * bytes allocated since the last acknowledged collection pass a threshold
 * (or an allocation fails), agt_mem_gc_hint() returns 1 and the Lua binding
 * runs its garbage collector before allocating again (and retries once after
 * AGT_ENOMEM). No C function ever calls back into Lua. Under AGT_DEBUG each buffer ends at
 * an inaccessible page, so that C code running past it faults there, and is aligned as its
 * size allows rather than to 64 bytes (mem.c). */
#ifndef AGT_MEM_H
#define AGT_MEM_H

#include "status.h"

/* ffi:begin */
void *agt_alloc(size_t bytes);            /* 64-byte aligned, NULL + message on failure */
void *agt_calloc(size_t bytes);           /* zeroed */
void agt_free(void *p, size_t bytes);     /* bytes as passed to agt_alloc; NULL is fine */
size_t agt_mem_in_use(void);
size_t agt_mem_peak(void);
int agt_mem_gc_hint(void);                /* 1 when Lua should collect garbage now */
void agt_mem_gc_done(void);               /* Lua acknowledges a full collection */
void agt_mem_set_gc_threshold(size_t bytes);
int agt_mem_guarded(void);                /* 1 when buffers end at a guard page (AGT_DEBUG) */
/* ffi:end */

#endif
