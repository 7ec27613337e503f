/* agn_device.c: agn_device_run, the one public call of the AgileNN device library.
 *
 * Order of work (the generator's plan, agn_model.h, places every tensor in the arena):
 * Steps 1-4 are agn_device_infer (agn_infer.c); this file adds the checks and step 5.
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

agn_status agn_device_run(const uint8_t *image, size_t image_bytes, void *arena, size_t arena_bytes,
                          uint8_t *payload, size_t payload_cap, size_t *payload_len, uint16_t *channels_sent,
                          int16_t *local_logits, size_t num_logits)
{
    uint8_t *a = (uint8_t *)arena;
    uint16_t sent = 0;
    agn_status status;
#if AGN_CHECK_ARGS
    if (image == NULL || arena == NULL || payload == NULL || payload_len == NULL || local_logits == NULL) {
        return AGN_ERR_ARG;
    }
    if (image_bytes != (size_t)AGN_IMAGE_BYTES || num_logits != (size_t)AGN_NUM_CLASSES) {
        return AGN_ERR_ARG;
    }
    if (arena_bytes < (size_t)AGN_ARENA_BYTES) {
        return AGN_ERR_NOSPACE;
    }
    if (((uintptr_t)arena % AGN_ARENA_ALIGN) != 0u) {
        return AGN_ERR_ALIGN;
    }
    if (payload_cap < (size_t)AGN_PAYLOAD_MIN_BYTES) {
        return AGN_ERR_NOSPACE;
    }
#else
    (void)image_bytes;
    (void)arena_bytes;
    (void)num_logits;
#endif
    agn_device_infer(image, a);
    status = agn_payload_encode_within(a + AGN_OFF_INDICES, payload, payload_cap, payload_len,
                                       &sent);
    if (status != AGN_OK) {
        return status;
    }
    memcpy(local_logits, a + AGN_OFF_LOGITS, sizeof(int16_t) * (size_t)AGN_NUM_CLASSES);
    if (channels_sent != NULL) {
        *channels_sent = sent;
    }
    return AGN_OK;
}
