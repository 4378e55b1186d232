/* mem.c — aligned allocation with accounting and the collect hint (see mem.h). */
#include "mem.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define AGT_ALIGN 64

static atomic_size_t in_use, peak, since_gc;
static atomic_int gc_wanted;
static size_t gc_threshold = (size_t)256 << 20; /* collect after 256 MiB of new engine memory */

/* Guard pages (AGT_DEBUG set, not empty and not "0", read at the first allocation): each
 * buffer is mapped on its own so that its last byte ends a page followed by an inaccessible
 * one, and a read or write past its end by C code faults at once instead of corrupting the
 * next buffer. Its start is aligned as its size allows (a float array to 4 bytes, a double
 * array to 8) rather than to 64; before it, in the same pages, the mapping's size. Off
 * AGT_DEBUG the cost is one relaxed load per allocation. Not under AddressSanitizer, whose
 * redzones check more. */
#if defined(__SANITIZE_ADDRESS__)
#define AGT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AGT_ASAN 1
#endif
#endif
#ifdef AGT_ASAN
#include <sanitizer/asan_interface.h>
#define AGT_GUARDS_POSSIBLE 0
#else
#define AGT_GUARDS_POSSIBLE 1
#endif

#define GUARD_HEAD 16 /* the mapping's size and a magic word, just before the buffer */
static const uint64_t guard_magic = 0x61677467756172ULL; /* "agtguar" */
static atomic_int guard_mode = -1;

static int guarded(void) {
  int m = atomic_load_explicit(&guard_mode, memory_order_relaxed);
  if (m < 0) {
    const char *e = getenv("AGT_DEBUG");
    m = AGT_GUARDS_POSSIBLE && e && *e && strcmp(e, "0") != 0;
    atomic_store(&guard_mode, m);
  }
  return m;
}

int agt_mem_guarded(void) { return guarded(); }

static void *guard_alloc(size_t bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t need = bytes + GUARD_HEAD;
  size_t span = (need + page - 1) / page * page;
  if (need < bytes || span < need || span + page < span) return NULL;
  char *base = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return NULL;
  if (mprotect(base + span, page, PROT_NONE) != 0) {
    munmap(base, span + page);
    return NULL;
  }
  char *p = base + span - bytes;
  uint64_t head[2] = {(uint64_t)span, guard_magic};
  memcpy(p - GUARD_HEAD, head, sizeof head);
  return p;
}

static void guard_free(void *ptr) {
  char *p = ptr;
  uint64_t head[2];
  memcpy(head, p - GUARD_HEAD, sizeof head);
  if (head[1] != guard_magic) abort(); /* not from guard_alloc, or its head overwritten */
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *base = (char *)((uintptr_t)(p - GUARD_HEAD) & ~(uintptr_t)(page - 1));
  munmap(base, (size_t)head[0] + page);
}

void *agt_alloc(size_t bytes) {
  if (bytes == 0) bytes = 1;
  size_t rounded = (bytes + AGT_ALIGN - 1) / AGT_ALIGN * AGT_ALIGN;
  if (rounded < bytes) {
    AGT_FAIL(AGT_ENOMEM, "allocation of %zu bytes overflows", bytes);
    return NULL;
  }
  void *p = guarded() ? guard_alloc(bytes) : aligned_alloc(AGT_ALIGN, rounded);
#ifdef AGT_ASAN
  /* the rounding slack is not the caller's: AddressSanitizer reports an access to it (free
   * and the next allocation of the chunk reset the shadow) */
  if (p) ASAN_POISON_MEMORY_REGION((char *)p + bytes, rounded - bytes);
#endif
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
  if (p && !guarded()) memset(p, 0, bytes); /* fresh mappings are zero */
  return p;
}

void agt_free(void *p, size_t bytes) {
  if (!p) return;
  if (bytes == 0) bytes = 1;
  atomic_fetch_sub(&in_use, bytes);
  if (guarded()) guard_free(p);
  else free(p);
}

size_t agt_mem_in_use(void) { return atomic_load(&in_use); }
size_t agt_mem_peak(void) { return atomic_load(&peak); }
int agt_mem_gc_hint(void) { return atomic_load(&gc_wanted); }

void agt_mem_gc_done(void) {
  atomic_store(&since_gc, 0);
  atomic_store(&gc_wanted, 0);
}

void agt_mem_set_gc_threshold(size_t bytes) { gc_threshold = bytes ? bytes : 1; }
