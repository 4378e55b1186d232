/* gpu_runtime.cu — the device itself: query, memory, copies, page-locking, the scratch arenas,
 * event timers and a device-side random fill for benchmarks.
 *
 * The first call that needs the device selects it (cudaSetDevice) and caches its properties;
 * with no device, or a driver too old for this runtime, agt_gpu_available() returns 0 and the
 * entries return AGT_ENOTSUP with CUDA's reason. Every CUDA error becomes an agt_status.
 *
 * Errors are reported where they happen and cleared there (agt_cu_fail): CUDA keeps the last
 * error of the thread until cudaGetLastError reads it, and a launch check (AGT_CU_LAUNCH) would
 * otherwise report a stale error of an earlier, unrelated call, again and again. Errors that
 * corrupt the context are sticky (every later call returns them, clearing does not help): the
 * device is then marked unusable with that message, so later calls fail at once and say why. */
#include "gpu_internal.h"

#include <stdio.h>
#include <string.h>

static int g_state = -1;          /* -1: not probed, 0: no device, 1: ready */
static int g_device = 0;
static char g_why[512];
static cudaDeviceProp g_prop;

#define NSLOTS 2
static void *g_scratch[NSLOTS];   /* device arenas */
static size_t g_scratch_bytes[NSLOTS];
static void *g_hscratch = NULL;   /* pinned host arena */
static size_t g_hscratch_bytes = 0;
static cudaEvent_t g_ev0, g_ev1;
static int g_events = 0;

/* The errors after which the context cannot be used again (CUDA's "sticky" errors). */
static int sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress: case cudaErrorLaunchFailure: case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction: case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace: case cudaErrorInvalidPc: case cudaErrorAssert:
    case cudaErrorLaunchTimeout: case cudaErrorECCUncorrectable: case cudaErrorContextIsDestroyed:
      return 1;
    default:
      return 0;
  }
}

agt_status agt_cu_fail(cudaError_t e, const char *what, const char *file, int line) {
  cudaGetLastError();   /* clear it: the next call must not see this one's error */
  agt_status code = (e == cudaErrorMemoryAllocation) ? AGT_ENOMEM
                  : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) ? AGT_ENOTSUP
                  : AGT_EIO;
  if (sticky(e)) {
    snprintf(g_why, sizeof g_why,
             "CUDA device %d unusable since %s failed: %s (%s); restart agt to use it again",
             g_device, what, cudaGetErrorString(e), cudaGetErrorName(e));
    g_state = 0;
    return agt_fail_at(code, file, line, "%s", g_why);
  }
  return agt_fail_at(code, file, line, "CUDA: %s failed: %s (%s)", what, cudaGetErrorString(e),
                     cudaGetErrorName(e));
}

static void probe(void) {
  if (g_state >= 0) return;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    snprintf(g_why, sizeof g_why, "no CUDA device: %s",
             e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    cudaGetLastError();
    g_state = 0;
    return;
  }
  e = cudaSetDevice(g_device);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&g_prop, g_device);
  if (e != cudaSuccess) {
    snprintf(g_why, sizeof g_why, "CUDA device %d unusable: %s", g_device, cudaGetErrorString(e));
    cudaGetLastError();
    g_state = 0;
    return;
  }
  g_state = 1;
}

agt_status agt_gpu_ensure(void) {
  probe();
  if (g_state != 1) return AGT_FAIL(AGT_ENOTSUP, "%s", g_why);
  return AGT_OK;
}

extern "C" int agt_gpu_available(void) {
  probe();
  return g_state == 1;
}

extern "C" int agt_gpu_device_count(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) { cudaGetLastError(); return 0; }
  return count;
}

extern "C" int agt_gpu_device(void) { return g_device; }

extern "C" agt_status agt_gpu_set_device(int ordinal) {
  int count = agt_gpu_device_count();
  if (ordinal < 0 || ordinal >= count)
    return AGT_FAIL(AGT_EINVAL, "GPU device %d does not exist (%d seen)", ordinal, count);
  agt_gpu_release_scratch();
  g_device = ordinal;
  g_state = -1;
  return agt_gpu_ensure();
}

extern "C" agt_status agt_gpu_describe(char *buf, size_t cap) {
  AGT_TRY(agt_gpu_ensure());
  if (!buf || cap == 0) return AGT_FAIL(AGT_EINVAL, "agt_gpu_describe needs a buffer");
  snprintf(buf, cap, "%s, sm_%d%d, %d SMs, %.1f GiB, %d MB L2", g_prop.name, g_prop.major,
           g_prop.minor, g_prop.multiProcessorCount,
           (double)g_prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), g_prop.l2CacheSize >> 20);
  return AGT_OK;
}

extern "C" agt_status agt_gpu_mem_info(size_t *free_bytes, size_t *total_bytes) {
  AGT_TRY(agt_gpu_ensure());
  size_t f = 0, t = 0;
  AGT_CU(cudaMemGetInfo(&f, &t));
  if (free_bytes) *free_bytes = f;
  if (total_bytes) *total_bytes = t;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_malloc(void **p, size_t bytes) {
  if (!p) return AGT_FAIL(AGT_EINVAL, "agt_gpu_malloc needs an out pointer");
  *p = NULL;
  AGT_TRY(agt_gpu_ensure());
  if (bytes == 0) bytes = 1;
  cudaError_t e = cudaMalloc(p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *p = NULL;
    return AGT_FAIL(AGT_ENOMEM, "CUDA: cannot allocate %zu bytes on the device: %s", bytes,
                    cudaGetErrorString(e));
  }
  return AGT_OK;
}

extern "C" agt_status agt_gpu_free(void *p) {
  if (!p || g_state != 1) return AGT_OK;   /* nothing to free on a lost context */
  AGT_CU(cudaFree(p));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_memset(void *p, int byte, size_t bytes) {
  AGT_TRY(agt_gpu_ensure());
  AGT_CU(cudaMemset(p, byte, bytes));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_copy_h2d(void *dst, const void *src, size_t bytes) {
  AGT_TRY(agt_gpu_ensure());
  AGT_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_copy_d2h(void *dst, const void *src, size_t bytes) {
  AGT_TRY(agt_gpu_ensure());
  AGT_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_copy_d2d(void *dst, const void *src, size_t bytes) {
  AGT_TRY(agt_gpu_ensure());
  AGT_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_host_register(void *p, size_t bytes) {
  AGT_TRY(agt_gpu_ensure());
  cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
  if (e == cudaErrorHostMemoryAlreadyRegistered) {
    cudaGetLastError();
    return AGT_FAIL(AGT_EINVAL, "CUDA: host memory at %p is already page-locked (pin a tensor "
                    "with agt_tensor_pin, which registers its storage once)", p);
  }
  if (e != cudaSuccess) return agt_cu_fail(e, "cudaHostRegister", __FILE__, __LINE__);
  return AGT_OK;
}

extern "C" agt_status agt_gpu_host_unregister(void *p) {
  if (g_state != 1) return AGT_OK;   /* a lost context took its registrations with it */
  AGT_CU(cudaHostUnregister(p));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_synchronize(void) {
  AGT_TRY(agt_gpu_ensure());
  AGT_CU(cudaDeviceSynchronize());
  return AGT_OK;
}

extern "C" void agt_gpu_release_scratch(void) {
  if (g_state != 1) return;
  cudaDeviceSynchronize();
  for (int k = 0; k < NSLOTS; k++) {
    if (g_scratch[k]) cudaFree(g_scratch[k]);
    g_scratch[k] = NULL;
    g_scratch_bytes[k] = 0;
  }
  if (g_hscratch) cudaFreeHost(g_hscratch);
  g_hscratch = NULL;
  g_hscratch_bytes = 0;
  cudaGetLastError();
}

static agt_status scratch_slot(int k, size_t bytes, void **dev) {
  AGT_TRY(agt_gpu_ensure());
  if (bytes > g_scratch_bytes[k]) {
    if (g_scratch[k]) {
      AGT_CU(cudaDeviceSynchronize());   /* earlier work may still read it */
      AGT_CU(cudaFree(g_scratch[k]));
      g_scratch[k] = NULL;
      g_scratch_bytes[k] = 0;
    }
    size_t want = bytes + bytes / 4 + 4096;
    cudaError_t e = cudaMalloc(&g_scratch[k], want);
    if (e != cudaSuccess) {
      cudaGetLastError();
      g_scratch[k] = NULL;
      return AGT_FAIL(AGT_ENOMEM, "CUDA: cannot allocate %zu bytes of scratch: %s", want,
                      cudaGetErrorString(e));
    }
    g_scratch_bytes[k] = want;
  }
  *dev = g_scratch[k];
  return AGT_OK;
}

agt_status agt_gpu_scratch(size_t bytes, void **dev) { return scratch_slot(0, bytes, dev); }
agt_status agt_gpu_vec_scratch(size_t bytes, void **dev) { return scratch_slot(1, bytes, dev); }

agt_status agt_gpu_host_scratch(size_t bytes, void **host) {
  AGT_TRY(agt_gpu_ensure());
  if (bytes > g_hscratch_bytes) {
    if (g_hscratch) {
      AGT_CU(cudaDeviceSynchronize());
      AGT_CU(cudaFreeHost(g_hscratch));
      g_hscratch = NULL;
      g_hscratch_bytes = 0;
    }
    size_t want = bytes + 4096;
    AGT_CU(cudaMallocHost(&g_hscratch, want));
    g_hscratch_bytes = want;
  }
  *host = g_hscratch;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_timer_start(void) {
  AGT_TRY(agt_gpu_ensure());
  if (!g_events) {
    AGT_CU(cudaEventCreate(&g_ev0));
    AGT_CU(cudaEventCreate(&g_ev1));
    g_events = 1;
  }
  AGT_CU(cudaEventRecord(g_ev0, 0));
  return AGT_OK;
}

extern "C" agt_status agt_gpu_timer_stop(double *ms) {
  AGT_TRY(agt_gpu_ensure());
  if (!g_events) return AGT_FAIL(AGT_EINVAL, "agt_gpu_timer_stop without agt_gpu_timer_start");
  AGT_CU(cudaEventRecord(g_ev1, 0));
  AGT_CU(cudaEventSynchronize(g_ev1));
  float t = 0;
  AGT_CU(cudaEventElapsedTime(&t, g_ev0, g_ev1));
  if (ms) *ms = t;
  return AGT_OK;
}

/* ---- random fill: a hash of (seed, index), Box-Muller; for benchmarks and device tests. ---- */
#define FILL_BLOCK 256

__device__ static inline uint32_t mix32(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (uint32_t)x;
}

__global__ void k_fill_normal(float *x, size_t count, uint64_t seed, float mean, float std) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
    uint64_t k = seed * 0x9E3779B97F4A7C15ULL + i;
    float u1 = ((mix32(2 * k) >> 8) + 1) * (1.0f / 16777217.0f);   /* (0, 1] */
    float u2 = (mix32(2 * k + 1) >> 8) * (1.0f / 16777216.0f);
    x[i] = mean + std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

extern "C" agt_status agt_gpu_fill_normal(float *x, size_t count, uint64_t seed, float mean,
                                          float std) {
  AGT_TRY(agt_gpu_ensure());
  if (count == 0) return AGT_OK;
  size_t blocks = (count + FILL_BLOCK - 1) / FILL_BLOCK;
  if (blocks > 65536) blocks = 65536;
  k_fill_normal<<<(unsigned)blocks, FILL_BLOCK>>>(x, count, seed, mean, std);
  AGT_CU_LAUNCH("k_fill_normal");
  return AGT_OK;
}
