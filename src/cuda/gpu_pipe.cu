/* gpu_pipe.cu — host G to the device with the copy overlapped by the rule.
 *
 * G is cut into column chunks (PIPE_CHUNKS of them, at least PIPE_MIN_COLS columns each). Chunk
 * k is copied as one 2-D copy (n rows of its columns) on a non-blocking copy stream, an event
 * marks its arrival, and the default stream waits for that event and runs the per-coordinate
 * rule on the chunk's columns: chunk k is computed while chunk k+1 is on the bus. Per-coordinate
 * results do not depend on the chunking, so the output equals the rule on device-resident G. */
#include "gpu_internal.h"

#define PIPE_CHUNKS 8
#define PIPE_MIN_COLS 65536

static cudaStream_t g_copy = NULL;
static cudaEvent_t g_ev[PIPE_CHUNKS];

extern "C" agt_status agt_gpu_upload_rule(const float *G_host, size_t n, size_t d, float *G_dev,
                                          int rule, size_t p, float *out_dev) {
  if (!G_host || !G_dev || n < 1 || d < 1)
    return AGT_FAIL(AGT_EINVAL, "upload: needs host G, device G and n, d >= 1 (n=%zu d=%zu)", n, d);
  if (rule != AGT_GPU_RULE_NONE && !out_dev) return AGT_FAIL(AGT_EINVAL, "upload: rule needs out");
  if (rule < AGT_GPU_RULE_NONE || rule > AGT_GPU_RULE_PHOCAS)
    return AGT_FAIL(AGT_EINVAL, "upload: no per-coordinate rule %d", rule);
  if ((rule == AGT_GPU_RULE_TRIMMED_MEAN || rule == AGT_GPU_RULE_PHOCAS) && 2 * p >= n)
    return AGT_FAIL(AGT_EINVAL, "upload: the rule needs n > 2f, got n=%zu f=%zu", n, p);
  if (rule == AGT_GPU_RULE_MEAMED && (p < 1 || p > n))
    return AGT_FAIL(AGT_EINVAL, "upload: meamed needs 1 <= beta <= n, got n=%zu beta=%zu", n, p);
  AGT_TRY(agt_gpu_ensure());
  if (!g_copy) {
    AGT_CU(cudaStreamCreateWithFlags(&g_copy, cudaStreamNonBlocking));
    for (int k = 0; k < PIPE_CHUNKS; k++)
      AGT_CU(cudaEventCreateWithFlags(&g_ev[k], cudaEventDisableTiming));
  }
  /* the copy stream must not overwrite G_dev while earlier work on it may still run */
  AGT_CU(cudaDeviceSynchronize());
  size_t cols = (d + PIPE_CHUNKS - 1) / PIPE_CHUNKS;
  if (cols < PIPE_MIN_COLS) cols = PIPE_MIN_COLS;
  cols = (cols + 31) & ~(size_t)31;
  int k = 0;
  for (size_t c0 = 0; c0 < d; c0 += cols, k++) {
    const size_t len = d - c0 < cols ? d - c0 : cols;
    AGT_CU(cudaMemcpy2DAsync(G_dev + c0, d * sizeof(float), G_host + c0, d * sizeof(float),
                             len * sizeof(float), n, cudaMemcpyHostToDevice, g_copy));
    AGT_CU(cudaEventRecord(g_ev[k], g_copy));
    if (rule != AGT_GPU_RULE_NONE) {
      AGT_CU(cudaStreamWaitEvent(0, g_ev[k], 0));
      AGT_TRY(agt_gpu_coord_rule(rule, G_dev + c0, d, n, len, p, out_dev + c0));
    }
  }
  AGT_CU(cudaStreamSynchronize(g_copy));
  AGT_CU(cudaDeviceSynchronize());
  return AGT_OK;
}
