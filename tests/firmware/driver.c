/* driver.c: a tiny host CLI around a generated AgileNN device library, for tests/firmware.
 *
 *   driver infer            stdin: uint8 images (AGN_IMAGE_BYTES each); stdout per image: int16 logits
 *                           (little-endian host order), then the channel-major centroid indices
 *   driver run CAP          stdin: images; stdout per image: uint32 status, uint32 payload length,
 *                           uint32 channels sent, the int16 logits, then the payload bytes
 *                           (agn_device_run with payload_cap = CAP; CAP 0 means AGN_PAYLOAD_MAX_BYTES)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agilenn_device.h"
#include "agn_model.h"

static uint32_t arena_words[(AGN_ARENA_BYTES + 3) / 4];

static int read_image(uint8_t *image)
{
    return fread(image, 1, AGN_IMAGE_BYTES, stdin) == (size_t)AGN_IMAGE_BYTES;
}

int main(int argc, char **argv)
{
    static uint8_t image[AGN_IMAGE_BYTES];
    uint8_t *arena = (uint8_t *)arena_words;
    if (argc >= 2 && strcmp(argv[1], "infer") == 0) {
        while (read_image(image)) {
            agn_device_infer(image, arena);
            fwrite(arena + AGN_OFF_LOGITS, sizeof(int16_t), AGN_NUM_CLASSES, stdout);
            fwrite(arena + AGN_OFF_INDICES, 1, (size_t)AGN_REMOTE_CHANNELS * AGN_FEATURE_HEIGHT * AGN_FEATURE_WIDTH,
                   stdout);
        }
        return 0;
    }
#ifndef DRIVER_NO_RUN
    if (argc >= 3 && strcmp(argv[1], "run") == 0) {
        static uint8_t payload[AGN_PAYLOAD_MAX_BYTES];
        size_t cap = (size_t)strtoul(argv[2], NULL, 10);
        if (cap == 0 || cap > sizeof payload) {
            cap = sizeof payload;
        }
        while (read_image(image)) {
            int16_t logits[AGN_NUM_CLASSES];
            size_t len = 0;
            uint16_t sent = 0;
            uint32_t head[3];
            agn_status st = agn_device_run(image, sizeof image, arena, sizeof arena_words, payload, cap, &len, &sent,
                                           logits, AGN_NUM_CLASSES);
            head[0] = (uint32_t)st;
            head[1] = (uint32_t)len;
            head[2] = sent;
            fwrite(head, sizeof head, 1, stdout);
            fwrite(logits, sizeof logits, 1, stdout);
            fwrite(payload, 1, len, stdout);
        }
        return 0;
    }
#endif
    fprintf(stderr, "usage: %s infer | run CAP  (images on stdin)\n", argv[0]);
    return 2;
}
