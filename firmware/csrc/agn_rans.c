/* agn_rans.c: rANS coder of payload coder id 3; the format is docs/protocol.md ("rans body").
 *
 * Written from the spec; the construction is Duda's asymmetric numeral systems (arXiv:1311.2540)
 * in the range variant with the interleaving-free, 32-bit-state layout described in F. Giesen's
 * "rANS notes" / rans_byte.h, here with 16-bit renormalisation units. No code is taken from them.
 */
#include "agn_rans.h"

#include "agn_rans_core.h"

/* Table of symbol i: tables[i], or (order 0, tables == NULL) the channel i / run. */
static uint32_t table_of(const uint16_t *tables, size_t run, size_t i)
{
    return tables ? tables[i] : (uint32_t)(i / run);
}

agn_status agn_rans_prepare(const uint16_t *freq, uint32_t num_tables, uint16_t levels, unsigned precision,
                            agn_rans_symbol *symbols, size_t symbols_cap, agn_rans_model *model)
{
    if (!freq || !symbols || !model || num_tables == 0 || levels < 2 || levels > AGN_RANS_MAX_LEVELS ||
        precision < 1 || precision > AGN_RANS_MAX_PRECISION || levels > (1u << precision)) {
        return AGN_ERR_ARG;
    }
    if ((uint64_t)num_tables * levels > (uint64_t)symbols_cap) {
        return AGN_ERR_NOSPACE;
    }
    for (uint32_t t = 0; t < num_tables; t++) {
        uint32_t start = 0;
        for (uint32_t s = 0; s < levels; s++) {
            uint32_t f = freq[(size_t)t * levels + s];
            if (f == 0 || start + f > (1u << precision)) {
                return AGN_ERR_ARG; /* every symbol needs freq >= 1; a row must not pass 2^precision */
            }
            unsigned l = 0; /* l = ceil(log2 f) */
            while ((1u << l) < f) {
                l++;
            }
            agn_rans_symbol *e = &symbols[(size_t)t * levels + s];
            e->rcp = (uint32_t)(((uint64_t)1 << (31u + l)) / f); /* < 2^32 because f > 2^(l-1) */
            e->freq = (uint16_t)f;                                /* < 2^16: levels >= 2, all >= 1 */
            e->start = (uint16_t)start;
            e->rcp_shift = (uint8_t)(31u + l);
            start += f;
        }
        if (start != (1u << precision)) {
            return AGN_ERR_ARG;
        }
    }
    model->symbols = symbols;
    model->num_tables = num_tables;
    model->levels = levels;
    model->precision = (uint8_t)precision;
    return AGN_OK;
}

static int model_ok(const agn_rans_model *model)
{
    return model && model->symbols && model->num_tables > 0 && model->levels >= 2 &&
           model->precision >= 1 && model->precision <= AGN_RANS_MAX_PRECISION;
}

static agn_status encode(const agn_rans_model *model, const uint8_t *symbols, const uint16_t *tables, size_t run,
                         size_t count, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!model_ok(model) || (!symbols && count) || !out || !out_len) {
        return AGN_ERR_ARG;
    }
    const unsigned precision = model->precision;
    size_t p = out_cap;
    uint32_t x = 0; /* the initial state */
    for (size_t k = count; k-- > 0;) {
        const uint32_t t = table_of(tables, run, k);
        const uint32_t s = symbols[k];
        if (t >= model->num_tables || s >= model->levels) {
            return AGN_ERR_ARG;
        }
        if (!agn_rans_encode_step(&x, &model->symbols[(size_t)t * model->levels + s], precision, out, &p)) {
            return AGN_ERR_NOSPACE;
        }
    }
    return agn_rans_flush(x, out, out_cap, p, out_len);
}

agn_status agn_rans_encode(const agn_rans_model *model, const uint8_t *symbols, const uint16_t *tables, size_t count,
                           uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!tables && count) {
        return AGN_ERR_ARG;
    }
    return encode(model, symbols, tables, 1, count, out, out_cap, out_len);
}

agn_status agn_rans_encode_channels(const agn_rans_model *model, const uint8_t *symbols, size_t channels,
                                    size_t positions, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!model || channels > model->num_tables || (channels && positions > SIZE_MAX / channels)) {
        return AGN_ERR_ARG;
    }
    return encode(model, symbols, NULL, positions ? positions : 1, channels * positions, out, out_cap, out_len);
}

static agn_status decode(const agn_rans_model *model, const uint8_t *body, size_t body_len, const uint16_t *tables,
                         size_t run, size_t count, uint8_t *symbols_out)
{
    if (!model_ok(model) || (!body && body_len) || (!symbols_out && count)) {
        return AGN_ERR_ARG;
    }
    if (count > (SIZE_MAX - 4u) / 2u || body_len > AGN_RANS_MAX_BODY_BYTES(count)) {
        return AGN_ERR_DATA; /* longer than any encoding of count symbols */
    }
    agn_rans_reader r;
    if (agn_rans_reader_open(&r, body, body_len) != AGN_OK) {
        return AGN_ERR_DATA;
    }
    for (size_t i = 0; i < count; i++) {
        const uint32_t t = table_of(tables, run, i);
        if (t >= model->num_tables) {
            return AGN_ERR_ARG;
        }
        const int s = agn_rans_decode_step(&r, &model->symbols[(size_t)t * model->levels], model->levels,
                                           model->precision);
        if (s < 0) {
            return AGN_ERR_DATA;
        }
        symbols_out[i] = (uint8_t)s;
    }
    return agn_rans_reader_close(&r);
}

agn_status agn_rans_decode(const agn_rans_model *model, const uint8_t *body, size_t body_len, const uint16_t *tables,
                           size_t count, uint8_t *symbols_out)
{
    if (!tables && count) {
        return AGN_ERR_ARG;
    }
    return decode(model, body, body_len, tables, 1, count, symbols_out);
}

agn_status agn_rans_decode_channels(const agn_rans_model *model, const uint8_t *body, size_t body_len,
                                    size_t channels, size_t positions, uint8_t *symbols_out)
{
    if (!model || channels > model->num_tables || (channels && positions > SIZE_MAX / channels)) {
        return AGN_ERR_ARG;
    }
    return decode(model, body, body_len, NULL, positions ? positions : 1, channels * positions, symbols_out);
}
