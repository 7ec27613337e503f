/* requant_check.c: the kernels' per-layer requantization (the table of rq_of/rq_apply in
 * agn_kernels.c, the SSAT clamp with AGN_USE_DSP) against agn_requant_s32, the direct form of the
 * reference formula, on random and extreme accumulators, multipliers and shifts.
 *
 * A pointwise conv with one input channel whose input equals zp_in has acc = bias[o] exactly, so
 * its outputs are requant(bias[o]) of each channel; a dense layer of one input does the same for
 * int16 outputs. Usage: requant_check ITERATIONS SEED; prints "ok N" or the first mismatch. */
#include <stdio.h>
#include <stdlib.h>

#include "agn_kernels.h"

#define CH 8

static uint32_t rng_state;

static uint32_t rng(void)
{
    /* xorshift32 (Marsaglia 2003) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static int32_t pick_acc(void)
{
    switch (rng() % 4u) {
    case 0: return (int32_t)(rng() % 2000001u) - 1000000; /* the usual range */
    case 1: return (int32_t)(rng() & 0x7FFFFFFFu) * ((rng() & 1u) ? 1 : -1);
    case 2: return (rng() & 1u) ? 2147483647 : -2147483647;
    default: return (int32_t)(rng() % 65u) - 32;
    }
}

int main(int argc, char **argv)
{
    const long iterations = argc > 1 ? atol(argv[1]) : 1000;
    long it, checked = 0;
    rng_state = argc > 2 ? (uint32_t)atol(argv[2]) : 1u;
    if (rng_state == 0) {
        rng_state = 1;
    }
    for (it = 0; it < iterations; it++) {
        uint32_t pairs[CH * 2];
        int8_t w8[CH * 4], in = (int8_t)((int32_t)(rng() % 256u) - 128), out8[CH];
        int16_t scratch[8], out16[CH];
        int32_t bias[CH], mult[CH];
        uint8_t shift[CH];
        agn_conv_params p;
        const agn_dims in_dims = {1, 1, 1, 1}, out_dims = {1, 1, 1, CH};
        const int narrow = (rng() % 4u) == 0;
        uint32_t o;
        for (o = 0; o < CH * 4; o++) {
            w8[o] = (int8_t)(rng() % 255u) - 127; /* any weights: the input is zp_in, they meet 0 */
        }
        for (o = 0; o < CH * 2; o++) {
            pairs[o] = rng();
        }
        for (o = 0; o < CH; o++) {
            const uint32_t kind = rng() % 8u;
            bias[o] = pick_acc();
            mult[o] = (int32_t)(0x40000000u + (rng() & 0x3FFFFFFFu));
            if (kind == 0) {
                mult[o] = 0x7FFFFFFF; /* the table's no-wrap limit */
            }
            shift[o] = (uint8_t)(kind == 1 ? 32u : (kind == 2 ? 1u + rng() % 62u : 33u + rng() % 14u));
        }
        p.weights = w8; /* the dense layer's */
        p.pairs = pairs; /* the pointwise conv's */
        p.bias = bias;
        p.rq.mult = mult;
        p.rq.rshift = shift;
        p.pad_in = NULL;
        p.zp_in = in;
        p.zp_out = (int16_t)((int32_t)(rng() % 256u) - 128);
        p.act_min = narrow ? -100 : -128;
        p.act_max = narrow ? 90 : 127;
        p.kh = p.kw = p.stride_h = p.stride_w = 1;
        p.pad_top = p.pad_left = 0;
        agn_conv1x1_s8(&in, in_dims, &p, out8, out_dims, scratch);
        for (o = 0; o < CH; o++) {
            const int32_t want = agn_requant_s32(bias[o], mult[o], shift[o], p.zp_out, p.act_min, p.act_max);
            if (out8[o] != want) {
                printf("int8 mismatch: acc %ld mult %ld shift %u zp_out %d range [%ld, %ld]: %d, want %ld\n",
                       (long)bias[o], (long)mult[o], (unsigned)shift[o], p.zp_out, (long)p.act_min,
                       (long)p.act_max, out8[o], (long)want);
                return 1;
            }
        }
        p.act_min = narrow ? -30000 : -32768;
        p.act_max = narrow ? 31000 : 32767;
        agn_dense_s8_s16(&in, in_dims, &p, out16, out_dims, scratch);
        for (o = 0; o < CH; o++) {
            const int32_t want = agn_requant_s32(bias[o], mult[o], shift[o], p.zp_out, p.act_min, p.act_max);
            if (out16[o] != want) {
                printf("int16 mismatch: acc %ld mult %ld shift %u: %d, want %ld\n", (long)bias[o], (long)mult[o],
                       (unsigned)shift[o], out16[o], (long)want);
                return 1;
            }
        }
        checked += 2 * CH;
    }
    printf("ok %ld\n", checked);
    return 0;
}
