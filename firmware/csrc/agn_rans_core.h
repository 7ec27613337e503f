/* agn_rans_core.h: the rANS steps both payload coders share (internal; agn_rans.c is coder id 3,
 * agn_rans_ctx.c coder id 4). The format is docs/protocol.md ("rans body"): a 32-bit state, 16-bit
 * units, initial and final state 0.
 *
 * static inline on purpose: each coder's loop chooses its table per symbol inline (order 0: the
 * channel; rans-ctx: the neighbours' context) and calls these steps, so the steps are written once
 * and the device pays no call per symbol.
 */
#ifndef AGN_RANS_CORE_H
#define AGN_RANS_CORE_H

#include <string.h>

#include "agn_rans.h"

#define AGN_RANS_UNIT_BITS 16u
#define AGN_RANS_LOW ((uint32_t)1 << AGN_RANS_UNIT_BITS) /* after a read the decoder's state is >= LOW */

/* ---- encoder ---------------------------------------------------------------------------------- */

/* Units are written backwards from the end of out (the encoder runs last symbol first), then moved
 * to the front by agn_rans_flush(). `*p` is the first byte written so far; 0 when out is full. */
static inline int agn_rans_put_unit(uint8_t *out, size_t *p, uint32_t unit, int one_byte)
{
    if (one_byte) {
        if (*p < 1) {
            return 0;
        }
        out[--*p] = (uint8_t)unit;
        return 1;
    }
    if (*p < 2) {
        return 0;
    }
    *p -= 2;
    out[*p] = (uint8_t)(unit & 0xFFu); /* little-endian */
    out[*p + 1] = (uint8_t)(unit >> 8);
    return 1;
}

/* Push one symbol (its prepared table entry e) onto state x. 0 when out is full.
 *   renormalise: while x >= freq * 2^(32-precision), emit the low unit (at most once, since x < 2^32)
 *   x = floor(x / freq) * 2^precision + x mod freq + start      (< 2^32: q < 2^(32-precision))
 * floor(x / freq) comes from the reciprocal with one correction (see agn_rans_symbol). */
static inline int agn_rans_encode_step(uint32_t *x, const agn_rans_symbol *e, unsigned precision, uint8_t *out,
                                       size_t *p)
{
    uint32_t v = *x;
    if (v >= ((uint32_t)e->freq << (32u - precision))) {
        if (!agn_rans_put_unit(out, p, v & 0xFFFFu, 0)) {
            return 0;
        }
        v >>= AGN_RANS_UNIT_BITS;
    }
    /* floor(v / freq) or one less: (v * rcp) >> rcp_shift. rcp_shift is 31 only for freq 1 (rcp
     * 2^31: q = v), else >= 32, so the high word of the product shifted by rcp_shift - 32: no
     * 64-bit shift by a variable amount (several instructions on a 32-bit core) */
    const uint32_t hi = (uint32_t)(((uint64_t)v * e->rcp) >> 32);
    uint32_t q = e->rcp_shift >= 32u ? hi >> (e->rcp_shift - 32u) : v;
    uint32_t r = v - q * e->freq;
    if (r >= e->freq) {
        q++;
        r -= e->freq;
    }
    *x = (q << precision) + r + e->start;
    return 1;
}

/* Flush the final state (low unit, then high unit, so the decoder reads high first; a first unit
 * below 256 is one byte) and move the body from out[p ..] to the front; *out_len gets its length. */
static inline agn_status agn_rans_flush(uint32_t x, uint8_t *out, size_t out_cap, size_t p, size_t *out_len)
{
    int ok = 1;
    if (x >> AGN_RANS_UNIT_BITS) {
        ok = agn_rans_put_unit(out, &p, x & 0xFFFFu, 0) &&
             agn_rans_put_unit(out, &p, x >> AGN_RANS_UNIT_BITS, (x >> AGN_RANS_UNIT_BITS) < 256u);
    } else if (x) {
        ok = agn_rans_put_unit(out, &p, x, x < 256u);
    }
    if (!ok) {
        return AGN_ERR_NOSPACE;
    }
    *out_len = out_cap - p;
    memmove(out, out + p, *out_len);
    return AGN_OK;
}

/* ---- decoder ---------------------------------------------------------------------------------- */

typedef struct agn_rans_reader {
    const uint8_t *body;
    size_t head;  /* bytes of the first unit: 1 when the body length is odd, else 2 */
    size_t units; /* units in the body */
    size_t pos;   /* next unit to read */
    uint32_t x;   /* the state */
} agn_rans_reader;

/* Unit k of the body: the first is one byte when the length is odd, the rest little-endian uint16. */
static inline uint32_t agn_rans_unit(const agn_rans_reader *r, size_t k)
{
    if (k == 0) {
        return r->head == 1u ? (uint32_t)r->body[0] : (uint32_t)r->body[0] | (uint32_t)r->body[1] << 8;
    }
    const size_t at = r->head + 2u * (k - 1u);
    return (uint32_t)r->body[at] | (uint32_t)r->body[at + 1u] << 8;
}

/* Split the body into units and read the initial state. AGN_ERR_DATA for a first unit the encoder
 * never writes (0, or two bytes below 256): such a body is not canonical. */
static inline agn_status agn_rans_reader_open(agn_rans_reader *r, const uint8_t *body, size_t body_len)
{
    r->body = body;
    r->head = (body_len & 1u) ? 1u : 2u;
    r->units = body_len ? 1u + (body_len - r->head) / 2u : 0u;
    r->pos = 0;
    r->x = 0;
    if (r->units) {
        const uint32_t first = agn_rans_unit(r, 0);
        if (first == 0 || (r->head == 2u && first < 256u)) {
            return AGN_ERR_DATA;
        }
    }
    while (r->x < AGN_RANS_LOW && r->pos < r->units) {
        r->x = (r->x << AGN_RANS_UNIT_BITS) | agn_rans_unit(r, r->pos++);
    }
    return AGN_OK;
}

/* Pop one symbol with table row `row` (levels entries): the symbol, or -1 where the body is not
 * an encoding (a unit read where the encoder writes none).
 *   slot = x mod 2^precision;  s: start[s] <= slot < start[s] + freq[s]
 *   x = freq[s] * (x >> precision) + slot - start[s], then read a unit while x < LOW */
static inline int agn_rans_decode_step(agn_rans_reader *r, const agn_rans_symbol *row, uint32_t levels,
                                       unsigned precision)
{
    const uint32_t slot = r->x & ((1u << precision) - 1u);
    uint32_t s = 0;
    while (s + 1u < levels && row[s + 1u].start <= slot) {
        s++;
    }
    r->x = row[s].freq * (r->x >> precision) + slot - row[s].start;
    if (r->x < AGN_RANS_LOW && r->pos < r->units) {
        r->x = (r->x << AGN_RANS_UNIT_BITS) | agn_rans_unit(r, r->pos++);
        if (r->x < ((uint32_t)row[s].freq << (32u - precision))) {
            return -1;
        }
    }
    return (int)s;
}

/* After the last symbol: every unit read and the state back at 0, or the body is not an encoding. */
static inline agn_status agn_rans_reader_close(const agn_rans_reader *r)
{
    return (r->pos == r->units && r->x == 0) ? AGN_OK : AGN_ERR_DATA;
}

#endif /* AGN_RANS_CORE_H */
