/* tensor.h — n-dimensional contiguous tensors over refcounted storage.
 *
 * A tensor is a view: (storage, byte offset, dtype, shape). Storage is
 * 64-byte aligned, allocated through mem.h and freed when its last view is
 * released. Views (a row, a reshape, a narrow along dim 0) share storage and
 * stay contiguous. Shapes and element counts are int64/size_t.
 * agt_tensor_release takes ownership of one reference; every new/view/retain
 * returns a new one. */
#ifndef AGT_TENSOR_H
#define AGT_TENSOR_H

#include "status.h"

/* ffi:begin */
typedef struct agt_tensor agt_tensor;
enum { AGT_F32 = 0, AGT_I32 = 1, AGT_U8 = 2, AGT_I64 = 3 };
enum { AGT_MAX_DIMS = 8 };

agt_status agt_tensor_new(int dtype, int ndim, const int64_t *shape, agt_tensor **out); /* zeroed */
agt_status agt_tensor_view(agt_tensor *t, int ndim, const int64_t *shape, size_t elem_offset,
                           agt_tensor **out);   /* a view of numel(shape) elements from offset */
agt_status agt_tensor_clone(const agt_tensor *t, agt_tensor **out);
void agt_tensor_retain(agt_tensor *t);
void agt_tensor_release(agt_tensor *t);          /* NULL is fine */
void *agt_tensor_data(const agt_tensor *t);
int agt_tensor_dtype(const agt_tensor *t);
int agt_tensor_ndim(const agt_tensor *t);
int64_t agt_tensor_dim(const agt_tensor *t, int i);
size_t agt_tensor_numel(const agt_tensor *t);
size_t agt_tensor_elem_size(int dtype);
int agt_tensor_refcount(const agt_tensor *t);    /* references to the storage */
agt_status agt_tensor_copy(agt_tensor *dst, const agt_tensor *src); /* same numel and dtype */
/* ffi:end */

#endif
