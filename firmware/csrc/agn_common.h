/* agn_common.h: what every part of the AgileNN C library shares (status codes, attributes).
 *
 * C99, no allocation, no I/O. The public library header (agilenn.h, generated) includes this
 * file; the entropy coder (agn_rans.h) and the serial framing (agn_frame.h) include it too, so
 * every function in the library returns the same agn_status.
 */
#ifndef AGN_COMMON_H
#define AGN_COMMON_H

/* One status enum for the whole library. AGN_OK is 0; every error is negative, so
 * `if (st != AGN_OK)` and `if (st < 0)` both work. New codes are only ever appended. */
typedef enum agn_status {
    AGN_OK = 0,
    AGN_ERR_ARG = -1,     /* a NULL pointer, a size or value outside the documented range */
    AGN_ERR_NOSPACE = -2, /* the caller's output buffer is too small (see the *_MAX_* macros) */
    AGN_ERR_DATA = -3,    /* input bytes that do not decode (corrupt payload body, wrong table) */
    AGN_ERR_FRAME = -4,   /* a serial chunk that fails COBS, length or CRC (answer BAD_FRAME) */
    AGN_ERR_VERSION = -5, /* a frame with a good CRC but another protocol version (BAD_VERSION) */
    AGN_ERR_TOO_LONG = -6 /* more bytes than the receive buffer holds before a delimiter (TOO_LONG) */
} agn_status;

/* Results must be checked: a compiler that knows the attribute warns when one is ignored. */
#if defined(__GNUC__) || defined(__clang__)
#define AGN_NODISCARD __attribute__((warn_unused_result))
#else
#define AGN_NODISCARD
#endif

/* Compile-time check that works in C99 (negative array size) and uses _Static_assert in C11. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define AGN_STATIC_ASSERT(cond, name) _Static_assert(cond, #name)
#else
#define AGN_STATIC_ASSERT(cond, name) typedef char agn_static_assert_##name[(cond) ? 1 : -1]
#endif
AGN_STATIC_ASSERT(1, static_assert_is_working);

/* A short constant name for a status ("AGN_ERR_NOSPACE"), for logs and test messages. */
static inline const char *agn_status_name(agn_status st)
{
    switch (st) {
    case AGN_OK: return "AGN_OK";
    case AGN_ERR_ARG: return "AGN_ERR_ARG";
    case AGN_ERR_NOSPACE: return "AGN_ERR_NOSPACE";
    case AGN_ERR_DATA: return "AGN_ERR_DATA";
    case AGN_ERR_FRAME: return "AGN_ERR_FRAME";
    case AGN_ERR_VERSION: return "AGN_ERR_VERSION";
    case AGN_ERR_TOO_LONG: return "AGN_ERR_TOO_LONG";
    }
    return "AGN_ERR_UNKNOWN";
}

#endif /* AGN_COMMON_H */
