/* gar_net.c — per-coordinate sorting with the network unrolled, for n <= 32 rows.
 *
 * The same Batcher odd-even merge networks as make_network() in gar_coord.c (the
 * comparator lists below are that construction written out, n = 2..32), but with every
 * index a constant: the compiler then keeps the n vectors of 8 coordinates in registers
 * instead of an array on the stack, which halves the time of a network. The rule applied
 * after sorting is finish1() of gar_coord.c, operation for operation, so the results are
 * bit-identical to the portable path (test_gar compares them for every n).
 *
 * Only built into the AVX2 path (target attribute); n > 32 uses the runtime network. */
#include "gar.h"

#include <math.h>
#include <stddef.h>
#if defined(__x86_64__)
#include <immintrin.h>

/* compare-exchange of two vectors of keys (never NaN) */
#define CX(a, b)                                       \
  {                                                    \
    __m256 t_ = _mm256_min_ps(x[a], x[b]);             \
    x[b] = _mm256_max_ps(x[a], x[b]);                  \
    x[a] = t_;                                         \
  }

#define NET_2 \
  CX(0,1)
#define NET_3 \
  CX(0,1) CX(0,2) CX(1,2)
#define NET_4 \
  CX(0,1) CX(2,3) CX(0,2) CX(1,3) CX(1,2)
#define NET_5 \
  CX(0,1) CX(2,3) CX(0,2) CX(1,3) CX(1,2) CX(0,4) CX(2,4) CX(1,2) CX(3,4)
#define NET_6 \
  CX(0,1) CX(2,3) CX(4,5) CX(0,2) CX(1,3) CX(1,2) CX(0,4) CX(1,5) CX(2,4) CX(3,5) CX(1,2) \
  CX(3,4)
#define NET_7 \
  CX(0,1) CX(2,3) CX(4,5) CX(0,2) CX(1,3) CX(4,6) CX(1,2) CX(5,6) CX(0,4) CX(1,5) CX(2,6) \
  CX(2,4) CX(3,5) CX(1,2) CX(3,4) CX(5,6)
#define NET_8 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(1,2) CX(5,6) CX(0,4) \
  CX(1,5) CX(2,6) CX(3,7) CX(2,4) CX(3,5) CX(1,2) CX(3,4) CX(5,6)
#define NET_9 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(1,2) CX(5,6) CX(0,4) \
  CX(1,5) CX(2,6) CX(3,7) CX(2,4) CX(3,5) CX(1,2) CX(3,4) CX(5,6) CX(0,8) CX(4,8) CX(2,4) \
  CX(3,5) CX(6,8) CX(1,2) CX(3,4) CX(5,6) CX(7,8)
#define NET_10 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(1,2) CX(5,6) \
  CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(2,4) CX(3,5) CX(1,2) CX(3,4) CX(5,6) CX(0,8) CX(1,9) \
  CX(4,8) CX(5,9) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(1,2) CX(3,4) CX(5,6) CX(7,8)
#define NET_11 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(1,2) \
  CX(5,6) CX(9,10) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(2,4) CX(3,5) CX(1,2) CX(3,4) CX(5,6) \
  CX(9,10) CX(0,8) CX(1,9) CX(2,10) CX(4,8) CX(5,9) CX(6,10) CX(2,4) CX(3,5) CX(6,8) \
  CX(7,9) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10)
#define NET_12 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(0,2) CX(1,3) CX(4,6) CX(5,7) \
  CX(8,10) CX(9,11) CX(1,2) CX(5,6) CX(9,10) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(2,4) \
  CX(3,5) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,8) \
  CX(5,9) CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10)
#define NET_13 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(0,2) CX(1,3) CX(4,6) CX(5,7) \
  CX(8,10) CX(9,11) CX(1,2) CX(5,6) CX(9,10) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) \
  CX(2,4) CX(3,5) CX(10,12) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(0,8) CX(1,9) \
  CX(2,10) CX(3,11) CX(4,12) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) \
  CX(7,9) CX(10,12) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12)
#define NET_14 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(0,2) CX(1,3) CX(4,6) \
  CX(5,7) CX(8,10) CX(9,11) CX(1,2) CX(5,6) CX(9,10) CX(0,4) CX(1,5) CX(2,6) CX(3,7) \
  CX(8,12) CX(9,13) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(9,10) \
  CX(11,12) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(4,8) CX(5,9) CX(6,10) \
  CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) \
  CX(7,8) CX(9,10) CX(11,12)
#define NET_15 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(0,2) CX(1,3) CX(4,6) \
  CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(0,4) CX(1,5) \
  CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(1,2) \
  CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) \
  CX(5,13) CX(6,14) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) \
  CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14)
#define NET_16 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(0,2) CX(1,3) \
  CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(1,2) CX(5,6) CX(9,10) CX(13,14) \
  CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(2,4) CX(3,5) \
  CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(0,8) CX(1,9) \
  CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) CX(6,10) CX(7,11) \
  CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14)
#define NET_17 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(0,2) CX(1,3) \
  CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(1,2) CX(5,6) CX(9,10) CX(13,14) \
  CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(2,4) CX(3,5) \
  CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(0,8) CX(1,9) \
  CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) CX(6,10) CX(7,11) \
  CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14) CX(0,16) CX(8,16) CX(4,8) CX(5,9) CX(6,10) CX(7,11) \
  CX(12,16) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) CX(1,2) CX(3,4) \
  CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16)
#define NET_18 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(0,2) \
  CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(1,2) CX(5,6) CX(9,10) \
  CX(13,14) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(2,4) \
  CX(3,5) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(0,8) \
  CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) CX(6,10) \
  CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) \
  CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(0,16) CX(1,17) CX(8,16) CX(9,17) CX(4,8) CX(5,9) \
  CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) \
  CX(14,16) CX(15,17) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) \
  CX(15,16)
#define NET_19 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(0,2) \
  CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) CX(1,2) CX(5,6) \
  CX(9,10) CX(13,14) CX(17,18) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) \
  CX(11,15) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) \
  CX(13,14) CX(17,18) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) \
  CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) \
  CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(0,16) CX(1,17) \
  CX(2,18) CX(8,16) CX(9,17) CX(10,18) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) \
  CX(13,17) CX(14,18) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) \
  CX(15,17) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) \
  CX(17,18)
#define NET_20 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) CX(17,19) \
  CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) \
  CX(9,13) CX(10,14) CX(11,15) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) \
  CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) \
  CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) \
  CX(7,9) CX(10,12) CX(11,13) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) \
  CX(17,18) CX(0,16) CX(1,17) CX(2,18) CX(3,19) CX(8,16) CX(9,17) CX(10,18) CX(11,19) \
  CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(2,4) CX(3,5) \
  CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18)
#define NET_21 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) CX(17,19) \
  CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) \
  CX(9,13) CX(10,14) CX(11,15) CX(16,20) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) \
  CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(0,8) CX(1,9) \
  CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) CX(6,10) CX(7,11) \
  CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(1,2) CX(3,4) CX(5,6) \
  CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(0,16) CX(1,17) CX(2,18) \
  CX(3,19) CX(4,20) CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(4,8) CX(5,9) \
  CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(2,4) CX(3,5) CX(6,8) CX(7,9) \
  CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) CX(19,20)
#define NET_22 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) \
  CX(17,19) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(0,4) CX(1,5) CX(2,6) CX(3,7) \
  CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) CX(17,21) CX(2,4) CX(3,5) CX(10,12) \
  CX(11,13) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) \
  CX(17,18) CX(19,20) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) \
  CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) \
  CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) \
  CX(17,18) CX(19,20) CX(0,16) CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(8,16) \
  CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) CX(4,8) CX(5,9) CX(6,10) CX(7,11) \
  CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) \
  CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) CX(19,20)
#define NET_23 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) \
  CX(17,19) CX(20,22) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(21,22) CX(0,4) \
  CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) CX(17,21) \
  CX(18,22) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) \
  CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(0,8) CX(1,9) CX(2,10) \
  CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(2,4) \
  CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) \
  CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(0,16) CX(1,17) \
  CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) CX(8,16) CX(9,17) CX(10,18) CX(11,19) \
  CX(12,20) CX(13,21) CX(14,22) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) \
  CX(14,18) CX(15,19) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) \
  CX(15,17) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) \
  CX(13,14) CX(15,16) CX(17,18) CX(19,20) CX(21,22)
#define NET_24 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) \
  CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) \
  CX(21,22) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) \
  CX(17,21) CX(18,22) CX(19,23) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) CX(19,21) \
  CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) \
  CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(4,8) CX(5,9) \
  CX(6,10) CX(7,11) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(19,21) \
  CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) \
  CX(21,22) CX(0,16) CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) CX(7,23) \
  CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) CX(14,22) CX(15,23) CX(4,8) \
  CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(2,4) CX(3,5) CX(6,8) \
  CX(7,9) CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(1,2) CX(3,4) \
  CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) CX(19,20) CX(21,22)
#define NET_25 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) \
  CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) \
  CX(21,22) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) \
  CX(17,21) CX(18,22) CX(19,23) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) CX(19,21) \
  CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) \
  CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(16,24) CX(4,8) \
  CX(5,9) CX(6,10) CX(7,11) CX(20,24) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) \
  CX(18,20) CX(19,21) CX(22,24) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) \
  CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(0,16) CX(1,17) CX(2,18) CX(3,19) \
  CX(4,20) CX(5,21) CX(6,22) CX(7,23) CX(8,24) CX(8,16) CX(9,17) CX(10,18) CX(11,19) \
  CX(12,20) CX(13,21) CX(14,22) CX(15,23) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) \
  CX(13,17) CX(14,18) CX(15,19) CX(20,24) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) \
  CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(22,24) CX(1,2) CX(3,4) CX(5,6) \
  CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) CX(19,20) CX(21,22) CX(23,24)
#define NET_26 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) \
  CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(1,2) CX(5,6) CX(9,10) CX(13,14) \
  CX(17,18) CX(21,22) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) \
  CX(16,20) CX(17,21) CX(18,22) CX(19,23) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) \
  CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) \
  CX(21,22) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(16,24) \
  CX(17,25) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(20,24) CX(21,25) CX(2,4) CX(3,5) CX(6,8) \
  CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(1,2) CX(3,4) \
  CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(23,24) \
  CX(0,16) CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) CX(7,23) CX(8,24) CX(9,25) \
  CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) CX(14,22) CX(15,23) CX(4,8) \
  CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(20,24) CX(21,25) \
  CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) \
  CX(19,21) CX(22,24) CX(23,25) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) \
  CX(13,14) CX(15,16) CX(17,18) CX(19,20) CX(21,22) CX(23,24)
#define NET_27 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) CX(12,14) \
  CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(24,26) CX(1,2) CX(5,6) CX(9,10) \
  CX(13,14) CX(17,18) CX(21,22) CX(25,26) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) \
  CX(10,14) CX(11,15) CX(16,20) CX(17,21) CX(18,22) CX(19,23) CX(2,4) CX(3,5) CX(10,12) \
  CX(11,13) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) \
  CX(17,18) CX(19,20) CX(21,22) CX(25,26) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) \
  CX(5,13) CX(6,14) CX(7,15) CX(16,24) CX(17,25) CX(18,26) CX(4,8) CX(5,9) CX(6,10) \
  CX(7,11) CX(20,24) CX(21,25) CX(22,26) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) \
  CX(11,13) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26) CX(0,16) \
  CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) CX(7,23) CX(8,24) CX(9,25) \
  CX(10,26) CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) CX(14,22) CX(15,23) \
  CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(20,24) \
  CX(21,25) CX(22,26) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) \
  CX(15,17) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(1,2) CX(3,4) CX(5,6) CX(7,8) \
  CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26)
#define NET_28 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(26,27) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) \
  CX(12,14) CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(24,26) CX(25,27) CX(1,2) \
  CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(21,22) CX(25,26) CX(0,4) CX(1,5) CX(2,6) CX(3,7) \
  CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) CX(17,21) CX(18,22) CX(19,23) CX(2,4) \
  CX(3,5) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(1,2) CX(3,4) CX(5,6) CX(9,10) \
  CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(25,26) CX(0,8) CX(1,9) CX(2,10) \
  CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(16,24) CX(17,25) CX(18,26) CX(19,27) \
  CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) \
  CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(1,2) \
  CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) \
  CX(23,24) CX(25,26) CX(0,16) CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) \
  CX(7,23) CX(8,24) CX(9,25) CX(10,26) CX(11,27) CX(8,16) CX(9,17) CX(10,18) CX(11,19) \
  CX(12,20) CX(13,21) CX(14,22) CX(15,23) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) \
  CX(13,17) CX(14,18) CX(15,19) CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) \
  CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(22,24) \
  CX(23,25) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) \
  CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26)
#define NET_29 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(26,27) CX(0,2) CX(1,3) CX(4,6) CX(5,7) CX(8,10) CX(9,11) \
  CX(12,14) CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(24,26) CX(25,27) CX(1,2) \
  CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(21,22) CX(25,26) CX(0,4) CX(1,5) CX(2,6) CX(3,7) \
  CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) CX(17,21) CX(18,22) CX(19,23) CX(24,28) \
  CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(26,28) CX(1,2) CX(3,4) CX(5,6) \
  CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(25,26) CX(27,28) CX(0,8) \
  CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(16,24) CX(17,25) \
  CX(18,26) CX(19,27) CX(20,28) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(20,24) CX(21,25) \
  CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(18,20) \
  CX(19,21) CX(22,24) CX(23,25) CX(26,28) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) \
  CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26) CX(27,28) CX(0,16) \
  CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) CX(7,23) CX(8,24) CX(9,25) \
  CX(10,26) CX(11,27) CX(12,28) CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) \
  CX(14,22) CX(15,23) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) \
  CX(15,19) CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) CX(7,9) \
  CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(26,28) \
  CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) \
  CX(19,20) CX(21,22) CX(23,24) CX(25,26) CX(27,28)
#define NET_30 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(26,27) CX(28,29) CX(0,2) CX(1,3) CX(4,6) CX(5,7) \
  CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(24,26) \
  CX(25,27) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(21,22) CX(25,26) CX(0,4) \
  CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) CX(17,21) \
  CX(18,22) CX(19,23) CX(24,28) CX(25,29) CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) \
  CX(19,21) CX(26,28) CX(27,29) CX(1,2) CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) \
  CX(17,18) CX(19,20) CX(21,22) CX(25,26) CX(27,28) CX(0,8) CX(1,9) CX(2,10) CX(3,11) \
  CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(16,24) CX(17,25) CX(18,26) CX(19,27) CX(20,28) \
  CX(21,29) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(20,24) CX(21,25) CX(22,26) CX(23,27) \
  CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(22,24) \
  CX(23,25) CX(26,28) CX(27,29) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) \
  CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26) CX(27,28) CX(0,16) CX(1,17) \
  CX(2,18) CX(3,19) CX(4,20) CX(5,21) CX(6,22) CX(7,23) CX(8,24) CX(9,25) CX(10,26) \
  CX(11,27) CX(12,28) CX(13,29) CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) \
  CX(14,22) CX(15,23) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) \
  CX(15,19) CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) CX(7,9) \
  CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(26,28) \
  CX(27,29) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) \
  CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26) CX(27,28)
#define NET_31 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(26,27) CX(28,29) CX(0,2) CX(1,3) CX(4,6) CX(5,7) \
  CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) CX(24,26) \
  CX(25,27) CX(28,30) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) CX(21,22) CX(25,26) \
  CX(29,30) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) CX(11,15) CX(16,20) \
  CX(17,21) CX(18,22) CX(19,23) CX(24,28) CX(25,29) CX(26,30) CX(2,4) CX(3,5) CX(10,12) \
  CX(11,13) CX(18,20) CX(19,21) CX(26,28) CX(27,29) CX(1,2) CX(3,4) CX(5,6) CX(9,10) \
  CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(25,26) CX(27,28) CX(29,30) CX(0,8) \
  CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) CX(16,24) CX(17,25) \
  CX(18,26) CX(19,27) CX(20,28) CX(21,29) CX(22,30) CX(4,8) CX(5,9) CX(6,10) CX(7,11) \
  CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) \
  CX(11,13) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(26,28) CX(27,29) CX(1,2) CX(3,4) \
  CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(23,24) \
  CX(25,26) CX(27,28) CX(29,30) CX(0,16) CX(1,17) CX(2,18) CX(3,19) CX(4,20) CX(5,21) \
  CX(6,22) CX(7,23) CX(8,24) CX(9,25) CX(10,26) CX(11,27) CX(12,28) CX(13,29) CX(14,30) \
  CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) CX(14,22) CX(15,23) CX(4,8) \
  CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) CX(15,19) CX(20,24) CX(21,25) \
  CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) CX(7,9) CX(10,12) CX(11,13) CX(14,16) \
  CX(15,17) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(26,28) CX(27,29) CX(1,2) CX(3,4) \
  CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) CX(17,18) CX(19,20) CX(21,22) \
  CX(23,24) CX(25,26) CX(27,28) CX(29,30)
#define NET_32 \
  CX(0,1) CX(2,3) CX(4,5) CX(6,7) CX(8,9) CX(10,11) CX(12,13) CX(14,15) CX(16,17) CX(18,19) \
  CX(20,21) CX(22,23) CX(24,25) CX(26,27) CX(28,29) CX(30,31) CX(0,2) CX(1,3) CX(4,6) \
  CX(5,7) CX(8,10) CX(9,11) CX(12,14) CX(13,15) CX(16,18) CX(17,19) CX(20,22) CX(21,23) \
  CX(24,26) CX(25,27) CX(28,30) CX(29,31) CX(1,2) CX(5,6) CX(9,10) CX(13,14) CX(17,18) \
  CX(21,22) CX(25,26) CX(29,30) CX(0,4) CX(1,5) CX(2,6) CX(3,7) CX(8,12) CX(9,13) CX(10,14) \
  CX(11,15) CX(16,20) CX(17,21) CX(18,22) CX(19,23) CX(24,28) CX(25,29) CX(26,30) CX(27,31) \
  CX(2,4) CX(3,5) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(26,28) CX(27,29) CX(1,2) \
  CX(3,4) CX(5,6) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) CX(21,22) CX(25,26) \
  CX(27,28) CX(29,30) CX(0,8) CX(1,9) CX(2,10) CX(3,11) CX(4,12) CX(5,13) CX(6,14) CX(7,15) \
  CX(16,24) CX(17,25) CX(18,26) CX(19,27) CX(20,28) CX(21,29) CX(22,30) CX(23,31) CX(4,8) \
  CX(5,9) CX(6,10) CX(7,11) CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) \
  CX(7,9) CX(10,12) CX(11,13) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(26,28) CX(27,29) \
  CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(17,18) CX(19,20) \
  CX(21,22) CX(23,24) CX(25,26) CX(27,28) CX(29,30) CX(0,16) CX(1,17) CX(2,18) CX(3,19) \
  CX(4,20) CX(5,21) CX(6,22) CX(7,23) CX(8,24) CX(9,25) CX(10,26) CX(11,27) CX(12,28) \
  CX(13,29) CX(14,30) CX(15,31) CX(8,16) CX(9,17) CX(10,18) CX(11,19) CX(12,20) CX(13,21) \
  CX(14,22) CX(15,23) CX(4,8) CX(5,9) CX(6,10) CX(7,11) CX(12,16) CX(13,17) CX(14,18) \
  CX(15,19) CX(20,24) CX(21,25) CX(22,26) CX(23,27) CX(2,4) CX(3,5) CX(6,8) CX(7,9) \
  CX(10,12) CX(11,13) CX(14,16) CX(15,17) CX(18,20) CX(19,21) CX(22,24) CX(23,25) CX(26,28) \
  CX(27,29) CX(1,2) CX(3,4) CX(5,6) CX(7,8) CX(9,10) CX(11,12) CX(13,14) CX(15,16) \
  CX(17,18) CX(19,20) CX(21,22) CX(23,24) CX(25,26) CX(27,28) CX(29,30)

/* One function per n: 8 coordinates per step. Modes as in gar_coord.c: 0 median,
 * 1 trimmed mean, 2 closest beta to the median (meamed), 3 closest beta to the trimmed mean
 * (phocas). Returns the first column not done (the caller finishes the tail). */
#define DEFINE_NET_KERNEL(N)                                                                  \
  __attribute__((target("avx2"))) static size_t coord_net_##N(                               \
      const float *const *rows, int mode, size_t f, size_t beta, float *out, size_t c0,       \
      size_t c1) {                                                                            \
    const __m256 inf = _mm256_set1_ps(INFINITY), zero = _mm256_setzero_ps();                  \
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);                     \
    size_t col = c0;                                                                          \
    for (; col + 8 <= c1; col += 8) {                                                         \
      __m256 x[N];                                                                            \
      if (col + 8 + 512 <= c1) {                                                              \
        _Pragma("GCC unroll 64") for (size_t i = 0; i < N; i++)                               \
          _mm_prefetch((const char *)(rows[i] + col + 512), _MM_HINT_T0);                     \
      }                                                                                       \
      _Pragma("GCC unroll 64") for (size_t i = 0; i < N; i++) {                               \
        __m256 v = _mm256_loadu_ps(rows[i] + col);                                            \
        x[i] = _mm256_blendv_ps(inf, v, _mm256_cmp_ps(_mm256_sub_ps(v, v), zero, _CMP_EQ_OQ)); \
      }                                                                                       \
      NET_##N;                                                                                \
      __m256 med = (N & 1) ? x[N / 2] : _mm256_mul_ps(_mm256_add_ps(x[(N - 1) / 2], x[N / 2]), half); \
      __m256 res = med;                                                                       \
      if (mode != 0) {                                                                        \
        __m256 m = med;                                                                       \
        if (mode != 2) {                                                                      \
          __m256 s = zero;                                                                    \
          _Pragma("GCC unroll 64") for (size_t i = 0; i < N; i++) if (i >= f && i < N - f) s = _mm256_add_ps(s, x[i]); \
          m = _mm256_div_ps(s, _mm256_set1_ps((float)(N - 2 * f)));                          \
        }                                                                                     \
        res = m;                                                                              \
        if (mode >= 2) {                                                                      \
          __m256 start = zero;                                                                \
          _Pragma("GCC unroll 64") for (size_t t = 0; t < N; t++) {                           \
            if (t + beta >= N) break;                                                         \
            __m256 a = x[t], b = x[t + beta];                                                 \
            __m256 dl = _mm256_andnot_ps(_mm256_cmp_ps(a, m, _CMP_EQ_OQ), _mm256_sub_ps(m, a)); \
            __m256 dr = _mm256_andnot_ps(_mm256_cmp_ps(b, m, _CMP_EQ_OQ), _mm256_sub_ps(b, m)); \
            __m256 gt = _mm256_cmp_ps(_mm256_sub_ps(dl, dr), zero, _CMP_GT_OQ);              \
            start = _mm256_add_ps(start, _mm256_and_ps(gt, one));                             \
          }                                                                                   \
          __m256 endw = _mm256_add_ps(start, _mm256_set1_ps((float)beta));                    \
          __m256 s = zero;                                                                    \
          _Pragma("GCC unroll 64") for (size_t i = 0; i < N; i++) {                           \
            if (i >= N - beta && i < beta) {                                                  \
              s = _mm256_add_ps(s, x[i]);                                                     \
            } else {                                                                          \
              __m256 fi = _mm256_set1_ps((float)i);                                           \
              __m256 in = _mm256_and_ps(_mm256_cmp_ps(fi, start, _CMP_GE_OQ),                 \
                                        _mm256_cmp_ps(fi, endw, _CMP_LT_OQ));                 \
              s = _mm256_add_ps(s, _mm256_and_ps(in, x[i]));                                  \
            }                                                                                 \
          }                                                                                   \
          res = _mm256_div_ps(s, _mm256_set1_ps((float)beta));                                \
        }                                                                                     \
      }                                                                                       \
      _mm256_storeu_ps(out + col, res);                                                       \
    }                                                                                         \
    return col;                                                                               \
  }

DEFINE_NET_KERNEL(2)
DEFINE_NET_KERNEL(3)
DEFINE_NET_KERNEL(4)
DEFINE_NET_KERNEL(5)
DEFINE_NET_KERNEL(6)
DEFINE_NET_KERNEL(7)
DEFINE_NET_KERNEL(8)
DEFINE_NET_KERNEL(9)
DEFINE_NET_KERNEL(10)
DEFINE_NET_KERNEL(11)
DEFINE_NET_KERNEL(12)
DEFINE_NET_KERNEL(13)
DEFINE_NET_KERNEL(14)
DEFINE_NET_KERNEL(15)
DEFINE_NET_KERNEL(16)
DEFINE_NET_KERNEL(17)
DEFINE_NET_KERNEL(18)
DEFINE_NET_KERNEL(19)
DEFINE_NET_KERNEL(20)
DEFINE_NET_KERNEL(21)
DEFINE_NET_KERNEL(22)
DEFINE_NET_KERNEL(23)
DEFINE_NET_KERNEL(24)
DEFINE_NET_KERNEL(25)
DEFINE_NET_KERNEL(26)
DEFINE_NET_KERNEL(27)
DEFINE_NET_KERNEL(28)
DEFINE_NET_KERNEL(29)
DEFINE_NET_KERNEL(30)
DEFINE_NET_KERNEL(31)
DEFINE_NET_KERNEL(32)

typedef size_t (*net_kernel)(const float *const *, int, size_t, size_t, float *, size_t, size_t);
static const net_kernel kernels[33] = {
  NULL, NULL,
  coord_net_2, coord_net_3, coord_net_4, coord_net_5, coord_net_6, coord_net_7, coord_net_8, coord_net_9, coord_net_10, coord_net_11, coord_net_12, coord_net_13, coord_net_14, coord_net_15, coord_net_16, coord_net_17, coord_net_18, coord_net_19, coord_net_20, coord_net_21, coord_net_22, coord_net_23, coord_net_24, coord_net_25, coord_net_26, coord_net_27, coord_net_28, coord_net_29, coord_net_30, coord_net_31, coord_net_32};

size_t agt_gar__coord_net(const float *const *rows, size_t n, int mode, size_t f, size_t beta,
                          float *out, size_t c0, size_t c1) {
  if (n < 2 || n > 32) return c0;
  return kernels[n](rows, mode, f, beta, out, c0, c1);
}
#else
size_t agt_gar__coord_net(const float *const *rows, size_t n, int mode, size_t f, size_t beta,
                          float *out, size_t c0, size_t c1) {
  (void)rows, (void)n, (void)mode, (void)f, (void)beta, (void)out, (void)c1;
  return c0;
}
#endif

