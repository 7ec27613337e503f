/* agn_kernels.c: the int8 layer kernels (formulas in agn_kernels.h; written for this project from
 * the int8 scheme of Jacob et al., CVPR 2018, and the TFLite int8 spec, not copied from any library).
 *
 * Shape of the code on Cortex-M: every layer gathers the (x - zp_in) values one output needs into an
 * int16 buffer (im2col of one pixel), then runs int16 x int8 dot products over contiguous weight
 * rows. With AGN_DOT_UNROLL 4 the loop body is two a0*w0 + a1*w1 pairs, the shape of SMLAD (dual
 * 16-bit multiply-accumulate) that gcc -O2 -mcpu=cortex-m7 emits. */
#include "agn_kernels.h"

#include <string.h> /* memcpy */

#if AGN_USE_DSP
#include <arm_acle.h> /* __smlad, __sxtb16, __ssat (ACLE) */
#endif

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

/* 32 bits from any address (memcpy: one LDR on Cortex-M7, which loads unaligned words). */
static AGN_INLINE uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Packed weight rows (conv, pointwise conv and dense layers; the generator writes them so):
 * in a row of n weights each full group of four, i = 4g .. 4g+3, is stored in the order
 *     w[4g], w[4g+2], w[4g+1], w[4g+3]
 * and the last n % 4 weights in their own order. As a little-endian word, SXTB16 (bytes 0 and 2,
 * sign-extended) gives the int16 pair (w[4g], w[4g+1]) and SXTB16 of the word rotated right by 8
 * (bytes 1 and 3) gives (w[4g+2], w[4g+3]): the pairs that line up with the int16 activations
 * (x[4g], x[4g+1]) and (x[4g+2], x[4g+3]) as they lie in memory, so two SMLAD (acc + lo * lo +
 * hi * hi) do the group with no shuffling of the activations. packed_index(i) is where logical
 * weight i of a full group is stored: bits 0 and 1 swapped. */
static AGN_INLINE uint32_t packed_index(uint32_t i)
{
    return i ^ (((i ^ (i >> 1)) & 1u) * 3u);
}

#if AGN_USE_DSP
/* SXTB16 of x rotated right by 8 (bytes 1 and 3, sign-extended), one instruction; ACLE has no
 * intrinsic with the rotation and gcc 12 does not fold a separate ROR into it. */
static AGN_INLINE uint32_t sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* One packed group: acc + x01 . (w0, w1) + x23 . (w2, w3), x01 = x0 | x1 << 16 (int16 pairs). */
static AGN_INLINE int32_t group_dsp(uint32_t x01, uint32_t x23, uint32_t wg, int32_t acc)
{
    acc = __smlad((int16x2_t)x01, __sxtb16((int8x4_t)wg), acc);
    return __smlad((int16x2_t)x23, (int16x2_t)sxtb16_ror8(wg), acc);
}

/* SMMLA: c + the high word of a * b (as a signed 64-bit product), mod 2^32; one instruction. */
static AGN_INLINE uint32_t smmla(int32_t a, int32_t b, uint32_t c)
{
    uint32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
#endif

/* sum_i a[i] * w[i] over one packed row of n weights.
 * |a| <= 255, |w| <= 127: each product < 2^15, the sum bound is the layer's (checked at generation);
 * int32 arithmetic is exact in any order, so every path below gives the same integer. */
static AGN_INLINE int32_t dot(const int16_t *a, const int8_t *w, uint32_t n)
{
    const uint32_t full = n & ~3u;
    int32_t acc = 0;
    uint32_t i = 0;
#if AGN_USE_DSP
    for (; i < full; i += 4u) {
        acc = group_dsp(load_u32(a + i), load_u32(a + i + 2u), load_u32(w + i), acc);
    }
#elif AGN_DOT_UNROLL == 4
    for (; i < full; i += 4u) {
        acc += (int32_t)a[i] * w[i] + (int32_t)a[i + 1u] * w[i + 2u];
        acc += (int32_t)a[i + 2u] * w[i + 1u] + (int32_t)a[i + 3u] * w[i + 3u];
    }
#elif AGN_DOT_UNROLL == 2
    for (; i < full; i += 2u) {
        const uint32_t s = packed_index(i); /* i and i + 1 are stored at s and s + 2 */
        acc += (int32_t)a[i] * w[s] + (int32_t)a[i + 1u] * w[s + 2u];
    }
#else
    for (; i < full; i++) {
        acc += (int32_t)a[i] * w[packed_index(i)];
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

/* The sums of a block of four output rows against the same activations a: each load of a serves
 * four rows (four accumulators in registers). The generator interleaves the block's four packed
 * rows so that one pointer walks them: for each full group g the four rows' groups (4 bytes each,
 * row 0 first), then for each of the last n % 4 inputs the four rows' weights; 4n bytes in all,
 * so block b starts at weights + 4b * n as before. Rows past the last full block are plain packed
 * rows (dot()). */
typedef struct {
    int32_t s0, s1, s2, s3;
} sums4;

static AGN_INLINE sums4 dot4(const int16_t *a, const int8_t *w, uint32_t n, sums4 acc)
{
    const uint32_t full = n & ~3u;
    uint32_t i = 0;
    for (; i < full; i += 4u, w += 16) {
#if AGN_USE_DSP
        const uint32_t x01 = load_u32(a + i), x23 = load_u32(a + i + 2u);
        acc.s0 = group_dsp(x01, x23, load_u32(w), acc.s0);
        acc.s1 = group_dsp(x01, x23, load_u32(w + 4), acc.s1);
        acc.s2 = group_dsp(x01, x23, load_u32(w + 8), acc.s2);
        acc.s3 = group_dsp(x01, x23, load_u32(w + 12), acc.s3);
#else
        const int32_t x0 = a[i], x1 = a[i + 1u], x2 = a[i + 2u], x3 = a[i + 3u];
        acc.s0 += x0 * w[0] + x1 * w[2] + x2 * w[1] + x3 * w[3];
        acc.s1 += x0 * w[4] + x1 * w[6] + x2 * w[5] + x3 * w[7];
        acc.s2 += x0 * w[8] + x1 * w[10] + x2 * w[9] + x3 * w[11];
        acc.s3 += x0 * w[12] + x1 * w[14] + x2 * w[13] + x3 * w[15];
#endif
    }
    for (; i < n; i++, w += 4) {
        const int32_t x = a[i];
        acc.s0 += x * w[0];
        acc.s1 += x * w[1];
        acc.s2 += x * w[2];
        acc.s3 += x * w[3];
    }
    return acc;
}

/* Requantization of one layer with its per-channel constants worked out once per call, for the
 * usual case rshift >= 33 (see requant()): with s = rshift - 32,
 *     y = clamp((int32)((h + round) >> s) + offset, lo, hi)        h = high word of acc * mult
 *     round  = 2^(s-1) + 2^31      (uint32, mod 2^32)
 *     offset = zp_out - 2^(31-s)
 * which is requant()'s arithmetic with the per-channel terms precomputed: the same integers.
 * Layers with a channel of rshift <= 32, or more than AGN_RQ_TABLE_MAX channels, use requant().
 * The table lives on the stack (16 bytes per channel). The clamp is one SSAT where the layer's
 * range is the whole int8 (or int16) range and AGN_USE_DSP is on: SSAT #b saturates to
 * [-2^(b-1), 2^(b-1) - 1], the same numbers as the two comparisons. */
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
    uint8_t narrow8, narrow16; /* [lo, hi] is narrower than the int8 / int16 range */
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
    r.narrow8 = (uint8_t)(r.lo != -128 || r.hi != 127);
    r.narrow16 = (uint8_t)(r.lo != -32768 || r.hi != 32767);
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

/* clamp(y, lo, hi) for outputs of `bits` (8 or 16, a constant at every call) bits: [lo, hi] lies
 * in that range, so saturating first (one SSAT) changes nothing, and where [lo, hi] is the whole
 * range (every layer but a ReLU6 one whose clamp the quantizer did not fold) that is all. */
static AGN_INLINE int32_t clamp_out(int32_t y, const rq_consts *r, int bits)
{
#if AGN_USE_DSP
    if (bits == 8) {
        y = __ssat(y, 8);
        if (!r->narrow8) {
            return y;
        }
    } else {
        y = __ssat(y, 16);
        if (!r->narrow16) {
            return y;
        }
    }
#else
    (void)bits;
#endif
    if (y < r->lo) {
        y = r->lo;
    }
    if (y > r->hi) {
        y = r->hi;
    }
    return y;
}

/* requant() of acc for output channel o with the layer's constants r; `bits` as clamp_out(). */
static AGN_INLINE int32_t rq_apply(int32_t acc, const rq_consts *r, uint32_t o, int bits)
{
    if (r->table != NULL) {
        const rq_entry *e = &r->table[o];
#if AGN_USE_DSP
        const uint32_t hr = smmla(acc, e->mult, e->round); /* h + round, mod 2^32 */
#else
        const uint32_t hr = (uint32_t)((uint64_t)((int64_t)acc * (int64_t)e->mult) >> 32) + e->round;
#endif
        return clamp_out((int32_t)(hr >> e->shift) + e->offset, r, bits);
    }
    return requant(acc, r->mult[o], r->rshift[o], r->zp_out, r->lo, r->hi);
}

static AGN_INLINE int8_t rq8(int32_t acc, const rq_consts *r, uint32_t o)
{
    return (int8_t)rq_apply(acc, r, o, 8);
}

/* Every output channel of one pixel: out[o] = requant(bias[o] + sum_i col[i] * w[o][i]) for
 * o < c_out, w the packed rows [c_out][n]. Four output channels at a time share each load of col
 * (dot4); each channel's sum has the same terms as one row at a time, so the result is
 * bit-identical (exact int32 arithmetic). int8 outputs. */
static AGN_INLINE void pixel_s8(const int16_t *col, uint32_t n, const int8_t *weights, const int32_t *bias,
                                const rq_consts *r, uint32_t c_out, int8_t *dst)
{
    uint32_t o = 0;
    for (; o + 4u <= c_out; o += 4u) {
        sums4 acc;
        acc.s0 = bias[o];
        acc.s1 = bias[o + 1u];
        acc.s2 = bias[o + 2u];
        acc.s3 = bias[o + 3u];
        acc = dot4(col, weights + o * n, n, acc);
        dst[o] = rq8(acc.s0, r, o);
        dst[o + 1u] = rq8(acc.s1, r, o + 1u);
        dst[o + 2u] = rq8(acc.s2, r, o + 2u);
        dst[o + 3u] = rq8(acc.s3, r, o + 3u);
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

/* Depthwise conv: channel c is filtered by its own kh x kw kernel.
 *
 * 3x3 kernels with at most AGN_DW_FAST_MAX_CH channels (every depthwise layer of the shipped models)
 * take one unrolled path for every output pixel, with
 *     sum w * (x - zp) = sum w * x - zp * sum w
 * and base[c] = bias[c] - zp * sum w worked out once per call, so each tap is one load-load-
 * multiply-accumulate. A window that lies inside the image is read in place; a window that
 * crosses the border is first copied into scratch as a 3 x 3 x ch int8 patch with zp_in in place of
 * every padding tap: such a tap then adds w * zp, which the - zp * w share of base[c] cancels, so it
 * adds nothing, as a padding tap must (it stands for x = zp_in, real 0). The border pixels thus cost
 * an interior pixel plus a copy of at most 9 * ch bytes, instead of loops with bounds per channel.
 * Same integers as the plain sum: int32 arithmetic without overflow (the layer's accumulator bound
 * taps * 255 * 127 + |bias| < 2^31 covers both forms).
 *
 * Other kernels: per output pixel the taps inside the image are found once, and each channel sums
 * w * (x - zp) over them. */
#define AGN_DW_FAST_MAX_CH 64u /* channels whose bias - zp * sum w fit the stack table */

static void dwconv3x3_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out,
                         agn_dims out_dims, int8_t *patch)
{
    const uint32_t ch = in_dims.c, row_step = (uint32_t)in_dims.w * ch;
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, ch, table);
    const int8_t *weights = p->weights;
    int32_t base[AGN_DW_FAST_MAX_CH];
    uint32_t oy, ox, ky, kx, c;
    for (c = 0; c < ch; c++) {
        const int8_t *w = weights + c * 9u;
        base[c] = p->bias[c] - zp * (w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + w[6] + w[7] + w[8]);
    }
    for (oy = 0; oy < out_dims.h; oy++) {
        const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
        const int rows_inside = iy0 >= 0 && iy0 + 3 <= (int32_t)in_dims.h;
        for (ox = 0; ox < out_dims.w; ox++) {
            const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
            int8_t *dst = out + (oy * out_dims.w + ox) * ch;
            const int8_t *x, *w = weights;
            uint32_t rs;
            if (rows_inside && ix0 >= 0 && ix0 + 3 <= (int32_t)in_dims.w) {
                x = in + (uint32_t)iy0 * row_step + (uint32_t)ix0 * ch;
                rs = row_step;
            } else {
                for (ky = 0; ky < 3u; ky++) {
                    const int32_t iy = iy0 + (int32_t)ky;
                    for (kx = 0; kx < 3u; kx++) {
                        const int32_t ix = ix0 + (int32_t)kx;
                        int8_t *dp = patch + (ky * 3u + kx) * ch;
                        if (iy < 0 || iy >= (int32_t)in_dims.h || ix < 0 || ix >= (int32_t)in_dims.w) {
                            memset(dp, zp, ch); /* (unsigned char)zp: the int8 zp_in again */
                        } else {
                            memcpy(dp, in + ((uint32_t)iy * in_dims.w + (uint32_t)ix) * ch, ch);
                        }
                    }
                }
                x = patch;
                rs = 3u * ch;
            }
            for (c = 0; c < ch; c++, x++, w += 9) {
                const int8_t *x1 = x + rs, *x2 = x1 + rs;
                int32_t acc = base[c];
                acc += x[0] * w[0] + x[ch] * w[1] + x[2u * ch] * w[2];
                acc += x1[0] * w[3] + x1[ch] * w[4] + x1[2u * ch] * w[5];
                acc += x2[0] * w[6] + x2[ch] * w[7] + x2[2u * ch] * w[8];
                dst[c] = rq8(acc, &r, c);
            }
        }
    }
}

void agn_dwconv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                   int16_t *scratch)
{
    const uint32_t ch = in_dims.c;
    const uint32_t kh = p->kh, kw = p->kw, taps = kh * kw;
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    rq_consts r;
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
    const uint32_t row_step = (uint32_t)in_dims.w * ch;
    uint32_t oy, ox, ky, kx, c;
    if (kh == 3u && kw == 3u && ch <= AGN_DW_FAST_MAX_CH) {
        dwconv3x3_s8(in, in_dims, p, out, out_dims, (int8_t *)(void *)scratch);
        return;
    }
    r = rq_of(p, ch, table);
    for (oy = 0; oy < out_dims.h; oy++) {
        const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
        uint32_t ky0, ky1;
        valid_taps(iy0, kh, in_dims.h, &ky0, &ky1);
        for (ox = 0; ox < out_dims.w; ox++) {
            const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
            int8_t *dst = out + (oy * out_dims.w + ox) * ch;
            uint32_t kx0, kx1;
            valid_taps(ix0, kw, in_dims.w, &kx0, &kx1);
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
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, out_dims.c, table);
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
    uint32_t i, o = 0;
    for (i = 0; i < n; i++) {
        scratch[i] = (int16_t)(in[i] - zp);
    }
    /* four outputs per pass over the activations, as pixel_s8 */
    for (; o + 4u <= out_dims.c; o += 4u) {
        sums4 acc;
        acc.s0 = bias[o];
        acc.s1 = bias[o + 1u];
        acc.s2 = bias[o + 2u];
        acc.s3 = bias[o + 3u];
        acc = dot4(scratch, weights + o * n, n, acc);
        out[o] = (int16_t)rq_apply(acc.s0, &r, o, 16);
        out[o + 1u] = (int16_t)rq_apply(acc.s1, &r, o + 1u, 16);
        out[o + 2u] = (int16_t)rq_apply(acc.s2, &r, o + 2u, 16);
        out[o + 3u] = (int16_t)rq_apply(acc.s3, &r, o + 3u, 16);
    }
    for (; o < out_dims.c; o++) {
        out[o] = (int16_t)rq_apply(bias[o] + dot(scratch, weights + o * n, n), &r, o, 16);
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
                           const uint8_t *index_of, uint8_t *out)
{
    const uint32_t pixels = (uint32_t)in_dims.h * in_dims.w;
    uint32_t i, c;
    for (c = 0; c < channels; c++) {
        const int8_t *q = in + c0 + c;
        uint8_t *dst = out + c * pixels;
        for (i = 0; i < pixels; i++, q += in_dims.c) {
            dst[i] = index_of[(uint8_t)((int32_t)*q + 128)];
        }
    }
}
