/* gpu_nn_cudnn.cu — convolutions through cuDNN when libcudnn.so.9 is found at run time.
 *
 * The library is opened with dlopen on the first convolution (never linked: the binary runs
 * where cuDNN is missing, and the build needs only its header, for the types). Without it, or
 * with AGT_CUDNN=0 in the environment, or after agt_gpu_nn_use_cudnn(0), or when cuDNN cannot
 * make a handle on the device, convolutions take the im2col path (gpu_nn_conv.cu);
 * agt_gpu_nn_conv_path says which in one line.
 *
 * Float32 by default: the convolution descriptors ask for CUDNN_FMA_MATH (no TF32 tensor-core
 * kernels) and only algorithms cuDNN reports as FMA-math and deterministic (the same bits run
 * to run, as the im2col path) that sum products (GEMM-like or direct: no FFT, no Winograd) are
 * taken, the fastest by cuDNN's heuristics whose workspace fits CUDNN_WS_MAX. The backward
 * passes do not use cuDNN's backward algorithms in this mode: its deterministic summing ones
 * (BWD_DATA_ALGO_1, BWD_FILTER_ALGO_1) are slow (cudnnFind* on the H200, ResNet-18's 64-channel
 * 32x32 layer at batch 128: dx 0.62 ms against 0.33 as a forward convolution, dW 0.83 against
 * 0.31 for cuBLAS's SGEMM alone), so
 *   dx  at stride 1 is a forward convolution (through cuDNN's forward algorithms) of dy with
 *       the filter rotated by 180 degrees and its channels swapped, padded KH−1−pt, KW−1−pl:
 *       the same sums of W·dy (plus W·0 for the padding, W being finite); at other strides,
 *       or where no forward algorithm fits, the im2col path's GEMM and col2im;
 *   dW  is the im2col path's: im2col and one SGEMM (cuBLAS is deterministic), the CPU's sums
 *       over the zero-padded patches (no NaN to put back).
 * And a convolution with fewer than CUDNN_FP32_MIN_P output pixels a sample (ResNet's 8x8 and
 * 4x4 layers) runs wholly on the im2col path in float32: one SGEMM over the batch there took
 * 6.1 ms of a ResNet-18 pass (batch 128, H200) where the routes above took 7.3 (per layer and
 * pass 0.45 to 1.06 of their time).
 * Opt-in (agt_gpu_nn_set_math, --gpu-math): 1 = TF32 tensor-core math, 2 = float32 FMA math with
 * any algorithm (Winograd, FFT, non-deterministic: PyTorch's choice); both take cuDNN's own
 * backward algorithms (with mode 1 the same algorithm rules as float32).
 * Per geometry and mode the descriptors and the algorithm choices are made once and
 * cached. cuDNN pads symmetrically: a convolution whose padding is not (TF's SAME with
 * the odd pixel after) takes the im2col path. Bias and activation stay agt's own pass. */
#include "gpu_nn_internal.h"

#include <cudnn.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDNN_WS_MAX ((size_t)256 << 20)
/* Float32: convolutions with fewer output pixels a sample take the im2col path, whose one SGEMM
 * over the batch beat cuDNN's summing algorithms there (see the top of the file). */
#define CUDNN_FP32_MIN_P 256
#define CUDNN_CACHE 96

#define CUDNN_FNS(X)                                                                            \
  X(cudnnGetVersion) X(cudnnGetErrorString) X(cudnnCreate) X(cudnnSetStream)                    \
  X(cudnnCreateTensorDescriptor) X(cudnnSetTensor4dDescriptor) X(cudnnCreateFilterDescriptor)   \
  X(cudnnSetFilter4dDescriptor) X(cudnnCreateConvolutionDescriptor)                             \
  X(cudnnSetConvolution2dDescriptor) X(cudnnSetConvolutionMathType)                             \
  X(cudnnGetConvolutionForwardAlgorithm_v7) X(cudnnGetConvolutionBackwardDataAlgorithm_v7)      \
  X(cudnnGetConvolutionBackwardFilterAlgorithm_v7) X(cudnnConvolutionForward)                   \
  X(cudnnConvolutionBackwardData) X(cudnnConvolutionBackwardFilter)

#define X(f) typedef decltype(&::f) f##_fn;
CUDNN_FNS(X)
#undef X

static struct {
#define X(f) f##_fn f;
  CUDNN_FNS(X)
#undef X
} dn;

static int g_state = -1;          /* -1: not tried, 0: not used, 1: loaded */
static int g_enabled = 1;         /* agt_gpu_nn_use_cudnn */
static char g_why[400];
static cudnnHandle_t g_handle;
static int g_handle_device = -1;

struct conv_plan {
  size_t key[12];   /* the geometry and the math mode */
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_fwd, ws_data, ws_filter;
  int dx_route, dw_route;   /* AGT_CUDNN_ROUTE_*: how backward forms dx and dW */
  /* dx as a forward convolution (AGT_CUDNN_ROUTE_FWD): dy (desc y) with the filter wt (C, OC,
   * KH, KW), conv_t padding KH−1−pt, KW−1−pl, stride 1, into dx (desc x) */
  cudnnFilterDescriptor_t wt;
  cudnnConvolutionDescriptor_t conv_t;
  cudnnConvolutionFwdAlgo_t dgrad;
  size_t ws_dgrad;
  int ok;   /* 0: no FMA deterministic algorithm for some pass: im2col for this geometry */
};
static conv_plan g_plans[CUDNN_CACHE];
static int g_nplans = 0;

static void load(void) {
  if (g_state >= 0) return;
  g_state = 0;
  const char *env = getenv("AGT_CUDNN");
  if (env && strcmp(env, "0") == 0) {
    snprintf(g_why, sizeof g_why, "cuDNN off: AGT_CUDNN=0");
    return;
  }
  void *h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    snprintf(g_why, sizeof g_why, "libcudnn.so.9 not found: %s", e ? e : "dlopen failed");
    return;
  }
#define X(f)                                                                       \
  dn.f = (f##_fn)dlsym(h, #f);                                               \
  if (!dn.f) {                                                                     \
    snprintf(g_why, sizeof g_why, "libcudnn.so.9 lacks %s", #f);                   \
    dlclose(h);                                                                    \
    return;                                                                        \
  }
  CUDNN_FNS(X)
#undef X
  size_t v = dn.cudnnGetVersion();
  if (v < 90000) {
    snprintf(g_why, sizeof g_why, "libcudnn.so.9 reports version %zu (9.x needed)", v);
    dlclose(h);
    return;
  }
  snprintf(g_why, sizeof g_why, "cuDNN %zu.%zu.%zu (libcudnn.so.9)", v / 10000, (v / 100) % 100, v % 100);
  g_state = 1;
}

static agt_status dn_fail(cudnnStatus_t s, const char *what) {
  return AGT_FAIL(s == CUDNN_STATUS_ALLOC_FAILED ? AGT_ENOMEM : AGT_EIO, "cuDNN: %s failed: %s",
                  what, dn.cudnnGetErrorString(s));
}

#define DN(call, what)                                 \
  do {                                                 \
    cudnnStatus_t dn_s_ = (call);                      \
    if (dn_s_ != CUDNN_STATUS_SUCCESS) {               \
      cudaGetLastError();                              \
      return dn_fail(dn_s_, what);                     \
    }                                                  \
  } while (0)

/* The handle of the current device; 0 when cuDNN cannot run here (it is then off for the
 * process, the reason in g_why, and the im2col path runs). */
static int handle(void) {
  int dev = agt_gpu_device();
  if (g_handle && g_handle_device == dev) return 1;
  g_handle = NULL;           /* a handle of another device is left (the device switch is rare) */
  g_nplans = 0;
  cudnnStatus_t s = dn.cudnnCreate(&g_handle);
  if (s == CUDNN_STATUS_SUCCESS) s = dn.cudnnSetStream(g_handle, 0);
  if (s != CUDNN_STATUS_SUCCESS) {
    cudaGetLastError();
    g_handle = NULL;
    g_state = 0;
    snprintf(g_why, sizeof g_why, "libcudnn.so.9 found but cudnnCreate failed: %s",
             dn.cudnnGetErrorString(s));
    return 0;
  }
  g_handle_device = dev;
  return 1;
}

/* The arithmetic asked for (agt_gpu_nn_set_math): 0 float32 (FMA, deterministic summing
 * algorithms), 1 TF32 tensor cores (the same algorithms), 2 float32 with any algorithm. */
static int g_math = 0;

/* float32: no tensor-core math (TF32): the descriptor asks for FMA math, which cuDNN reports as
 * FMA or as its default. TF32 (opt-in): tensor-core math too. */
static int math_ok(cudnnMathType_t m) {
  return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH || (g_math == 1 && m == CUDNN_TENSOR_OP_MATH);
}

/* Sums of products only (GEMM-like and direct algorithms): each output is the sum of its own
 * products, as with im2col and on the CPU. FFT and Winograd transforms mix the inputs of a tile
 * (one inf or NaN pixel turns unrelated outputs NaN) and round differently. */
static int summing(cudnnConvolutionFwdAlgo_t a) { return a <= CUDNN_CONVOLUTION_FWD_ALGO_DIRECT; }
static int summing(cudnnConvolutionBwdDataAlgo_t a) { return a <= CUDNN_CONVOLUTION_BWD_DATA_ALGO_1; }
static int summing(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

/* The first acceptable algorithm of cuDNN's heuristic ranking: it runs, fits the workspace,
 * has the asked math and, except with fp32-fast, sums products and is deterministic. (Ranking by
 * cuDNN's own timing, cudnnFind*, gave the same ResNet-18 pass time: not used.) */
template <typename Perf, typename Algo>
static int pick(const Perf *perf, int n, Algo *algo, size_t *ws) {
  for (int i = 0; i < n; i++)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= CUDNN_WS_MAX &&
        math_ok(perf[i].mathType) &&
        (g_math == 2 || (summing(perf[i].algo) && perf[i].determinism == CUDNN_DETERMINISTIC))) {
      *algo = perf[i].algo;
      *ws = perf[i].memory;
      return 1;
    }
  return 0;
}

static size_t g_calls[2];   /* convolution passes through im2col [0] and cuDNN [1] */

/* The plan of a geometry: descriptors and algorithms (made on its first use). */
static agt_status plan_for(const size_t key[12], conv_plan **out) {
  for (int i = 0; i < g_nplans; i++)
    if (memcmp(g_plans[i].key, key, sizeof g_plans[i].key) == 0) {
      *out = &g_plans[i];
      return AGT_OK;
    }
  conv_plan *p = &g_plans[g_nplans < CUDNN_CACHE ? g_nplans : CUDNN_CACHE - 1];
  int fresh = g_nplans < CUDNN_CACHE;
  size_t B = key[0], C = key[1], H = key[2], W = key[3], OC = key[4], KH = key[5], KW = key[6];
  size_t sh = key[7], sw = key[8], pt = key[9], pl = key[10];
  if (fresh) {
    DN(dn.cudnnCreateTensorDescriptor(&p->x), "cudnnCreateTensorDescriptor");
    DN(dn.cudnnCreateTensorDescriptor(&p->y), "cudnnCreateTensorDescriptor");
    DN(dn.cudnnCreateFilterDescriptor(&p->w), "cudnnCreateFilterDescriptor");
    DN(dn.cudnnCreateConvolutionDescriptor(&p->conv), "cudnnCreateConvolutionDescriptor");
    DN(dn.cudnnCreateFilterDescriptor(&p->wt), "cudnnCreateFilterDescriptor");
    DN(dn.cudnnCreateConvolutionDescriptor(&p->conv_t), "cudnnCreateConvolutionDescriptor");
  }
  memcpy(p->key, key, sizeof p->key);
  p->ok = 0;
  size_t OH = (H + 2 * pt - KH) / sh + 1, OW = (W + 2 * pl - KW) / sw + 1;
  DN(dn.cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)B, (int)C, (int)H, (int)W),
     "cudnnSetTensor4dDescriptor");
  DN(dn.cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)B, (int)OC, (int)OH, (int)OW),
     "cudnnSetTensor4dDescriptor");
  DN(dn.cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)OC, (int)C, (int)KH, (int)KW),
     "cudnnSetFilter4dDescriptor");
  DN(dn.cudnnSetConvolution2dDescriptor(p->conv, (int)pt, (int)pl, (int)sh, (int)sw, 1, 1,
                                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
     "cudnnSetConvolution2dDescriptor");
  DN(dn.cudnnSetConvolutionMathType(p->conv, key[11] == 1 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
     "cudnnSetConvolutionMathType");
  int n = 0, found = 0;
  {
    cudnnConvolutionFwdAlgoPerf_t perf[16];
    DN(dn.cudnnGetConvolutionForwardAlgorithm_v7(g_handle, p->x, p->w, p->conv, p->y, 16, &n, perf),
       "cudnnGetConvolutionForwardAlgorithm_v7");
    found = pick(perf, n, &p->fwd, &p->ws_fwd);
  }
  p->dx_route = p->dw_route = AGT_CUDNN_ROUTE_CUDNN;
  if (found && key[11] == 0) {   /* float32: see the top of the file */
    p->dw_route = AGT_CUDNN_ROUTE_GEMM;
    p->dx_route = AGT_CUDNN_ROUTE_GEMM;
    if (sh == 1 && sw == 1 && pt < KH && pl < KW && OC * C * KH * KW <= INT32_MAX) {
      DN(dn.cudnnSetFilter4dDescriptor(p->wt, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)C, (int)OC,
                                       (int)KH, (int)KW),
         "cudnnSetFilter4dDescriptor");
      DN(dn.cudnnSetConvolution2dDescriptor(p->conv_t, (int)(KH - 1 - pt), (int)(KW - 1 - pl), 1, 1,
                                            1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
         "cudnnSetConvolution2dDescriptor");
      DN(dn.cudnnSetConvolutionMathType(p->conv_t, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");
      cudnnConvolutionFwdAlgoPerf_t perf[16];
      DN(dn.cudnnGetConvolutionForwardAlgorithm_v7(g_handle, p->y, p->wt, p->conv_t, p->x, 16, &n,
                                                   perf),
         "cudnnGetConvolutionForwardAlgorithm_v7");
      if (pick(perf, n, &p->dgrad, &p->ws_dgrad)) p->dx_route = AGT_CUDNN_ROUTE_FWD;
    }
  } else {
    if (found) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[16];
      DN(dn.cudnnGetConvolutionBackwardDataAlgorithm_v7(g_handle, p->w, p->y, p->conv, p->x, 16, &n, perf),
         "cudnnGetConvolutionBackwardDataAlgorithm_v7");
      found = pick(perf, n, &p->bwd_data, &p->ws_data);
    }
    if (found) {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
      DN(dn.cudnnGetConvolutionBackwardFilterAlgorithm_v7(g_handle, p->x, p->y, p->conv, p->w, 16, &n, perf),
         "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
      found = pick(perf, n, &p->bwd_filter, &p->ws_filter);
    }
  }
  p->ok = found;
  if (fresh) g_nplans++;
  *out = p;
  return AGT_OK;
}

/* The cuDNN plan for this convolution, or NULL (*plan) when the im2col path runs it. */
agt_status agt_cudnn_plan(size_t B, size_t C, size_t H, size_t W, size_t OC, size_t KH, size_t KW,
                          size_t sh, size_t sw, size_t pt, size_t pl, size_t OH, size_t OW,
                          void **plan) {
  *plan = NULL;
  g_calls[0]++;   /* moved to [1] below when cuDNN takes it */
  load();
  if (g_state != 1 || !g_enabled) return AGT_OK;
  /* cuDNN pads pt rows above and below, pl columns left and right */
  if (H + 2 * pt < KH || W + 2 * pl < KW || (H + 2 * pt - KH) / sh + 1 != OH ||
      (W + 2 * pl - KW) / sw + 1 != OW)
    return AGT_OK;
  if (B > INT32_MAX || C > INT32_MAX || H > INT32_MAX || W > INT32_MAX || OC > INT32_MAX)
    return AGT_OK;
  if (g_math == 0 && OH * OW < CUDNN_FP32_MIN_P) return AGT_OK;
  AGT_TRY(agt_gpu_ensure());
  if (!handle()) return AGT_OK;
  size_t key[12] = { B, C, H, W, OC, KH, KW, sh, sw, pt, pl, (size_t)g_math };
  conv_plan *p;
  AGT_TRY(plan_for(key, &p));
  if (p->ok) {
    *plan = p;
    g_calls[0]--;
    g_calls[1]++;
  }
  return AGT_OK;
}

extern "C" void agt_gpu_nn_conv_calls(size_t *im2col, size_t *cudnn) {
  if (im2col) *im2col = g_calls[0];
  if (cudnn) *cudnn = g_calls[1];
}

agt_status agt_cudnn_forward(void *plan, const float *x, const float *W, float *y) {
  conv_plan *p = (conv_plan *)plan;
  void *ws = NULL;
  if (p->ws_fwd) AGT_TRY(agt_gpu_scratch(p->ws_fwd, &ws));
  float one = 1.0f, zero = 0.0f;
  DN(dn.cudnnConvolutionForward(g_handle, &one, p->x, x, p->w, W, p->conv, p->fwd, ws, p->ws_fwd,
                                &zero, p->y, y),
     "cudnnConvolutionForward");
  return AGT_OK;
}

/* Wt[c][o][KH−1−kh][KW−1−kw] = W[o][c][kh][kw]: the filter of dx as a forward convolution. */
__global__ void k_conv_w_rot(const float *W, float *Wt, unsigned OC, unsigned C, unsigned KH,
                             unsigned KW) {
  unsigned KK = KH * KW, n = OC * C * KK;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    unsigned r = i % KK, t = i / KK, c = t % C, o = t / C;
    Wt[(c * OC + o) * KK + (KK - 1 - r)] = W[i];
  }
}

void agt_cudnn_routes(const void *plan, int *dx_route, int *dw_route) {
  const conv_plan *p = (const conv_plan *)plan;
  *dx_route = p->dx_route;
  *dw_route = p->dw_route;
}

agt_status agt_cudnn_backward_data(void *plan, const float *W, const float *dy, float *dx) {
  conv_plan *p = (conv_plan *)plan;
  float one = 1.0f, zero = 0.0f;
  if (p->dx_route == AGT_CUDNN_ROUTE_FWD) {
    size_t OC = p->key[4], C = p->key[1], KH = p->key[5], KW = p->key[6], nw = OC * C * KH * KW;
    size_t wbytes = (nw * sizeof(float) + 255) / 256 * 256;
    char *scr;
    AGT_TRY(agt_gpu_scratch(wbytes + p->ws_dgrad, (void **)&scr));
    float *Wt = (float *)scr;
    k_conv_w_rot<<<nn_blocks(nw), NN_BLOCK>>>(W, Wt, (unsigned)OC, (unsigned)C, (unsigned)KH,
                                             (unsigned)KW);
    AGT_CU_LAUNCH("k_conv_w_rot");
    DN(dn.cudnnConvolutionForward(g_handle, &one, p->y, dy, p->wt, Wt, p->conv_t, p->dgrad,
                                  p->ws_dgrad ? scr + wbytes : NULL, p->ws_dgrad, &zero, p->x, dx),
       "cudnnConvolutionForward (dx)");
    return AGT_OK;
  }
  void *ws = NULL;
  if (p->ws_data) AGT_TRY(agt_gpu_scratch(p->ws_data, &ws));
  DN(dn.cudnnConvolutionBackwardData(g_handle, &one, p->w, W, p->y, dy, p->conv, p->bwd_data, ws,
                                     p->ws_data, &zero, p->x, dx),
     "cudnnConvolutionBackwardData");
  return AGT_OK;
}

agt_status agt_cudnn_backward_filter(void *plan, const float *x, const float *dy, float *dW) {
  conv_plan *p = (conv_plan *)plan;
  void *ws = NULL;
  if (p->ws_filter) AGT_TRY(agt_gpu_scratch(p->ws_filter, &ws));
  float one = 1.0f, zero = 0.0f;
  DN(dn.cudnnConvolutionBackwardFilter(g_handle, &one, p->x, x, p->y, dy, p->conv, p->bwd_filter,
                                       ws, p->ws_filter, &zero, p->w, dW),
     "cudnnConvolutionBackwardFilter");
  return AGT_OK;
}

extern "C" void agt_gpu_nn_use_cudnn(int on) { g_enabled = on != 0; }

/* The math of the convolutions and GEMMs (gpu_blas.cu reads it through agt_gpu_nn_math). */
extern "C" void agt_gpu_nn_set_math(int mode) { g_math = mode == 1 || mode == 2 ? mode : 0; }
extern "C" int agt_gpu_nn_math(void) { return g_math; }

extern "C" int agt_gpu_nn_conv_path(char *buf, size_t cap) {
  load();
  int cudnn = g_state == 1 && g_enabled;
  if (buf && cap) {
    if (cudnn)
      snprintf(buf, cap, "conv2d on cuda: %s, %s", g_why,
               g_math == 1 ? "TF32 tensor cores, deterministic algorithms (--gpu-math tf32)"
               : g_math == 2 ? "float32 (FMA), any algorithm (--gpu-math fp32-fast)"
                             : "float32 (FMA), deterministic algorithms");
    else
      snprintf(buf, cap, "conv2d on cuda: im2col + cuBLAS SGEMM (%s)",
               g_state == 1 ? "cuDNN switched off" : g_why);
  }
  return cudnn;
}
