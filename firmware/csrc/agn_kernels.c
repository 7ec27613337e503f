/* agn_kernels.c: the int8 layer kernels (formulas in agn_kernels.h; written for this project from
 * the int8 scheme of Jacob et al., CVPR 2018, and the TFLite int8 spec; the data layouts follow the
 * Armv7E-M DSP instructions as the Arm ARM describes them; not copied from any library).
 *
 * Shape of the code on Cortex-M:
 * - conv and pointwise conv gather the (x - zp_in) values of two output pixels into an int16 buffer
 *   (im2col of a pixel pair, each column padded to a multiple of 4 with zeros, interleaved by pair)
 *   and run it against four weight rows at a time, stored as int16 pairs: one SMLAD per two
 *   multiply-accumulates, each weight word loaded once per two pixels and each activation word
 *   once per four rows;
 * - the dense layer does the same with int8 rows (its weights are most of the model's flash),
 *   stored so that SXTB16 unpacks four weights into the two pairs SMLAD needs;
 * - depthwise conv reads the input in place, four channels per word, with one pointer per tap
 *   (padding taps point at a row of zero points), SXTB16 + SMLABB/SMLATT;
 * - requantization per layer: the per-channel constants worked out once per call, then per output
 *   one SMMLA, a shift, an add and one SSAT.
 * AGN_USE_DSP 0 (agn_config.h) runs the same layouts in portable C99 with the same integers. */
#include "agn_kernels.h"

#include <string.h> /* memcpy */

#if AGN_USE_DSP
#include <arm_acle.h> /* __smlad, __sxtb16, __ssat (ACLE) */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define AGN_INLINE inline __attribute__((always_inline))
#define AGN_NOINLINE __attribute__((noinline))
#else
#define AGN_INLINE inline
#define AGN_NOINLINE
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

/* A call, not inlined: the kernels' rare path (rq_apply), kept out of their loops' code. */
AGN_NOINLINE int32_t agn_requant_s32(int32_t acc, int32_t mult, uint8_t rshift, int32_t zp_out, int32_t lo, int32_t hi)
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

/* 32 bits to any address (memcpy: one STR; the int16 scratch is never written through a uint32
 * pointer, which C's aliasing rules would not allow). */
static AGN_INLINE void store_u32(void *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
}

/* Packed weight rows (conv, pointwise conv and dense layers; the generator writes them so): a row
 * of n weights is padded with zeros to n4 = n rounded up to a multiple of 4 (the activation buffer
 * gets zeros there too, so the padding adds 0 and no loop needs a tail), and each group of four,
 * i = 4g .. 4g+3, is stored in the order
 *     w[4g], w[4g+2], w[4g+1], w[4g+3]
 * As a little-endian word, SXTB16 (bytes 0 and 2, sign-extended) gives the int16 pair (w[4g],
 * w[4g+1]) and SXTB16 of the word rotated right by 8 (bytes 1 and 3) gives (w[4g+2], w[4g+3]):
 * the pairs that line up with the int16 activations (x[4g], x[4g+1]) and (x[4g+2], x[4g+3]) as
 * they lie in memory, so two SMLAD (acc + lo * lo + hi * hi) do the group with no shuffling of the
 * activations. packed_index(i) is where logical weight i is stored: bits 0 and 1 swapped. */
static AGN_INLINE uint32_t packed_index(uint32_t i)
{
    return i ^ (((i ^ (i >> 1)) & 1u) * 3u);
}

/* n rounded up to a multiple of 4: the length of a packed row and of the activations it meets. */
static AGN_INLINE uint32_t padded4(uint32_t n)
{
    return (n + 3u) & ~3u;
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

/* SXTAB16 with the rotation: a + (bytes 1 and 3 of x, sign-extended), per halfword. */
static AGN_INLINE uint32_t sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
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

/* sum_i a[i] * w[i] over one packed row of n4 (a multiple of 4) weights.
 * |a| <= 255, |w| <= 127: each product < 2^15, the sum bound is the layer's (checked at generation);
 * int32 arithmetic is exact in any order, so every path below gives the same integer. */
static AGN_INLINE int32_t dot(const int16_t *a, const int8_t *w, uint32_t n4)
{
    int32_t acc = 0;
    uint32_t i;
#if AGN_USE_DSP
    for (i = 0; i < n4; i += 4u) {
        acc = group_dsp(load_u32(a + i), load_u32(a + i + 2u), load_u32(w + i), acc);
    }
#elif AGN_DOT_UNROLL == 4
    for (i = 0; i < n4; i += 4u) {
        acc += (int32_t)a[i] * w[i] + (int32_t)a[i + 1u] * w[i + 2u];
        acc += (int32_t)a[i + 2u] * w[i + 1u] + (int32_t)a[i + 3u] * w[i + 3u];
    }
#elif AGN_DOT_UNROLL == 2
    for (i = 0; i < n4; i += 2u) {
        const uint32_t s = packed_index(i); /* i and i + 1 are stored at s and s + 2 */
        acc += (int32_t)a[i] * w[s] + (int32_t)a[i + 1u] * w[s + 2u];
    }
#else
    for (i = 0; i < n4; i++) {
        acc += (int32_t)a[i] * w[packed_index(i)];
    }
#endif
    return acc;
}

int32_t agn_dot_s16_s8(const int16_t *a, const int8_t *w, uint32_t n)
{
    return dot(a, w, n);
}

/* The sums of a block of four output rows against the same activations a: each load of a serves
 * four rows (four accumulators in registers). The generator interleaves the block's four packed
 * rows so that one pointer walks them: for each group g the four rows' groups (4 bytes each, row 0
 * first); 4 * n4 bytes in all, so block b starts at weights + 4b * n4 as rows would. Rows past the
 * last full block are plain packed rows (dot()). */
typedef struct {
    int32_t s0, s1, s2, s3;
} sums4;

static AGN_INLINE sums4 dot4(const int16_t *a, const int8_t *w, uint32_t n4, sums4 acc)
{
    uint32_t i;
    for (i = 0; i < n4; i += 4u, w += 16) {
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
    return acc;
}

/* Weight pairs (conv and pointwise conv layers, the generator writes them so): the same rows padded
 * to n4 and blocked by four as above, but each weight an int16 and two of them one uint32 word,
 * pair(w[2k], w[2k+1]) = (w[2k] & 0xFFFF) | w[2k+1] << 16: exactly the int16 pairs SMLAD takes, so
 * no unpacking per use (twice the flash of int8 rows; these layers' weights are small, the dense
 * layer's, the largest, stay int8). A block of four rows: for each group of four inputs the four
 * rows' two words (row 0 first), 2 * n4 words in all. */
static AGN_INLINE int32_t pair_lo(uint32_t v) /* the int16 in bits 0..15, without implementation-defined casts */
{
    return (int32_t)(v & 0xFFFFu) - (int32_t)((v & 0x8000u) << 1);
}

static AGN_INLINE int32_t pair_dot(uint32_t x, uint32_t w, int32_t acc) /* acc + x.lo * w.lo + x.hi * w.hi */
{
#if AGN_USE_DSP
    return __smlad((int16x2_t)x, (int16x2_t)w, acc);
#else
    return acc + pair_lo(x) * pair_lo(w) + pair_lo(x >> 16) * pair_lo(w >> 16);
#endif
}

/* Two output pixels against the same block of four rows: each weight word loaded once serves both
 * pixels (eight accumulators), and the block's bookkeeping (bias loads, pointers, loop control)
 * is paid once per eight outputs instead of four. The two pixels' columns are interleaved by
 * int16 pair in x: word 2k is pair k (inputs 2k, 2k + 1) of pixel 0, word 2k + 1 pair k of pixel 1
 * (AGN_COL_PUT and the pointwise gather write them so), so one pointer walks both and the words of a group are adjacent.
 * One group of four inputs: four words of x, the block's eight weight words, sixteen SMLAD for 32
 * multiply-accumulates (one pixel at a time took two x words, eight weight words and eight SMLAD
 * for 16). Each channel's sum has the same terms as one row at a time, so the result is
 * bit-identical (exact int32 arithmetic). */
/* One pair word of each pixel (x0, x1: inputs 2k, 2k + 1) against the same pair of the block's four
 * rows, w[0], w[2], w[4], w[6] (the rows' words of a group alternate: see the layout above). */
static AGN_INLINE void rows4_x2(uint32_t x0, uint32_t x1, const uint32_t *w, sums4 *a, sums4 *b)
{
    a->s0 = pair_dot(x0, w[0], a->s0);
    b->s0 = pair_dot(x1, w[0], b->s0);
    a->s1 = pair_dot(x0, w[2], a->s1);
    b->s1 = pair_dot(x1, w[2], b->s1);
    a->s2 = pair_dot(x0, w[4], a->s2);
    b->s2 = pair_dot(x1, w[4], b->s2);
    a->s3 = pair_dot(x0, w[6], a->s3);
    b->s3 = pair_dot(x1, w[6], b->s3);
}

static AGN_INLINE void dot4x2_pairs(const int16_t *x, const uint32_t *w, uint32_t n4, sums4 *p0, sums4 *p1)
{
    sums4 a = *p0, b = *p1; /* locals: the accumulators stay in registers */
    const int16_t *const end = x + 2u * n4; /* n4 values per pixel, two pixels */
    for (; x != end; x += 8, w += 8) {
        rows4_x2(load_u32(x), load_u32(x + 2), w, &a, &b);         /* inputs 4g, 4g + 1 */
        rows4_x2(load_u32(x + 4), load_u32(x + 6), w + 1, &a, &b); /* inputs 4g + 2, 4g + 3 */
    }
    *p0 = a;
    *p1 = b;
}

/* One plain packed row (a row past the last block of four) against both interleaved pixels. */
static AGN_INLINE void dot_pairs_x2(const int16_t *x, const uint32_t *w, uint32_t n4, int32_t *a, int32_t *b)
{
    const int16_t *const end = x + 2u * n4;
    for (; x != end; x += 4, w++) {
        *a = pair_dot(load_u32(x), *w, *a);
        *b = pair_dot(load_u32(x + 2), *w, *b);
    }
}

/* Requantization of one layer with its per-channel constants worked out once per call, for
 * rshift n in [32, 62] and M in [2^30, 2^31) (every layer the quantizer writes, in practice).
 * requant()'s 32-bit form (n >= 33): with h = the high word of acc * M, s = n - 32,
 *     y = (int32)((h + 2^(s-1) + 2^31 mod 2^32) >> s) - 2^(31-s) + zp_out
 * To cover n = 32 too, every channel runs it for the same ratio written as 2M * 2^-(n+1):
 *     floor((acc * 2M + 2^n) / 2^(n+1)) = floor((acc * M + 2^(n-1)) / 2^n)        (exact)
 * with n' = n + 1 in [33, 63]. 2M does not fit int32, but M2 = 2M - 2^32 in [-2^31, 0) does, and
 *     h' = high word of acc * 2M = (high word of acc * M2) + acc                (mod 2^32, exact)
 * (acc * 2M = acc * M2 + acc * 2^32). Per channel, with s = n' - 32 = n - 31 in [1, 31]:
 *     round  = 2^(s-1) + 2^31      (uint32, mod 2^32)
 *     offset = zp_out - 2^(31-s)   (|2^(31-s)| <= 2^30: int32)
 *     y = clamp((int32)((h' + round) >> s) + offset, lo, hi)
 * the same integers as requant(). With AGN_USE_DSP h' + round is one SMMLA and an add. Layers
 * outside those ranges, or with more than AGN_RQ_TABLE_MAX channels, use requant().
 * The table lives on the stack (16 bytes per channel). The clamp is one SSAT where the layer's
 * range is the whole int8 (or int16) range and AGN_USE_DSP is on: SSAT #b saturates to
 * [-2^(b-1), 2^(b-1) - 1], the same numbers as the two comparisons. */
#define AGN_RQ_TABLE_MAX 64u

typedef struct {
    int32_t mult; /* M2 = 2M - 2^32 */
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
        const int32_t m = p->rq.mult[o];
        /* h' <= M - 1 for any int32 acc (|acc * 2M| < 2^31 * 2M), so h' + round stays below 2^32
         * (no wrap) when M - 1 + 2^(s-1) < 2^31; h' >= -M keeps it >= 0 */
        if (n < 32u || n > 62u || m < (int32_t)0x40000000 || (uint32_t)m + (1u << (n - 32u)) > 0x80000000u) {
            return r;
        }
        table[o].mult = (int32_t)((int64_t)2 * m - ((int64_t)1 << 32)); /* M2 = 2M - 2^32 */
        table[o].shift = n - 31u;
        table[o].round = (1u << (n - 32u)) + 0x80000000u;
        table[o].offset = p->zp_out - (int32_t)(1u << (62u - n));
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
        const uint32_t hr = smmla(acc, e->mult, e->round) + (uint32_t)acc; /* h' + round, mod 2^32 */
#else
        const uint32_t hr = (uint32_t)((uint64_t)((int64_t)acc * (int64_t)e->mult) >> 32) + (uint32_t)acc + e->round;
#endif
        return clamp_out((int32_t)(hr >> e->shift) + e->offset, r, bits);
    }
    return agn_requant_s32(acc, r->mult[o], r->rshift[o], r->zp_out, r->lo, r->hi);
}

static AGN_INLINE int8_t rq8(int32_t acc, const rq_consts *r, uint32_t o)
{
    return (int8_t)rq_apply(acc, r, o, 8);
}

/* Channel o of both pixels, sums a (pixel 0) and b (pixel 1), requantized before either is stored:
 * an int8 store may alias anything, and a store in between would make the compiler load the
 * channel's constants again for the second pixel. */
static AGN_INLINE void rq8_store2(int32_t a, int32_t b, const rq_consts *r, uint32_t o, int8_t *dst0, int8_t *dst1)
{
    const int8_t y0 = rq8(a, r, o), y1 = rq8(b, r, o);
    dst0[o] = y0;
    dst1[o] = y1;
}

/* Every output channel of two output pixels: out[o] = requant(bias[o] + sum_i col[i] * w[o][i])
 * for o < c_out, w the weight pairs [c_out][n4 / 2] blocked by four, the two pixels' columns (n4
 * values each, zeros past the layer's n) interleaved in x (dot4x2_pairs); outputs to dst0 and dst1
 * (the same pointer when a pixel is paired with itself). */
static AGN_INLINE void pixel2_s8(const int16_t *x, uint32_t n4, const uint32_t *pairs, const int32_t *bias,
                                 const rq_consts *r, uint32_t c_out, int8_t *dst0, int8_t *dst1)
{
    const uint32_t row = n4 / 2u;
    uint32_t o = 0;
    for (; o + 4u <= c_out; o += 4u) {
        sums4 a, b;
        a.s0 = b.s0 = bias[o];
        a.s1 = b.s1 = bias[o + 1u];
        a.s2 = b.s2 = bias[o + 2u];
        a.s3 = b.s3 = bias[o + 3u];
        dot4x2_pairs(x, pairs + o * row, n4, &a, &b);
        rq8_store2(a.s0, b.s0, r, o, dst0, dst1);
        rq8_store2(a.s1, b.s1, r, o + 1u, dst0, dst1);
        rq8_store2(a.s2, b.s2, r, o + 2u, dst0, dst1);
        rq8_store2(a.s3, b.s3, r, o + 3u, dst0, dst1);
    }
    for (; o < c_out; o++) {
        int32_t a = bias[o], b = bias[o];
        dot_pairs_x2(x, pairs + o * row, n4, &a, &b);
        rq8_store2(a, b, r, o, dst0, dst1);
    }
}

/* Where a column's values go in scratch: pixel p of an interleaved pair (dot4x2_pairs) keeps
 * value i at 4 * (i / 2) + 2p + (i % 2), i.e. from col = scratch + 2p, a step of 1 after an even i
 * and 3 after an odd one. `step` holds the next one (1 at the start of a column). */
#define AGN_COL_PUT(col, step, v)                                                                          \
    do {                                                                                                   \
        *(col) = (int16_t)(v);                                                                             \
        (col) += (step);                                                                                   \
        (step) = 4u - (step);                                                                              \
    } while (0)

/* im2col of the output pixel whose window starts at (iy0, ix0): (x - zp_in) per tap; a padding tap
 * stands for real 0, which is x = zp_in (0 here), or, with per-channel input zero points, x = zp_c:
 * pad_in[c]. Writes kh * kw * cin values from col (scratch + 2p) in AGN_COL_PUT's layout. */
static AGN_INLINE void conv_gather(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int32_t iy0,
                                   int32_t ix0, int16_t *col)
{
    uint32_t step = 1u;
    const uint32_t cin = in_dims.c, kh = p->kh, kw = p->kw;
    const int32_t zp = p->zp_in;
    const int16_t *pad_in = p->pad_in;
    uint32_t ky, kx, c;
    if (iy0 >= 0 && iy0 + (int32_t)kh <= (int32_t)in_dims.h && ix0 >= 0 && ix0 + (int32_t)kw <= (int32_t)in_dims.w) {
        /* the window lies inside the image: kh rows of kw * cin contiguous values */
        const uint32_t row = kw * cin;
        for (ky = 0; ky < kh; ky++) {
            const int8_t *px = in + ((uint32_t)(iy0 + (int32_t)ky) * in_dims.w + (uint32_t)ix0) * cin;
            for (c = 0; c < row; c++) {
                AGN_COL_PUT(col, step, px[c] - zp);
            }
        }
        return;
    }
    for (ky = 0; ky < kh; ky++) {
        const int32_t iy = iy0 + (int32_t)ky;
        for (kx = 0; kx < kw; kx++) {
            const int32_t ix = ix0 + (int32_t)kx;
            if (iy < 0 || iy >= (int32_t)in_dims.h || ix < 0 || ix >= (int32_t)in_dims.w) {
                for (c = 0; c < cin; c++) {
                    AGN_COL_PUT(col, step, pad_in == NULL ? 0 : pad_in[c]);
                }
            } else {
                const int8_t *px = in + ((uint32_t)iy * in_dims.w + (uint32_t)ix) * cin;
                for (c = 0; c < cin; c++) {
                    AGN_COL_PUT(col, step, px[c] - zp);
                }
            }
        }
    }
}

/* Zeros at the positions of values [n, n4) of both pixels of an interleaved pair: the rows' zero
 * padding meets zeros there, and the gathers write only values [0, n). */
static void zero_pair_padding(int16_t *scratch, uint32_t n, uint32_t n4)
{
    uint32_t i;
    for (i = n; i < n4; i++) {
        const uint32_t at = 4u * (i / 2u) + (i % 2u);
        scratch[at] = 0;
        scratch[at + 2u] = 0;
    }
}

/* Output pixels go in pairs in raster order (dot4x2_pairs); an odd last one is paired with itself
 * (computed twice, stored twice, same bytes), so no layer needs a one-pixel path. */
void agn_conv_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out, agn_dims out_dims,
                 int16_t *scratch)
{
    const uint32_t taps = (uint32_t)p->kh * p->kw * in_dims.c, n4 = padded4(taps);
    const uint32_t pixels = (uint32_t)out_dims.h * out_dims.w, c_out = out_dims.c;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, c_out, table);
    uint32_t q;
    zero_pair_padding(scratch, taps, n4);
    for (q = 0; q < pixels; q += 2u) {
        const uint32_t q1 = q + 1u < pixels ? q + 1u : q;
        const uint32_t oy0 = q / out_dims.w, ox0 = q % out_dims.w, oy1 = q1 / out_dims.w, ox1 = q1 % out_dims.w;
        conv_gather(in, in_dims, p, (int32_t)(oy0 * p->stride_h) - (int32_t)p->pad_top,
                    (int32_t)(ox0 * p->stride_w) - (int32_t)p->pad_left, scratch);
        conv_gather(in, in_dims, p, (int32_t)(oy1 * p->stride_h) - (int32_t)p->pad_top,
                    (int32_t)(ox1 * p->stride_w) - (int32_t)p->pad_left, scratch + 2);
        pixel2_s8(scratch, n4, p->pairs, p->bias, &r, c_out, out + q * c_out, out + q1 * c_out);
    }
}

/* Depthwise conv: channel c is filtered by its own kh x kw kernel.
 *
 * Weights (the generator writes them so): channels in blocks of four, each block [tap][4 channels]
 * (tap = ky * kw + kx), then the channels past the last full block one after the other, [c][tap];
 * channel c's taps start at c * taps either way. Four channels of one tap are then four adjacent
 * bytes in both the weights and the HWC input, so one word load brings each.
 *
 * Kernels of at most AGN_DW_MAX_TAPS taps and layers of at most AGN_DW_MAX_CH channels (every
 * depthwise layer of the shipped models) use
 *     sum w * (x - zp) = sum w * x - zp * sum w,    base[c] = bias[c] - zp * sum_taps w
 * with base worked out once per call, and per output pixel one pointer per tap: the input pixel
 * under the tap, or, for a padding tap, a row of ch bytes of zp_in in scratch. A padding tap then
 * adds w * zp, which the - zp * w share of base[c] cancels: it adds nothing, as it must (it stands
 * for x = zp_in, real 0), and border pixels need no bounds checks per channel. Same integers as
 * the plain sum: int32 arithmetic without overflow (the layer's accumulator bound taps * 255 * 127
 * + |bias| < 2^31 covers both forms). With AGN_USE_DSP each tap of a block of four channels is two
 * word loads, four SXTB16 and four 16 x 16 multiply-accumulates (SMLABB/SMLATT on the pairs
 * (c0, c2) and (c1, c3)). Larger kernels or layers take a plain loop over the taps inside. */
#define AGN_DW_MAX_CH 64u   /* channels whose base[] fits the stack table */
#define AGN_DW_MAX_TAPS 25u /* taps whose pointers fit the stack table (5x5) */

/* The weight of channel c, tap t, in the layout above (for the plain path). */
static AGN_INLINE int32_t dw_weight(const int8_t *w, uint32_t ch, uint32_t taps, uint32_t c, uint32_t t)
{
    const uint32_t blocked = ch & ~3u;
    return c < blocked ? w[(c & ~3u) * taps + t * 4u + (c & 3u)] : w[c * taps + t];
}

/* One tap of a block of four channels: a0..a3 += x[c..c+3] * w[0..3] (x = the input under the tap
 * at channel c, w = the block's four weights of that tap). */
#if AGN_USE_DSP
#define AGN_DW_TAP(x, w)                                                                                   \
    do {                                                                                                   \
        const uint32_t xw_ = load_u32(x), ww_ = load_u32(w);                                               \
        const int32_t x02_ = __sxtb16((int8x4_t)xw_), w02_ = __sxtb16((int8x4_t)ww_);                     \
        const int32_t x13_ = (int32_t)sxtb16_ror8(xw_), w13_ = (int32_t)sxtb16_ror8(ww_);                 \
        a0 = __smlabb(x02_, w02_, a0);                                                                     \
        a2 = __smlatt(x02_, w02_, a2);                                                                     \
        a1 = __smlabb(x13_, w13_, a1);                                                                     \
        a3 = __smlatt(x13_, w13_, a3);                                                                     \
    } while (0)
#else
#define AGN_DW_TAP(x, w)                                                                                   \
    do {                                                                                                   \
        const int8_t *x_ = (x), *w_ = (w);                                                                 \
        a0 += x_[0] * w_[0];                                                                               \
        a1 += x_[1] * w_[1];                                                                               \
        a2 += x_[2] * w_[2];                                                                               \
        a3 += x_[3] * w_[3];                                                                               \
    } while (0)
#endif

/* One output pixel of the tap-pointer path: tap[t] points at channel 0 of the input under tap t. */
static AGN_INLINE void dw_pixel(const int8_t *const *tap, uint32_t taps, uint32_t ch, const int8_t *w,
                                const int32_t *base, const rq_consts *r, int8_t *dst)
{
    const uint32_t blocked = ch & ~3u;
    uint32_t c = 0, t;
    for (; c < blocked; c += 4u, w += 4u * taps) {
        int32_t a0 = base[c], a1 = base[c + 1u], a2 = base[c + 2u], a3 = base[c + 3u];
        if (taps == 9u) { /* 3x3, unrolled */
            AGN_DW_TAP(tap[0] + c, w);
            AGN_DW_TAP(tap[1] + c, w + 4);
            AGN_DW_TAP(tap[2] + c, w + 8);
            AGN_DW_TAP(tap[3] + c, w + 12);
            AGN_DW_TAP(tap[4] + c, w + 16);
            AGN_DW_TAP(tap[5] + c, w + 20);
            AGN_DW_TAP(tap[6] + c, w + 24);
            AGN_DW_TAP(tap[7] + c, w + 28);
            AGN_DW_TAP(tap[8] + c, w + 32);
        } else {
            for (t = 0; t < taps; t++) {
                AGN_DW_TAP(tap[t] + c, w + 4u * t);
            }
        }
        dst[c] = rq8(a0, r, c);
        dst[c + 1u] = rq8(a1, r, c + 1u);
        dst[c + 2u] = rq8(a2, r, c + 2u);
        dst[c + 3u] = rq8(a3, r, c + 3u);
    }
    for (; c < ch; c++, w += taps) {
        int32_t acc = base[c];
        for (t = 0; t < taps; t++) {
            acc += tap[t][c] * w[t];
        }
        dst[c] = rq8(acc, r, c);
    }
}

static void dwconv_taps_s8(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int8_t *out,
                           agn_dims out_dims, int8_t *zp_row)
{
    const uint32_t ch = in_dims.c, kh = p->kh, kw = p->kw, taps = kh * kw;
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, ch, table);
    const int8_t *weights = p->weights;
    const int8_t *tap[AGN_DW_MAX_TAPS];
    int32_t offset[AGN_DW_MAX_TAPS]; /* of tap t from the window's first input byte */
    int32_t base[AGN_DW_MAX_CH];
    uint32_t oy, ox, ky, kx, c, t;
    for (c = 0; c < ch; c++) {
        int32_t sum = 0;
        for (t = 0; t < taps; t++) {
            sum += dw_weight(weights, ch, taps, c, t);
        }
        base[c] = p->bias[c] - zp * sum;
    }
    for (ky = 0, t = 0; ky < kh; ky++) {
        for (kx = 0; kx < kw; kx++, t++) {
            offset[t] = (int32_t)((ky * in_dims.w + kx) * ch);
        }
    }
    memset(zp_row, zp, ch); /* (unsigned char)zp: the int8 zp_in again */
    for (oy = 0; oy < out_dims.h; oy++) {
        const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
        for (ox = 0; ox < out_dims.w; ox++) {
            const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
            /* where the window's first tap would be (negative or past the end at the border: only the
             * offsets of taps inside are ever added to in) */
            const int32_t x0 = (iy0 * (int32_t)in_dims.w + ix0) * (int32_t)ch;
            if (iy0 >= 0 && iy0 + (int32_t)kh <= (int32_t)in_dims.h && ix0 >= 0 &&
                ix0 + (int32_t)kw <= (int32_t)in_dims.w) {
                for (t = 0; t < taps; t++) { /* the window lies inside: no checks */
                    tap[t] = in + (x0 + offset[t]);
                }
            } else {
                for (ky = 0, t = 0; ky < kh; ky++) {
                    const int32_t iy = iy0 + (int32_t)ky;
                    const int row_inside = iy >= 0 && iy < (int32_t)in_dims.h;
                    for (kx = 0; kx < kw; kx++, t++) {
                        const int32_t ix = ix0 + (int32_t)kx;
                        tap[t] = row_inside && ix >= 0 && ix < (int32_t)in_dims.w ? in + (x0 + offset[t]) : zp_row;
                    }
                }
            }
            if (taps == 9u) { /* 3x3: the tap loop fully unrolled */
                dw_pixel(tap, 9u, ch, weights, base, &r, out + (oy * out_dims.w + ox) * ch);
            } else {
                dw_pixel(tap, taps, ch, weights, base, &r, out + (oy * out_dims.w + ox) * ch);
            }
        }
    }
}

/* First and one-past-last kernel tap (along one axis) whose input index i0 + k lies in [0, size). */
static AGN_INLINE void valid_taps(int32_t i0, uint32_t k, uint32_t size, uint32_t *first, uint32_t *end)
{
    *first = i0 < 0 ? (uint32_t)(-i0) : 0u;
    *end = i0 + (int32_t)k > (int32_t)size ? (uint32_t)((int32_t)size - i0) : k;
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
    if (taps <= AGN_DW_MAX_TAPS && ch <= AGN_DW_MAX_CH) {
        dwconv_taps_s8(in, in_dims, p, out, out_dims, (int8_t *)(void *)scratch);
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
                int32_t acc = bias[c];
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *x = in + (uint32_t)(iy0 + (int32_t)ky) * row_step + c;
                    for (kx = kx0; kx < kx1; kx++) {
                        acc += (x[(uint32_t)(ix0 + (int32_t)kx) * ch] - zp) * dw_weight(weights, ch, taps, c, ky * kw + kx);
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
    const uint32_t cin = in_dims.c, n4 = padded4(cin);
    const uint32_t pixels = (uint32_t)in_dims.h * in_dims.w, c_out = out_dims.c;
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, c_out, table);
    uint32_t q, c;
#if AGN_USE_DSP
    const uint32_t neg_zp2 = (uint32_t)(uint16_t)(int16_t)-zp * 0x00010001u; /* -zp in both halfwords */
    const uint32_t words = cin & ~3u;                                         /* channels done 4 at a time */
#else
    const uint32_t words = 0;
#endif
    zero_pair_padding(scratch, cin, n4);
    for (q = 0; q < pixels; q += 2u) { /* in pairs, as agn_conv_s8 */
        const uint32_t q1 = q + 1u < pixels ? q + 1u : q;
        const int8_t *px0 = in + q * cin, *px1 = in + q1 * cin;
        uint32_t step0 = 1u, step1 = 1u;
        int16_t *col0 = scratch + 2u * words, *col1 = col0 + 2;
#if AGN_USE_DSP
        /* Four channels per word: SXTAB16 gives (x0 - zp, x2 - zp) and, of the word rotated by 8,
         * (x1 - zp, x3 - zp) (|x - zp| <= 255 fits each halfword); two pack instructions make the
         * pairs (x0, x1) and (x2, x3), stored at pairs c / 2 and c / 2 + 1 of each pixel. */
        for (c = 0; c < words; c += 4u) {
            const uint32_t v0 = load_u32(px0 + c), v1 = load_u32(px1 + c);
            const uint32_t e0 = __sxtab16((int16x2_t)neg_zp2, (int8x4_t)v0), o0 = sxtab16_ror8(neg_zp2, v0);
            const uint32_t e1 = __sxtab16((int16x2_t)neg_zp2, (int8x4_t)v1), o1 = sxtab16_ror8(neg_zp2, v1);
            int16_t *at = scratch + 2u * c;
            store_u32(at, (e0 & 0xFFFFu) | (o0 << 16));
            store_u32(at + 2, (e1 & 0xFFFFu) | (o1 << 16));
            store_u32(at + 4, (o0 & 0xFFFF0000u) | (e0 >> 16));
            store_u32(at + 6, (o1 & 0xFFFF0000u) | (e1 >> 16));
        }
#endif
        for (c = words; c < cin; c++) {
            AGN_COL_PUT(col0, step0, px0[c] - zp);
            AGN_COL_PUT(col1, step1, px1[c] - zp);
        }
        pixel2_s8(scratch, n4, p->pairs, p->bias, &r, c_out, out + q * c_out, out + q1 * c_out);
    }
}

void agn_dense_s8_s16(const int8_t *in, agn_dims in_dims, const agn_conv_params *p, int16_t *out, agn_dims out_dims,
                      int16_t *scratch)
{
    const uint32_t n = (uint32_t)in_dims.h * in_dims.w * in_dims.c, n4 = padded4(n);
    const int32_t zp = p->zp_in;
    rq_entry table[AGN_RQ_TABLE_MAX];
    const rq_consts r = rq_of(p, out_dims.c, table);
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
    uint32_t i, o = 0;
    for (i = 0; i < n; i++) {
        scratch[i] = (int16_t)(in[i] - zp);
    }
    for (; i < n4; i++) {
        scratch[i] = 0; /* meets the rows' zero padding */
    }
    /* four outputs per pass over the activations (one pixel: the blocks of dot4 suffice) */
    for (; o + 4u <= out_dims.c; o += 4u) {
        sums4 acc;
        acc.s0 = bias[o];
        acc.s1 = bias[o + 1u];
        acc.s2 = bias[o + 2u];
        acc.s3 = bias[o + 3u];
        acc = dot4(scratch, weights + o * n4, n4, acc);
        out[o] = (int16_t)rq_apply(acc.s0, &r, o, 16);
        out[o + 1u] = (int16_t)rq_apply(acc.s1, &r, o + 1u, 16);
        out[o + 2u] = (int16_t)rq_apply(acc.s2, &r, o + 2u, 16);
        out[o + 3u] = (int16_t)rq_apply(acc.s3, &r, o + 3u, 16);
    }
    for (; o < out_dims.c; o++) {
        out[o] = (int16_t)rq_apply(bias[o] + dot(scratch, weights + o * n4, n4), &r, o, 16);
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
