/* agn_kernels.c: the int8 layer kernels (formulas in agn_kernels.h; written for this project from
 * the int8 scheme of Jacob et al., CVPR 2018, and the TFLite int8 spec, not copied from any library).
 *
 * Shape of the code on Cortex-M: every layer gathers the (x - zp_in) values one output needs into an
 * int16 buffer (im2col of one pixel), then runs int16 x int8 dot products over contiguous weight
 * rows. With AGN_DOT_UNROLL 4 the loop body is two a0*w0 + a1*w1 pairs, the shape of SMLAD (dual
 * 16-bit multiply-accumulate) that gcc -O2 -mcpu=cortex-m7 emits. */
#include "agn_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define AGN_INLINE inline __attribute__((always_inline))
#else
#define AGN_INLINE inline
#endif

/* rshift_round with clamping.
 *   p = acc * mult + 2^(rshift-1)           |p| < 2^62 + 2^61 (|acc| < 2^31, mult < 2^31)
 *   floor(p / 2^n) without shifting a negative number (implementation-defined in C99): map p to
 *   u = p + 2^63 as uint64 (order preserving, exact modulo 2^64), shift, subtract 2^(63-n).
 *   y = clamp(zp_out + floor(p / 2^n), lo, hi)                              round half up
 *
 * The same integers on 32-bit words when n >= 33 (the usual case: M in [2^30, 2^31) times a scale
 * ratio below 1/4). Then 2^(n-1) and 2^63 only touch the high word of p, so with
 * h = high word of acc * mult (as uint32, i.e. mod 2^32):
 *   high word of u = h + 2^(n-33) + 2^31  (mod 2^32, no carry from the low word)
 *   floor(u / 2^n) = (high word of u) >> (n - 32)
 *   floor(p / 2^n) = that - 2^(63-n)              |result| < 2^29, so int32 arithmetic is exact
 * which is one long multiply and a handful of 32-bit operations instead of a 64-bit shift by a
 * variable amount. n <= 32 takes the 64-bit path. static inline: the kernels below requantize
 * without a call per output. */
static AGN_INLINE int32_t requant(int32_t acc, int32_t mult, uint8_t rshift, int32_t zp_out, int32_t lo, int32_t hi)
{
    int32_t y;
    if (rshift >= 33u) {
        const uint32_t h = (uint32_t)((uint64_t)((int64_t)acc * (int64_t)mult) >> 32);
        const uint32_t u_hi = h + (1u << (rshift - 33u)) + 0x80000000u;
        y = zp_out + ((int32_t)(u_hi >> (rshift - 32u)) - (int32_t)(1u << (63u - rshift)));
    } else {
        const int64_t p = (int64_t)acc * (int64_t)mult + ((int64_t)1 << (rshift - 1u));
        const uint64_t u = (uint64_t)p + ((uint64_t)1 << 63);
        const int64_t q = (int64_t)(u >> rshift) - (int64_t)((uint64_t)1 << (63u - rshift));
        const int64_t y64 = (int64_t)zp_out + q;
        y = y64 < lo ? lo : (y64 > hi ? hi : (int32_t)y64);
    }
    if (y < lo) {
        y = lo;
    }
    if (y > hi) {
        y = hi;
    }
    return y;
}

int32_t agn_requant_s32(int32_t acc, int32_t mult, uint8_t rshift, int32_t zp_out, int32_t lo, int32_t hi)
{
    return requant(acc, mult, rshift, zp_out, lo, hi);
}

/* |a| <= 255, |w| <= 127: each product < 2^15, the sum bound is the layer's (checked at generation). */
static AGN_INLINE int32_t dot(const int16_t *a, const int8_t *w, uint32_t n)
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

int32_t agn_dot_s16_s8(const int16_t *a, const int8_t *w, uint32_t n)
{
    return dot(a, w, n);
}

/* Requantization of one layer with its per-channel constants worked out once per call, for the
 * usual case rshift >= 33 (see requant()): with s = rshift - 32,
 *     y = clamp((int32)((h + round) >> s) + offset, lo, hi)        h = high word of acc * mult
 *     round  = 2^(s-1) + 2^31      (uint32, mod 2^32)
 *     offset = zp_out - 2^(31-s)
 * which is requant()'s arithmetic with the per-channel terms precomputed: the same integers.
 * Layers with a channel of rshift <= 32, or more than AGN_RQ_TABLE_MAX channels, use requant().
 * The table lives on the stack (16 bytes per channel). */
#define AGN_RQ_TABLE_MAX 64u

typedef struct {
    int32_t mult;
    uint32_t round;
    int32_t offset;
    uint32_t shift;
} rq_entry;

typedef struct {
    const int32_t *mult; /* the general path's constants (requant()) */
    const uint8_t *rshift;
    int32_t zp_out, lo, hi;
    const rq_entry *table; /* NULL: use the general path */
} rq_consts;

static AGN_INLINE rq_consts rq_of(const agn_conv_params *p, uint32_t c_out, rq_entry *table)
{
    rq_consts r;
    uint32_t o;
    r.mult = p->rq.mult;
    r.rshift = p->rq.rshift;
    r.zp_out = p->zp_out;
    r.lo = p->act_min;
    r.hi = p->act_max;
    r.table = NULL;
    if (c_out > AGN_RQ_TABLE_MAX) {
        return r;
    }
    for (o = 0; o < c_out; o++) {
        const uint32_t n = p->rq.rshift[o];
        if (n < 33u) {
            return r;
        }
        table[o].mult = p->rq.mult[o];
        table[o].shift = n - 32u;
        table[o].round = (1u << (n - 33u)) + 0x80000000u;
        table[o].offset = p->zp_out - (int32_t)(1u << (63u - n));
    }
    r.table = table;
    return r;
}

static AGN_INLINE int32_t rq_apply(int32_t acc, const rq_consts *r, uint32_t o)
{
    if (r->table != NULL) {
        const rq_entry *e = &r->table[o];
        const uint32_t h = (uint32_t)((uint64_t)((int64_t)acc * (int64_t)e->mult) >> 32);
        int32_t y = (int32_t)((h + e->round) >> e->shift) + e->offset;
        if (y < r->lo) {
            y = r->lo;
        }
        if (y > r->hi) {
            y = r->hi;
        }
        return y;
    }
    return requant(acc, r->mult[o], r->rshift[o], r->zp_out, r->lo, r->hi);
}

static AGN_INLINE int8_t rq8(int32_t acc, const rq_consts *r, uint32_t o)
{
    return (int8_t)rq_apply(acc, r, o);
}

/* Every output channel of one pixel: out[o] = requant(bias[o] + sum_i col[i] * w[o][i]) for
 * o < c_out, w row-major [c_out][n]. Four output channels at a time share each load of col[i]
 * (four accumulators in registers): 2.5 instructions per MAC on Cortex-M7 (one int16 load per
 * four MACs, four int8 weight loads, four SMLABB, the loop) instead of 3 one channel at a time, and
 * no call per output. Each channel's sum has the same terms as before, so the result is
 * bit-identical (exact int32 arithmetic). int8 outputs. */
static AGN_INLINE void pixel_s8(const int16_t *col, uint32_t n, const int8_t *weights, const int32_t *bias,
                                const rq_consts *r, uint32_t c_out, int8_t *dst)
{
    uint32_t o = 0, i;
    for (; o + 4u <= c_out; o += 4u) {
        const int8_t *w0 = weights + o * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        int32_t a0 = bias[o], a1 = bias[o + 1u], a2 = bias[o + 2u], a3 = bias[o + 3u];
        for (i = 0; i < n; i++) {
            const int32_t x = col[i];
            a0 += x * w0[i];
            a1 += x * w1[i];
            a2 += x * w2[i];
            a3 += x * w3[i];
        }
        dst[o] = rq8(a0, r, o);
        dst[o + 1u] = rq8(a1, r, o + 1u);
        dst[o + 2u] = rq8(a2, r, o + 2u);
        dst[o + 3u] = rq8(a3, r, o + 3u);
    }
    for (; o < c_out; o++) {
        dst[o] = rq8(bias[o] + dot(col, weights + o * n, n), r, o);
    }
}

void agn_conv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                 int16_t *scratch)
{
    const uint32_t cin = in_dims.c;
    const uint32_t taps = (uint32_t)p->kh * p->kw * cin;
    const int32_t zp = p->zp_in;
    const int16_t *pad_in = p->pad_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, out_dims.c, table);
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
    const uint32_t kh = p->kh, kw = p->kw, sh = p->stride_h, sw = p->stride_w;
    uint32_t oy, ox, ky, kx, c;
    for (oy = 0; oy < out_dims.h; oy++) {
        const int32_t iy0 = (int32_t)(oy * sh) - (int32_t)p->pad_top;
        const int rows_inside = iy0 >= 0 && iy0 + (int32_t)kh <= (int32_t)in_dims.h;
        for (ox = 0; ox < out_dims.w; ox++) {
            const int32_t ix0 = (int32_t)(ox * sw) - (int32_t)p->pad_left;
            int16_t *col = scratch;
            /* im2col of one output pixel: (x - zp_in) per tap; a padding tap stands for real 0, which is
             * x = zp_in (0 here), or, with per-channel input zero points, x = zp_c: pad_in[c] */
            if (rows_inside && ix0 >= 0 && ix0 + (int32_t)kw <= (int32_t)in_dims.w) {
                /* the window lies inside the image: kh rows of kw * cin contiguous values */
                const uint32_t row = kw * cin;
                for (ky = 0; ky < kh; ky++) {
                    const int8_t *px = in + ((uint32_t)(iy0 + (int32_t)ky) * in_dims.w + (uint32_t)ix0) * cin;
                    for (c = 0; c < row; c++) {
                        *col++ = (int16_t)(px[c] - zp);
                    }
                }
            } else {
                for (ky = 0; ky < kh; ky++) {
                    const int32_t iy = iy0 + (int32_t)ky;
                    for (kx = 0; kx < kw; kx++) {
                        const int32_t ix = ix0 + (int32_t)kx;
                        if (iy < 0 || iy >= (int32_t)in_dims.h || ix < 0 || ix >= (int32_t)in_dims.w) {
                            if (pad_in == NULL) {
                                for (c = 0; c < cin; c++) {
                                    *col++ = 0;
                                }
                            } else {
                                for (c = 0; c < cin; c++) {
                                    *col++ = pad_in[c];
                                }
                            }
                        } else {
                            const int8_t *px = in + ((uint32_t)iy * in_dims.w + (uint32_t)ix) * cin;
                            for (c = 0; c < cin; c++) {
                                *col++ = (int16_t)(px[c] - zp);
                            }
                        }
                    }
                }
            }
            pixel_s8(scratch, taps, weights, bias, &r, out_dims.c, out + (oy * out_dims.w + ox) * out_dims.c);
        }
    }
}

/* First and one-past-last kernel tap (along one axis) whose input index i0 + k lies in [0, size). */
static AGN_INLINE void valid_taps(int32_t i0, uint32_t k, uint32_t size, uint32_t *first, uint32_t *end)
{
    *first = i0 < 0 ? (uint32_t)(-i0) : 0u;
    *end = i0 + (int32_t)k > (int32_t)size ? (uint32_t)((int32_t)size - i0) : k;
}

/* Depthwise conv: channel c is filtered by its own kh x kw kernel. Per output pixel the taps inside
 * the image are found once (padding taps add nothing: they stand for x = zp_in, real 0), so the
 * inner loops have no bounds checks. A 3x3 window that lies wholly inside takes an unrolled path
 * that uses
 *     sum w * (x - zp) = sum w * x - zp * sum w
 * with bias - zp * sum w per channel computed once per call, so each tap is one load-load-
 * multiply-accumulate. Same integers either way: int32 arithmetic without overflow (the layer's
 * accumulator bound taps * 255 * 127 + |bias| < 2^31 covers both forms). scratch is not needed. */
#define AGN_DW_FAST_MAX_CH 64u /* channels whose bias - zp * sum w fit the stack table */

void agn_dwconv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                   int16_t *scratch)
{
    const uint32_t ch = in_dims.c;
    const uint32_t kh = p->kh, kw = p->kw, taps = kh * kw;
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, ch, table);
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
    const uint32_t row_step = (uint32_t)in_dims.w * ch;
    int32_t base[AGN_DW_FAST_MAX_CH];
    const int fast3 = kh == 3u && kw == 3u && ch <= AGN_DW_FAST_MAX_CH;
    uint32_t oy, ox, ky, kx, c;
    (void)scratch;
    if (fast3) {
        for (c = 0; c < ch; c++) {
            const int8_t *w = weights + c * 9u;
            base[c] = bias[c] - zp * (w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + w[6] + w[7] + w[8]);
        }
    }
    for (oy = 0; oy < out_dims.h; oy++) {
        const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
        uint32_t ky0, ky1;
        valid_taps(iy0, kh, in_dims.h, &ky0, &ky1);
        for (ox = 0; ox < out_dims.w; ox++) {
            const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
            int8_t *dst = out + (oy * out_dims.w + ox) * ch;
            uint32_t kx0, kx1;
            valid_taps(ix0, kw, in_dims.w, &kx0, &kx1);
            if (fast3 && ky0 == 0u && ky1 == 3u && kx0 == 0u && kx1 == 3u) {
                const int8_t *x = in + (uint32_t)iy0 * row_step + (uint32_t)ix0 * ch;
                const int8_t *w = weights;
                for (c = 0; c < ch; c++, x++, w += 9) {
                    const int8_t *x1 = x + row_step, *x2 = x1 + row_step;
                    int32_t acc = base[c];
                    acc += x[0] * w[0] + x[ch] * w[1] + x[2u * ch] * w[2];
                    acc += x1[0] * w[3] + x1[ch] * w[4] + x1[2u * ch] * w[5];
                    acc += x2[0] * w[6] + x2[ch] * w[7] + x2[2u * ch] * w[8];
                    dst[c] = rq8(acc, &r, c);
                }
                continue;
            }
            for (c = 0; c < ch; c++) {
                const int8_t *w = weights + c * taps;
                int32_t acc = bias[c];
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *x = in + (uint32_t)(iy0 + (int32_t)ky) * row_step + c;
                    for (kx = kx0; kx < kx1; kx++) {
                        acc += (x[(uint32_t)(ix0 + (int32_t)kx) * ch] - zp) * w[ky * kw + kx];
                    }
                }
                dst[c] = rq8(acc, &r, c);
            }
        }
    }
}

void agn_conv1x1_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                    int16_t *scratch)
{
    const uint32_t cin = in_dims.c;
    const uint32_t pixels = (uint32_t)in_dims.h * in_dims.w;
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, out_dims.c, table);
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
    uint32_t i, c;
    for (i = 0; i < pixels; i++) {
        const int8_t *px = in + i * cin;
        for (c = 0; c < cin; c++) {
            scratch[c] = (int16_t)(px[c] - zp);
        }
        pixel_s8(scratch, cin, weights, bias, &r, out_dims.c, out + i * out_dims.c);
    }
}

void agn_dense_s8_s16(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int16_t *out, agn_dims out_dims,
                      int16_t *scratch)
{
    const uint32_t n = (uint32_t)in_dims.h * in_dims.w * in_dims.c;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, out_dims.c, table);
    uint32_t i, o;
    for (i = 0; i < n; i++) {
        scratch[i] = (int16_t)(in[i] - p->zp_in);
    }
    for (o = 0; o < out_dims.c; o++) {
        const int32_t acc = p->bias[o] + dot(scratch, p->weights + o * n, n);
        out[o] = (int16_t)rq_apply(acc, &r, o);
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
