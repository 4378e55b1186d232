/* gar_dist.cu — the row-wise kernels: squared pairwise distances of up to 64 rows in one pass
 * over G, weighted mixtures of rows (subset means, NNM, bucketing, the iterative rules' output)
 * and row scaling (clipping, ARC).
 *
 * Distances, fast pass (17 to 64 rows): the Gram matrix of the rows minus row 0 (y_i = x_i -
 * x_0, so the rows' common part cancels before any product), on the tensor cores: each warp
 * streams its own chunks of 32 coordinates of every row into shared memory (16-byte
 * asynchronous copies, the next chunk in flight while one is computed), forms y in registers,
 * splits it as y = h + l (h: y rounded to TF32's 11 significant bits; l = y - h, exact) and
 * multiplies 16 x 8 tiles with mma.sync: h_i h_j in TF32 (exact products), the cross terms
 * h_i l_j + l_i h_j together in one BF16 mma of k = 16; float accumulators.
 * Exact pass: D[i][j] = sum_c (x_i[c] - x_j[c])^2 from differences, in float FMAs, for pairs
 * close enough that the Gram form has lost digits and for non-finite inputs.
 *
 * Precision of the fast pass, per coordinate c: h_i h_j is exact; |l| <= 2^-11 |y|, and the
 * BF16 rounding of h and l (8 significant bits, 2^-9 each) puts each cross term off by at most
 * 2^-8 of itself, 2^-19 of |y_i[c] y_j[c]|; with the dropped l_i l_j (2^-22) the product is off
 * by at most about 2^-18 (4e-6) of |y_i[c] y_j[c]|. Those errors have no common sign (a cross
 * term's sign is l's, not y's), so over a row they mostly cancel; what remains is float
 * accumulation, in the mma's adders and over a warp's chunks (of the order of 2^-24 per add, as
 * in the float kernel this replaced), then double across warps and blocks. The bound on g_ij is
 * then 4e-6 sqrt(g_ii g_jj) plus the float sums' error; D_ij = g_ii + g_jj - 2 g_ij is kept only
 * where D_ij >= DIST_TAU_CLOSE (g_ii + g_jj) (a quarter), where cancellation costs at most a
 * factor 8: a kept distance is within about 3e-5 of the exact one at worst, typically far
 * closer (the spec holds it to 1e-5 against sums in double); every closer pair is recomputed by
 * the exact pass, and so are all pairs when any value is not finite (h or l of inf or NaN is
 * inf or NaN, so the diagonal the host checks is).
 *
 * Determinism: in both passes each accumulator takes its coordinates in a fixed order (a
 * warp's chunks are fixed by d and a grid that depends on d alone), the warps or lanes of a
 * block are added in double in a fixed order, each block writes its partial sums, and a second
 * kernel adds the blocks in block order; one thread writes each entry. The result depends on
 * (R, d) only, never on timing; the exact pass's also not on the card, while the tensor cores'
 * internal rounding of an mma may differ between GPU architectures (the same card model gives
 * the same bits). A NULL row pointer reads as zeros (so D against it is a squared norm). Rows
 * beyond 64 are handled by the general path, which runs the exact kernel on pairs of 32-row
 * blocks.
 *
 * Averages of lists of rows: out[r][c] = (x_{l_r0}[c] + x_{l_r1}[c] + ...) / |l_r|, in float, in
 * list order: the CPU's avg_lists, operation for operation (bit-identical). Each thread reads four
 * coordinates of the listed rows straight from G (16-byte loads, coalesced across the warp; one
 * coordinate where d % 4 != 0). Lists that share rows (NNM) would re-read them, so NNM on finite
 * rows holds all n <= 64 rows of a coordinate pair in registers, read once, and forms every list
 * as a 0/1-weighted FMA chain in ascending row order: the same roundings as the CPU's adds.
 *
 * Mixtures: out[r][c] = sum_k W[r][k] x_k[c] for up to 64 input rows held in registers (W in
 * shared memory, float accumulation in k order); a zero weight skips its row, so a row that is
 * not used never turns the output into NaN through 0 * inf. */
#include "gpu_internal.h"

#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <math.h>
#include <string.h>
#include <utility>
#include <vector>

#define DIST_THREADS 256     /* threads per block of the distance kernel */
#define DIST_GRID_MAX 512    /* blocks of the distance kernel (fixed: determinism) */
#define DIST_STAGES 4        /* shared-memory stages of the distance kernel's copy pipeline */
#define MIX_BLOCK 128        /* coordinates per block of the mixture kernel */
#define SCALE_BLOCK 256      /* threads per block of the row scaling kernel */
#define LIST_BLOCK 256       /* coordinates per block of the list-average kernel */
#define NORM_BLOCK 256       /* threads per block of the row-norm kernel */
#define NORM_CHUNK 65536     /* columns per block of the row-norm kernel (fixed: determinism) */

/* ---------------------------------------------------------------- distances */
template <int NB>
struct DistCfg {
  static constexpr int RP = NB * 8;                       /* rows, padded */
  static constexpr int NMT = NB * (NB + 1) / 2;           /* 8x8 pair blocks, i-block <= j-block */
  static constexpr int L = DIST_THREADS / NMT;            /* lanes (coordinate strides) */
  static constexpr int TC = NB <= 2 ? 256 : 64;           /* coordinates per tile */
  static constexpr int STAGES = DIST_STAGES;
  static constexpr int PAD = TC + 1;                      /* shared row stride (banks) */
  static constexpr int LOADS = RP * TC / DIST_THREADS;    /* tile values per thread */
  /* Row r of a tile starts at r*PAD, plus 4 for rows 32..63: with PAD = 1 (mod 32), the rows
   * that one load instruction of a warp reads (the same q of 7 or 8 different 8-row blocks) then
   * fall in distinct banks. */
  static constexpr int TILE_F = RP * PAD + 4;
  __host__ __device__ static constexpr int roff(int r) { return r * PAD + ((r >> 5) << 2); }
  static constexpr int PIPE_F = STAGES * TILE_F;
  static constexpr int RED_F = NMT * L * 64;
  static constexpr size_t SMEM = (size_t)(PIPE_F > RED_F ? PIPE_F : RED_F) * sizeof(float);
};

/* Thread group k of a block owns the k-th pair (bi, bj), bi <= bj, of 8-row blocks in
 * row-major order of the upper triangle of NB x NB. */
__device__ __forceinline__ void block_pair(int k, int NB, int &bi, int &bj) {
  bj = 0;
  for (bi = 0; bi < NB; bi++) {
    if (k < NB - bi) { bj = bi + k; return; }
    k -= NB - bi;
  }
}

/* Exact pass. Tiles stream through DIST_STAGES shared-memory stages with asynchronous copies
 * (cp.async): DIST_STAGES - 1 tiles are in flight while one is computed. */
template <int NB>
__global__ void __launch_bounds__(DIST_THREADS, 2)
k_pairdist(const float *const *__restrict__ rowp, int R, size_t d, double *__restrict__ partials) {
  using Cfg = DistCfg<NB>;
  extern __shared__ float sm[];
  __shared__ const float *rp[Cfg::RP];
  const int t = threadIdx.x;
  if (t < Cfg::RP) rp[t] = t < R ? rowp[t] : nullptr;
  const int mt = t % Cfg::NMT, lane = t / Cfg::NMT;
  const bool active = lane < Cfg::L;
  int bi, bj;
  block_pair(mt, NB, bi, bj);
  float acc[8][8];
#pragma unroll
  for (int q = 0; q < 8; q++)
#pragma unroll
    for (int r = 0; r < 8; r++) acc[q][r] = 0.f;
  __syncthreads();

  const size_t ntiles = (d + Cfg::TC - 1) / Cfg::TC;
  auto issue = [&](size_t tile, int stage) {
    float *dst = sm + stage * Cfg::TILE_F;
    const size_t c0 = tile * Cfg::TC;
#pragma unroll
    for (int u = 0; u < Cfg::LOADS; u++) {
      const int e = t + u * DIST_THREADS;
      const int r = e / Cfg::TC, cc = e % Cfg::TC;
      const float *p = rp[r];
      const size_t c = c0 + cc;
      float *s = dst + Cfg::roff(r) + cc;
      if (p && c < d) __pipeline_memcpy_async(s, p + c, sizeof(float));
      else *s = 0.f;
    }
  };
#pragma unroll
  for (int st = 0; st < Cfg::STAGES - 1; st++) {
    const size_t tile = blockIdx.x + (size_t)st * gridDim.x;
    if (tile < ntiles) issue(tile, st);
    __pipeline_commit();
  }
  int it = 0;
  for (size_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x, it++) {
    __pipeline_wait_prior(Cfg::STAGES - 2);   /* this tile's copies have landed */
    __syncthreads();                          /* ... for every thread; the oldest stage is free */
    {
      const size_t next = tile + (size_t)(Cfg::STAGES - 1) * gridDim.x;
      if (next < ntiles) issue(next, (it + Cfg::STAGES - 1) % Cfg::STAGES);
      __pipeline_commit();
    }
    if (active) {
      const float *tl = sm + (it % Cfg::STAGES) * Cfg::TILE_F;
      const float *ra = tl + Cfg::roff(bi * 8), *rb = tl + Cfg::roff(bj * 8);  /* q < 8: same skew */
      for (int cc = lane; cc < Cfg::TC; cc += Cfg::L) {
        float a[8], b[8];
#pragma unroll
        for (int q = 0; q < 8; q++) {
          a[q] = ra[q * Cfg::PAD + cc];
          b[q] = rb[q * Cfg::PAD + cc];
        }
#pragma unroll
        for (int q = 0; q < 8; q++)
#pragma unroll
          for (int r = 0; r < 8; r++) {
            const float df = a[q] - b[r];
            acc[q][r] = fmaf(df, df, acc[q][r]);
          }
      }
    }
  }
  __pipeline_wait_prior(0);
  __syncthreads();
  if (active) {
#pragma unroll
    for (int q = 0; q < 8; q++)
#pragma unroll
      for (int r = 0; r < 8; r++) sm[(mt * 64 + q * 8 + r) * Cfg::L + lane] = acc[q][r];
  }
  __syncthreads();
  for (int e = t; e < Cfg::NMT * 64; e += DIST_THREADS) {
    double s = 0;
    for (int l = 0; l < Cfg::L; l++) s += (double)sm[e * Cfg::L + l];
    partials[(size_t)blockIdx.x * Cfg::NMT * 64 + e] = s;
  }
}

/* D[R x R] (device, double) from the blocks' partial sums, added in block order. */
__global__ void k_pairdist_sum(const double *__restrict__ partials, int nblocks, int NB, int R,
                               double *__restrict__ D) {
  const int nmt = NB * (NB + 1) / 2;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= nmt * 64) return;
  int k = e / 64, bi = 0, bj = 0;
  for (bi = 0; bi < NB; bi++) {
    if (k < NB - bi) { bj = bi + k; break; }
    k -= NB - bi;
  }
  const int q = (e % 64) / 8, r = e % 8, i = bi * 8 + q, j = bj * 8 + r;
  if (i >= R || j >= R || (bi == bj && q > r)) return;   /* one writer per entry */
  double s = 0;
  for (int b = 0; b < nblocks; b++) s += partials[(size_t)b * nmt * 64 + e];
  D[(size_t)i * R + j] = s;
  D[(size_t)j * R + i] = s;
}

template <int NB>
static agt_status pairdist_launch(const float *const *rows_dev, int R, size_t d, double *partials,
                                  int grid) {
  using Cfg = DistCfg<NB>;
  static int attr_done = 0;
  if (!attr_done) {
    AGT_CU(cudaFuncSetAttribute(k_pairdist<NB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)Cfg::SMEM));
    attr_done = 1;
  }
  k_pairdist<NB><<<grid, DIST_THREADS, Cfg::SMEM>>>(rows_dev, R, d, partials);
  AGT_CU_LAUNCH("k_pairdist");
  return AGT_OK;
}

/* One exact pass over R <= 64 rows given by host pointers (device addresses; NULL = zeros) into
 * M_host[R x R], symmetric: sums of squared differences. */
static agt_status pairdist_small(const float *const *rows, int R, size_t d, double *M_host) {
  const int NB = (R + 7) / 8;
  const size_t ntiles = NB <= 2 ? (d + 255) / 256 : (d + 63) / 64;
  const int grid = (int)(ntiles < DIST_GRID_MAX ? ntiles : DIST_GRID_MAX);
  const int nmt = NB * (NB + 1) / 2;
  const size_t part_bytes = (size_t)grid * nmt * 64 * sizeof(double);
  const size_t ptr_bytes = 64 * sizeof(float *);
  const size_t D_bytes = (size_t)R * R * sizeof(double);
  char *scr = NULL;
  AGT_TRY(agt_gpu_scratch(ptr_bytes + D_bytes + part_bytes, (void **)&scr));
  const float **rows_dev = (const float **)scr;
  double *D_dev = (double *)(scr + ptr_bytes);
  double *partials = (double *)(scr + ptr_bytes + D_bytes);
  AGT_CU(cudaMemcpy(rows_dev, rows, (size_t)R * sizeof(float *), cudaMemcpyHostToDevice));
  agt_status s;
#define PD_CASE(K) case K: s = pairdist_launch<K>(rows_dev, R, d, partials, grid); break;
  switch (NB) {
    PD_CASE(1) PD_CASE(2) PD_CASE(3) PD_CASE(4) PD_CASE(5) PD_CASE(6) PD_CASE(7)
    default: s = pairdist_launch<8>(rows_dev, R, d, partials, grid);
  }
#undef PD_CASE
  if (s != AGT_OK) return s;
  k_pairdist_sum<<<(nmt * 64 + 127) / 128, 128>>>(partials, grid, NB, R, D_dev);
  AGT_CU_LAUNCH("k_pairdist_sum");
  AGT_CU(cudaMemcpy(M_host, D_dev, D_bytes, cudaMemcpyDeviceToHost));
  return AGT_OK;
}

/* ---------------------------------------------------------------- Gram pass, tensor cores */
/* The Gram matrix of y_i = x_i - x_0 on the tensor cores, split-precision. Every value is split
 * as y = h + l: h = y rounded to TF32 (11 significant bits, a tie away from zero, by integer
 * operations: the bits h keeps are exactly TF32's), l = y - h, exact in float, |l| <= 2^-11 |y|.
 * Per coordinate y_i y_j = h_i h_j + (h_i l_j + l_i h_j) + l_i l_j: h_i h_j is exact in an
 * mma.sync m16n8k8 TF32 product; the cross terms, 2^-11 of the whole, go through one mma.sync
 * m16n8k16 BF16 (h and l rounded to 8 significant bits: relative error 2^-8 of a term, so
 * 2^-19 of |y_i y_j| each), whose k = 16 holds both cross terms of 8 coordinates at once
 * (A's row i: (h_i, l_i) pairs, B's column j: (l_j, h_j) pairs) — two mma per tile and 8
 * coordinates where 3xTF32 takes three TF32 ones. l_i l_j (2^-22) is dropped.
 * So each coordinate's product is off by at most about 2^-18 (4e-6) of |y_i[c] y_j[c]|, with
 * no bias (the cross terms' sign is l's, not y's); accumulation is in float (the mma's adders
 * and a warp's chunks), then double. See the file's header for what that means for D.
 *
 * Work: each warp owns whole chunks of GT_KW = 32 coordinates (chunk w, w + W, w + 2W, ... for
 * warp w of W = grid x GT_WARPS: fixed by d), with its own GT_STAGES-deep pipeline of 16-byte
 * asynchronous copies into its own shared memory (no block barrier in the loop). A chunk is
 * RP + 1 rows (the R rows padded to 8-row blocks, then x_0) of 32 floats; 16-byte piece q of
 * row r sits at q ^ (4 (r & 1)), so that the two rows a quarter-warp reads lie in distinct
 * banks. Lane (g, t) = (lane / 4, lane % 4) reads pieces t and 4 + t of rows 8 J + g, J < NB:
 * row 8 J + g at the 8 coordinates of those pieces, two per step of 8 coordinates (TF32
 * k-slots t and t + 4; BF16 k-slots 2t, 2t + 1 and 2t + 8, 2t + 9). The same registers are the
 * mma's B fragment of column block J and half the A fragment of any 16-row pair of blocks, so
 * no data moves between lanes. 12 warps of 2 stages measured faster on an H200 than 8 of 3
 * (more warps to hide the mma's latency; at n = 51 one 7 KB chunk per warp in flight, 88 KB
 * per multiprocessor, is ample).
 *
 * Tiles: an mma computes two 8 x 8 blocks of one column block J (rows of blocks a and b
 * against the columns of J). The pair blocks needed (i-block <= j-block) are covered once:
 * column J takes its blocks 0 .. J, except that for even J >= 2 block (0, J) is computed
 * transposed, as (J, 0) in column 0, so that most columns hold an even number of blocks
 * (NB = 7: 14 mma tiles for 28 blocks). A column of odd count pads its last tile with zeros.
 * The cost per step of 8 coordinates is 2 x tc_ntiles(NB) mma.sync per warp. */
#define GT_WARPS 12          /* warps per block of the Gram kernel */
#define GT_GRID 264          /* blocks of the Gram kernel at most (fixed: determinism) */
#define GT_STAGES 2          /* chunks in each warp's pipeline */
#define GT_KW 32             /* coordinates per chunk */

struct TcTile {
  int j, a, b;   /* column block; row blocks of the mma's rows 0-7 and 8-15 (b < 0: zeros) */
};
__host__ __device__ constexpr int tc_col_len(int NB, int J) {
  return J == 0 ? 1 + (NB - 1) / 2 : (J & 1) ? J + 1 : J;
}
__host__ __device__ constexpr int tc_col_block(int J, int m) {
  return J == 0 ? 2 * m : (J & 1) ? m : m + 1;
}
__host__ __device__ constexpr int tc_ntiles(int NB) {
  int n = 0;
  for (int J = 0; J < NB; J++) n += (tc_col_len(NB, J) + 1) / 2;
  return n;
}
__host__ __device__ constexpr TcTile tc_tile(int NB, int k) {
  for (int J = 0; J < NB; J++) {
    const int len = tc_col_len(NB, J), nt = (len + 1) / 2;
    if (k < nt)
      return TcTile{ J, tc_col_block(J, 2 * k), 2 * k + 1 < len ? tc_col_block(J, 2 * k + 1) : -1 };
    k -= nt;
  }
  return TcTile{ -1, -1, -1 };
}
/* Index of pair block (bi, bj), bi <= bj, in row-major order of the upper triangle of NB x NB
 * (block_pair's order, the partial sums' layout). */
__host__ __device__ constexpr int tc_pair_index(int NB, int bi, int bj) {
  return bi * NB - bi * (bi - 1) / 2 + (bj - bi);
}

template <int... Ks, class Fn>
__device__ __forceinline__ void static_for_(std::integer_sequence<int, Ks...>, Fn &&fn) {
  (fn(std::integral_constant<int, Ks>{}), ...);
}
/* fn(std::integral_constant<int, k>) for k = 0 .. N-1: k is a constant in fn's body. */
template <int N, class Fn>
__device__ __forceinline__ void static_for(Fn &&fn) {
  static_for_(std::make_integer_sequence<int, N>{}, fn);
}

/* c += A B, A 16 x 8 (a0..a3), B 8 x 8 (b0, b1), TF32 inputs, float accumulators. */
__device__ __forceinline__ void mma_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* c += A B, A 16 x 16 (a0..a3), B 16 x 8 (b0, b1), bf16 pairs, float accumulators. */
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int NB>
struct GramCfg {
  static constexpr int RP = NB * 8;                       /* rows, padded */
  static constexpr int ROWS = RP + 1;                     /* then x_0 */
  static constexpr int NMT = NB * (NB + 1) / 2;           /* 8x8 pair blocks, i-block <= j-block */
  static constexpr int NT = tc_ntiles(NB);                /* mma tiles per k-step */
  static constexpr int NS = NB <= 4 ? 2 : 1;              /* accumulator sets (see k_gram) */
  static constexpr int CHUNK_F = ROWS * GT_KW;
  static constexpr int PIPE_F = GT_WARPS * GT_STAGES * CHUNK_F;
  static constexpr int RED_F = GT_WARPS * NMT * 64;
  static constexpr size_t SMEM = (size_t)(PIPE_F > RED_F ? PIPE_F : RED_F) * sizeof(float);
  static constexpr int MINB = NB <= 3 ? 2 : 1;            /* blocks per multiprocessor */
  static_assert(MINB == 1 || 2 * SMEM <= 227 * 1024, "two blocks fit a multiprocessor");
};

/* partials[block][pair block][8x8] = sum over the block's chunks of y_i . y_j (y = x - x0), rows
 * rowp[0 .. R) (NULL: zeros), x0p (NULL: zeros). VEC: every row and x0p 16-byte aligned and
 * d % 4 == 0 (16-byte copies); otherwise 4-byte copies, same arithmetic. */
template <int NB, bool VEC>
__global__ void __launch_bounds__(GT_WARPS * 32, GramCfg<NB>::MINB)
k_gram(const float *const *__restrict__ rowp, int R, const float *__restrict__ x0p, size_t d,
       double *__restrict__ partials) {
  using Cfg = GramCfg<NB>;
  extern __shared__ float4 smg4[];
  float *const sm = reinterpret_cast<float *>(smg4);
  __shared__ const float *rp[Cfg::ROWS];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  if (t < Cfg::RP) rp[t] = t < R ? rowp[t] : nullptr;
  if (t == Cfg::RP) rp[t] = x0p;
  __syncthreads();

  float *const wsm = sm + warp * GT_STAGES * Cfg::CHUNK_F;
  const size_t nchunks = (d + GT_KW - 1) / GT_KW;
  const size_t wstride = (size_t)gridDim.x * GT_WARPS;
  const size_t w0 = (size_t)blockIdx.x * GT_WARPS + warp;
  auto issue = [&](size_t chunk, int stage) {
    float *dst = wsm + stage * Cfg::CHUNK_F;
    const size_t c0 = chunk * GT_KW;
    if (VEC) {
#pragma unroll
      for (int e = lane; e < Cfg::ROWS * 8; e += 32) {
        const int r = e >> 3, q = e & 7;
        const float *p = rp[r];
        const size_t c = c0 + 4 * q;
        float *s = dst + r * GT_KW + 4 * (q ^ ((r & 1) << 2));
        if (p && c < d) __pipeline_memcpy_async(s, p + c, 16);   /* d % 4 == 0: c + 3 < d */
        else *reinterpret_cast<float4 *>(s) = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    } else {
      const size_t c = c0 + lane;   /* lane: one coordinate of every row */
#pragma unroll 4
      for (int r = 0; r < Cfg::ROWS; r++) {
        const float *p = rp[r];
        float *s = dst + r * GT_KW + 4 * ((lane >> 2) ^ ((r & 1) << 2)) + (lane & 3);
        if (p && c < d) __pipeline_memcpy_async(s, p + c, sizeof(float));
        else *s = 0.f;
      }
    }
  };

  /* The mma of one step go product by product (all tiles' cross terms, then all h h): in-order
   * issue then meets an mma's accumulator again only NT mma later. Below 5 row blocks NT is
   * too small for that, and the h h products have accumulators of their own (NS = 2). */
  float acc[Cfg::NS][Cfg::NT][4];
#pragma unroll
  for (int a = 0; a < Cfg::NS; a++)
#pragma unroll
    for (int k = 0; k < Cfg::NT; k++)
#pragma unroll
      for (int u = 0; u < 4; u++) acc[a][k][u] = 0.f;

#pragma unroll
  for (int st = 0; st < GT_STAGES - 1; st++) {
    const size_t ch = w0 + (size_t)st * wstride;
    if (ch < nchunks) issue(ch, st);
    __pipeline_commit();
  }
  const int g = lane >> 2, tq = lane & 3, sw = (g & 1) << 2;
  int it = 0;
  for (size_t ch = w0; ch < nchunks; ch += wstride, it++) {
    __pipeline_wait_prior(GT_STAGES - 2);   /* this chunk's copies have landed */
    __syncwarp();                           /* ... for every lane; the oldest stage is free */
    {
      const size_t next = ch + (size_t)(GT_STAGES - 1) * wstride;
      if (next < nchunks) issue(next, (it + GT_STAGES - 1) % GT_STAGES);
      __pipeline_commit();
    }
    const float *cur = wsm + (it % GT_STAGES) * Cfg::CHUNK_F;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {   /* pieces t, then 4 + t: coordinates 4 (4 hf + t) + 0..3 */
      const int pc = 4 * hf + tq;
      const float4 z = *reinterpret_cast<const float4 *>(cur + Cfg::RP * GT_KW + 4 * pc);
      float y[NB][4];
#pragma unroll
      for (int J = 0; J < NB; J++) {
        const float4 v = *reinterpret_cast<const float4 *>(cur + (8 * J + g) * GT_KW + 4 * (pc ^ sw));
        y[J][0] = __fsub_rn(v.x, z.x);
        y[J][1] = __fsub_rn(v.y, z.y);
        y[J][2] = __fsub_rn(v.z, z.z);
        y[J][3] = __fsub_rn(v.w, z.w);
      }
#pragma unroll
      for (int s = 0; s < 2; s++) {   /* k-slot t: coordinate 2 s, k-slot t + 4: 2 s + 1 */
        uint32_t H[NB][2], P[NB][2], Q[NB][2];
#pragma unroll
        for (int J = 0; J < NB; J++)
#pragma unroll
          for (int u = 0; u < 2; u++) {
            const float v = y[J][2 * s + u];
            const uint32_t h = (__float_as_uint(v) + 0x1000u) & 0xffffe000u;
            const float hv = __uint_as_float(h), lv = __fsub_rn(v, hv);
            H[J][u] = h;
            const __nv_bfloat162 pq = __floats2bfloat162_rn(hv, lv);   /* low h, high l */
            P[J][u] = *reinterpret_cast<const uint32_t *>(&pq);
            Q[J][u] = __byte_perm(P[J][u], 0u, 0x1032);                /* low l, high h */
          }
        static_for<Cfg::NT>([&](auto K) {
          constexpr TcTile tl = tc_tile(NB, K.value);
          constexpr int a = tl.a, b = tl.b < 0 ? 0 : tl.b, j = tl.j;
          constexpr bool hb = tl.b >= 0;
          mma_bf16(acc[0][K.value], P[a][0], hb ? P[b][0] : 0u, P[a][1], hb ? P[b][1] : 0u,
                   Q[j][0], Q[j][1]);
        });
        static_for<Cfg::NT>([&](auto K) {
          constexpr TcTile tl = tc_tile(NB, K.value);
          constexpr int a = tl.a, b = tl.b < 0 ? 0 : tl.b, j = tl.j;
          constexpr bool hb = tl.b >= 0;
          mma_tf32(acc[Cfg::NS - 1][K.value], H[a][0], hb ? H[b][0] : 0u, H[a][1],
                   hb ? H[b][1] : 0u, H[j][0], H[j][1]);
        });
      }
    }
  }
  __pipeline_wait_prior(0);
  __syncthreads();   /* every warp done with its stages: the reduction area may overlap them */

  /* red[warp][pair block][q][r]: entry (row 8 bi + q, row 8 bj + r), each written once */
  float *const red = sm + warp * Cfg::NMT * 64;
  static_for<Cfg::NT>([&](auto K) {
    constexpr TcTile tl = tc_tile(NB, K.value);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int ib = h ? tl.b : tl.a;
      if (ib < 0) continue;
#pragma unroll
      for (int u = 0; u < 2; u++) {
        const int co = 2 * tq + u;   /* column offset in block tl.j; g: row offset in block ib */
        const int e = ib <= tl.j ? tc_pair_index(NB, ib, tl.j) * 64 + g * 8 + co
                                 : tc_pair_index(NB, tl.j, ib) * 64 + co * 8 + g;
        red[e] = Cfg::NS == 2 ? acc[Cfg::NS - 1][K.value][2 * h + u] + acc[0][K.value][2 * h + u]
                              : acc[0][K.value][2 * h + u];
      }
    }
  });
  __syncthreads();
  for (int e = t; e < Cfg::NMT * 64; e += GT_WARPS * 32) {
    double s = 0;
    for (int w = 0; w < GT_WARPS; w++) s += (double)sm[w * Cfg::NMT * 64 + e];
    partials[(size_t)blockIdx.x * Cfg::NMT * 64 + e] = s;
  }
}

template <int NB, bool VEC>
static agt_status gram_launch(const float *const *rows_dev, int R, const float *x0, size_t d,
                              double *partials, int *grid) {
  using Cfg = GramCfg<NB>;
  static int attr_done = 0;
  if (!attr_done) {
    AGT_CU(cudaFuncSetAttribute(k_gram<NB, VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)Cfg::SMEM));
    attr_done = 1;
  }
  const size_t nchunks = (d + GT_KW - 1) / GT_KW, want = (nchunks + GT_WARPS - 1) / GT_WARPS;
  *grid = (int)(want < GT_GRID ? want : GT_GRID);   /* a function of d alone */
  k_gram<NB, VEC><<<*grid, GT_WARPS * 32, Cfg::SMEM>>>(rows_dev, R, x0, d, partials);
  AGT_CU_LAUNCH("k_gram");
  return AGT_OK;
}

template <int NB>
static agt_status gram_dispatch(const float *const *rows_dev, int R, const float *x0, size_t d,
                                double *partials, bool vec, int *grid) {
  return vec ? gram_launch<NB, true>(rows_dev, R, x0, d, partials, grid)
             : gram_launch<NB, false>(rows_dev, R, x0, d, partials, grid);
}

/* M_host[R x R] = the Gram matrix of y_i = rows[i] - rows[0] (R <= 65; row and column 0 are
 * zero), in one pass over the rows. */
static agt_status gram_centered(const float *const *rows, int R, size_t d, double *M_host) {
  memset(M_host, 0, (size_t)R * R * sizeof(double));
  if (R <= 1) return AGT_OK;
  const int Rs = R - 1, NB = (Rs + 7) / 8;
  const int nmt = NB * (NB + 1) / 2;
  bool vec = d % 4 == 0;
  for (int i = 0; i < R; i++)
    if (rows[i] && ((uintptr_t)rows[i] & 15)) vec = false;
  const size_t part_bytes = (size_t)GT_GRID * nmt * 64 * sizeof(double);
  const size_t ptr_bytes = 64 * sizeof(float *);
  const size_t D_bytes = (size_t)Rs * Rs * sizeof(double);
  char *scr = NULL;
  AGT_TRY(agt_gpu_scratch(ptr_bytes + D_bytes + part_bytes, (void **)&scr));
  const float **rows_dev = (const float **)scr;
  double *D_dev = (double *)(scr + ptr_bytes);
  double *partials = (double *)(scr + ptr_bytes + D_bytes);
  AGT_CU(cudaMemcpy(rows_dev, rows + 1, (size_t)Rs * sizeof(float *), cudaMemcpyHostToDevice));
  agt_status s;
  int grid = 0;
#define GR_CASE(K) case K: s = gram_dispatch<K>(rows_dev, Rs, rows[0], d, partials, vec, &grid); break;
  switch (NB) {
    GR_CASE(1) GR_CASE(2) GR_CASE(3) GR_CASE(4) GR_CASE(5) GR_CASE(6) GR_CASE(7)
    default: s = gram_dispatch<8>(rows_dev, Rs, rows[0], d, partials, vec, &grid);
  }
#undef GR_CASE
  if (s != AGT_OK) return s;
  k_pairdist_sum<<<(nmt * 64 + 127) / 128, 128>>>(partials, grid, NB, Rs, D_dev);
  AGT_CU_LAUNCH("k_pairdist_sum");
  std::vector<double> sub((size_t)Rs * Rs);
  AGT_CU(cudaMemcpy(sub.data(), D_dev, D_bytes, cudaMemcpyDeviceToHost));
  for (int i = 0; i < Rs; i++)
    for (int j = 0; j < Rs; j++) M_host[(size_t)(i + 1) * R + (j + 1)] = sub[(size_t)i * Rs + j];
  return AGT_OK;
}

/* Distances among R <= 64 rows: the Gram pass of the rows minus row 0, D_ij = g_ii + g_jj -
 * 2 g_ij, kept where it cannot have cancelled (D_ij >= DIST_TAU_CLOSE (g_ii + g_jj), the CPU's
 * rule); the pairs closer than that are recomputed exactly (squared differences) in one more
 * pass over just the rows they involve; any non-finite value sends all rows to the exact pass.
 * loose_last: the last row's pairs are kept as they are (a zero row whose distances are only
 * norms for a stopping test). */
#define DIST_TAU_CLOSE 0.25
static agt_status pairdist_fast(const float *const *rows, int R, size_t d, int loose_last,
                                double *D) {
  AGT_TRY(gram_centered(rows, R, d, D));
  std::vector<double> g(R);
  bool all = false;
  for (int i = 0; i < R; i++) {
    g[i] = D[(size_t)i * R + i];
    if (!isfinite(g[i])) all = true;
  }
  std::vector<char> close((size_t)R * R, 0), inv(R, 0);
  for (int i = 0; i < R && !all; i++)
    for (int j = i + 1; j < R; j++) {
      const double v = g[i] + g[j] - 2.0 * D[(size_t)i * R + j];
      if (!isfinite(v)) { all = true; break; }
      D[(size_t)i * R + j] = D[(size_t)j * R + i] = v < 0 ? 0 : v;
      if (v < DIST_TAU_CLOSE * (g[i] + g[j]) && !(loose_last && j == R - 1)) {
        close[(size_t)i * R + j] = 1;
        inv[i] = inv[j] = 1;
      }
    }
  if (all) return pairdist_small(rows, R, d, D);
  for (int i = 0; i < R; i++) D[(size_t)i * R + i] = 0.0;
  std::vector<int> sub;
  for (int i = 0; i < R; i++) if (inv[i]) sub.push_back(i);
  if (sub.empty()) return AGT_OK;
  const int m = (int)sub.size();
  std::vector<const float *> sp(m);
  std::vector<double> E((size_t)m * m);
  for (int a = 0; a < m; a++) sp[a] = rows[sub[a]];
  AGT_TRY(pairdist_small(sp.data(), m, d, E.data()));
  for (int a = 0; a < m; a++)
    for (int b = a + 1; b < m; b++) {
      const int i = sub[a], j = sub[b];
      if (close[(size_t)i * R + j]) D[(size_t)i * R + j] = D[(size_t)j * R + i] = E[(size_t)a * m + b];
    }
  return AGT_OK;
}

/* ---------------------------------------------------------------- few rows: exact, in registers */
/* For R <= 16 rows the tile pipeline above moves too little per barrier to read G at full
 * speed, and the pairs are few: each thread reads CPT coordinates of every row (coalesced
 * across the warp, as the per-coordinate rules do) and adds (x_i - x_j)^2 for all R (R - 1) / 2
 * pairs into float registers. Exact differences: no Gram cancellation, no second pass, and
 * identical rows get identical distances. Each warp adds its lanes by a fixed butterfly, each
 * block its warps in double in warp order, and the blocks are added in block order (fixed grid):
 * the result depends on (R, d) only. A NULL row reads as zeros. */
#define PR_THREADS 256
#define PR_GRID 528          /* blocks at most (fixed: determinism) */
#define PR_MAX 16

template <int R, int CPT>
__global__ void __launch_bounds__(PR_THREADS)
k_pairdist_regs(const float *const *__restrict__ rowp, size_t d, double *__restrict__ partials) {
  constexpr int P = R * (R - 1) / 2, W = PR_THREADS / 32;
  __shared__ const float *rp[R];
  __shared__ float red[W][P];
  if (threadIdx.x < R) rp[threadIdx.x] = rowp[threadIdx.x];
  __syncthreads();
  float acc[P];
#pragma unroll
  for (int p = 0; p < P; p++) acc[p] = 0.f;
  const size_t units = d / CPT, stride = (size_t)gridDim.x * PR_THREADS;
  for (size_t u = (size_t)blockIdx.x * PR_THREADS + threadIdx.x; u < units; u += stride) {
    float x[R][CPT];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float *p = rp[r];
      if (CPT == 4) {
        const float4 v = p ? __ldg(reinterpret_cast<const float4 *>(p) + u) : make_float4(0.f, 0.f, 0.f, 0.f);
        x[r][0] = v.x; x[r][CPT > 1 ? 1 : 0] = v.y; x[r][CPT > 2 ? 2 : 0] = v.z; x[r][CPT - 1] = v.w;
      } else if (CPT == 2) {
        const float2 v = p ? __ldg(reinterpret_cast<const float2 *>(p) + u) : make_float2(0.f, 0.f);
        x[r][0] = v.x; x[r][CPT - 1] = v.y;
      } else {
        x[r][0] = p ? __ldg(p + u) : 0.f;
      }
    }
    int p = 0;
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
      for (int j = i + 1; j < R; j++, p++)
#pragma unroll
        for (int c = 0; c < CPT; c++) {
          const float df = x[i][c] - x[j][c];
          acc[p] = fmaf(df, df, acc[p]);
        }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int p = 0; p < P; p++) {
    float v = acc[p];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][p] = v;
  }
  __syncthreads();
  for (int p = threadIdx.x; p < P; p += PR_THREADS) {
    double s = 0;
    for (int w = 0; w < W; w++) s += (double)red[w][p];
    partials[(size_t)blockIdx.x * P + p] = s;
  }
}

/* D[R x R] (device) from the blocks' partial sums of the pairs i < j (row-major), in block
 * order; zero diagonal. */
__global__ void k_pairdist_regs_sum(const double *__restrict__ partials, int nblocks, int R,
                                    double *__restrict__ D) {
  const int P = R * (R - 1) / 2;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p < R) D[(size_t)p * R + p] = 0.0;
  if (p >= P) return;
  int i = 0, k = p;
  while (k >= R - 1 - i) { k -= R - 1 - i; i++; }
  const int j = i + 1 + k;
  double s = 0;
  for (int b = 0; b < nblocks; b++) s += partials[(size_t)b * P + p];
  D[(size_t)i * R + j] = s;
  D[(size_t)j * R + i] = s;
}

template <int R>
static void pairdist_regs_launch(int cpt, unsigned grid, const float *const *rows_dev, size_t d,
                                 double *partials) {
  if (cpt == 4) k_pairdist_regs<R, (R <= 12 ? 4 : 2)><<<grid, PR_THREADS>>>(rows_dev, d, partials);
  else if (cpt == 2) k_pairdist_regs<R, 2><<<grid, PR_THREADS>>>(rows_dev, d, partials);
  else k_pairdist_regs<R, 1><<<grid, PR_THREADS>>>(rows_dev, d, partials);
}

/* Exact distances among 2 <= R <= PR_MAX rows (host array of device pointers; NULL = zeros)
 * into D_host[R x R]. */
static agt_status pairdist_regs(const float *const *rows, int R, size_t d, double *D_host) {
  /* coordinates per thread: 4 (2 above 12 rows, for registers) when every row allows 16-byte
   * loads, else 2 with 8-byte loads, else 1; d is a multiple of it (no tail) */
  int cpt = 1;
  bool a16 = d % 4 == 0, a8 = d % 2 == 0;
  for (int i = 0; i < R; i++) {
    if (rows[i] && ((uintptr_t)rows[i] & 15)) a16 = false;
    if (rows[i] && ((uintptr_t)rows[i] & 7)) a8 = false;
  }
  if (a16) cpt = R <= 12 ? 4 : 2;
  else if (a8) cpt = 2;
  const size_t units = d / cpt;
  const size_t want = (units + PR_THREADS - 1) / PR_THREADS;
  const unsigned grid = (unsigned)(want < 1 ? 1 : want < PR_GRID ? want : PR_GRID);
  const int P = R * (R - 1) / 2;
  const size_t ptr_bytes = PR_MAX * sizeof(float *), D_bytes = (size_t)R * R * sizeof(double);
  char *scr = NULL;
  AGT_TRY(agt_gpu_scratch(ptr_bytes + D_bytes + (size_t)grid * P * sizeof(double), (void **)&scr));
  const float **rows_dev = (const float **)scr;
  double *D_dev = (double *)(scr + ptr_bytes);
  double *partials = (double *)(scr + ptr_bytes + D_bytes);
  AGT_CU(cudaMemcpy(rows_dev, rows, (size_t)R * sizeof(float *), cudaMemcpyHostToDevice));
  switch (R) {
#define PR_CASE(K) case K: pairdist_regs_launch<K>(cpt, grid, rows_dev, d, partials); break;
    PR_CASE(2) PR_CASE(3) PR_CASE(4) PR_CASE(5) PR_CASE(6) PR_CASE(7) PR_CASE(8) PR_CASE(9)
    PR_CASE(10) PR_CASE(11) PR_CASE(12) PR_CASE(13) PR_CASE(14) PR_CASE(15) PR_CASE(16)
#undef PR_CASE
    default: return AGT_FAIL(AGT_EINVAL, "pairdist_regs: %d rows", R);
  }
  AGT_CU_LAUNCH("k_pairdist_regs");
  k_pairdist_regs_sum<<<(P > R ? P : R) / 128 + 1, 128>>>(partials, (int)grid, R, D_dev);
  AGT_CU_LAUNCH("k_pairdist_regs_sum");
  AGT_CU(cudaMemcpy(D_host, D_dev, D_bytes, cudaMemcpyDeviceToHost));
  return AGT_OK;
}

/* Distances among R rows of any count (rows: host array of device pointers). */
static agt_status pairdist_rows(const float *const *rows, int R, size_t d, int loose_last,
                                double *D) {
  if (R <= PR_MAX) return R < 2 ? (D[0] = 0.0, AGT_OK) : pairdist_regs(rows, R, d, D);
  if (R <= 64) return pairdist_fast(rows, R, d, loose_last, D);
  /* General path: blocks of 32 rows, each pair of blocks in one launch of 64 rows. */
  const int B = 32;
  const float *sub[64];
  double Dsub[64 * 64];
  for (int I = 0; I < R; I += B) {
    for (int J = I; J < R; J += B) {
      const int ni = R - I < B ? R - I : B, nj = R - J < B ? R - J : B;
      int m = 0;
      for (int k = 0; k < ni; k++) sub[m++] = rows[I + k];
      if (J != I)
        for (int k = 0; k < nj; k++) sub[m++] = rows[J + k];
      AGT_TRY(pairdist_small(sub, m, d, Dsub));
      for (int a = 0; a < ni; a++)
        for (int b = 0; b < (J == I ? ni : nj); b++) {
          const double v = Dsub[a * m + (J == I ? b : ni + b)];
          D[(size_t)(I + a) * R + (J + b)] = v;
          D[(size_t)(J + b) * R + (I + a)] = v;
        }
    }
  }
  return AGT_OK;
}

/* The n rows of G, then `extra` (a device vector of d, if given), then a zero row (if asked):
 * D_host is (n + extras)^2, non-finite entries +inf. The diagonal is left as computed. */
agt_status agt_gpu_pairdist(const float *G, size_t n, size_t d, const float *extra, int zero_row,
                            double *D_host) {
  AGT_TRY(agt_gpu_ensure());
  const size_t R = n + (extra ? 1 : 0) + (zero_row ? 1 : 0);
  if (R > AGT_GPU_N_MAX + 2) return AGT_FAIL(AGT_ENOTSUP, "distances of %zu rows on the GPU", R);
  const float *rows[AGT_GPU_N_MAX + 2];
  for (size_t i = 0; i < n; i++) rows[i] = G + i * d;
  size_t k = n;
  if (extra) rows[k++] = extra;
  if (zero_row) rows[k++] = NULL;
  AGT_TRY(pairdist_rows(rows, (int)R, d, zero_row, D_host));
  for (size_t i = 0; i < R * R; i++)
    if (!isfinite(D_host[i])) D_host[i] = INFINITY;
  return AGT_OK;
}

extern "C" agt_status agt_gpu_gar_sqdist(const float *G, size_t n, size_t d, double *D_host) {
  AGT_TRY(agt_gpu_check_shape("sqdist", G, n, d, D_host));
  AGT_TRY(agt_gpu_pairdist(G, n, d, NULL, 0, D_host));
  for (size_t i = 0; i < n; i++) D_host[i * n + i] = 0.0;
  return AGT_OK;
}

/* ---------------------------------------------------------------- mixtures */
/* out[r][c] = sum_k W[r][k] x_k[c]; x_k = rowp[k] (NULL: zeros); K <= N, R <= 64. */
template <int N>
__global__ void __launch_bounds__(MIX_BLOCK)
k_mix(const float *const *__restrict__ rowp, int K, size_t d, const float *__restrict__ W, int R,
      float *__restrict__ out, size_t ldo) {
  __shared__ float w[64 * N];
  __shared__ const float *rp[N];
  for (int e = threadIdx.x; e < R * K; e += MIX_BLOCK) w[e] = W[e];
  if (threadIdx.x < N) rp[threadIdx.x] = threadIdx.x < K ? rowp[threadIdx.x] : nullptr;
  __syncthreads();
  const size_t c = (size_t)blockIdx.x * MIX_BLOCK + threadIdx.x;
  if (c >= d) return;
  float x[N];
#pragma unroll
  for (int k = 0; k < N; k++) x[k] = (k < K && rp[k]) ? __ldg(rp[k] + c) : 0.f;
  for (int r = 0; r < R; r++) {
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < N; k++) {
      if (k < K) {
        const float wk = w[r * K + k];
        acc += wk != 0.f ? wk * x[k] : 0.f;
      }
    }
    out[(size_t)r * ldo + c] = acc;
  }
}

/* General path: any K and R; reads the inputs once per output row. */
__global__ void __launch_bounds__(MIX_BLOCK)
k_mix_gen(const float *const *__restrict__ rowp, int K, size_t d, const float *__restrict__ W,
          int R, float *__restrict__ out, size_t ldo) {
  const size_t c = (size_t)blockIdx.x * MIX_BLOCK + threadIdx.x;
  if (c >= d) return;
  for (int r = 0; r < R; r++) {
    float acc = 0.f;
    for (int k = 0; k < K; k++) {
      const float wk = W[(size_t)r * K + k];
      if (wk != 0.f && rowp[k]) acc += wk * rowp[k][c];
    }
    out[(size_t)r * ldo + c] = acc;
  }
}

/* rows: host array of K device pointers; W_host: R x K weights (double, rounded to float). */
agt_status agt_gpu_mix_rows(const float *const *rows, size_t K, size_t d, const double *W_host,
                            size_t R, float *out) {
  AGT_TRY(agt_gpu_ensure());
  const size_t ptr_bytes = K * sizeof(float *), w_bytes = R * K * sizeof(float);
  char *scr = NULL, *h = NULL;
  AGT_TRY(agt_gpu_scratch(ptr_bytes + w_bytes + 16, (void **)&scr));
  AGT_TRY(agt_gpu_host_scratch(ptr_bytes + w_bytes + 16, (void **)&h));
  memcpy(h, rows, ptr_bytes);
  float *wh = (float *)(h + ((ptr_bytes + 15) & ~(size_t)15));
  for (size_t e = 0; e < R * K; e++) wh[e] = (float)W_host[e];
  const float **rows_dev = (const float **)scr;
  float *W_dev = (float *)(scr + ((ptr_bytes + 15) & ~(size_t)15));
  AGT_CU(cudaMemcpy(scr, h, ((ptr_bytes + 15) & ~(size_t)15) + w_bytes, cudaMemcpyHostToDevice));
  const unsigned blocks = (unsigned)((d + MIX_BLOCK - 1) / MIX_BLOCK);
  if (R <= 64 && K <= 64) {
    if (K <= 8) k_mix<8><<<blocks, MIX_BLOCK>>>(rows_dev, (int)K, d, W_dev, (int)R, out, d);
    else if (K <= 16) k_mix<16><<<blocks, MIX_BLOCK>>>(rows_dev, (int)K, d, W_dev, (int)R, out, d);
    else if (K <= 32) k_mix<32><<<blocks, MIX_BLOCK>>>(rows_dev, (int)K, d, W_dev, (int)R, out, d);
    else k_mix<64><<<blocks, MIX_BLOCK>>>(rows_dev, (int)K, d, W_dev, (int)R, out, d);
    AGT_CU_LAUNCH("k_mix");
  } else {
    k_mix_gen<<<blocks, MIX_BLOCK>>>(rows_dev, (int)K, d, W_dev, (int)R, out, d);
    AGT_CU_LAUNCH("k_mix_gen");
  }
  return AGT_OK;
}

/* ---------------------------------------------------------------- row norms */
/* part[i * nch + k] = sum of squares of row i over columns [k NORM_CHUNK, (k+1) NORM_CHUNK). */
__global__ void __launch_bounds__(NORM_BLOCK)
k_sqnorms(const float *__restrict__ G, size_t d, size_t nch, double *__restrict__ part) {
  __shared__ double red[NORM_BLOCK];
  const size_t i = blockIdx.y, k = blockIdx.x;
  const float *x = G + i * d;
  const size_t c0 = k * NORM_CHUNK, c1 = c0 + NORM_CHUNK < d ? c0 + NORM_CHUNK : d;
  float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
  size_t c = c0 + threadIdx.x;
  for (; c + 3 * NORM_BLOCK < c1; c += 4 * NORM_BLOCK) {   /* four loads in flight */
    const float v0 = __ldg(x + c), v1 = __ldg(x + c + NORM_BLOCK);
    const float v2 = __ldg(x + c + 2 * NORM_BLOCK), v3 = __ldg(x + c + 3 * NORM_BLOCK);
    a0 = fmaf(v0, v0, a0); a1 = fmaf(v1, v1, a1); a2 = fmaf(v2, v2, a2); a3 = fmaf(v3, v3, a3);
  }
  for (; c < c1; c += NORM_BLOCK) { const float v0 = __ldg(x + c); a0 = fmaf(v0, v0, a0); }
  red[threadIdx.x] = ((double)a0 + a1) + ((double)a2 + a3);
  __syncthreads();
  for (int w = NORM_BLOCK / 2; w > 0; w /= 2) {
    if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[i * nch + k] = red[0];
}

/* sq_host[i] = |row i|^2 (+inf when not finite), partial sums added in column order. */
agt_status agt_gpu_row_sqnorms(const float *G, size_t n, size_t d, double *sq_host) {
  AGT_TRY(agt_gpu_ensure());
  const size_t nch = (d + NORM_CHUNK - 1) / NORM_CHUNK;
  const size_t bytes = n * nch * sizeof(double);
  double *part = NULL, *h = NULL;
  AGT_TRY(agt_gpu_scratch(bytes, (void **)&part));
  AGT_TRY(agt_gpu_host_scratch(bytes, (void **)&h));
  if (n > 65535) return AGT_FAIL(AGT_ENOTSUP, "row norms of %zu rows on the GPU", n);
  k_sqnorms<<<dim3((unsigned)nch, (unsigned)n), NORM_BLOCK>>>(G, d, nch, part);
  AGT_CU_LAUNCH("k_sqnorms");
  AGT_CU(cudaMemcpy(h, part, bytes, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; i++) {
    double t = 0;
    for (size_t k = 0; k < nch; k++) t += h[i * nch + k];
    sq_host[i] = isfinite(t) ? t : INFINITY;
  }
  return AGT_OK;
}

/* ---------------------------------------------------------------- list averages */
/* lists: rows[off[r] .. off[r+1]) for r < R (device arrays); out[r] has stride d. */
__global__ void __launch_bounds__(LIST_BLOCK)
k_lists(const float *__restrict__ G, size_t d, const int32_t *__restrict__ rows,
        const int32_t *__restrict__ off, int R, float *__restrict__ out) {
  const size_t c = (size_t)blockIdx.x * LIST_BLOCK + threadIdx.x;
  if (c >= d) return;
  for (int r = 0; r < R; r++) {
    const int b = off[r], e = off[r + 1];
    float acc = 0.0f;
    int t = b;
    for (; t + 4 <= e; t += 4) {   /* four loads in flight, added in list order */
      const float x0 = __ldg(G + (size_t)rows[t] * d + c), x1 = __ldg(G + (size_t)rows[t + 1] * d + c);
      const float x2 = __ldg(G + (size_t)rows[t + 2] * d + c), x3 = __ldg(G + (size_t)rows[t + 3] * d + c);
      acc = __fadd_rn(acc, x0);
      acc = __fadd_rn(acc, x1);
      acc = __fadd_rn(acc, x2);
      acc = __fadd_rn(acc, x3);
    }
    for (; t < e; t++) acc = __fadd_rn(acc, __ldg(G + (size_t)rows[t] * d + c));
    out[(size_t)r * d + c] = __fdiv_rn(acc, (float)(e - b));
  }
}

/* The same averages, four coordinates per thread with 16-byte loads (d % 4 == 0 and 16-byte
 * aligned G and out): each lane adds its listed rows in list order, so the sums are those of
 * k_lists. Eight loads in flight per thread. */
__global__ void __launch_bounds__(LIST_BLOCK)
k_lists4(const float4 *__restrict__ G, size_t d4, const int32_t *__restrict__ rows,
         const int32_t *__restrict__ off, int R, float4 *__restrict__ out) {
  const size_t c = (size_t)blockIdx.x * LIST_BLOCK + threadIdx.x;
  if (c >= d4) return;
  for (int r = 0; r < R; r++) {
    const int b = off[r], e = off[r + 1];
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    int t = b;
    for (; t + 8 <= e; t += 8) {
      float4 x[8];
#pragma unroll
      for (int u = 0; u < 8; u++) x[u] = __ldg(G + (size_t)rows[t + u] * d4 + c);
#pragma unroll
      for (int u = 0; u < 8; u++) {
        acc.x = __fadd_rn(acc.x, x[u].x); acc.y = __fadd_rn(acc.y, x[u].y);
        acc.z = __fadd_rn(acc.z, x[u].z); acc.w = __fadd_rn(acc.w, x[u].w);
      }
    }
    for (; t < e; t++) {
      const float4 x = __ldg(G + (size_t)rows[t] * d4 + c);
      acc.x = __fadd_rn(acc.x, x.x); acc.y = __fadd_rn(acc.y, x.y);
      acc.z = __fadd_rn(acc.z, x.z); acc.w = __fadd_rn(acc.w, x.w);
    }
    const float k = (float)(e - b);
    out[(size_t)r * d4 + c] = make_float4(__fdiv_rn(acc.x, k), __fdiv_rn(acc.y, k),
                                          __fdiv_rn(acc.z, k), __fdiv_rn(acc.w, k));
  }
}

agt_status agt_gpu_avg_lists(const float *G, size_t d, const int64_t *rows, const size_t *off,
                             size_t R, float *out) {
  AGT_TRY(agt_gpu_ensure());
  const size_t total = off[R];
  const size_t bytes = (total + R + 1) * sizeof(int32_t);
  int32_t *dev = NULL, *h = NULL;
  AGT_TRY(agt_gpu_scratch(bytes, (void **)&dev));
  AGT_TRY(agt_gpu_host_scratch(bytes, (void **)&h));
  for (size_t t = 0; t < total; t++) h[t] = (int32_t)rows[t];
  for (size_t r = 0; r <= R; r++) h[total + r] = (int32_t)off[r];
  AGT_CU(cudaMemcpy(dev, h, bytes, cudaMemcpyHostToDevice));
  if (d % 4 == 0 && (((uintptr_t)G | (uintptr_t)out) & 15) == 0) {
    const unsigned blocks4 = (unsigned)((d / 4 + LIST_BLOCK - 1) / LIST_BLOCK);
    k_lists4<<<blocks4, LIST_BLOCK>>>(reinterpret_cast<const float4 *>(G), d / 4, dev, dev + total,
                                      (int)R, reinterpret_cast<float4 *>(out));
    AGT_CU_LAUNCH("k_lists4");
    return AGT_OK;
  }
  const unsigned blocks = (unsigned)((d + LIST_BLOCK - 1) / LIST_BLOCK);
  k_lists<<<blocks, LIST_BLOCK>>>(G, d, dev, dev + total, (int)R, out);
  AGT_CU_LAUNCH("k_lists");
  return AGT_OK;
}

/* ---------------------------------------------------------------- NNM's lists, finite rows */
/* out[r][c] = (sum of the rows of list r, ascending index order, from +0) / k, the CPU's sums
 * bit for bit: with 0/1 weights, fma(1, x, a) rounds x + a once (the CPU's add) and
 * fma(0, x, a) = a + (+-0) = a for finite x (a is never -0: it starts at +0, and an add of
 * two floats gives -0 only when both are -0). Every thread holds CPT coordinates of all
 * N (padded) rows in registers, read once from G; the weights sit in shared memory as float4
 * rows read by broadcast, one read feeding 4 * CPT FMAs. Blocks stride over the coordinates
 * (a fixed grid: the weights are loaded once per block), each coordinate independent. */
#define NNM_BLOCK 128
template <int N, int CPT>
__global__ void __launch_bounds__(NNM_BLOCK)
k_lists_dense(const float *__restrict__ G, int K, size_t d, const float *__restrict__ W, int R,
              float kdiv, float *__restrict__ out) {
  __shared__ float4 w4[64 * (N / 4)];
  for (int e = threadIdx.x; e < R * (N / 4); e += NNM_BLOCK) w4[e] = reinterpret_cast<const float4 *>(W)[e];
  __syncthreads();
  const size_t units = d / CPT, stride = (size_t)gridDim.x * NNM_BLOCK;
  for (size_t u = (size_t)blockIdx.x * NNM_BLOCK + threadIdx.x; u < units; u += stride) {
    const size_t c = u * CPT;
    float x[CPT][N];
#pragma unroll
    for (int k = 0; k < N; k++) {
      if (CPT == 2) {
        const float2 v = k < K ? __ldg(reinterpret_cast<const float2 *>(G + (size_t)k * d + c))
                               : make_float2(0.f, 0.f);
        x[0][k] = v.x;
        x[CPT - 1][k] = v.y;
      } else {
        x[0][k] = k < K ? __ldg(G + (size_t)k * d + c) : 0.f;
      }
    }
    for (int r = 0; r < R; r++) {
      float acc[CPT];
#pragma unroll
      for (int j = 0; j < CPT; j++) acc[j] = 0.f;
#pragma unroll
      for (int q = 0; q < N / 4; q++) {
        const float4 w = w4[r * (N / 4) + q];
#pragma unroll
        for (int j = 0; j < CPT; j++) {
          acc[j] = __fmaf_rn(w.x, x[j][4 * q], acc[j]);
          acc[j] = __fmaf_rn(w.y, x[j][4 * q + 1], acc[j]);
          acc[j] = __fmaf_rn(w.z, x[j][4 * q + 2], acc[j]);
          acc[j] = __fmaf_rn(w.w, x[j][4 * q + 3], acc[j]);
        }
      }
      float *o = out + (size_t)r * d + c;
      if (CPT == 2)
        *reinterpret_cast<float2 *>(o) = make_float2(__fdiv_rn(acc[0], kdiv), __fdiv_rn(acc[CPT - 1], kdiv));
      else
        o[0] = __fdiv_rn(acc[0], kdiv);
    }
  }
}

template <int N>
static void launch_lists_dense(bool pairs, unsigned blocks, const float *G, int K, size_t d,
                               const float *W, int R, float kdiv, float *out) {
  if (pairs) k_lists_dense<N, 2><<<blocks, NNM_BLOCK>>>(G, K, d, W, R, kdiv, out);
  else k_lists_dense<N, 1><<<blocks, NNM_BLOCK>>>(G, K, d, W, R, kdiv, out);
}

agt_status agt_gpu_avg_lists_dense(const float *G, size_t n, size_t d, const int64_t *lists,
                                   size_t k, float *out) {
  AGT_TRY(agt_gpu_ensure());
  if (n > 64 || k < 1) return AGT_FAIL(AGT_ENOTSUP, "list averages of %zu rows in registers", n);
  const size_t N = (n + 3) & ~(size_t)3;
  const size_t bytes = n * N * sizeof(float);
  float *W = NULL, *h = NULL;
  AGT_TRY(agt_gpu_scratch(bytes, (void **)&W));
  AGT_TRY(agt_gpu_host_scratch(bytes, (void **)&h));
  memset(h, 0, bytes);
  for (size_t r = 0; r < n; r++)
    for (size_t t = 0; t < k; t++) h[r * N + (size_t)lists[r * k + t]] = 1.0f;
  AGT_CU(cudaMemcpy(W, h, bytes, cudaMemcpyHostToDevice));
  const bool pairs = d % 2 == 0 && (((uintptr_t)G | (uintptr_t)out) & 7) == 0;
  static int sms = 0;
  if (!sms) AGT_CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t units = pairs ? d / 2 : d;
  size_t blocks = (units + NNM_BLOCK - 1) / NNM_BLOCK, cap = (size_t)sms * 16;
  if (blocks > cap) blocks = cap;
  const unsigned nb = (unsigned)blocks;
  const int K = (int)n, R = (int)n;
  const float kdiv = (float)k;
  switch (N) {
    case 4: launch_lists_dense<4>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 8: launch_lists_dense<8>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 12: launch_lists_dense<12>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 16: launch_lists_dense<16>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 20: launch_lists_dense<20>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 24: launch_lists_dense<24>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 28: launch_lists_dense<28>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 32: launch_lists_dense<32>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 36: launch_lists_dense<36>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 40: launch_lists_dense<40>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 44: launch_lists_dense<44>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 48: launch_lists_dense<48>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 52: launch_lists_dense<52>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 56: launch_lists_dense<56>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    case 60: launch_lists_dense<60>(pairs, nb, G, K, d, W, R, kdiv, out); break;
    default: launch_lists_dense<64>(pairs, nb, G, K, d, W, R, kdiv, out); break;
  }
  AGT_CU_LAUNCH("k_lists_dense");
  return AGT_OK;
}

/* ---------------------------------------------------------------- row scaling */
__global__ void __launch_bounds__(SCALE_BLOCK)
k_scale_rows(const float *__restrict__ G, size_t n, size_t d, const float *__restrict__ s,
             float *out) {
  const size_t total = n * d, stride = (size_t)gridDim.x * SCALE_BLOCK;
  for (size_t e = (size_t)blockIdx.x * SCALE_BLOCK + threadIdx.x; e < total; e += stride) {
    const float k = s[e / d];
    out[e] = k == 1.f ? G[e] : G[e] * k;
  }
}

/* out[i] = scale[i] * G[i] (out may be G). scale_host: n floats. */
agt_status agt_gpu_scale_rows(const float *G, size_t n, size_t d, const float *scale_host,
                              float *out) {
  AGT_TRY(agt_gpu_ensure());
  float *s_dev = NULL, *h = NULL;
  AGT_TRY(agt_gpu_scratch(n * sizeof(float), (void **)&s_dev));
  AGT_TRY(agt_gpu_host_scratch(n * sizeof(float), (void **)&h));
  memcpy(h, scale_host, n * sizeof(float));
  AGT_CU(cudaMemcpy(s_dev, h, n * sizeof(float), cudaMemcpyHostToDevice));
  size_t blocks = (n * d + SCALE_BLOCK - 1) / SCALE_BLOCK;
  if (blocks > 8192) blocks = 8192;
  k_scale_rows<<<(unsigned)blocks, SCALE_BLOCK>>>(G, n, d, s_dev, out);
  AGT_CU_LAUNCH("k_scale_rows");
  return AGT_OK;
}
