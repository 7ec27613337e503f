/* agn_common.h: what every part of the AgileNN C library shares (status codes, attributes).
 *
 * C99, no allocation, no I/O. The public library header (agilenn.h, generated) includes this
 * file; the entropy coder (agn_rans.h) and the serial framing (agn_frame.h) include it too, so
 * every function in the library returns the same agn_status.
 */
#ifndef AGN_COMMON_H
#define AGN_COMMON_H

/* One status enum for the whole library (the generated agilenn_device.h includes this header
 * rather than defining its own). AGN_OK is 0, errors are positive; codes are only ever appended. */
#ifndef AGN_STATUS_DEFINED
#define AGN_STATUS_DEFINED
typedef enum agn_status {
    AGN_OK = 0,
    AGN_ERR_ARG = 1,      /* a NULL pointer, or a size/value outside the documented range */
    AGN_ERR_NOSPACE = 2,  /* the caller's output buffer is too small (see the *_MAX_* macros) */
    AGN_ERR_ALIGN = 3,    /* a buffer is not aligned as documented (the device arena) */
    AGN_ERR_INTERNAL = 4, /* an internal check failed (a bug: please report it) */
    AGN_ERR_DATA = 5,     /* input bytes that do not decode (corrupt coder body, wrong table) */
    AGN_ERR_FRAME = 6,    /* a serial chunk that fails COBS, length or CRC (answer BAD_FRAME) */
    AGN_ERR_VERSION = 7,  /* a frame with a good CRC but another protocol version (BAD_VERSION) */
    AGN_ERR_TOO_LONG = 8  /* more bytes than the receive buffer holds before a delimiter (TOO_LONG) */
} agn_status;
#endif

/* Results must be checked: a compiler that knows the attribute warns when one is ignored. */
#ifndef AGN_WARN_UNUSED
#if defined(__GNUC__) || defined(__clang__)
#define AGN_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define AGN_WARN_UNUSED
#endif
#endif

/* Compile-time check that works in C99 (negative array size) and uses _Static_assert in C11. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define AGN_STATIC_ASSERT(cond, name) _Static_assert(cond, #name)
#else
#define AGN_STATIC_ASSERT(cond, name) typedef char agn_static_assert_##name[(cond) ? 1 : -1]
#endif
AGN_STATIC_ASSERT(1, static_assert_is_working);

/* A short constant name of a status ("AGN_ERR_NOSPACE"), never NULL; in agn_common.c. */
const char *agn_status_name(agn_status status);

#endif /* AGN_COMMON_H */
