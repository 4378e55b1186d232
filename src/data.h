/* data.h — data set readers, the minibatch gather kernel and worker shards.
 *
 * Readers: IDX files (MNIST's format: big-endian header, unsigned-byte elements),
 * gzip'd or plain (zlib reads both), and CIFAR-10 binary batches (records of one
 * label byte then 3×32×32 pixel bytes, channel-major). Both validate everything
 * before trusting it: the magic, the element type, the dimensions, and that the
 * file holds exactly the data its header announces. A truncated or foreign file
 * is refused with AGT_EFORMAT and a message naming the file and what is wrong;
 * a file that cannot be opened or read gives AGT_EIO.
 *
 * The caller owns every output buffer: *_info says how large it must be, *_read
 * fills it (so the Lua side allocates tensors and C decodes straight into them).
 *
 * Gather: copies rows picked by index (0-based, bounds-checked) into a dense
 * batch, optionally converting u8 pixels to float.
 *
 * Preprocessing: per-image standardisation and the cifarnet augmentation, in place.
 *
 * Shards: a partition of the N example indices among n workers, written as one
 * ordering of 0..N-1 and n+1 offsets (worker j owns order[offsets[j] ..
 * offsets[j+1])). Every index appears exactly once. Deterministic given the rng. */
#ifndef AGT_DATA_H
#define AGT_DATA_H

#include "status.h"
#include "rng.h"
#include "tensor.h"   /* dtype codes AGT_F32 ... */

/* ffi:begin */
enum { AGT_IDX_MAX_DIMS = 4 };

/* Header of an unsigned-byte IDX file: ndim in 1..4 and dims[0..ndim). Checks the
 * file's size against the header (a gzip'd file by its trailer's length field, or by
 * decoding it when that disagrees), so a truncated file is refused before anything is
 * allocated for it. */
agt_status agt_data_idx_info(const char *path, int *ndim, int64_t *dims);

/* Decodes all numel elements (numel must equal the product of the dims) into out,
 * of dtype AGT_F32 (byte * scale), AGT_I32, AGT_I64 or AGT_U8. Refuses a file that
 * ends early or has bytes after its data. */
agt_status agt_data_idx_read(const char *path, int dtype, float scale, void *out, size_t numel);

/* CIFAR-10 binary batch: records of 1 + 3072 bytes. */
enum { AGT_CIFAR_RECORD = 3073, AGT_CIFAR_PIXELS = 3072 };
agt_status agt_data_cifar_info(const char *path, int64_t *records);
/* x: records × 3072 floats (byte * scale, C×H×W order as stored), y: records labels
 * (each checked to be in 0..9). */
agt_status agt_data_cifar_read(const char *path, float *x, int32_t *y, size_t records, float scale);

/* dst[i, :] = src[idx[i], :] for i < k; src has rows × row_len. */
agt_status agt_data_gather_f32(const float *src, size_t rows, size_t row_len,
                               const int64_t *idx, size_t k, float *dst);
/* dst[i, :] = scale * src[idx[i], :] (u8 pixels to float). */
agt_status agt_data_gather_u8(const uint8_t *src, size_t rows, size_t row_len,
                              const int64_t *idx, size_t k, float scale, float *dst);
/* dst[i] = src[idx[i]] (labels). */
agt_status agt_data_gather_i32(const int32_t *src, size_t rows, const int64_t *idx, size_t k,
                               int32_t *dst);

/* Image preprocessing of a batch x (bs images of C×H×W floats), in place.
 * Pixels are taken to be bytes/255, and the results equal TF's on the bytes.
 * Standardise: each image becomes (x - mean) / max(std, 1/(255 sqrt(C*H*W))), with its own
 * mean and (population) standard deviation, as TF's per_image_standardization.
 * Cifarnet, the original system's CIFAR-10 preprocessing: for training, each image is padded
 * by 4 zeros on every side and a random H×W window cropped, mirrored left-right with
 * probability 1/2, shifted by a brightness delta ~ U[-63/255, 63/255] (pixels in [0, 1]),
 * its contrast scaled per channel around the channel mean by a factor ~ U[0.2, 1.8], then
 * standardised; for evaluation (train = 0) it is only standardised. Random draws come from
 * r, in image order (crop row, crop column, flip, brightness, contrast). */
agt_status agt_data_standardize(float *x, size_t bs, size_t per_image);
agt_status agt_data_cifarnet(float *x, size_t bs, size_t C, size_t H, size_t W, int train,
                             agt_rng *r);

/* Shard modes. IID: a random permutation cut into n near-equal parts (sizes differ
 * by at most one). SORTED: indices ordered by (label, index), cut into n near-equal
 * parts: each worker sees one or two labels. DIRICHLET: for each label c, the
 * shares of its examples given to the n workers are drawn from Dirichlet(alpha,
 * ..., alpha) (Gamma(alpha) draws, normalised); the whole draw is repeated (up to
 * 1000 times) until every worker holds at least min_size examples. */
enum { AGT_SHARD_IID = 0, AGT_SHARD_SORTED = 1, AGT_SHARD_DIRICHLET = 2 };
/* y: N labels in 0..classes-1. order: N entries, offsets: n+1 entries. */
agt_status agt_data_shard(const int32_t *y, size_t N, int classes, size_t n, int mode,
                          double alpha, size_t min_size, agt_rng *r,
                          int64_t *order, int64_t *offsets);
/* ffi:end */

#endif
