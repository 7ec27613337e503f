/* agn_payload.c: header + coded body (agn_payload.h), and the byte-budget search of encode_within.
 * The body is the bundle's coder, chosen by the generator (agn_model.h: AGN_PAYLOAD_CODER_ID). */
#include "agn_payload.h"

#include "agn_model.h"

#if AGN_PAYLOAD_CODER_ID != AGN_CODER_ID_RANS && AGN_PAYLOAD_CODER_ID != AGN_CODER_ID_RANS_CTX
#error "agn_model.h names a payload coder this library does not have"
#endif

/* The public header's sizes are the generator's numbers; they must be the ones this file writes. */
AGN_STATIC_ASSERT(AGN_PAYLOAD_MIN_BYTES == AGN_PAYLOAD_HEADER_SIZE(0u), payload_min_is_the_empty_header);
AGN_STATIC_ASSERT(AGN_PAYLOAD_HEADER_BYTES == AGN_PAYLOAD_HEADER_SIZE(AGN_REMOTE_CHANNELS), payload_header_bytes);

/* The compact header (agn_payload.h) into out; its length. out has room for
 * AGN_PAYLOAD_HEADER_SIZE(channels_sent) bytes. */
static size_t agn_put_header(uint8_t *out, uint32_t channels_sent)
{
    size_t n = 2;
    out[0] = (uint8_t)(AGN_PAYLOAD_COMPACT_TAG | AGN_PAYLOAD_CODER_ID);
    out[1] = (uint8_t)AGN_PAYLOAD_MODEL_CHECK;
    while (channels_sent >= 0x80u) { /* LEB128: 7 bits a byte, the low ones first */
        out[n++] = (uint8_t)(0x80u | (channels_sent & 0x7Fu));
        channels_sent >>= 7;
    }
    out[n++] = (uint8_t)channels_sent;
    return n;
}

agn_status agn_payload_encode(const uint8_t *indices, uint16_t channels_sent, uint8_t *out, size_t cap, size_t *len)
{
    size_t body = 0, head;
    agn_status status;
    if (cap < (size_t)AGN_PAYLOAD_HEADER_SIZE(channels_sent)) {
        return AGN_ERR_NOSPACE;
    }
    head = agn_put_header(out, channels_sent);
#if AGN_PAYLOAD_CODER_ID == AGN_CODER_ID_RANS_CTX
    status = agn_rans_ctx_encode(&agn_model_rans_ctx, indices, channels_sent, out + head, cap - head, &body);
#else
    status = agn_rans_encode_channels(&agn_model_rans, indices, channels_sent,
                                      (size_t)AGN_FEATURE_HEIGHT * AGN_FEATURE_WIDTH, out + head, cap - head, &body);
#endif
    if (status != AGN_OK) {
        return status;
    }
    *len = head + body;
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
    if (cap < (size_t)AGN_PAYLOAD_MIN_BYTES) {
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
