/* tensor.c — refcounted storage on a device and contiguous views (see tensor.h).
 *
 * Ownership: a tensor handle owns one reference to its storage; the handle itself is owned by
 * whoever received it (agt_tensor_release frees it). The storage's bytes are freed with its
 * last reference, by the allocator of its device (mem.h for the CPU, gpu.h for CUDA), after
 * the page-lock of a pinned host storage is released. Views are always contiguous, so data +
 * numel describe them fully. */
#include "tensor.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "mem.h"

typedef struct {
  atomic_int refs;
  int device;     /* AGT_DEV_CPU or AGT_DEV_CUDA */
  int index;      /* CUDA ordinal of the device the bytes are on; 0 on the CPU */
  int pinned;     /* host storage page-locked by agt_tensor_pin */
  int borrowed;   /* bytes owned by the caller of agt_tensor_wrap: never freed nor unpinned here */
  size_t bytes;
  void *data;
} storage;

struct agt_tensor {
  storage *st;
  size_t offset;  /* bytes from the start of the storage */
  int dtype, ndim;
  int64_t shape[AGT_MAX_DIMS];
  size_t numel;
};

size_t agt_tensor_elem_size(int dtype) {
  switch (dtype) {
    case AGT_F32: case AGT_I32: return 4;
    case AGT_U8: return 1;
    case AGT_I64: return 8;
    default: return 0;
  }
}

static agt_status check_shape(int ndim, const int64_t *shape, size_t *numel) {
  if (ndim < 0 || ndim > AGT_MAX_DIMS)
    return AGT_FAIL(AGT_EINVAL, "a tensor has 0 to %d dimensions, got %d", AGT_MAX_DIMS, ndim);
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return AGT_FAIL(AGT_EINVAL, "dimension %d is negative (%lld)", i + 1, (long long)shape[i]);
    if (shape[i] > 0 && n > SIZE_MAX / 16 / (size_t)shape[i])
      return AGT_FAIL(AGT_EINVAL, "tensor shape overflows size_t");
    n *= (size_t)shape[i];
  }
  *numel = n;
  return AGT_OK;
}

static agt_tensor *handle(storage *st, size_t offset, int dtype, int ndim, const int64_t *shape,
                          size_t numel) {
  agt_tensor *t = malloc(sizeof *t);
  if (!t) return NULL;
  t->st = st;
  t->offset = offset;
  t->dtype = dtype;
  t->ndim = ndim;
  memset(t->shape, 0, sizeof t->shape);
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->numel = numel;
  return t;
}

static const char *device_name(int device) { return device == AGT_DEV_CUDA ? "cuda" : "cpu"; }

/* Frees the bytes of a storage with its device's allocator (after unpinning). */
static void storage_free_bytes(storage *st) {
  if (st->borrowed) { /* the caller's bytes: only the page-lock taken here is undone */
    if (st->pinned) agt_gpu_host_unregister(st->data);
    return;
  }
  if (st->device == AGT_DEV_CUDA) {
    agt_gpu_free(st->data);
  } else {
    if (st->pinned) agt_gpu_host_unregister(st->data);
    agt_free(st->data, st->bytes);
  }
}

agt_status agt_tensor_new_on(int device, int dtype, int ndim, const int64_t *shape,
                             agt_tensor **out) {
  *out = NULL;
  if (device != AGT_DEV_CPU && device != AGT_DEV_CUDA)
    return AGT_FAIL(AGT_EINVAL, "unknown device %d (expected AGT_DEV_CPU or AGT_DEV_CUDA)", device);
  size_t es = agt_tensor_elem_size(dtype);
  if (!es) return AGT_FAIL(AGT_EINVAL, "unknown dtype %d", dtype);
  size_t numel;
  AGT_TRY(check_shape(ndim, shape, &numel));
  storage *st = malloc(sizeof *st);
  if (!st) return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  st->device = device;
  st->index = 0;
  st->pinned = 0;
  st->borrowed = 0;
  st->bytes = numel * es;
  if (device == AGT_DEV_CUDA) {
    agt_status s = agt_gpu_malloc(&st->data, st->bytes);
    if (s == AGT_OK) s = agt_gpu_memset(st->data, 0, st->bytes);
    if (s != AGT_OK) {
      agt_gpu_free(st->data);
      free(st);
      return s;
    }
    st->index = agt_gpu_device();
  } else {
    st->data = agt_calloc(st->bytes);
    if (!st->data) {
      free(st);
      return AGT_ENOMEM; /* message set by agt_alloc */
    }
  }
  atomic_init(&st->refs, 1);
  agt_tensor *t = handle(st, 0, dtype, ndim, shape, numel);
  if (!t) {
    storage_free_bytes(st);
    free(st);
    return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  }
  *out = t;
  return AGT_OK;
}

agt_status agt_tensor_wrap(int device, void *data, int dtype, int ndim, const int64_t *shape,
                           agt_tensor **out) {
  *out = NULL;
  if (device != AGT_DEV_CPU && device != AGT_DEV_CUDA)
    return AGT_FAIL(AGT_EINVAL, "unknown device %d (expected AGT_DEV_CPU or AGT_DEV_CUDA)", device);
  size_t es = agt_tensor_elem_size(dtype);
  if (!es) return AGT_FAIL(AGT_EINVAL, "unknown dtype %d", dtype);
  size_t numel;
  AGT_TRY(check_shape(ndim, shape, &numel));
  if (!data && numel > 0) return AGT_FAIL(AGT_EINVAL, "wrap: NULL data for %zu elements", numel);
  storage *st = malloc(sizeof *st);
  if (!st) return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  st->device = device;
  st->index = device == AGT_DEV_CUDA ? agt_gpu_device() : 0;
  st->pinned = 0;
  st->borrowed = 1;
  st->bytes = numel * es;
  st->data = data;
  atomic_init(&st->refs, 1);
  agt_tensor *t = handle(st, 0, dtype, ndim, shape, numel);
  if (!t) {
    free(st);
    return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  }
  *out = t;
  return AGT_OK;
}

agt_status agt_tensor_new(int dtype, int ndim, const int64_t *shape, agt_tensor **out) {
  return agt_tensor_new_on(AGT_DEV_CPU, dtype, ndim, shape, out);
}

agt_status agt_tensor_view(agt_tensor *t, int ndim, const int64_t *shape, size_t elem_offset,
                           agt_tensor **out) {
  *out = NULL;
  size_t numel;
  AGT_TRY(check_shape(ndim, shape, &numel));
  if (elem_offset > t->numel || numel > t->numel - elem_offset)
    return AGT_FAIL(AGT_EINVAL, "view of %zu elements at offset %zu exceeds a tensor of %zu", numel,
                    elem_offset, t->numel);
  agt_tensor *v = handle(t->st, t->offset + elem_offset * agt_tensor_elem_size(t->dtype), t->dtype,
                         ndim, shape, numel);
  if (!v) return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  atomic_fetch_add(&t->st->refs, 1);
  *out = v;
  return AGT_OK;
}

agt_status agt_tensor_clone(const agt_tensor *t, agt_tensor **out) {
  return agt_tensor_to(t, t->st->device, out);
}

void agt_tensor_retain(agt_tensor *t) { atomic_fetch_add(&t->st->refs, 1); }

void agt_tensor_release(agt_tensor *t) {
  if (!t) return;
  storage *st = t->st;
  free(t);
  if (atomic_fetch_sub(&st->refs, 1) == 1) {
    storage_free_bytes(st);
    free(st);
  }
}

void *agt_tensor_data(const agt_tensor *t) { return (char *)t->st->data + t->offset; }
int agt_tensor_dtype(const agt_tensor *t) { return t->dtype; }
int agt_tensor_ndim(const agt_tensor *t) { return t->ndim; }
int64_t agt_tensor_dim(const agt_tensor *t, int i) { return i >= 0 && i < t->ndim ? t->shape[i] : 0; }
size_t agt_tensor_numel(const agt_tensor *t) { return t->numel; }
int agt_tensor_refcount(const agt_tensor *t) { return atomic_load(&t->st->refs); }
int agt_tensor_device(const agt_tensor *t) { return t->st->device; }
int agt_tensor_device_index(const agt_tensor *t) { return t->st->index; }
int agt_tensor_pinned(const agt_tensor *t) { return t->st->pinned; }

/* A CUDA tensor is usable only while the engine drives the device its bytes are on. */
static agt_status check_current(const agt_tensor *t) {
  if (t->st->device == AGT_DEV_CUDA && t->st->index != agt_gpu_device())
    return AGT_FAIL(AGT_EINVAL, "the tensor is on cuda:%d but the engine drives cuda:%d",
                    t->st->index, agt_gpu_device());
  return AGT_OK;
}

agt_status agt_tensor_copy(agt_tensor *dst, const agt_tensor *src) {
  if (dst->dtype != src->dtype || dst->numel != src->numel)
    return AGT_FAIL(AGT_EINVAL, "copy needs the same dtype and size: %zu elements of dtype %d into %zu of dtype %d",
                    src->numel, src->dtype, dst->numel, dst->dtype);
  AGT_TRY(check_current(dst));
  AGT_TRY(check_current(src));
  void *d = agt_tensor_data(dst);
  const void *s = agt_tensor_data(src);
  size_t bytes = src->numel * agt_tensor_elem_size(src->dtype);
  int dd = dst->st->device, sd = src->st->device;
  if (bytes == 0) return AGT_OK;
  if (dd == AGT_DEV_CPU && sd == AGT_DEV_CPU) {
    memmove(d, s, bytes);
    return AGT_OK;
  }
  if (dd == AGT_DEV_CUDA && sd == AGT_DEV_CUDA) return agt_gpu_copy_d2d(d, s, bytes);
  if (dd == AGT_DEV_CUDA) return agt_gpu_copy_h2d(d, s, bytes);
  return agt_gpu_copy_d2h(d, s, bytes);
}

agt_status agt_tensor_to(const agt_tensor *t, int device, agt_tensor **out) {
  *out = NULL;
  AGT_TRY(check_current(t));
  AGT_TRY(agt_tensor_new_on(device, t->dtype, t->ndim, t->shape, out));
  agt_status s = agt_tensor_copy(*out, t);
  if (s != AGT_OK) {
    agt_tensor_release(*out);
    *out = NULL;
  }
  return s;
}

agt_status agt_tensor_pin(agt_tensor *t) {
  storage *st = t->st;
  if (st->device != AGT_DEV_CPU)
    return AGT_FAIL(AGT_EINVAL, "pin: the tensor is on %s:%d; only host storage is page-locked",
                    device_name(st->device), st->index);
  if (st->pinned || st->bytes == 0) return AGT_OK;
  AGT_TRY(agt_gpu_host_register(st->data, st->bytes));
  st->pinned = 1;
  return AGT_OK;
}
