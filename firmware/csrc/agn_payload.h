/* agn_payload.h: the feature payload of docs/protocol.md around the coded body (internal header).
 * The library writes payload version 2, the compact header:
 *
 *   offset size field
 *   0      1    0xA0 | coder id (AGN_PAYLOAD_CODER_ID: 3 rans or 4 rans-ctx, the bundle's default)
 *   1      1    model check (AGN_PAYLOAD_MODEL_CHECK: the low byte of CRC-32 over version 1's model
 *               fields levels - 1, channels_total, height, width; the generator computes it)
 *   2      1-3  channels_sent, unsigned LEB128 (7 bits per byte, low first, 0x80 = more follow)
 *   ...         rans or rans-ctx body of channels_sent * height * width centroid indices, channel-major
 *                (both bodies obey AGN_RANS_MAX_BODY_BYTES)
 *
 * Version 1's 13-byte header spelt the model fields out; the receiver has them in its manifest, so
 * version 2 sends their check byte instead: 10 bytes less on every inference.
 */
#ifndef AGN_PAYLOAD_H
#define AGN_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "agn_common.h"

#define AGN_PAYLOAD_VERSION 2
#define AGN_PAYLOAD_COMPACT_TAG 0xA0u
#define AGN_CODER_ID_RANS 3
#define AGN_CODER_ID_RANS_CTX 4

/* Bytes of the header in front of `channels_sent` channels: 2 + the LEB128 length. */
#define AGN_PAYLOAD_HEADER_SIZE(channels_sent) (3u + ((channels_sent) >= 128u) + ((channels_sent) >= 16384u))

/* The payload of the first `channels_sent` remote channels of `indices` (channel-major, the
 * model's AGN_REMOTE_CHANNELS x height x width) into out[0 .. cap). AGN_ERR_NOSPACE if it does
 * not fit. */
AGN_WARN_UNUSED agn_status agn_payload_encode(const uint8_t *indices, uint16_t channels_sent, uint8_t *out,
                                              size_t cap, size_t *len);

/* The payload with the most leading channels that fits in `cap` bytes, found exactly as Python's
 * FeatureCodec.encode_within does (all channels if they fit, else a bisection over the channel
 * count that keeps the largest count that fits), so both ends pick the same count for a budget.
 * AGN_ERR_NOSPACE when cap is below the header of zero channels (AGN_PAYLOAD_MIN_BYTES). */
AGN_WARN_UNUSED agn_status agn_payload_encode_within(const uint8_t *indices, uint8_t *out, size_t cap, size_t *len,
                                                     uint16_t *channels_sent);

#endif /* AGN_PAYLOAD_H */
