/* gar_coord.cu — the per-coordinate rules on the GPU: average, average-nan, median,
 * trimmed-mean, meamed (and Bulyan's last stage over listed rows), phocas.
 *
 * One thread owns one coordinate c and reads the n values G[i][c] (coalesced across the warp,
 * so G is read once). Values become 32-bit keys of a total order (-inf < ... < -0 < +0 < ... <
 * +inf < NaN): NaN sorts with +inf at the top, so it orders as +inf, and the order of equal keys
 * never matters. For n <= 64 the keys are sorted in registers by Batcher's odd-even merge
 * network (n padded to 8, 16, 32 or 64 with top keys); above, the general path sorts each
 * coordinate's column in shared memory. The sorted column then sits in shared memory, one
 * column per thread (bank-conflict free), where each rule reads what it needs.
 *
 * Definitions (gar.h is the reference): median = the middle value, or for even n the midpoint
 * of the two middle ones, computed in double and rounded once; trimmed mean = the mean of the
 * sorted values f .. n-f-1; meamed = the mean of the beta values closest to the median, chosen
 * by growing a window from the middle and taking the left candidate on equal distance;
 * phocas = the same around the trimmed mean, with beta = n - f. Distances are |x - centre| in
 * double, a NaN distance reads as +inf. Sums are in double, in sorted order. */
#include "gpu_internal.h"

#include <math.h>

#define COORD_BLOCK 128        /* threads (coordinates) per block of the network path */
#define COORD_GEN_BLOCK 32     /* threads per block of the general (shared-memory sort) path */
#define AVG_BLOCK 256          /* threads per block of average / average-nan */

enum { R_MEDIAN = 0, R_TRIMMED = 1, R_MEAMED = 2, R_PHOCAS = 3 };

struct RowIdx {
  int32_t r[AGT_GPU_NET_MAX];
};

__device__ __forceinline__ uint32_t fkey(float x) {
  uint32_t u = __float_as_uint(x);
  if (isnan(x)) return 0xFFFFFFFFu;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float kfloat(uint32_t k) {
  if (k == 0xFFFFFFFFu) return __uint_as_float(0x7FC00000u);
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

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

template <int N>
__device__ __forceinline__ void sort_keys(uint32_t (&v)[N]) {
  constexpr Net<N> net = Net<N>();
#pragma unroll
  for (int t = 0; t < Net<N>::C; t++) {
    uint32_t x = v[net.a[t]], y = v[net.b[t]];
    v[net.a[t]] = min(x, y);
    v[net.b[t]] = max(x, y);
  }
}

/* ---- what each rule does with a sorted column col[k * stride], k < n ---- */
__device__ __forceinline__ double dist_to(float x, double c) {
  double t = fabs((double)x - c);
  return isnan(t) ? (double)INFINITY : t;
}

/* Mean of the beta values closest to centre: window [l, r) grown from split, left on ties. */
__device__ float closest_mean(const uint32_t *col, int stride, int n, int split, int beta,
                              double centre) {
  int l = split, r = split;
  double dl = l > 0 ? dist_to(kfloat(col[(l - 1) * stride]), centre) : 0;
  double dr = r < n ? dist_to(kfloat(col[r * stride]), centre) : 0;
  for (int t = 0; t < beta; t++) {
    bool left = (r >= n) || (l > 0 && dl <= dr);
    if (left) {
      l--;
      if (l > 0) dl = dist_to(kfloat(col[(l - 1) * stride]), centre);
    } else {
      r++;
      if (r < n) dr = dist_to(kfloat(col[r * stride]), centre);
    }
  }
  double s = 0;
  for (int k = l; k < r; k++) s += (double)kfloat(col[k * stride]);
  return (float)(s / beta);
}

__device__ __forceinline__ float col_median(const uint32_t *col, int stride, int n) {
  float lo = kfloat(col[((n - 1) / 2) * stride]), hi = kfloat(col[(n / 2) * stride]);
  return (float)(((double)lo + (double)hi) * 0.5);
}

__device__ __forceinline__ float col_trimmed(const uint32_t *col, int stride, int n, int f) {
  double s = 0;
  for (int k = f; k < n - f; k++) s += (double)kfloat(col[k * stride]);
  return (float)(s / (n - 2 * f));
}

__device__ float finish(int rule, const uint32_t *col, int stride, int n, int p) {
  switch (rule) {
    case R_MEDIAN: return col_median(col, stride, n);
    case R_TRIMMED: return col_trimmed(col, stride, n, p);
    case R_MEAMED: return closest_mean(col, stride, n, n / 2, p, (double)col_median(col, stride, n));
    default: {  /* R_PHOCAS: p = f, beta = n - f */
      float t = col_trimmed(col, stride, n, p);
      uint32_t kt = fkey(t);
      int split = 0;
      while (split < n && col[split * stride] < kt) split++;
      return closest_mean(col, stride, n, split, n - p, (double)t);
    }
  }
}

/* G: rows r[0..m) of stride ld; out[d]. */
template <int N>
__global__ void __launch_bounds__(COORD_BLOCK)
k_coord_net(const float *__restrict__ G, size_t ld, RowIdx rows, int m, size_t d, int rule,
            int p, float *__restrict__ out) {
  __shared__ uint32_t sh[N * COORD_BLOCK];
  size_t c = (size_t)blockIdx.x * COORD_BLOCK + threadIdx.x;
  if (c >= d) return;
  uint32_t v[N];
#pragma unroll
  for (int k = 0; k < N; k++)
    v[k] = k < m ? fkey(__ldg(G + (size_t)rows.r[k] * ld + c)) : 0xFFFFFFFFu;
  sort_keys<N>(v);
  uint32_t *col = sh + threadIdx.x;
#pragma unroll
  for (int k = 0; k < N; k++) col[k * COORD_BLOCK] = v[k];
  out[c] = finish(rule, col, COORD_BLOCK, m, p);
}

/* General path: any m up to AGT_GPU_N_MAX; insertion sort of the column in shared memory. */
__global__ void __launch_bounds__(COORD_GEN_BLOCK)
k_coord_gen(const float *__restrict__ G, size_t ld, const int32_t *__restrict__ rows, int m,
            size_t d, int rule, int p, float *__restrict__ out) {
  extern __shared__ uint32_t shg[];
  size_t c = (size_t)blockIdx.x * COORD_GEN_BLOCK + threadIdx.x;
  if (c >= d) return;
  uint32_t *col = shg + threadIdx.x;
  for (int k = 0; k < m; k++) {
    uint32_t x = fkey(G[(size_t)rows[k] * ld + c]);
    int j = k;
    while (j > 0 && col[(j - 1) * COORD_GEN_BLOCK] > x) {
      col[j * COORD_GEN_BLOCK] = col[(j - 1) * COORD_GEN_BLOCK];
      j--;
    }
    col[j * COORD_GEN_BLOCK] = x;
  }
  out[c] = finish(rule, col, COORD_GEN_BLOCK, m, p);
}

/* rows: host array of m row indices (NULL: 0..m-1). */
static agt_status coord_launch(const float *G, size_t ld, const int64_t *rows, size_t m,
                               size_t d, int rule, size_t p, float *out) {
  AGT_TRY(agt_gpu_ensure());
  if (m <= AGT_GPU_NET_MAX) {
    RowIdx ri;
    for (size_t k = 0; k < AGT_GPU_NET_MAX; k++) ri.r[k] = k < m ? (int32_t)(rows ? rows[k] : (int64_t)k) : 0;
    unsigned blocks = (unsigned)((d + COORD_BLOCK - 1) / COORD_BLOCK);
    if (m <= 8) k_coord_net<8><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, (int)p, out);
    else if (m <= 16) k_coord_net<16><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, (int)p, out);
    else if (m <= 32) k_coord_net<32><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, (int)p, out);
    else k_coord_net<64><<<blocks, COORD_BLOCK>>>(G, ld, ri, (int)m, d, rule, (int)p, out);
    AGT_CU_LAUNCH("k_coord_net");
    return AGT_OK;
  }
  size_t smem = m * COORD_GEN_BLOCK * sizeof(uint32_t);
  int32_t *rows_dev = NULL;
  AGT_TRY(agt_gpu_scratch(m * sizeof(int32_t), (void **)&rows_dev));
  int32_t *h = NULL;
  AGT_TRY(agt_gpu_host_scratch(m * sizeof(int32_t), (void **)&h));
  for (size_t k = 0; k < m; k++) h[k] = (int32_t)(rows ? rows[k] : (int64_t)k);
  AGT_CU(cudaMemcpy(rows_dev, h, m * sizeof(int32_t), cudaMemcpyHostToDevice));
  AGT_CU(cudaFuncSetAttribute(k_coord_gen, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  unsigned blocks = (unsigned)((d + COORD_GEN_BLOCK - 1) / COORD_GEN_BLOCK);
  k_coord_gen<<<blocks, COORD_GEN_BLOCK, smem>>>(G, ld, rows_dev, (int)m, d, rule, (int)p, out);
  AGT_CU_LAUNCH("k_coord_gen");
  return AGT_OK;
}

/* ---- average and average-nan: double accumulation, 4 coordinates per thread when aligned ---- */
__global__ void __launch_bounds__(AVG_BLOCK)
k_average4(const float4 *__restrict__ G, size_t ld4, int n, size_t d4, float4 *__restrict__ out) {
  size_t c = (size_t)blockIdx.x * AVG_BLOCK + threadIdx.x;
  if (c >= d4) return;
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    float4 a = __ldg(G + (size_t)i * ld4 + c), b = __ldg(G + (size_t)(i + 1) * ld4 + c);
    float4 e = __ldg(G + (size_t)(i + 2) * ld4 + c), g = __ldg(G + (size_t)(i + 3) * ld4 + c);
    s0 += (double)a.x + b.x + e.x + g.x;
    s1 += (double)a.y + b.y + e.y + g.y;
    s2 += (double)a.z + b.z + e.z + g.z;
    s3 += (double)a.w + b.w + e.w + g.w;
  }
  for (; i < n; i++) {
    float4 a = __ldg(G + (size_t)i * ld4 + c);
    s0 += a.x; s1 += a.y; s2 += a.z; s3 += a.w;
  }
  out[c] = make_float4((float)(s0 / n), (float)(s1 / n), (float)(s2 / n), (float)(s3 / n));
}

__global__ void __launch_bounds__(AVG_BLOCK)
k_average1(const float *__restrict__ G, size_t ld, int n, size_t d, int skip_nonfinite,
           float *__restrict__ out) {
  size_t c = (size_t)blockIdx.x * AVG_BLOCK + threadIdx.x;
  if (c >= d) return;
  double s = 0;
  int cnt = 0;
  for (int i = 0; i < n; i++) {
    float x = __ldg(G + (size_t)i * ld + c);
    if (skip_nonfinite && !isfinite(x)) continue;
    s += x;
    cnt++;
  }
  out[c] = cnt ? (float)(s / cnt) : 0.0f;
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
    k_average1<<<blocks, AVG_BLOCK>>>(G, d, (int)n, d, 0, out);
    AGT_CU_LAUNCH("k_average1");
  }
  return AGT_OK;
}

extern "C" agt_status agt_gpu_gar_average_nan(const float *G, size_t n, size_t d, float *out) {
  AGT_TRY(agt_gpu_check_shape("average-nan", G, n, d, out));
  AGT_TRY(agt_gpu_ensure());
  unsigned blocks = (unsigned)((d + AVG_BLOCK - 1) / AVG_BLOCK);
  k_average1<<<blocks, AVG_BLOCK>>>(G, d, (int)n, d, 1, out);
  AGT_CU_LAUNCH("k_average1");
  return AGT_OK;
}

agt_status agt_gpu_coord_median(const float *G, size_t n, size_t d, float *out) {
  return coord_launch(G, d, NULL, n, d, R_MEDIAN, 0, out);
}

extern "C" agt_status agt_gpu_gar_median(const float *G, size_t n, size_t d, float *out) {
  AGT_TRY(agt_gpu_check_shape("median", G, n, d, out));
  return coord_launch(G, d, NULL, n, d, R_MEDIAN, 0, out);
}

extern "C" agt_status agt_gpu_gar_trimmed_mean(const float *G, size_t n, size_t d, size_t f,
                                               float *out) {
  AGT_TRY(agt_gpu_check_shape("trimmed-mean", G, n, d, out));
  if (2 * f >= n) return AGT_FAIL(AGT_EINVAL, "trimmed-mean needs n > 2f, got n=%zu f=%zu", n, f);
  return coord_launch(G, d, NULL, n, d, R_TRIMMED, f, out);
}

extern "C" agt_status agt_gpu_gar_meamed(const float *G, size_t n, size_t d, size_t beta,
                                         float *out) {
  AGT_TRY(agt_gpu_check_shape("meamed", G, n, d, out));
  if (beta < 1 || beta > n)
    return AGT_FAIL(AGT_EINVAL, "meamed needs 1 <= beta <= n, got n=%zu beta=%zu", n, beta);
  return coord_launch(G, d, NULL, n, d, R_MEAMED, beta, out);
}

extern "C" agt_status agt_gpu_gar_phocas(const float *G, size_t n, size_t d, size_t f,
                                         float *out) {
  AGT_TRY(agt_gpu_check_shape("phocas", G, n, d, out));
  if (2 * f >= n) return AGT_FAIL(AGT_EINVAL, "phocas needs n > 2f, got n=%zu f=%zu", n, f);
  return coord_launch(G, d, NULL, n, d, R_PHOCAS, f, out);
}

extern "C" agt_status agt_gpu_gar_rows_meamed(const float *G, size_t d, const int64_t *rows,
                                              size_t m, size_t beta, float *out) {
  AGT_TRY(agt_gpu_check_shape("rows-meamed", G, m, d, out));
  if (!rows) return AGT_FAIL(AGT_EINVAL, "rows-meamed needs a host array of %zu rows", m);
  if (beta < 1 || beta > m)
    return AGT_FAIL(AGT_EINVAL, "rows-meamed needs 1 <= beta <= m, got m=%zu beta=%zu", m, beta);
  return coord_launch(G, d, rows, m, d, R_MEAMED, beta, out);
}
