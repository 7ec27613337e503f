/* agn_config.h: the options of the AgileNN device library, all in one place.
 *
 * Set an option on the compiler command line (-DAGN_DOT_UNROLL=1) or edit the default here. Every
 * option keeps the results bit-identical; they only trade code size against speed or safety.
 * tests/firmware builds the library once per non-default value of each option.
 */
#ifndef AGN_CONFIG_H
#define AGN_CONFIG_H

/* AGN_DOT_UNROLL: products per iteration of the int16 x int8 inner loops (1, 2 or 4).
 * 4 (default) gives the compiler two SMLAD-shaped pairs (a0*w0 + a1*w1) per iteration on
 * Cortex-M4/M7; 1 is the smallest code. */
#ifndef AGN_DOT_UNROLL
#define AGN_DOT_UNROLL 4
#endif
#if AGN_DOT_UNROLL != 1 && AGN_DOT_UNROLL != 2 && AGN_DOT_UNROLL != 4
#error "AGN_DOT_UNROLL must be 1, 2 or 4"
#endif

/* AGN_CHECK_ARGS: 1 (default) checks every pointer, length and the arena's alignment of
 * agn_device_run and returns AGN_ERR_ARG / AGN_ERR_NOSPACE / AGN_ERR_ALIGN; 0 trusts the caller
 * (saves a few dozen bytes; only for firmware whose buffers are static and sized by the macros). */
#ifndef AGN_CHECK_ARGS
#define AGN_CHECK_ARGS 1
#endif

#endif /* AGN_CONFIG_H */
