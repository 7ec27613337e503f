"""agilenn-firmware generate --test-vectors N: test/agn_selftest.c next to a generated library.

Test vectors from the Python reference (agilenn.firmware.int8 + the codec) and a memcmp self-test
in C, so a build of the library can check itself on the host or on the MCU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import GENERATOR_VERSION
from .generate import _c_array, _header_comment, payload_coder
from .int8 import Int8DeviceModel

SELFTEST_BUDGET = 60  # every other test vector runs under this byte budget (drops trailing channels)


def write_test_vectors(bundle, model: Int8DeviceModel, out: Path, count: int) -> Path:
    """out/agn_selftest.c: `count` test images of the bundle's dataset with the payload bytes and
    int16 logits the Python reference gives (agilenn.firmware.int8 + codec), and a self-test that runs
    agn_device_run on each and compares with memcmp, naming the first mismatching vector and byte.
    Every other vector runs under a byte budget of SELFTEST_BUDGET. Build it with the library and
    -DAGN_SELFTEST_MAIN for a host program; firmware calls agn_selftest()."""
    from agilenn.training.datasets import load_dataset

    manifest_hash = hashlib.sha256((Path(bundle.path) / "manifest.json").read_bytes()).hexdigest()
    values = {"GENERATOR_VERSION": GENERATOR_VERSION, "MODEL_NAME": bundle.name, "MODEL_VERSION": bundle.version,
              "MODEL_HASH": manifest_hash}

    images = load_dataset(bundle.manifest.get("dataset", ""), "test").images[:count]
    ref = model.run(images)
    codec = bundle.codec()
    coder = payload_coder(bundle)  # what the generated library sends
    payloads, budgets = [], []
    for i in range(len(images)):
        budget = None if i % 2 == 0 else SELFTEST_BUDGET
        payloads.append(codec.encode_within(ref.indices[i], budget, coder)[0])
        budgets.append(0 if budget is None else budget)
    offsets = np.cumsum([0] + [len(p) for p in payloads])[:-1]
    out.mkdir(parents=True, exist_ok=True)
    n = len(images)
    parts = [_header_comment(bundle, values, f"agn_selftest.c: {n} test vectors from the Python reference and the "
                                             "self-test that checks the library against them."),
             "#include <string.h>\n", '#include "agilenn_device.h"\n',
             f"#define AGN_TV_COUNT {n}u", f"#define AGN_TV_BUDGET {SELFTEST_BUDGET}u\n",
             _c_array("uint8_t", "agn_tv_images", images.reshape(-1), 28),
             _c_array("int16_t", "agn_tv_logits", ref.logits.reshape(-1), 10),
             _c_array("uint8_t", "agn_tv_payloads", np.frombuffer(b"".join(payloads), np.uint8), 28),
             _c_array("uint32_t", "agn_tv_offsets", offsets, 12),
             _c_array("uint16_t", "agn_tv_lengths", [len(p) for p in payloads], 12),
             _c_array("uint16_t", "agn_tv_budgets", budgets, 12),
             SELFTEST_C]
    path = out / "agn_selftest.c"
    path.write_text("\n".join(parts))
    return path


SELFTEST_C = r"""/* Runs every vector (budget 0: AGN_PAYLOAD_MAX_BYTES). Returns the number of failing vectors; for
 * the first one, *first_vector gets its index and *first_byte the first differing payload byte
 * (0xFFFFFFFF when the payload matched and the logits, length or status did not). */
uint32_t agn_selftest(void *arena, size_t arena_bytes, uint32_t *first_vector, uint32_t *first_byte);

uint32_t agn_selftest(void *arena, size_t arena_bytes, uint32_t *first_vector, uint32_t *first_byte)
{
    static uint8_t payload[AGN_PAYLOAD_MAX_BYTES];
    uint32_t v, failures = 0;
    *first_vector = 0xFFFFFFFFu;
    *first_byte = 0xFFFFFFFFu;
    for (v = 0; v < AGN_TV_COUNT; v++) {
        int16_t logits[AGN_NUM_CLASSES];
        size_t len = 0, cap = agn_tv_budgets[v] ? agn_tv_budgets[v] : sizeof payload;
        const uint8_t *expected = agn_tv_payloads + agn_tv_offsets[v];
        agn_status st = agn_device_run(agn_tv_images + (size_t)v * AGN_IMAGE_BYTES, AGN_IMAGE_BYTES, arena,
                                       arena_bytes, payload, cap, &len, NULL, logits, AGN_NUM_CLASSES);
        if (st != AGN_OK || len != agn_tv_lengths[v] || memcmp(payload, expected, len) != 0 ||
            memcmp(logits, agn_tv_logits + (size_t)v * AGN_NUM_CLASSES, sizeof logits) != 0) {
            if (failures++ == 0) {
                size_t i;
                *first_vector = v;
                for (i = 0; st == AGN_OK && i < len && i < agn_tv_lengths[v]; i++) {
                    if (payload[i] != expected[i]) {
                        *first_byte = (uint32_t)i;
                        break;
                    }
                }
            }
        }
    }
    return failures;
}

#ifdef AGN_SELFTEST_MAIN
#include <stdio.h>

static uint32_t agn_selftest_arena[(AGN_ARENA_BYTES + 3) / 4];

int main(void)
{
    uint32_t vector, byte;
    uint32_t failures = agn_selftest(agn_selftest_arena, sizeof agn_selftest_arena, &vector, &byte);
    if (failures != 0u) {
        printf("agn_selftest: %lu of %lu vectors differ; first: vector %lu, payload byte %ld\n",
               (unsigned long)failures, (unsigned long)AGN_TV_COUNT, (unsigned long)vector,
               byte == 0xFFFFFFFFu ? -1L : (long)byte);
        return 1;
    }
    printf("agn_selftest: %lu vectors OK\n", (unsigned long)AGN_TV_COUNT);
    return 0;
}
#endif
"""
