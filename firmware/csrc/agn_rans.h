/* agn_rans.h: the rANS entropy coder of payload coder id 3 ("rans"), C99, no malloc.
 *
 * docs/protocol.md ("rans body") specifies the format to the bit; codec/rans.py is the Python
 * implementation. This coder only sees symbols, table indices and integer frequency tables: the
 * tables come from the bundle's manifest (coder.frequencies, coder.frequency_bits), computed once
 * in Python; nothing here recomputes them.
 *
 *   state        uint32 x, starts at 0 (the decoder must end at 0)
 *   encode s     symbols in reverse order: if x >= freq << (32 - precision), emit x & 0xFFFF and
 *                x >>= 16; then x = (x / freq) * 2^precision + x % freq + start
 *   flush        the final state as 0, 1 or 2 units (high unit first)
 *   body         units in the reverse order of emission, little-endian uint16 each, except that
 *                the first unit is a single byte when its value is below 256
 *
 * The encoder's inner loop has no division: x / freq is a 32x32->64 multiply by a per-symbol
 * reciprocal plus one correction step (see agn_rans_symbol), which is UMULL on a Cortex-M.
 *
 * Example usage (order 0: remote channel c is coded with table c, 49 positions per channel):
 *
 *     static agn_rans_symbol syms[19 * 4];
 *     agn_rans_model model;
 *     if (agn_rans_prepare(freq, 19, 4, 12, syms, 19 * 4, &model) != AGN_OK) ...;   // once
 *     uint8_t body[AGN_RANS_MAX_BODY_BYTES(19 * 49)];
 *     size_t len;
 *     if (agn_rans_encode_channels(&model, indices, 19, 49, body, sizeof body, &len) != AGN_OK) ...;
 */
#ifndef AGN_RANS_H
#define AGN_RANS_H

#include <stddef.h>
#include <stdint.h>

#include "agn_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AGN_RANS_MAX_PRECISION 16 /* 2^precision is the total of every frequency row */
#define AGN_RANS_MAX_LEVELS 256   /* symbols are uint8 */

/* Worst-case body of `count` symbols: at most one 2-byte unit per symbol plus the 4-byte flush. */
#define AGN_RANS_MAX_BODY_BYTES(count) (2u * (size_t)(count) + 4u)

/* One (table, symbol) entry, prepared from its frequency by agn_rans_prepare().
 *
 * Division by reciprocal (after Alverson, "Integer division using reciprocals", 1991, and
 * F. Giesen's rans_byte.h notes): with l = ceil(log2 freq), rcp = floor(2^(31+l) / freq) < 2^32
 * and q0 = (x * rcp) >> (31 + l). For x < freq * 2^(32-precision) (the encoder's state after
 * renormalisation) the error x / 2^(31+l) is below 1, so q0 is floor(x / freq) or one less, and
 * one compare of the remainder fixes it: exact for every x, no division in the loop. */
typedef struct agn_rans_symbol {
    uint32_t rcp;      /* floor(2^(31+l) / freq) */
    uint16_t freq;     /* 1 .. 2^precision - 1 */
    uint16_t start;    /* sum of the frequencies of the smaller symbols of the same table */
    uint8_t rcp_shift; /* 31 + l, l = ceil(log2 freq), so 31 .. 47 */
} agn_rans_symbol;

/* A set of prepared tables: symbols[t * levels + s] is symbol s of table t. */
typedef struct agn_rans_model {
    const agn_rans_symbol *symbols;
    uint32_t num_tables;
    uint16_t levels;   /* 2 .. 256 */
    uint8_t precision; /* 1 .. 16 */
} agn_rans_model;

/* Prepare num_tables rows of `levels` frequencies (freq[t * levels + s], each >= 1, each row
 * summing to exactly 2^precision) into the caller's symbols[] (symbols_cap entries, at least
 * num_tables * levels) and describe them in *model. Called once at start-up (it divides once per
 * entry), or replaced by const tables that the generator writes with the same values.
 * AGN_ERR_ARG for a NULL pointer, a bad size or a table that breaks the rules; AGN_ERR_NOSPACE
 * when symbols_cap is too small. */
AGN_WARN_UNUSED agn_status agn_rans_prepare(const uint16_t *freq, uint32_t num_tables, uint16_t levels,
                                            unsigned precision, agn_rans_symbol *symbols, size_t symbols_cap,
                                            agn_rans_model *model);

/* Encode count symbols, symbol i with table tables[i], into out (out_cap bytes); *out_len gets the
 * body length. out_cap >= AGN_RANS_MAX_BODY_BYTES(count) always suffices; a smaller out_cap is a
 * byte budget: AGN_ERR_NOSPACE when the body does not fit (out's contents are then unspecified).
 * AGN_ERR_ARG for NULL pointers or a symbol/table index out of range. */
AGN_WARN_UNUSED agn_status agn_rans_encode(const agn_rans_model *model, const uint8_t *symbols,
                                           const uint16_t *tables, size_t count,
                                           uint8_t *out, size_t out_cap, size_t *out_len);

/* Order 0 (coder id 3): `channels` runs of `positions` symbols, channel-major; channel c is coded
 * with table c (channels <= model->num_tables). Otherwise as agn_rans_encode(). */
AGN_WARN_UNUSED agn_status agn_rans_encode_channels(const agn_rans_model *model, const uint8_t *symbols,
                                                    size_t channels, size_t positions,
                                                    uint8_t *out, size_t out_cap, size_t *out_len);

/* Decode exactly count symbols (table tables[i] for symbol i) from body[0 .. body_len) into
 * symbols_out (count bytes). AGN_ERR_DATA unless body is exactly the encoding of some symbols
 * (a truncated, extended or altered body is rejected, never decoded into other symbols); it reads
 * no byte outside body and writes no byte outside symbols_out. */
AGN_WARN_UNUSED agn_status agn_rans_decode(const agn_rans_model *model, const uint8_t *body, size_t body_len,
                                           const uint16_t *tables, size_t count, uint8_t *symbols_out);

/* Order 0 counterpart of agn_rans_encode_channels(). */
AGN_WARN_UNUSED agn_status agn_rans_decode_channels(const agn_rans_model *model, const uint8_t *body,
                                                    size_t body_len, size_t channels, size_t positions,
                                                    uint8_t *symbols_out);

#ifdef __cplusplus
}
#endif

#endif /* AGN_RANS_H */
