/* agn_kernels.h: the int8 layer kernels of the AgileNN device library (internal header).
 *
 * Tensors are int8, HWC (channels last), batch 1, with a per-tensor zero point; weights are int8
 * (zero point 0, range [-127, 127]) with one requantization multiplier/shift per output channel.
 * The arithmetic, identical to agilenn.firmware.int8 (the Python reference), per output channel o:
 *
 *   acc = bias[o] + sum_{taps, ci} w * (x - zp_in)             int32; padding taps add nothing
 *         bound: taps * 255 * 127 + |bias| < 2^31, checked by the generator for every layer
 *   y   = clamp(zp_out + rshift_round(acc * M[o], n[o]), act_min, act_max)
 *         M[o] in [2^30, 2^31), n[o] in [1, 62], M * 2^-n ~= s_in * s_w[o] / s_out
 *   rshift_round(v, n) = floor((v + 2^(n-1)) / 2^n)            round half up, on int64
 *
 * Per-channel input zero points (the first conv of a model whose input channels have different
 * means, RGB): the model's sum is  acc = bias + sum w * (x - zp_c)  with zp_c = rint(mean_c /
 * scale) - 128 for input channel c, padding taps adding nothing: they stand for x = zp_c, the
 * float model's zero padding (pixel value mean_c / scale) rounded to a pixel level; the quantizer
 * put the rest of the mean into bias (docs/firmware.md). The kernel computes the same integer as
 *   acc = bias' + sum_{inside taps} w * (x - zp_in) + sum_{padding taps} w * pad_in[c]
 *   pad_in[c] = zp_c - zp_in,   bias'[o] = bias[o] - sum_{all taps, c} w * pad_in[c]
 * (exact: an inside tap gives w * (x - zp_in) minus its share w * pad_in[c] of bias', that is
 * w * (x - zp_c); a padding tap's w * pad_in[c] cancels its share), so the per-tensor inner loops
 * stay as they are. The generator emits bias' and pad_in (zp_in = zp_0) and checks the wider bound
 * 2 * taps * 255 * 127 + |bias| < 2^31 (|pad_in[c]| <= 255) for that layer.
 *
 * No float, no allocation: every kernel gets its scratch from the caller (the arena).
 */
#ifndef AGN_KERNELS_H
#define AGN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "agn_config.h"

/* Shape of one activation tensor: n (always 1), height, width, channels; stored HWC. */
typedef struct agn_dims {
    uint16_t n, h, w, c;
} agn_dims;

/* Per-output-channel requantization: mult[o] in [2^30, 2^31), rshift[o] in [1, 62]. */
typedef struct agn_requant {
    const int32_t *mult;
    const uint8_t *rshift;
} agn_requant;

/* One conv / depthwise conv / pointwise conv / dense layer.
 *   weights   depthwise [c][kh][kw], channels in blocks of four [c/4][kh][kw][4] (agn_kernels.c);
 *             dense [c_out][n] (n = c_in, the input flattened in HWC order), packed: rows padded
 *             with zeros to n4 (n rounded up to a multiple of 4), each group of four stored w[4g],
 *             w[4g+2], w[4g+1], w[4g+3] (the SXTB16/SMLAD layout), blocks of four rows interleaved
 *             (agn_kernels.c); NULL for conv and pointwise conv
 *   pairs     conv and pointwise conv: OHWI [c_out][kh][kw][c_in] rows (n = kh * kw * c_in) padded to
 *             n4, as int16 pairs, pair(w[2k], w[2k+1]) = (w[2k] & 0xFFFF) | w[2k+1] << 16 in one
 *             uint32, blocks of four rows interleaved (agn_kernels.c); NULL for the other kernels.
 *             The generator writes every layout.
 *   bias      int32 [c_out], in the accumulator's scale s_in * s_w[o]
 *   zp_in     zero point of the input tensor, in [-128, 127]
 *   pad_in    NULL (a padding tap is x = zp_in, i.e. 0 after subtracting zp_in), or the [c_in] values
 *             in [-255, 255] a padding tap of input channel c contributes as (x - zp_in): per-channel
 *             input zero points, see above. agn_conv_s8 only; the other kernels require NULL
 *             (a 1x1 conv has no padding: there bias' alone does it).
 *   zp_out, act_min, act_max   output zero point and clamp (ReLU6 is the clamp); int16 outputs use
 *             the int16 range */
typedef struct agn_conv_params {
    const int8_t *weights;
    const uint32_t *pairs;
    const int32_t *bias;
    agn_requant rq;
    const int16_t *pad_in;
    int16_t zp_in, zp_out;
    int32_t act_min, act_max;
    uint8_t kh, kw, stride_h, stride_w, pad_top, pad_left;
} agn_conv_params;

/* floor((acc * mult + 2^(rshift-1)) / 2^rshift), clamped: see the formula above.
 * |acc| < 2^31 and mult < 2^31, so acc * mult + 2^(rshift-1) < 2^62 + 2^61 fits int64. */
int32_t agn_requant_s32(int32_t acc, int32_t mult, uint8_t rshift, int32_t zp_out, int32_t lo, int32_t hi);

/* sum_{i < n} a[i] * w[i]: int16 activations (x - zp) times one packed row of int8 weights (see
 * weights above; n a multiple of 4), int32 accumulator. */
int32_t agn_dot_s16_s8(const int16_t *a, const int8_t *w, uint32_t n);

/* Standard conv (groups = 1), any kernel/stride/padding; padding taps are pad_in[c] (or 0).
 * scratch: two pixels' columns, 2 * (kh * kw * c_in rounded up to a multiple of 4) int16. */
void agn_conv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                 int16_t *scratch);

/* Depthwise conv: channel c is filtered by its own kh x kw kernel. scratch: c int8 (a row of zero
 * points for padding taps), at least kh * kw int16. */
void agn_dwconv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                   int16_t *scratch);

/* Pointwise (1x1, stride 1, no padding) conv. scratch: 2 * (c_in rounded up to a multiple of 4)
 * int16 (two pixels' columns). */
void agn_conv1x1_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                    int16_t *scratch);

/* Dense layer on the flattened (HWC) input, int16 outputs [out_dims.c]. scratch: in size int16,
 * rounded up to a multiple of 4. */
void agn_dense_s8_s16(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int16_t *out, agn_dims out_dims,
                      int16_t *scratch);

/* Channels [c0, c0 + out_dims.c) of an HWC tensor, as a compact HWC tensor. */
void agn_slice_channels_s8(const int8_t *in, agn_dims in_dims, uint16_t c0, int8_t *out, agn_dims out_dims);

/* Centroid indices of channels [c0, c0 + channels) of an int8 HWC tensor, written channel-major
 * ([channel][y][x], the payload's order): index = index_of[q + 128], the generator's table of
 * #{i : q > thresholds[i]} for every int8 q; for integer q that is "real value > midpoint between
 * centroids i and i+1", the float rule. One load per value instead of a loop over the thresholds. */
void agn_centroid_index_s8(const int8_t *in, agn_dims in_dims, uint16_t c0, uint16_t channels,
                           const uint8_t *index_of, uint8_t *out);

#endif /* AGN_KERNELS_H */
