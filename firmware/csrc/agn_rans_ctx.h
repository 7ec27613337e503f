/* agn_rans_ctx.h: context-adaptive rANS of payload coder id 4 ("rans-ctx"), C99, no malloc.
 *
 * docs/protocol.md ("rans-ctx body") specifies the format; codec/rans_ctx.py is the Python
 * implementation. The body is a rans body (agn_rans.h: same state, units, bytes and checks); only
 * the table of each symbol differs. Symbol i at (channel c, row y, column x) is coded with
 *
 *     t(i) = row_map[c * contexts + ctx(i)],   ctx(i) = sum_j bins[v_j] * num_bins^(n-1-j)
 *
 * where v_j is the value of neighbour j (AGN_CTX_LEFT: (c, y, x-1), AGN_CTX_UP: (c, y-1, x),
 * AGN_CTX_PREV: (c-1, y, x)) or `levels` when that position is outside the payload, and
 * contexts = num_bins^n. Every neighbour comes earlier in coding order (channel-major, row-major),
 * so the decoder knows ctx(i) before decoding symbol i; the encoder, which runs last symbol first,
 * reads the neighbours straight from the input. No division anywhere in the loops (the encoder uses
 * agn_rans_symbol's reciprocals).
 *
 * Tables: the manifest's coder.context (bins, row_map, frequency rows), prepared once with
 * agn_rans_prepare() or emitted as const by the generator. Flash for the shipped Fashion-MNIST
 * bundle: 31 rows x 4 levels x 12 B + 19 x 125 B row map + 5 B bins = 3,868 B.
 *
 * Example usage (19 remote channels of 7x7, neighbours left, up, prev, 5 bins):
 *
 *     static const uint8_t bins[5] = {0, 1, 2, 3, 4};
 *     static const uint8_t row_map[19 * 125] = {...};
 *     agn_rans_model rows;                                   // agn_rans_prepare(freq, 31, 4, 12, ...)
 *     const agn_rans_ctx_model ctx = {&rows, bins, row_map, {AGN_CTX_LEFT, AGN_CTX_UP, AGN_CTX_PREV},
 *                                     3, 5, 19, 7, 7};
 *     uint8_t body[AGN_RANS_MAX_BODY_BYTES(19 * 49)];
 *     size_t len;
 *     if (agn_rans_ctx_encode(&ctx, indices, 19, body, sizeof body, &len) != AGN_OK) ...;
 */
#ifndef AGN_RANS_CTX_H
#define AGN_RANS_CTX_H

#include <stddef.h>
#include <stdint.h>

#include "agn_common.h"
#include "agn_rans.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AGN_RANS_CTX_MAX_NEIGHBOURS 3
#define AGN_RANS_CTX_MAX_ROWS 256 /* row_map entries are uint8 */

/* Neighbour kinds, in the manifest's names. */
enum { AGN_CTX_LEFT = 0, AGN_CTX_UP = 1, AGN_CTX_PREV = 2 };

typedef struct agn_rans_ctx_model {
    const agn_rans_model *rows; /* the frequency rows, prepared (num_tables <= 256) */
    const uint8_t *bins;        /* rows->levels + 1 entries, each < num_bins; the last is "outside" */
    const uint8_t *row_map;     /* channels * num_bins^num_neighbours entries, each < rows->num_tables */
    uint8_t neighbours[AGN_RANS_CTX_MAX_NEIGHBOURS]; /* AGN_CTX_*, most significant first */
    uint8_t num_neighbours;     /* 1 .. 3 */
    uint16_t num_bins;          /* 1 .. 256 */
    uint16_t channels;          /* channels_total: rows of row_map */
    uint16_t height, width;     /* positions per channel */
} agn_rans_ctx_model;

/* Encode channels_sent x height x width symbols (channel-major, row-major; channels_sent <=
 * channels) into out (out_cap bytes); *out_len gets the body length. out_cap >=
 * AGN_RANS_MAX_BODY_BYTES(channels_sent * height * width) always suffices; a smaller out_cap is a
 * byte budget (AGN_ERR_NOSPACE when the body does not fit). AGN_ERR_ARG for NULL pointers, a bad
 * model (a neighbour kind or bin out of range, checked first; a row out of range, found while
 * coding) or a symbol >= levels. */
AGN_WARN_UNUSED agn_status agn_rans_ctx_encode(const agn_rans_ctx_model *model, const uint8_t *symbols,
                                               size_t channels_sent, uint8_t *out, size_t out_cap,
                                               size_t *out_len);

/* Decode channels_sent x height x width symbols from body[0 .. body_len) into symbols_out.
 * AGN_ERR_DATA unless body is exactly the encoding of some symbols (as agn_rans_decode); reads no
 * byte outside body, writes no byte outside symbols_out. */
AGN_WARN_UNUSED agn_status agn_rans_ctx_decode(const agn_rans_ctx_model *model, const uint8_t *body,
                                               size_t body_len, size_t channels_sent, uint8_t *symbols_out);

#ifdef __cplusplus
}
#endif

#endif /* AGN_RANS_CTX_H */
