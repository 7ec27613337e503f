/* agn_rans_ctx.c: context-adaptive rANS of payload coder id 4; the format is docs/protocol.md
 * ("rans-ctx body"), a rans body (agn_rans.c) whose table per symbol follows its neighbours.
 *
 * The coding steps are agn_rans.c's, shared as static inline functions (agn_rans_core.h): this
 * file's loops compute the context inline and pay no call per symbol.
 */
#include "agn_rans_ctx.h"

#include "agn_rans_core.h"

static int model_ok(const agn_rans_ctx_model *m)
{
    const agn_rans_model *r = m ? m->rows : NULL;
    return r && r->symbols && m->bins && m->row_map && r->num_tables > 0 &&
           r->num_tables <= AGN_RANS_CTX_MAX_ROWS && r->levels >= 2 && r->precision >= 1 &&
           r->precision <= AGN_RANS_MAX_PRECISION && m->num_neighbours >= 1 &&
           m->num_neighbours <= AGN_RANS_CTX_MAX_NEIGHBOURS && m->num_bins >= 1 && m->num_bins <= 256 &&
           m->channels > 0 && m->height > 0 && m->width > 0;
}

/* The context rule as one weight per neighbour kind. With B = num_bins,
 *
 *     ctx(i) = sum_j bins[v_j] * B^(n-1-j) = bins[v_left] * w_left + bins[v_up] * w_up + bins[v_prev] * w_prev
 *
 * where w_kind sums B^(n-1-j) over the j that name that kind (0 when none does; repeats, which C
 * allows and the manifest forbids, add up the same way). So the loops compute a context with three
 * lookups and no per-neighbour switch: on the device the contexts cost as much as the coding. */
typedef struct ctx_rule {
    uint32_t contexts; /* B^n <= 2^24 */
    uint32_t weight[AGN_CTX_PREV + 1];
} ctx_rule;

/* The rule of a model, after checking what the loops then need not check per symbol: known
 * neighbour kinds, channels * B^n <= 2^24, every bin (levels + 1 entries) < B. */
static int rule_of(const agn_rans_ctx_model *m, ctx_rule *rule)
{
    uint32_t contexts = 1;
    for (unsigned k = 0; k <= AGN_CTX_PREV; k++) {
        rule->weight[k] = 0;
    }
    for (unsigned k = m->num_neighbours; k-- > 0;) { /* the last neighbour is the least significant */
        if (m->neighbours[k] > AGN_CTX_PREV) {
            return 0;
        }
        rule->weight[m->neighbours[k]] += contexts;
        contexts *= m->num_bins;
    }
    if ((uint64_t)contexts * m->channels > ((uint64_t)1 << 24)) {
        return 0;
    }
    for (uint32_t v = 0; v <= m->rows->levels; v++) {
        if (m->bins[v] >= m->num_bins) {
            return 0;
        }
    }
    rule->contexts = contexts;
    return 1;
}

/* The table of the symbol at index i = (c * height + y) * width + x, from sym[] (which holds the
 * neighbours, each < levels: the input when encoding, the output so far when decoding) and the row
 * map of channel c. May be >= num_tables when the row map breaks its rules (the caller checks). */
static inline uint32_t table_at(const agn_rans_ctx_model *m, const ctx_rule *rule, const uint8_t *channel_map,
                                const uint8_t *sym, size_t i, size_t c, size_t y, size_t x, size_t plane)
{
    const uint32_t outside = m->rows->levels;
    const uint8_t *bins = m->bins;
    const uint32_t left = x ? sym[i - 1u] : outside;
    const uint32_t up = y ? sym[i - m->width] : outside;
    const uint32_t prev = c ? sym[i - plane] : outside;
    return channel_map[bins[left] * rule->weight[AGN_CTX_LEFT] + bins[up] * rule->weight[AGN_CTX_UP] +
                       bins[prev] * rule->weight[AGN_CTX_PREV]];
}

agn_status agn_rans_ctx_encode(const agn_rans_ctx_model *model, const uint8_t *symbols, size_t channels_sent,
                               uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!model_ok(model) || !out || !out_len || channels_sent > model->channels || (!symbols && channels_sent)) {
        return AGN_ERR_ARG;
    }
    ctx_rule rule;
    if (!rule_of(model, &rule)) {
        return AGN_ERR_ARG;
    }
    const agn_rans_model *rows = model->rows;
    const size_t plane = (size_t)model->height * model->width;
    const size_t count = channels_sent * plane;
    /* Neighbours are read before they are coded (the encoder runs backwards): check them all first. */
    for (size_t i = 0; i < count; i++) {
        if (symbols[i] >= rows->levels) {
            return AGN_ERR_ARG;
        }
    }
    const unsigned precision = rows->precision;
    /* the loop's constants in locals (the compiler cannot keep struct fields in registers across
     * the stores to out); the context as table_at() computes it, with the bin of a neighbour
     * outside the payload (bins[levels]) looked up once */
    const uint8_t *bins = model->bins;
    const uint32_t levels = rows->levels, num_tables = rows->num_tables, width = model->width;
    const uint32_t w_left = rule.weight[AGN_CTX_LEFT], w_up = rule.weight[AGN_CTX_UP];
    const uint32_t w_prev = rule.weight[AGN_CTX_PREV], outside = bins[levels];
    const agn_rans_symbol *table = rows->symbols;
    size_t p = out_cap;
    uint32_t x = 0; /* the initial state */
    size_t i = count;
    for (size_t c = channels_sent; c-- > 0;) {
        const uint8_t *channel_map = model->row_map + c * rule.contexts;
        for (size_t yy = model->height; yy-- > 0;) {
            for (size_t xx = width; xx-- > 0;) {
                i--;
                const uint32_t left = xx ? bins[symbols[i - 1u]] : outside;
                const uint32_t up = yy ? bins[symbols[i - width]] : outside;
                const uint32_t prev = c ? bins[symbols[i - plane]] : outside;
                const uint32_t t = channel_map[left * w_left + up * w_up + prev * w_prev];
                if (t >= num_tables) {
                    return AGN_ERR_ARG;
                }
                if (!agn_rans_encode_step(&x, &table[t * levels + symbols[i]], precision, out, &p)) {
                    return AGN_ERR_NOSPACE;
                }
            }
        }
    }
    return agn_rans_flush(x, out, out_cap, p, out_len);
}

agn_status agn_rans_ctx_decode(const agn_rans_ctx_model *model, const uint8_t *body, size_t body_len,
                               size_t channels_sent, uint8_t *symbols_out)
{
    if (!model_ok(model) || (!body && body_len) || channels_sent > model->channels ||
        (!symbols_out && channels_sent)) {
        return AGN_ERR_ARG;
    }
    ctx_rule rule;
    if (!rule_of(model, &rule)) {
        return AGN_ERR_ARG;
    }
    const agn_rans_model *rows = model->rows;
    const size_t plane = (size_t)model->height * model->width;
    const size_t count = channels_sent * plane;
    if (body_len > AGN_RANS_MAX_BODY_BYTES(count)) {
        return AGN_ERR_DATA; /* longer than any encoding of count symbols */
    }
    agn_rans_reader r;
    if (agn_rans_reader_open(&r, body, body_len) != AGN_OK) {
        return AGN_ERR_DATA;
    }
    size_t i = 0;
    for (size_t c = 0; c < channels_sent; c++) {
        const uint8_t *channel_map = model->row_map + c * rule.contexts;
        for (size_t yy = 0; yy < model->height; yy++) {
            for (size_t xx = 0; xx < model->width; xx++, i++) {
                const uint32_t t = table_at(model, &rule, channel_map, symbols_out, i, c, yy, xx, plane);
                if (t >= rows->num_tables) {
                    return AGN_ERR_ARG;
                }
                const int s = agn_rans_decode_step(&r, &rows->symbols[(size_t)t * rows->levels], rows->levels,
                                                   rows->precision);
                if (s < 0) {
                    return AGN_ERR_DATA;
                }
                symbols_out[i] = (uint8_t)s;
            }
        }
    }
    return agn_rans_reader_close(&r);
}
