/* agn_config.h: the options of the AgileNN device library, all in one place.
 *
 * Set an option on the compiler command line (-DAGN_DOT_UNROLL=1) or edit the default here. Every
 * option keeps the results bit-identical; they only trade code size against speed or safety.
 * tests/firmware builds the library once per non-default value of each option.
 */
#ifndef AGN_CONFIG_H
#define AGN_CONFIG_H

/* AGN_DOT_UNROLL: products per iteration of the portable int16 x int8 inner loops (1, 2 or 4;
 * default 4, one packed group of four weights per iteration); 1 is the smallest code. Ignored where
 * AGN_USE_DSP is 1 (those loops take a group of four per iteration with two SMLAD). */
#ifndef AGN_DOT_UNROLL
#define AGN_DOT_UNROLL 4
#endif
#if AGN_DOT_UNROLL != 1 && AGN_DOT_UNROLL != 2 && AGN_DOT_UNROLL != 4
#error "AGN_DOT_UNROLL must be 1, 2 or 4"
#endif

/* AGN_USE_DSP: 1 runs the dot products of conv, pointwise conv and dense layers with the Armv7E-M
 * DSP instructions (SXTB16 unpacks four int8 weights into two int16 pairs, SMLAD multiplies and
 * adds a pair) and clamps int8 outputs with SSAT, through the ACLE intrinsics of <arm_acle.h>;
 * 0 is portable C99. Default: 1 where the compiler says the target has them (__ARM_FEATURE_DSP,
 * __ARM_FEATURE_SIMD32 and __ARM_FEATURE_SAT, little-endian: Cortex-M4, M7, M33 with DSP), else 0.
 * Both give the same integers; tests/firmware runs the portable path on the host and both on the
 * emulated Cortex-M7. */
#ifndef AGN_USE_DSP
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && defined(__ARM_FEATURE_SAT) && \
    !defined(__ARM_BIG_ENDIAN)
#define AGN_USE_DSP 1
#else
#define AGN_USE_DSP 0
#endif
#endif
#if AGN_USE_DSP != 0 && AGN_USE_DSP != 1
#error "AGN_USE_DSP must be 0 or 1"
#endif
#if AGN_USE_DSP && (!defined(__ARM_FEATURE_DSP) || !defined(__ARM_FEATURE_SIMD32) || defined(__ARM_BIG_ENDIAN))
#error "AGN_USE_DSP 1 needs a little-endian Arm target with the DSP extension (Cortex-M4/M7/M33)"
#endif

/* AGN_CHECK_ARGS: 1 (default) checks every pointer, length and the arena's alignment of
 * agn_device_run and returns AGN_ERR_ARG / AGN_ERR_NOSPACE / AGN_ERR_ALIGN; 0 trusts the caller
 * (saves a few dozen bytes; only for firmware whose buffers are static and sized by the macros). */
#ifndef AGN_CHECK_ARGS
#define AGN_CHECK_ARGS 1
#endif

#endif /* AGN_CONFIG_H */
