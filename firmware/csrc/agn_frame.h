/* agn_frame.h: serial frames between the MCU and the agent, C99, no malloc.
 *
 * docs/serial-protocol.md is the reference and device_agent/framing.py the Python implementation;
 * the bytes here are the same. A frame before stuffing (little-endian):
 *
 *     offset  size  field
 *     0       1     protocol version (AGN_FRAME_VERSION_MIN .. AGN_FRAME_VERSION_MAX)
 *     1       1     message type
 *     2       2     seq
 *     4       2     length L of the payload, 0 .. AGN_FRAME_MAX_PAYLOAD
 *     6       L     payload
 *     6+L     4     CRC-32/ISO-HDLC (zlib.crc32) of bytes 0 .. 6+L-1
 *
 * On the wire: 0x00, COBS(frame), 0x00. Sending: agn_frame_encode() writes all of that into one
 * buffer (no scratch buffer: it stuffs while it reads header, payload and CRC). Receiving: push
 * every byte into an agn_frame_reader; when it returns a chunk, agn_frame_decode() it (in place).
 *
 * Example usage (sending one frame):
 *
 *     uint8_t wire[AGN_FRAME_WIRE_BYTES(AGN_PAYLOAD_MAX_BYTES)];
 *     size_t n;
 *     if (agn_frame_encode(2, 0x03, seq, payload, payload_len, wire, sizeof wire, &n) == AGN_OK)
 *         uart_write(wire, n);
 */
#ifndef AGN_FRAME_H
#define AGN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "agn_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AGN_FRAME_VERSION_MIN 1      /* protocol versions agn_frame_decode() accepts */
#define AGN_FRAME_VERSION_MAX 3
#define AGN_FRAME_HEADER_BYTES 6
#define AGN_FRAME_CRC_BYTES 4
#define AGN_FRAME_MAX_PAYLOAD 16384  /* MAX_PAYLOAD of framing.py */
#define AGN_FRAME_DELIMITER 0x00

/* Frame bytes before stuffing for a payload of n bytes. */
#define AGN_FRAME_RAW_BYTES(n) ((size_t)AGN_FRAME_HEADER_BYTES + (size_t)(n) + (size_t)AGN_FRAME_CRC_BYTES)
/* COBS output for n input bytes, worst case: one code byte per started run of 254 bytes, and one
 * for the (possibly empty) last run: n + floor(n / 254) + 1 <= n + ceil(n / 254) for n >= 1. */
#define AGN_COBS_MAX_ENCODED(n) ((size_t)(n) + (size_t)(n) / 254u + 1u)
/* Everything agn_frame_encode() writes for a payload of n bytes: both delimiters and the stuffing. */
#define AGN_FRAME_WIRE_BYTES(n) (AGN_COBS_MAX_ENCODED(AGN_FRAME_RAW_BYTES(n)) + 2u)
/* Longest chunk (between delimiters) a receiver must hold: MAX_ENCODED of framing.py, 16459. */
#define AGN_FRAME_MAX_ENCODED AGN_COBS_MAX_ENCODED(AGN_FRAME_RAW_BYTES(AGN_FRAME_MAX_PAYLOAD))

/* CRC-32/ISO-HDLC (poly 0x04C11DB7 reflected, init and final XOR 0xFFFFFFFF) continued over
 * data: start with crc = 0, as zlib.crc32(data, crc). Table-driven with a const 1 KB table. */
uint32_t agn_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* COBS (Cheshire & Baker, 1999) of in[0 .. len) into out (out_cap bytes, enough:
 * AGN_COBS_MAX_ENCODED(len)); *out_len gets the length. AGN_ERR_NOSPACE if out is too small. */
AGN_WARN_UNUSED agn_status agn_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap,
                                           size_t *out_len);

/* Undo COBS: in[0 .. len) (a chunk without delimiters) into out, writing at most out_cap bytes
 * (the decoded size is at most len, so out_cap = len always suffices); in place (out == in) works.
 * AGN_ERR_FRAME for a zero byte or a block that runs past the end, AGN_ERR_NOSPACE when the
 * output would pass out_cap. */
AGN_WARN_UNUSED agn_status agn_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap,
                                           size_t *out_len);

/* One whole frame on the wire: 0x00, COBS(header payload CRC), 0x00, into out (out_cap bytes;
 * AGN_FRAME_WIRE_BYTES(payload_len) always suffices). AGN_ERR_ARG for a payload over
 * AGN_FRAME_MAX_PAYLOAD or NULL pointers, AGN_ERR_NOSPACE if out is too small. */
AGN_WARN_UNUSED agn_status agn_frame_encode(uint8_t version, uint8_t type, uint16_t seq, const uint8_t *payload,
                                            size_t payload_len, uint8_t *out, size_t out_cap, size_t *out_len);

/* A decoded frame; payload points into the buffer that agn_frame_decode() decoded into. */
typedef struct agn_frame {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    const uint8_t *payload;
    size_t payload_len;
} agn_frame;

/* Decode one chunk (the bytes between two delimiters) into work (work_cap bytes; work == chunk
 * decodes in place). Checks in the order of the spec: COBS, then length (the length field must
 * equal decoded size - 10), then CRC, then version, then the payload limit.
 * Returns AGN_OK; AGN_ERR_FRAME (COBS, length or CRC: answer BAD_FRAME, seq 0xFFFF);
 * AGN_ERR_VERSION (CRC good, version outside AGN_FRAME_VERSION_MIN..MAX: frame->seq and
 * frame->version are valid, answer BAD_VERSION with that seq); AGN_ERR_TOO_LONG (CRC good, payload
 * over AGN_FRAME_MAX_PAYLOAD: frame->seq valid, answer BAD_MESSAGE); AGN_ERR_NOSPACE (work_cap too
 * small for the decoded chunk); AGN_ERR_ARG (NULL pointers). */
AGN_WARN_UNUSED agn_status agn_frame_decode(const uint8_t *chunk, size_t chunk_len, uint8_t *work, size_t work_cap,
                                            agn_frame *frame);

/* Incremental receiver over a caller-owned buffer, as FrameReader in framing.py. */
typedef struct agn_frame_reader {
    uint8_t *buf;
    size_t cap;      /* the longest chunk accepted (AGN_FRAME_MAX_ENCODED, or less on a small MCU) */
    size_t len;      /* bytes of the current chunk so far */
    uint8_t overflow; /* dropping bytes up to the next delimiter */
} agn_frame_reader;

void agn_frame_reader_init(agn_frame_reader *reader, uint8_t *buf, size_t cap);

/* Feed one received byte. *chunk_len is set to 0, except when the byte is a delimiter that ends a
 * non-empty chunk: then *chunk_len > 0 and the chunk is reader->buf[0 .. *chunk_len), valid until
 * the next push (decode it with agn_frame_decode(), in place if you like). Empty chunks (two
 * delimiters in a row) are skipped. Returns AGN_OK, or AGN_ERR_TOO_LONG once when a chunk grows
 * past cap (its bytes up to the next delimiter are then dropped), or AGN_ERR_ARG. */
AGN_WARN_UNUSED agn_status agn_frame_reader_push(agn_frame_reader *reader, uint8_t byte, size_t *chunk_len);

#ifdef __cplusplus
}
#endif

#endif /* AGN_FRAME_H */
