/* gar_coord.cu — the per-coordinate rules on the GPU: average, average-nan, median,
 * trimmed-mean, meamed (and Bulyan's last stage over listed rows), phocas.
 *
 * One thread owns one coordinate c and reads the n values G[i][c] (coalesced across the warp,
 * so G is read once). Each value becomes its key (NaN and +-inf read as +inf, as on the CPU).
 * For n <= 64 the keys are sorted in registers by Batcher's odd-even merge network (n padded
 * to 8, 16, 32 or 64 with +inf keys, which changes nothing: they sort last); above, the general
 * path sorts each column by insertion in shared memory. The sorted column then sits in shared
 * memory, one column per thread (bank-conflict free), where each rule reads what it needs.
 *
 * The arithmetic after the sort is gar_coord.c's, operation for operation, in float, so the
 * results are bit-identical to the CPU (the one exception: which of +0 and -0 a tie of the two
 * keeps):
 *   median        n odd: v[n/2]; n even: (v[n/2-1] + v[n/2]) * 0.5f
 *   trimmed mean  (v[f] + ... + v[n-f-1]) / (n-2f), summed in that order
 *   closest(m, b) window v[s..s+b), s = #{t < n-b : dl(t) - dr(t) > 0}, dl = m - v[t],
 *                 dr = v[t+b] - m (0 where equal to m); summed in order, divided by b.
 *                 meamed: m = median; phocas: m = the f-trimmed mean, b = n - f.
 *   average       float sum in row order / n;  average-nan: float sums of the finite values
 *                 and of their count, in row order, divided; 0 where none is finite. */
#include "gpu_internal.h"

#include <math.h>

#define COORD_BLOCK 128        /* threads (coordinates) per block of the network path */
#define COORD_GEN_BLOCK 32     /* threads per block of the general (shared-memory sort) path */
#define AVG_BLOCK 256          /* threads per block of average / average-nan */

enum { R_MEDIAN = 0, R_TRIMMED = 1, R_MEAMED = 2, R_PHOCAS = 3 };

struct RowIdx {
  int32_t r[AGT_GPU_NET_MAX];
};

__device__ __forceinline__ float key1(float x) { return (x - x == 0.0f) ? x : INFINITY; }

/* ---- Batcher's odd-even merge sort, as a comparator table built at compile time ---- */
__host__ __device__ constexpr int net_count(int N) {
  int c = 0;
  for (int p = 1; p < N; p += p)
    for (int k = p; k >= 1; k /= 2)
      for (int j = k % p; j + k < N; j += 2 * k)
        for (int i = 0; i < k && i + j + k < N; i++)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) c++;
  return c;
}

template <int N>
struct Net {
  static constexpr int C = net_count(N);
  unsigned char a[C], b[C];
  __host__ __device__ constexpr Net() : a(), b() {
    int c = 0;
    for (int p = 1; p < N; p += p)
      for (int k = p; k >= 1; k /= 2)
        for (int j = k % p; j + k < N; j += 2 * k)
          for (int i = 0; i < k && i + j + k < N; i++)
            if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) {
              a[c] = (unsigned char)(i + j);
              b[c] = (unsigned char)(i + j + k);
              c++;
            }
  }
};

/* Compare-exchange by fminf/fmaxf (one instruction each): keys are never NaN, so this is the
 * CPU's x < y ? x : y except for which zero a tie of -0 and +0 keeps. */
template <int N>
__device__ __forceinline__ void sort_keys(float (&v)[N]) {
  constexpr Net<N> net = Net<N>();
#pragma unroll
  for (int t = 0; t < Net<N>::C; t++) {
    const float x = v[net.a[t]], y = v[net.b[t]];
    v[net.a[t]] = fminf(x, y);
    v[net.b[t]] = fmaxf(x, y);
  }
}

/* ---- what each rule does with a sorted column col[k * stride], k < n (gar_coord.c's finish1) */
__device__ float finish(int rule, const float *col, int stride, int n, int f, int beta) {
  const int h = n / 2;
  const float med = (n & 1) ? col[h * stride] : __fmul_rn(__fadd_rn(col[(h - 1) * stride], col[h * stride]), 0.5f);
  if (rule == R_MEDIAN) return med;
  float m;
  if (rule == R_MEAMED) {
    m = med;
  } else {
    float s = 0.0f;
    for (int i = f; i < n - f; i++) s = __fadd_rn(s, col[i * stride]);
    m = __fdiv_rn(s, (float)(n - 2 * f));
    if (rule == R_TRIMMED) return m;
  }
  int start = 0;
  for (int t = 0; t + beta < n; t++) {
    const float a = col[t * stride], b = col[(t + beta) * stride];
    const float dl = (a == m) ? 0.0f : __fsub_rn(m, a);
    const float dr = (b == m) ? 0.0f : __fsub_rn(b, m);
    if (__fsub_rn(dl, dr) > 0.0f) start++;
  }
  float s = 0.0f;
  for (int i = start; i < start + beta; i++) s = __fadd_rn(s, col[i * stride]);
  return __fdiv_rn(s, (float)beta);
}

/* G: rows r[0..m) of stride ld; out[d]. */
template <int N>
__global__ void __launch_bounds__(COORD_BLOCK)
k_coord_net(const float *__restrict__ G, size_t ld, RowIdx rows, int m, size_t d, int rule,
            int f, int beta, float *__restrict__ out) {
  __shared__ float sh[N * COORD_BLOCK];
  size_t c = (size_t)blockIdx.x * COORD_BLOCK + threadIdx.x;
  if (c >= d) return;
  float v[N];
#pragma unroll
  for (int k = 0; k < N; k++) v[k] = k < m ? key1(__ldg(G + (size_t)rows.r[k] * ld + c)) : INFINITY;
  sort_keys<N>(v);
  float *col = sh + threadIdx.x;
#pragma unroll
  for (int k = 0; k < N; k++) col[k * COORD_BLOCK] = v[k];
  out[c] = finish(rule, col, COORD_BLOCK, m, f, beta);
}

/* General path: any m up to AGT_GPU_N_MAX; insertion sort of the column in shared memory. */
__global__ void __launch_bounds__(COORD_GEN_BLOCK)
k_coord_gen(const float *__restrict__ G, size_t ld, const int32_t *__restrict__ rows, int m,
            size_t d, int rule, int f, int beta, float *__restrict__ out) {
  extern __shared__ float shg[];
  size_t c = (size_t)blockIdx.x * COORD_GEN_BLOCK + threadIdx.x;
  if (c >= d) return;
  float *col = shg + threadIdx.x;
  for (int k = 0; k < m; k++) {
    const float x = key1(G[(size_t)rows[k] * ld + c]);
    int j = k;
    while (j > 0 && col[(j - 1) * COORD_GEN_BLOCK] > x) {
      col[j * COORD_GEN_BLOCK] = col[(j - 1) * COORD_GEN_BLOCK];
      j--;
    }
    col[j * COORD_GEN_BLOCK] = x;
  }
  out[c] = finish(rule, col, COORD_GEN_BLOCK, m, f, beta);
}

/* rows: host array of m row indices (NULL: 0..m-1). */
static agt_status coord_launch(const float *G, size_t ld, const int64_t *rows, size_t m,
                               size_t d, int rule, size_t f_, size_t beta_, float *out) {
  const int f = (int)f_, beta = (int)beta_;
  AGT_TRY(agt_gpu_ensure());
  if (m <= AGT_GPU_NET_MAX) {
    RowIdx ri;
    for (size_t k = 0; k < AGT_GPU_NET_MAX; k++) ri.r[k] = k < m ? (int32_t)(rows ? rows[k] : (int64_t)k) : 0;
    unsigned blocks = (unsigned)((d + COORD_BLOCK - 1) / COORD_BLOCK);
    if (m <= 8) k_coord_net<8><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, f, beta, out);
    else if (m <= 16) k_coord_net<16><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, f, beta, out);
    else if (m <= 32) k_coord_net<32><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, f, beta, out);
    else k_coord_net<64><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, f, beta, out);
    AGT_CU_LAUNCH("k_coord_net");
    return AGT_OK;
  }
  size_t smem = m * COORD_GEN_BLOCK * sizeof(float);
  int32_t *rows_dev = NULL;
  AGT_TRY(agt_gpu_scratch(m * sizeof(int32_t), (void **)&rows_dev));
  int32_t *h = NULL;
  AGT_TRY(agt_gpu_host_scratch(m * sizeof(int32_t), (void **)&h));
  for (size_t k = 0; k < m; k++) h[k] = (int32_t)(rows ? rows[k] : (int64_t)k);
  AGT_CU(cudaMemcpy(rows_dev, h, m * sizeof(int32_t), cudaMemcpyHostToDevice));
  AGT_CU(cudaFuncSetAttribute(k_coord_gen, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  unsigned blocks = (unsigned)((d + COORD_GEN_BLOCK - 1) / COORD_GEN_BLOCK);
  k_coord_gen<<<blocks, COORD_GEN_BLOCK, smem>>>(G, ld, rows_dev, (int)m, d, rule, f, beta, out);
  AGT_CU_LAUNCH("k_coord_gen");
  return AGT_OK;
}

/* ---- average and average-nan: double accumulation, 4 coordinates per thread when aligned ---- */
__global__ void __launch_bounds__(AVG_BLOCK)
k_average4(const float4 *__restrict__ G, size_t ld4, int n, size_t d4, float4 *__restrict__ out) {
  size_t c = (size_t)blockIdx.x * AVG_BLOCK + threadIdx.x;
  if (c >= d4) return;
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  int i = 0;
  for (; i + 4 <= n; i += 4) {   /* four loads in flight, then the adds in row order */
    const float4 a = __ldg(G + (size_t)i * ld4 + c), b = __ldg(G + (size_t)(i + 1) * ld4 + c);
    const float4 e = __ldg(G + (size_t)(i + 2) * ld4 + c), g = __ldg(G + (size_t)(i + 3) * ld4 + c);
    s0 = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(s0, a.x), b.x), e.x), g.x);
    s1 = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(s1, a.y), b.y), e.y), g.y);
    s2 = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(s2, a.z), b.z), e.z), g.z);
    s3 = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(s3, a.w), b.w), e.w), g.w);
  }
  for (; i < n; i++) {
    const float4 a = __ldg(G + (size_t)i * ld4 + c);
    s0 = __fadd_rn(s0, a.x); s1 = __fadd_rn(s1, a.y); s2 = __fadd_rn(s2, a.z); s3 = __fadd_rn(s3, a.w);
  }
  const float fn = (float)n;
  out[c] = make_float4(__fdiv_rn(s0, fn), __fdiv_rn(s1, fn), __fdiv_rn(s2, fn), __fdiv_rn(s3, fn));
}

__global__ void __launch_bounds__(AVG_BLOCK)
k_average1(const float *__restrict__ G, size_t ld, int n, size_t d, float *__restrict__ out) {
  size_t c = (size_t)blockIdx.x * AVG_BLOCK + threadIdx.x;
  if (c >= d) return;
  float s = 0.f;
  for (int i = 0; i < n; i++) s = __fadd_rn(s, __ldg(G + (size_t)i * ld + c));
  out[c] = __fdiv_rn(s, (float)n);
}

__global__ void __launch_bounds__(AVG_BLOCK)
k_average_nan(const float *__restrict__ G, size_t ld, int n, size_t d, float *__restrict__ out) {
  size_t c = (size_t)blockIdx.x * AVG_BLOCK + threadIdx.x;
  if (c >= d) return;
  float acc = 0.0f, cnt = 0.0f;
  for (int i = 0; i < n; i++) {
    const float x = __ldg(G + (size_t)i * ld + c);
    const float ok = (__fsub_rn(x, x) == 0.0f) ? 1.0f : 0.0f;
    acc = __fadd_rn(acc, ok != 0.0f ? x : 0.0f);
    cnt = __fadd_rn(cnt, ok);
  }
  out[c] = cnt > 0.0f ? __fdiv_rn(acc, cnt) : 0.0f;
}

extern "C" agt_status agt_gpu_gar_average(const float *G, size_t n, size_t d, float *out) {
  AGT_TRY(agt_gpu_check_shape("average", G, n, d, out));
  AGT_TRY(agt_gpu_ensure());
  if (d % 4 == 0 && ((uintptr_t)G % 16) == 0 && ((uintptr_t)out % 16) == 0) {
    size_t d4 = d / 4;
    unsigned blocks = (unsigned)((d4 + AVG_BLOCK - 1) / AVG_BLOCK);
    k_average4<<<blocks, AVG_BLOCK>>>((const float4 *)G, d4, (int)n, d4, (float4 *)out);
    AGT_CU_LAUNCH("k_average4");
  } else {
    unsigned blocks = (unsigned)((d + AVG_BLOCK - 1) / AVG_BLOCK);
    k_average1<<<blocks, AVG_BLOCK>>>(G, d, (int)n, d, out);
    AGT_CU_LAUNCH("k_average1");
  }
  return AGT_OK;
}

extern "C" agt_status agt_gpu_gar_average_nan(const float *G, size_t n, size_t d, float *out) {
  AGT_TRY(agt_gpu_check_shape("average-nan", G, n, d, out));
  AGT_TRY(agt_gpu_ensure());
  unsigned blocks = (unsigned)((d + AVG_BLOCK - 1) / AVG_BLOCK);
  k_average_nan<<<blocks, AVG_BLOCK>>>(G, d, (int)n, d, out);
  AGT_CU_LAUNCH("k_average_nan");
  return AGT_OK;
}

agt_status agt_gpu_coord_median(const float *G, size_t n, size_t d, float *out) {
  return coord_launch(G, d, NULL, n, d, R_MEDIAN, 0, 0, out);
}

extern "C" agt_status agt_gpu_gar_median(const float *G, size_t n, size_t d, float *out) {
  AGT_TRY(agt_gpu_check_shape("median", G, n, d, out));
  return coord_launch(G, d, NULL, n, d, R_MEDIAN, 0, 0, out);
}

extern "C" agt_status agt_gpu_gar_trimmed_mean(const float *G, size_t n, size_t d, size_t f,
                                               float *out) {
  AGT_TRY(agt_gpu_check_shape("trimmed-mean", G, n, d, out));
  if (2 * f >= n) return AGT_FAIL(AGT_EINVAL, "trimmed-mean needs n > 2f, got n=%zu f=%zu", n, f);
  return coord_launch(G, d, NULL, n, d, R_TRIMMED, f, 0, out);
}

extern "C" agt_status agt_gpu_gar_meamed(const float *G, size_t n, size_t d, size_t beta,
                                         float *out) {
  AGT_TRY(agt_gpu_check_shape("meamed", G, n, d, out));
  if (beta < 1 || beta > n)
    return AGT_FAIL(AGT_EINVAL, "meamed needs 1 <= beta <= n, got n=%zu beta=%zu", n, beta);
  return coord_launch(G, d, NULL, n, d, R_MEAMED, 0, beta, out);
}

extern "C" agt_status agt_gpu_gar_phocas(const float *G, size_t n, size_t d, size_t f,
                                         float *out) {
  AGT_TRY(agt_gpu_check_shape("phocas", G, n, d, out));
  if (2 * f >= n) return AGT_FAIL(AGT_EINVAL, "phocas needs n > 2f, got n=%zu f=%zu", n, f);
  return coord_launch(G, d, NULL, n, d, R_PHOCAS, f, n - f, out);
}

extern "C" agt_status agt_gpu_gar_rows_meamed(const float *G, size_t d, const int64_t *rows,
                                              size_t m, size_t beta, float *out) {
  AGT_TRY(agt_gpu_check_shape("rows-meamed", G, m, d, out));
  if (!rows) return AGT_FAIL(AGT_EINVAL, "rows-meamed needs a host array of %zu rows", m);
  if (beta < 1 || beta > m)
    return AGT_FAIL(AGT_EINVAL, "rows-meamed needs 1 <= beta <= m, got m=%zu beta=%zu", m, beta);
  return coord_launch(G, d, rows, m, d, R_MEAMED, 0, beta, out);
}

/* For the pipelined upload: a per-coordinate rule on columns [0, len) of rows with stride ld.
 * which: AGT_GPU_RULE_* of gpu.h. */
agt_status agt_gpu_coord_rule(int which, const float *G, size_t ld, size_t n, size_t len, size_t p,
                              float *out) {
  const unsigned blocks = (unsigned)((len + AVG_BLOCK - 1) / AVG_BLOCK);
  switch (which) {
    case AGT_GPU_RULE_AVERAGE:
      k_average1<<<blocks, AVG_BLOCK>>>(G, ld, (int)n, len, out);
      AGT_CU_LAUNCH("k_average1");
      return AGT_OK;
    case AGT_GPU_RULE_AVERAGE_NAN:
      k_average_nan<<<blocks, AVG_BLOCK>>>(G, ld, (int)n, len, out);
      AGT_CU_LAUNCH("k_average_nan");
      return AGT_OK;
    case AGT_GPU_RULE_MEDIAN: return coord_launch(G, ld, NULL, n, len, R_MEDIAN, 0, 0, out);
    case AGT_GPU_RULE_TRIMMED_MEAN: return coord_launch(G, ld, NULL, n, len, R_TRIMMED, p, 0, out);
    case AGT_GPU_RULE_MEAMED: return coord_launch(G, ld, NULL, n, len, R_MEAMED, 0, p, out);
    case AGT_GPU_RULE_PHOCAS: return coord_launch(G, ld, NULL, n, len, R_PHOCAS, p, n - p, out);
    default: return AGT_FAIL(AGT_EINVAL, "no per-coordinate GPU rule %d", which);
  }
}
