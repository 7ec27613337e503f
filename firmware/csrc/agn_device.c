/* agn_device.c: the public calls of the AgileNN device library (agn_device_features, agn_device_local,
 * agn_device_run) and the checks they make on their arguments.
 *
 * Order of work (the generator's plan, agn_model.h, places every tensor in the arena):
 * Steps 1-4 are agn_device_infer (agn_infer.c); this file adds the checks and step 5.
 * agn_device_features does steps 1-3 and 5, agn_device_local step 4; agn_device_run both.
 *   1. image uint8 -> int8 input tensor (q = pixel - 128; the input zero point holds the mean)
 *   2. the extractor layers -> the int8 feature tensor [h][w][C]
 *   3. remote channels [k, C) -> centroid indices, channel-major (integer thresholds)
 *   4. local channels [0, k) -> the local predictor -> int16 logits
 *   5. the indices -> payload: compact header + rANS body, within the caller's byte budget
 * Same integers as agilenn.firmware.int8 (Python), which the host tests check byte for byte.
 */
#include <string.h>

#include "agilenn_device.h"
#include "agn_model.h"
#include "agn_payload.h"

#if AGN_GENERATOR_VERSION_NUM != @GENERATOR_VERSION_NUM@
#error "agn_device.c and agilenn_device.h come from different agilenn-firmware versions: generate again"
#endif

/* The checks every entry point makes on the arena (AGN_CHECK_ARGS). */
static agn_status check_arena(const void *arena, size_t arena_bytes)
{
#if AGN_CHECK_ARGS
    if (arena == NULL) {
        return AGN_ERR_ARG;
    }
    if (arena_bytes < (size_t)AGN_ARENA_BYTES) {
        return AGN_ERR_NOSPACE;
    }
    if (((uintptr_t)arena % AGN_ARENA_ALIGN) != 0u) {
        return AGN_ERR_ALIGN;
    }
#else
    (void)arena;
    (void)arena_bytes;
#endif
    return AGN_OK;
}

agn_status agn_device_features(const uint8_t *image, size_t image_bytes, void *arena, size_t arena_bytes,
                               uint8_t *payload, size_t payload_cap, size_t *payload_len, uint16_t *channels_sent)
{
    uint16_t sent = 0;
    agn_status status;
#if AGN_CHECK_ARGS
    if (image == NULL || payload == NULL || payload_len == NULL) {
        return AGN_ERR_ARG;
    }
    if (image_bytes != (size_t)AGN_IMAGE_BYTES) {
        return AGN_ERR_ARG;
    }
#else
    (void)image_bytes;
#endif
    status = check_arena(arena, arena_bytes);
    if (status != AGN_OK) {
        return status;
    }
#if AGN_CHECK_ARGS
    if (payload_cap < (size_t)AGN_PAYLOAD_MIN_BYTES) {
        return AGN_ERR_NOSPACE;
    }
#endif
    agn_device_infer_features(image, (uint8_t *)arena);
    status = agn_payload_encode_within((const uint8_t *)arena + AGN_OFF_INDICES, payload, payload_cap, payload_len,
                                       &sent);
    if (status != AGN_OK) {
        return status;
    }
    if (channels_sent != NULL) {
        *channels_sent = sent;
    }
    return AGN_OK;
}

/* The checks every entry point that writes local logits makes (AGN_CHECK_ARGS). */
static agn_status check_logits(const int16_t *local_logits, size_t num_logits)
{
#if AGN_CHECK_ARGS
    if (local_logits == NULL || num_logits != (size_t)AGN_NUM_CLASSES) {
        return AGN_ERR_ARG;
    }
#else
    (void)local_logits;
    (void)num_logits;
#endif
    return AGN_OK;
}

/* Step 4 on an arena that agn_device_features has filled; the arguments are checked. */
static void run_local(void *arena, int16_t *local_logits)
{
    agn_device_infer_local((uint8_t *)arena);
    memcpy(local_logits, (const uint8_t *)arena + AGN_OFF_LOGITS, sizeof(int16_t) * (size_t)AGN_NUM_CLASSES);
}

agn_status agn_device_local(void *arena, size_t arena_bytes, int16_t *local_logits, size_t num_logits)
{
    agn_status status = check_logits(local_logits, num_logits);
    if (status != AGN_OK) {
        return status;
    }
    status = check_arena(arena, arena_bytes);
    if (status != AGN_OK) {
        return status;
    }
    run_local(arena, local_logits);
    return AGN_OK;
}

agn_status agn_device_run(const uint8_t *image, size_t image_bytes, void *arena, size_t arena_bytes,
                          uint8_t *payload, size_t payload_cap, size_t *payload_len, uint16_t *channels_sent,
                          int16_t *local_logits, size_t num_logits)
{
    /* the logits' checks before any work, so that a bad call writes nothing; agn_device_features
     * checks the rest, so the arena is checked once */
    agn_status status = check_logits(local_logits, num_logits);
    if (status != AGN_OK) {
        return status;
    }
    status = agn_device_features(image, image_bytes, arena, arena_bytes, payload, payload_cap, payload_len,
                                 channels_sent);
    if (status != AGN_OK) {
        return status;
    }
    run_local(arena, local_logits);
    return AGN_OK;
}
