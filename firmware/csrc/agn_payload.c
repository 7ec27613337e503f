/* agn_payload.c: header + coded body (agn_payload.h), and the byte-budget search of encode_within.
 * The body is the bundle's coder, chosen by the generator (agn_model.h: AGN_PAYLOAD_CODER_ID). */
#include "agn_payload.h"

#include "agn_model.h"

#if AGN_PAYLOAD_CODER_ID != AGN_CODER_ID_RANS && AGN_PAYLOAD_CODER_ID != AGN_CODER_ID_RANS_CTX
#error "agn_model.h names a payload coder this library does not have"
#endif

static void agn_put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

agn_status agn_payload_encode(const uint8_t *indices, uint16_t channels_sent, uint8_t *out, size_t cap, size_t *len)
{
    size_t body = 0;
    agn_status status;
    if (cap < (size_t)AGN_PAYLOAD_HEADER_BYTES) {
        return AGN_ERR_NOSPACE;
    }
    out[0] = (uint8_t)'A';
    out[1] = (uint8_t)'G';
    out[2] = AGN_PAYLOAD_VERSION;
    out[3] = AGN_PAYLOAD_CODER_ID;
    out[4] = (uint8_t)(AGN_LEVELS - 1);
    agn_put_u16(out + 5, AGN_REMOTE_CHANNELS);
    agn_put_u16(out + 7, channels_sent);
    agn_put_u16(out + 9, AGN_FEATURE_HEIGHT);
    agn_put_u16(out + 11, AGN_FEATURE_WIDTH);
#if AGN_PAYLOAD_CODER_ID == AGN_CODER_ID_RANS_CTX
    status = agn_rans_ctx_encode(&agn_model_rans_ctx, indices, channels_sent, out + AGN_PAYLOAD_HEADER_BYTES,
                                 cap - (size_t)AGN_PAYLOAD_HEADER_BYTES, &body);
#else
    status = agn_rans_encode_channels(&agn_model_rans, indices, channels_sent,
                                      (size_t)AGN_FEATURE_HEIGHT * AGN_FEATURE_WIDTH, out + AGN_PAYLOAD_HEADER_BYTES,
                                      cap - (size_t)AGN_PAYLOAD_HEADER_BYTES, &body);
#endif
    if (status != AGN_OK) {
        return status;
    }
    *len = (size_t)AGN_PAYLOAD_HEADER_BYTES + body;
    return AGN_OK;
}

agn_status agn_payload_encode_within(const uint8_t *indices, uint8_t *out, size_t cap, size_t *len,
                                     uint16_t *channels_sent)
{
    uint16_t lo = 0, hi = (uint16_t)(AGN_REMOTE_CHANNELS - 1);
    agn_status status = agn_payload_encode(indices, AGN_REMOTE_CHANNELS, out, cap, len);
    if (status != AGN_ERR_NOSPACE) {
        *channels_sent = AGN_REMOTE_CHANNELS;
        return status;
    }
    if (cap < (size_t)AGN_PAYLOAD_HEADER_BYTES) {
        return AGN_ERR_NOSPACE;
    }
    /* invariant: lo channels fit (0 channels is the header alone), AGN_REMOTE_CHANNELS do not */
    while (lo < hi) {
        const uint16_t mid = (uint16_t)((lo + hi + 1u) / 2u);
        status = agn_payload_encode(indices, mid, out, cap, len);
        if (status == AGN_OK) {
            lo = mid;
        } else if (status == AGN_ERR_NOSPACE) {
            hi = (uint16_t)(mid - 1u);
        } else {
            return status;
        }
    }
    *channels_sent = lo;
    return agn_payload_encode(indices, lo, out, cap, len); /* the buffer may hold a larger failed try */
}
