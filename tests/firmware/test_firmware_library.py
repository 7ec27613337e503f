"""The generated C library as a library: options, sanitizers, the Cortex-M7 build and its size,
argument checks, and the guards against mixing files of two generations."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess

import numpy as np
import pytest
from agilenn.firmware.cost import bundle_device_cost
from agilenn.models import load_bundle
from agilenn.training.datasets import load_dataset
from fw_lib_helpers import (  # noqa: F401 (fixtures)
    DRIVER,
    compile_c,
    driver_fixture,
    generated_fixture,
    shipped_bundle_dir,
)

FLASH_LIMIT, ARENA_LIMIT = 32 * 1024, 16 * 1024
AGN_OK, AGN_ERR_ARG, AGN_ERR_NOSPACE, AGN_ERR_ALIGN = 0, 1, 2, 3


@pytest.fixture(scope="module")
def images():
    return load_dataset("fashion-mnist", "test").images[:100]


def _run(exe, images, cap=0) -> bytes:
    return subprocess.run([str(exe), "run", str(cap)], input=images.tobytes(), capture_output=True, check=True,
                          timeout=300).stdout


@pytest.mark.parametrize("option", ["-DAGN_DOT_UNROLL=1", "-DAGN_DOT_UNROLL=2", "-DAGN_CHECK_ARGS=0"])
def test_every_option_builds_and_gives_the_same_bytes(generated, driver, images, option, tmp_path):
    exe = compile_c([*sorted(generated.glob("*.c")), DRIVER], tmp_path / "drv", ["-I", str(generated), option])
    assert _run(exe, images, 60) == _run(driver, images, 60)


def test_clean_under_address_and_undefined_sanitizers(generated, driver, images, tmp_path):
    exe = compile_c([*sorted(generated.glob("*.c")), DRIVER], tmp_path / "drv-san",
                    ["-I", str(generated), "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    assert _run(exe, images[:30]) == _run(driver, images[:30])
    assert _run(exe, images[:30], 40) == _run(driver, images[:30], 40)


def test_the_generator_computed_cost_is_the_bundles(generated):
    doc = json.loads((generated / "device_cost.json").read_text())
    cost = bundle_device_cost(load_bundle(shipped_bundle_dir()))
    for key in ("macs", "params", "weight_bytes", "arena_bytes"):
        assert doc[key] == cost[key], key
    header = (generated / "agilenn_device.h").read_text()
    assert f"#define AGN_ARENA_BYTES {cost['arena_bytes']}\n" in header
    assert cost["arena_bytes"] <= ARENA_LIMIT


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc is not installed "
                    "(.ci/setup installs gcc-arm-none-eabi libnewlib-arm-none-eabi)")
@pytest.mark.parametrize("option", [[], ["-DAGN_USE_DSP=0"]], ids=["dsp", "portable"])
def test_cortex_m7_build_fits(generated, tmp_path, option):
    """arm-none-eabi-gcc -mcpu=cortex-m7 -mthumb -O2, warnings as errors; flash <= 32 KB; with the
    DSP kernels (the default on an M7) and with the portable ones."""
    objs = []
    for src in sorted(generated.glob("*.c")):
        if src.name == "agn_frame.c":
            continue  # the serial framing belongs to the firmware's budget, not the device library's
        obj = tmp_path / (src.stem + ".o")
        res = subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m7", "-mthumb", "-O2", "-std=c99", "-Wall", "-Wextra",
                              "-Werror", "-ffunction-sections", "-fdata-sections", *option, "-c", str(src), "-o",
                              str(obj)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        objs.append(str(obj))
    out = subprocess.run(["arm-none-eabi-size", "-t", *objs], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(x) for x in out.strip().splitlines()[-1].split()[:3])
    print(f"arm-none-eabi-size: text {text} data {data} bss {bss}")
    assert text + data <= FLASH_LIMIT and bss == 0  # no static RAM: the caller's arena is all


def test_files_of_two_generations_do_not_build_together(generated, tmp_path):
    """agn_model.c of another bundle next to this agilenn_device.h stops the build with #error."""
    other = tmp_path / "other"
    plain = shipped_bundle_dir().parent.parent / "plain-split-fashion-mnist" / "1"
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(plain), "--out", str(other)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    shutil.copy(other / "agn_model.c", tmp_path / "agn_model.c")
    res = subprocess.run(["gcc", "-std=c99", "-I", str(generated), "-c", str(tmp_path / "agn_model.c"), "-o",
                          str(tmp_path / "m.o")], capture_output=True, text=True)
    assert res.returncode != 0 and "#error" in res.stderr and "another bundle" in res.stderr


@pytest.fixture(scope="module")
def shared_lib(generated, tmp_path_factory):
    so = tmp_path_factory.mktemp("so") / "libagn.so"
    compile_c(sorted(generated.glob("*.c")), so, ["-I", str(generated), "-shared", "-fPIC"])
    lib = ctypes.CDLL(str(so))
    lib.agn_device_run.restype = ctypes.c_int
    lib.agn_device_run.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t),
                                   ctypes.POINTER(ctypes.c_uint16), ctypes.c_void_p, ctypes.c_size_t]
    lib.agn_device_features.restype = ctypes.c_int
    lib.agn_device_features.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t),
                                        ctypes.POINTER(ctypes.c_uint16)]
    lib.agn_device_local.restype = ctypes.c_int
    lib.agn_device_local.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    lib.agn_status_name.restype = ctypes.c_char_p
    return lib


def _header_int(generated, name: str) -> int:
    for line in (generated / "agilenn_device.h").read_text().splitlines():
        if line.startswith(f"#define {name} "):
            return int(line.split()[2])
    raise KeyError(name)


def test_bad_arguments_get_a_status_not_a_crash(shared_lib, generated, images):
    arena_bytes = _header_int(generated, "AGN_ARENA_BYTES")
    classes = _header_int(generated, "AGN_NUM_CLASSES")
    image = np.ascontiguousarray(images[0])
    arena = np.zeros(arena_bytes + 8, np.uint32)  # uint32: 4-byte aligned
    payload = np.zeros(2048, np.uint8)
    logits = np.zeros(classes, np.int16)
    length, sent = ctypes.c_size_t(), ctypes.c_uint16()

    def call(img=image.ctypes.data, img_bytes=image.size, ar=arena.ctypes.data, ar_bytes=arena_bytes,
             pl=payload.ctypes.data, cap=payload.size, lg=logits.ctypes.data, n=classes):
        return shared_lib.agn_device_run(img, img_bytes, ar, ar_bytes, pl, cap, ctypes.byref(length),
                                         ctypes.byref(sent), lg, n)

    minimum = _header_int(generated, "AGN_PAYLOAD_MIN_BYTES")
    assert minimum == 3  # the compact header of zero channels
    assert call() == AGN_OK and length.value > minimum and sent.value == _header_int(generated, "AGN_REMOTE_CHANNELS")
    assert call(img=None) == AGN_ERR_ARG
    assert call(img_bytes=image.size - 1) == AGN_ERR_ARG
    assert call(n=classes + 1) == AGN_ERR_ARG
    assert call(ar_bytes=arena_bytes - 1) == AGN_ERR_NOSPACE
    assert call(ar=arena.ctypes.data + 1) == AGN_ERR_ALIGN
    assert call(cap=minimum - 1) == AGN_ERR_NOSPACE
    assert call(cap=minimum) == AGN_OK and length.value == minimum and sent.value == 0  # the header alone: no channels
    assert shared_lib.agn_status_name(AGN_ERR_ALIGN) == b"AGN_ERR_ALIGN"


def test_features_then_local_write_what_device_run_writes(shared_lib, generated, images):
    """agn_device_run in two halves (API 1.2): the payload first, then the local logits from what the
    first half left in the arena; the same bytes and logits as the one call, budget or not."""
    arena_bytes = _header_int(generated, "AGN_ARENA_BYTES")
    classes = _header_int(generated, "AGN_NUM_CLASSES")
    assert _header_int(generated, "AGN_API_VERSION_MINOR") == 2
    arena = np.zeros(arena_bytes // 4 + 1, np.uint32)
    for i, cap in enumerate([2048] * 10 + [40] * 5):
        image = np.ascontiguousarray(images[i])
        whole, whole_logits = np.zeros(2048, np.uint8), np.zeros(classes, np.int16)
        n1, s1 = ctypes.c_size_t(), ctypes.c_uint16()
        assert shared_lib.agn_device_run(image.ctypes.data, image.size, arena.ctypes.data, arena_bytes,
                                         whole.ctypes.data, cap, ctypes.byref(n1), ctypes.byref(s1),
                                         whole_logits.ctypes.data, classes) == AGN_OK
        arena[:] = 0xA5A5A5A5  # nothing carries over from the one call
        half, half_logits = np.zeros(2048, np.uint8), np.zeros(classes, np.int16)
        n2, s2 = ctypes.c_size_t(), ctypes.c_uint16()
        assert shared_lib.agn_device_features(image.ctypes.data, image.size, arena.ctypes.data, arena_bytes,
                                              half.ctypes.data, cap, ctypes.byref(n2), ctypes.byref(s2)) == AGN_OK
        assert (n2.value, s2.value) == (n1.value, s1.value) and bytes(half[:n2.value]) == bytes(whole[:n1.value])
        assert shared_lib.agn_device_local(arena.ctypes.data, arena_bytes, half_logits.ctypes.data, classes) == AGN_OK
        assert half_logits.tolist() == whole_logits.tolist()
    logits = np.zeros(classes, np.int16)
    assert shared_lib.agn_device_local(arena.ctypes.data, arena_bytes, logits.ctypes.data, classes + 1) == AGN_ERR_ARG
    assert shared_lib.agn_device_local(arena.ctypes.data, arena_bytes - 1, logits.ctypes.data, classes) == \
        AGN_ERR_NOSPACE
    assert shared_lib.agn_device_local(arena.ctypes.data + 1, arena_bytes, logits.ctypes.data, classes) == AGN_ERR_ALIGN


def test_the_library_sends_the_bundles_default_coder(generated):
    """The shipped bundle defaults to rans-ctx: its library links the context coder and its tables,
    not the order-0 coder's code."""
    assert (generated / "agn_rans_ctx.c").is_file() and not (generated / "agn_rans.c").exists()
    assert '#define AGN_PAYLOAD_CODER "rans-ctx"' in (generated / "agilenn_device.h").read_text()
    assert json.loads((generated / "device_cost.json").read_text())["coder"]["id"] == 4


def test_a_bundle_without_context_tables_gets_a_rans_library(tmp_path, images):
    """Without coder.context (or with another default) the library sends rans, coder id 3, byte for
    byte as Python's encode_within, and links none of the context coder."""
    from agilenn.models import write_manifest

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_dir(), bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    del manifest["coder"]["context"]
    manifest["coder"]["default"] = "rans"
    write_manifest(bundle_dir, manifest)
    out = tmp_path / "lib"
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(bundle_dir), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (out / "agn_rans.c").is_file() and not list(out.glob("agn_rans_ctx*"))
    assert '#define AGN_PAYLOAD_CODER "rans"' in (out / "agilenn_device.h").read_text()
    exe = compile_c([*sorted(out.glob("*.c")), DRIVER], tmp_path / "drv", ["-I", str(out)])
    bundle = load_bundle(bundle_dir)
    codec, reference = bundle.codec(), bundle.int8_device().run(images[:40])
    for cap in (0, 60):
        raw = _run(exe, images[:40], cap)
        pos = 0
        for i in range(40):
            status, length, sent = np.frombuffer(raw, np.uint32, 3, pos)
            pos += 12 + 2 * bundle.num_classes
            payload = raw[pos:pos + length]
            pos += length
            expected, expected_sent = codec.encode_within(reference.indices[i], cap or None, "rans")
            assert status == 0 and payload == expected and sent == expected_sent and payload[0] == 0xA3, (cap, i)  # rans


def test_generate_without_an_int8_part_says_what_to_run(tmp_path):
    from agilenn.models.synthetic import make_random_bundle

    bundle = make_random_bundle(tmp_path / "b")
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(bundle), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "agilenn-firmware quantize" in res.stderr


def test_generated_self_test_passes_and_names_a_mismatch(tmp_path):
    """`generate --test-vectors N` writes test/agn_selftest.c (the Python reference's payloads and
    logits, half of them under a byte budget); built with the library under the sanitizers it passes,
    and a vector altered by one value is reported by index."""
    out = tmp_path / "lib"
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(shipped_bundle_dir()), "--out", str(out),
                          "--test-vectors", "40"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    flags = ["-I", str(out), "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-DAGN_SELFTEST_MAIN"]
    exe = compile_c([*sorted(out.glob("*.c")), out / "test" / "agn_selftest.c"], tmp_path / "selftest", flags)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "40 vectors OK" in run.stdout, run.stdout + run.stderr
    src = (out / "test" / "agn_selftest.c").read_text()
    head, rest = src.split("agn_tv_logits[", 1)
    size, body = rest.split("= {\n    ", 1)
    first, tail = body.split(",", 1)
    (out / "test" / "agn_selftest.c").write_text(f"{head}agn_tv_logits[{size}= {{\n    {int(first) + 1},{tail}")
    exe = compile_c([*sorted(out.glob("*.c")), out / "test" / "agn_selftest.c"], tmp_path / "selftest2", flags)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "1 of 40 vectors differ; first: vector 0" in run.stdout, run.stdout
