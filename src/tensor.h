/* tensor.h — n-dimensional contiguous tensors over refcounted storage, on a device.
 *
 * A tensor is a view: (storage, byte offset, dtype, shape). Storage lives on one device, fixed
 * at allocation: the CPU (64-byte aligned, allocated through mem.h) or a CUDA device (allocated
 * through gpu.h, on the device the engine drives, whose ordinal the storage records). It is
 * freed when its last view is released. Views (a row, a reshape, a narrow along dim 0) share
 * storage and stay contiguous. Shapes and element counts are int64/size_t.
 * agt_tensor_release takes ownership of one reference; every new/view/retain/to returns a new
 * one.
 *
 * agt_tensor_data of a CUDA tensor is a device pointer: only device kernels may read it.
 * Copies between devices are explicit (agt_tensor_copy, agt_tensor_to); nothing moves a tensor
 * implicitly. Page-locking belongs to the storage: agt_tensor_pin registers a host storage with
 * the CUDA driver once (a second pin, from any view, is a no-op) and the storage is unregistered
 * when it is freed, so two users of one host tensor never register it twice. */
#ifndef AGT_TENSOR_H
#define AGT_TENSOR_H

#include "status.h"

/* ffi:begin */
typedef struct agt_tensor agt_tensor;
enum { AGT_F32 = 0, AGT_I32 = 1, AGT_U8 = 2, AGT_I64 = 3 };
enum { AGT_MAX_DIMS = 8 };
enum { AGT_DEV_CPU = 0, AGT_DEV_CUDA = 1 };

agt_status agt_tensor_new(int dtype, int ndim, const int64_t *shape, agt_tensor **out); /* zeroed */
/* Zeroed, on device (AGT_DEV_CPU or AGT_DEV_CUDA); AGT_ENOTSUP without CUDA or a device. */
agt_status agt_tensor_new_on(int device, int dtype, int ndim, const int64_t *shape,
                             agt_tensor **out);
/* A tensor over memory the caller owns (host or device bytes of the current CUDA device), e.g.
 * a NumPy or PyTorch array: never freed here; it must outlive the tensor and its views. */
agt_status agt_tensor_wrap(int device, void *data, int dtype, int ndim, const int64_t *shape,
                           agt_tensor **out);
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
int agt_tensor_device(const agt_tensor *t);      /* AGT_DEV_CPU or AGT_DEV_CUDA */
int agt_tensor_device_index(const agt_tensor *t); /* the CUDA ordinal; 0 on the CPU */
/* Same numel and dtype, any two devices (host<->device copies synchronize). */
agt_status agt_tensor_copy(agt_tensor *dst, const agt_tensor *src);
/* A new tensor on device with t's dtype, shape and values (a copy even on t's own device). */
agt_status agt_tensor_to(const agt_tensor *t, int device, agt_tensor **out);
/* Page-locks t's host storage (all of it) once; unregistered when the storage is freed. */
agt_status agt_tensor_pin(agt_tensor *t);
int agt_tensor_pinned(const agt_tensor *t);      /* 1 when the storage is page-locked by a pin */
/* ffi:end */

#endif
