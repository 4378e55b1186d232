/* tensor.c — refcounted storage and contiguous views (see tensor.h).
 *
 * Ownership: a tensor handle owns one reference to its storage; the handle itself is owned by
 * whoever received it (agt_tensor_release frees it). The storage's bytes are freed with its
 * last reference. Views are always contiguous, so data + numel describe them fully. */
#include "tensor.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

typedef struct {
  atomic_int refs;
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

agt_status agt_tensor_new(int dtype, int ndim, const int64_t *shape, agt_tensor **out) {
  *out = NULL;
  size_t es = agt_tensor_elem_size(dtype);
  if (!es) return AGT_FAIL(AGT_EINVAL, "unknown dtype %d", dtype);
  size_t numel;
  AGT_TRY(check_shape(ndim, shape, &numel));
  storage *st = malloc(sizeof *st);
  if (!st) return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  st->bytes = numel * es;
  st->data = agt_calloc(st->bytes);
  if (!st->data) {
    free(st);
    return AGT_ENOMEM; /* message set by agt_alloc */
  }
  atomic_init(&st->refs, 1);
  agt_tensor *t = handle(st, 0, dtype, ndim, shape, numel);
  if (!t) {
    agt_free(st->data, st->bytes);
    free(st);
    return AGT_FAIL(AGT_ENOMEM, "out of memory for a tensor header");
  }
  *out = t;
  return AGT_OK;
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
  AGT_TRY(agt_tensor_new(t->dtype, t->ndim, t->shape, out));
  memcpy(agt_tensor_data(*out), agt_tensor_data(t), t->numel * agt_tensor_elem_size(t->dtype));
  return AGT_OK;
}

void agt_tensor_retain(agt_tensor *t) { atomic_fetch_add(&t->st->refs, 1); }

void agt_tensor_release(agt_tensor *t) {
  if (!t) return;
  storage *st = t->st;
  free(t);
  if (atomic_fetch_sub(&st->refs, 1) == 1) {
    agt_free(st->data, st->bytes);
    free(st);
  }
}

void *agt_tensor_data(const agt_tensor *t) { return (char *)t->st->data + t->offset; }
int agt_tensor_dtype(const agt_tensor *t) { return t->dtype; }
int agt_tensor_ndim(const agt_tensor *t) { return t->ndim; }
int64_t agt_tensor_dim(const agt_tensor *t, int i) { return i >= 0 && i < t->ndim ? t->shape[i] : 0; }
size_t agt_tensor_numel(const agt_tensor *t) { return t->numel; }
int agt_tensor_refcount(const agt_tensor *t) { return atomic_load(&t->st->refs); }

agt_status agt_tensor_copy(agt_tensor *dst, const agt_tensor *src) {
  if (dst->dtype != src->dtype || dst->numel != src->numel)
    return AGT_FAIL(AGT_EINVAL, "copy needs the same dtype and size: %zu elements of dtype %d into %zu of dtype %d",
                    src->numel, src->dtype, dst->numel, dst->dtype);
  memmove(agt_tensor_data(dst), agt_tensor_data(src), src->numel * agt_tensor_elem_size(src->dtype));
  return AGT_OK;
}
