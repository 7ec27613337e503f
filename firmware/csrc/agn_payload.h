/* agn_payload.h: the feature payload of docs/protocol.md around the coded body (internal header).
 *
 *   offset size field (little-endian)
 *   0      2    magic "AG"
 *   2      1    payload version (1)
 *   3      1    coder id (AGN_PAYLOAD_CODER_ID: 3 rans or 4 rans-ctx, the bundle's default)
 *   4      1    levels - 1
 *   5      2    channels_total (remote channels of the model)
 *   7      2    channels_sent  (leading remote channels present)
 *   9      2    height
 *   11     2    width
 *   13     ...  rans or rans-ctx body of channels_sent * height * width centroid indices, channel-major
 *                (both bodies obey AGN_RANS_MAX_BODY_BYTES)
 */
#ifndef AGN_PAYLOAD_H
#define AGN_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "agn_common.h"

#define AGN_PAYLOAD_VERSION 1
#define AGN_CODER_ID_RANS 3
#define AGN_CODER_ID_RANS_CTX 4

/* The payload of the first `channels_sent` remote channels of `indices` (channel-major, the
 * model's AGN_REMOTE_CHANNELS x height x width) into out[0 .. cap). AGN_ERR_NOSPACE if it does
 * not fit. */
AGN_WARN_UNUSED agn_status agn_payload_encode(const uint8_t *indices, uint16_t channels_sent, uint8_t *out,
                                              size_t cap, size_t *len);

/* The payload with the most leading channels that fits in `cap` bytes, found exactly as Python's
 * FeatureCodec.encode_within does (all channels if they fit, else a bisection over the channel
 * count that keeps the largest count that fits), so both ends pick the same count for a budget.
 * AGN_ERR_NOSPACE when cap is below the 13-byte header. */
AGN_WARN_UNUSED agn_status agn_payload_encode_within(const uint8_t *indices, uint8_t *out, size_t cap, size_t *len,
                                                     uint16_t *channels_sent);

#endif /* AGN_PAYLOAD_H */
