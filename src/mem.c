/* mem.c — aligned allocation with accounting and the collect hint (see mem.h). */
#include "mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define AGT_ALIGN 64

static atomic_size_t in_use, peak, since_gc;
static atomic_int gc_wanted;
static size_t gc_threshold = (size_t)256 << 20; /* collect after 256 MiB of new engine memory */

void *agt_alloc(size_t bytes) {
  if (bytes == 0) bytes = 1;
  size_t rounded = (bytes + AGT_ALIGN - 1) / AGT_ALIGN * AGT_ALIGN;
  if (rounded < bytes) {
    AGT_FAIL(AGT_ENOMEM, "allocation of %zu bytes overflows", bytes);
    return NULL;
  }
  void *p = aligned_alloc(AGT_ALIGN, rounded);
  if (!p) {
    atomic_store(&gc_wanted, 1);
    AGT_FAIL(AGT_ENOMEM, "out of memory allocating %zu bytes (%zu bytes in use by agt)", bytes,
             atomic_load(&in_use));
    return NULL;
  }
  size_t now = atomic_fetch_add(&in_use, bytes) + bytes;
  size_t pk = atomic_load(&peak);
  while (now > pk && !atomic_compare_exchange_weak(&peak, &pk, now)) {}
  if (atomic_fetch_add(&since_gc, bytes) + bytes > gc_threshold) atomic_store(&gc_wanted, 1);
  return p;
}

void *agt_calloc(size_t bytes) {
  void *p = agt_alloc(bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

void agt_free(void *p, size_t bytes) {
  if (!p) return;
  if (bytes == 0) bytes = 1;
  atomic_fetch_sub(&in_use, bytes);
  free(p);
}

size_t agt_mem_in_use(void) { return atomic_load(&in_use); }
size_t agt_mem_peak(void) { return atomic_load(&peak); }
int agt_mem_gc_hint(void) { return atomic_load(&gc_wanted); }

void agt_mem_gc_done(void) {
  atomic_store(&since_gc, 0);
  atomic_store(&gc_wanted, 0);
}

void agt_mem_set_gc_threshold(size_t bytes) { gc_threshold = bytes ? bytes : 1; }
