/* agn_kernels.c: the int8 layer kernels (formulas in agn_kernels.h; written for this project from
 * the int8 scheme of Jacob et al., CVPR 2018, and the TFLite int8 spec, not copied from any library).
 *
 * Shape of the code on Cortex-M: every layer gathers the (x - zp_in) values one output needs into an
 * int16 buffer (im2col of one pixel), then runs int16 x int8 dot products over contiguous weight
 * rows. With AGN_DOT_UNROLL 4 the loop body is two a0*w0 + a1*w1 pairs, the shape of SMLAD (dual
 * 16-bit multiply-accumulate) that gcc -O2 -mcpu=cortex-m7 emits. */
#include "agn_kernels.h"

/* rshift_round with clamping.
 *   p = acc * mult + 2^(rshift-1)           |p| < 2^62 + 2^61 (|acc| < 2^31, mult < 2^31)
 *   floor(p / 2^n) without shifting a negative number (implementation-defined in C99): map p to
 *   u = p + 2^63 as uint64 (order preserving, exact modulo 2^64), shift, subtract 2^(63-n).
 *   y = clamp(zp_out + floor(p / 2^n), lo, hi)                              round half up */
int32_t agn_requant_s32(int32_t acc, int32_t mult, uint8_t rshift, int32_t zp_out, int32_t lo, int32_t hi)
{
    const int64_t p = (int64_t)acc * (int64_t)mult + ((int64_t)1 << (rshift - 1u));
    const uint64_t u = (uint64_t)p + ((uint64_t)1 << 63);
    const int64_t q = (int64_t)(u >> rshift) - (int64_t)((uint64_t)1 << (63u - rshift));
    int64_t y = (int64_t)zp_out + q;
    if (y < lo) {
        y = lo;
    }
    if (y > hi) {
        y = hi;
    }
    return (int32_t)y;
}

/* |a| <= 255, |w| <= 127: each product < 2^15, the sum bound is the layer's (checked at generation). */
int32_t agn_dot_s16_s8(const int16_t *a, const int8_t *w, uint32_t n)
{
    int32_t acc = 0;
    uint32_t i = 0;
#if AGN_DOT_UNROLL >= 2
    for (; i + (uint32_t)AGN_DOT_UNROLL <= n; i += (uint32_t)AGN_DOT_UNROLL) {
        acc += (int32_t)a[i] * w[i] + (int32_t)a[i + 1] * w[i + 1];
#if AGN_DOT_UNROLL == 4
        acc += (int32_t)a[i + 2] * w[i + 2] + (int32_t)a[i + 3] * w[i + 3];
#endif
    }
#endif
    for (; i < n; i++) {
        acc += (int32_t)a[i] * w[i];
    }
    return acc;
}

void agn_conv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                 int16_t *scratch)
{
    const uint32_t cin = in_dims.c;
    const uint32_t taps = (uint32_t)p->kh * p->kw * cin;
    uint32_t oy, ox, ky, kx, c, o;
    for (oy = 0; oy < out_dims.h; oy++) {
        for (ox = 0; ox < out_dims.w; ox++) {
            /* im2col of one output pixel: (x - zp_in) per tap, 0 for padding (it stands for real 0) */
            int16_t *col = scratch;
            for (ky = 0; ky < p->kh; ky++) {
                const int32_t iy = (int32_t)(oy * p->stride_h + ky) - (int32_t)p->pad_top;
                for (kx = 0; kx < p->kw; kx++) {
                    const int32_t ix = (int32_t)(ox * p->stride_w + kx) - (int32_t)p->pad_left;
                    if (iy < 0 || iy >= (int32_t)in_dims.h || ix < 0 || ix >= (int32_t)in_dims.w) {
                        for (c = 0; c < cin; c++) {
                            *col++ = 0;
                        }
                    } else {
                        const int8_t *px = in + ((uint32_t)iy * in_dims.w + (uint32_t)ix) * cin;
                        for (c = 0; c < cin; c++) {
                            *col++ = (int16_t)(px[c] - p->zp_in);
                        }
                    }
                }
            }
            {
                int8_t *dst = out + (oy * out_dims.w + ox) * out_dims.c;
                for (o = 0; o < out_dims.c; o++) {
                    const int32_t acc = p->bias[o] + agn_dot_s16_s8(scratch, p->weights + o * taps, taps);
                    dst[o] = (int8_t)agn_requant_s32(acc, p->rq.mult[o], p->rq.rshift[o], p->zp_out, p->act_min,
                                                      p->act_max);
                }
            }
        }
    }
}

void agn_dwconv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                   int16_t *scratch)
{
    const uint32_t ch = in_dims.c;
    const uint32_t taps = (uint32_t)p->kh * p->kw;
    uint32_t oy, ox, ky, kx, c;
    for (oy = 0; oy < out_dims.h; oy++) {
        for (ox = 0; ox < out_dims.w; ox++) {
            int8_t *dst = out + (oy * out_dims.w + ox) * ch;
            for (c = 0; c < ch; c++) {
                /* the channel's kh x kw window as (x - zp_in), 0 for padding, then one dot product */
                int16_t *col = scratch;
                int32_t acc;
                for (ky = 0; ky < p->kh; ky++) {
                    const int32_t iy = (int32_t)(oy * p->stride_h + ky) - (int32_t)p->pad_top;
                    for (kx = 0; kx < p->kw; kx++) {
                        const int32_t ix = (int32_t)(ox * p->stride_w + kx) - (int32_t)p->pad_left;
                        if (iy < 0 || iy >= (int32_t)in_dims.h || ix < 0 || ix >= (int32_t)in_dims.w) {
                            *col++ = 0;
                        } else {
                            *col++ = (int16_t)(in[((uint32_t)iy * in_dims.w + (uint32_t)ix) * ch + c] - p->zp_in);
                        }
                    }
                }
                acc = p->bias[c] + agn_dot_s16_s8(scratch, p->weights + c * taps, taps);
                dst[c] = (int8_t)agn_requant_s32(acc, p->rq.mult[c], p->rq.rshift[c], p->zp_out, p->act_min,
                                                  p->act_max);
            }
        }
    }
}

void agn_conv1x1_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                    int16_t *scratch)
{
    const uint32_t cin = in_dims.c;
    const uint32_t pixels = (uint32_t)in_dims.h * in_dims.w;
    uint32_t i, c, o;
    for (i = 0; i < pixels; i++) {
        const int8_t *px = in + i * cin;
        int8_t *dst = out + i * out_dims.c;
        for (c = 0; c < cin; c++) {
            scratch[c] = (int16_t)(px[c] - p->zp_in);
        }
        for (o = 0; o < out_dims.c; o++) {
            const int32_t acc = p->bias[o] + agn_dot_s16_s8(scratch, p->weights + o * cin, cin);
            dst[o] = (int8_t)agn_requant_s32(acc, p->rq.mult[o], p->rq.rshift[o], p->zp_out, p->act_min, p->act_max);
        }
    }
}

void agn_dense_s8_s16(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int16_t *out, agn_dims out_dims,
                      int16_t *scratch)
{
    const uint32_t n = (uint32_t)in_dims.h * in_dims.w * in_dims.c;
    uint32_t i, o;
    for (i = 0; i < n; i++) {
        scratch[i] = (int16_t)(in[i] - p->zp_in);
    }
    for (o = 0; o < out_dims.c; o++) {
        const int32_t acc = p->bias[o] + agn_dot_s16_s8(scratch, p->weights + o * n, n);
        out[o] = (int16_t)agn_requant_s32(acc, p->rq.mult[o], p->rq.rshift[o], p->zp_out, p->act_min, p->act_max);
    }
}

void agn_slice_channels_s8(const int8_t *in, agn_dims in_dims, uint16_t c0, int8_t *out, agn_dims out_dims)
{
    const uint32_t pixels = (uint32_t)in_dims.h * in_dims.w;
    uint32_t i, c;
    for (i = 0; i < pixels; i++) {
        for (c = 0; c < out_dims.c; c++) {
            out[i * out_dims.c + c] = in[i * in_dims.c + c0 + c];
        }
    }
}

void agn_centroid_index_s8(const int8_t *in, agn_dims in_dims, uint16_t c0, uint16_t channels,
                           const int16_t *thresholds, uint8_t n_thresholds, uint8_t *out)
{
    const uint32_t pixels = (uint32_t)in_dims.h * in_dims.w;
    uint32_t i, c, t;
    for (c = 0; c < channels; c++) {
        for (i = 0; i < pixels; i++) {
            const int16_t q = in[i * in_dims.c + c0 + c];
            uint8_t index = 0;
            for (t = 0; t < n_thresholds; t++) {
                index = (uint8_t)(index + (q > thresholds[t]));
            }
            out[c * pixels + i] = index;
        }
    }
}
