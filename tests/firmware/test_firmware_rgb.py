"""RGB input with per-channel means (CIFAR-10, a user's photo folder): the integer device part takes
raw uint8 HWC pixels, folds x = (pixel * scale - mean_c) / std_c into the first conv with one zero
point per input channel, reproduces the float model's zero padding, tracks the float device part,
and the generated C library computes the same integers as the Python reference."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from agilenn.codec import header_size
from agilenn.firmware.int8 import Int8DeviceModel, Int8ModelError
from agilenn.models import load_bundle
from agilenn.models.synthetic import make_random_bundle
from fw_lib_helpers import DRIVER, assert_driver_infer_matches, compile_c

MEAN, STD = (0.2, 0.5, 0.81), (0.2, 0.25, 0.3)  # very different per channel, so a mix-up shows
# first layers: a 6x6 / stride 4 / pad 1 conv on 32x32 (the C kernel's padding values matter), and a
# 1x1 conv on 8x8 (no padding: the folded bias alone carries the zero points)
FIRST_LAYERS = {"conv-padded": dict(hw=32, pad=1), "conv1x1": dict(hw=8, pad=0)}


def rgb_images(n: int, seed: int, hw: int = 32) -> np.ndarray:
    """Photo-like uint8 [n, hw, hw, 3]: smooth colour fields (4x4 upsampled) plus pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).repeat(hw // 4, 1).repeat(hw // 4, 2)
    return np.clip(coarse + rng.normal(0, 20, coarse.shape), 0, 255).astype(np.uint8)


def make_rgb_bundle(path, first_layer: str):
    """A 3-channel synthetic bundle with 8x8 features, its integer part added by the function
    `agilenn-firmware quantize` runs and rans-ctx tables (the default coder, which the generated
    library then sends) fitted on its symbols; returns (bundle, the manifest's int8_device section)."""
    from agilenn.firmware.bundle_int8 import add_int8_device
    from agilenn.training.context_tables import add_context_tables

    hw, pad = FIRST_LAYERS[first_layer]["hw"], FIRST_LAYERS[first_layer]["pad"]
    path = make_random_bundle(path, input_shape=(3, hw, hw), feature_hw=(8, 8), channels=8, k=2, seed=7,
                              mean=MEAN, std=STD, pad=pad, default_coder="rans")
    labels = np.random.default_rng(1).integers(0, 10, 400)
    section = add_int8_device(path, rgb_images(256, 0, hw), rgb_images(400, 1, hw), labels,
                              calibration_label="synthetic rgb")
    add_context_tables(path, rgb_images(256, 0, hw), rgb_images(100, 4, hw), rows=8)
    bundle = load_bundle(path)
    assert bundle.codec().default_coder == "rans-ctx"
    assert bundle.int8_device().extractor[0].kind == ("conv" if pad else "conv1x1")
    return bundle, section


@pytest.fixture(scope="module", params=sorted(FIRST_LAYERS))
def rgb_bundle(request, tmp_path_factory):
    return make_rgb_bundle(tmp_path_factory.mktemp("rgb") / "b", request.param)


def test_per_channel_zero_points_are_the_rounded_means(rgb_bundle):
    bundle, section = rgb_bundle
    model = bundle.int8_device()
    expected = tuple(int(np.rint(m * 255)) - 128 for m in MEAN)  # scale 1/255
    assert model.input_zp == expected and model.per_channel_input
    assert model.extractor[0].zp_in_channels.tolist() == list(expected)
    assert all(layer.zp_in_channels is None for layer in model.layers()[1:])
    doc = json.loads((bundle.path / "device_int8.json").read_text())
    assert doc["format_version"] == 2 == section["format_version"]
    assert doc["input"]["zero_points"] == list(expected)
    assert Int8DeviceModel.from_json(model.to_json()).to_json() == model.to_json()


def test_the_integer_part_tracks_the_float_device_part(rgb_bundle):
    """Against device.onnx with the exact means (evaluate() runs bundle.preprocess): the rounded means
    and the int8 arithmetic change few indices and predictions."""
    _, section = rgb_bundle
    acc = section["accuracy"]
    assert acc["index_agreement"] > 0.95
    assert acc["local_prediction_agreement"] > 0.9
    assert acc["combined_prediction_agreement"] > 0.9


def test_padding_stands_for_the_mean_of_each_channel(rgb_bundle):
    """An image whose every pixel is the (rounded) mean colour is 0 after normalisation, like the
    float model's zero padding: the extractor output is then the same at every position, border or
    not, in the integer part as in the float one. A padding value shared by all channels would make
    the border differ."""
    from agilenn.device_agent.device_model import single_thread_session

    bundle, _ = rgb_bundle
    model = bundle.int8_device()
    hw = bundle.input_shape[1]
    grey = np.empty((1, hw, hw, 3), np.uint8)
    grey[...] = np.asarray(model.input_zp) + 128
    feats = model.run(grey).features[0]
    assert (feats == feats[0, 0]).all(), "the border of the feature map differs from its inside"
    _, remote = single_thread_session(bundle.onnx_path("device")).run(None, {"image": bundle.preprocess(grey)})
    np.testing.assert_allclose(remote[0], remote[0][:, :1, :1] + np.zeros_like(remote[0]), atol=0.02)
    # the same image as the float model sees it: within half a pixel level of the exact mean
    assert np.abs(grey[0, 0, 0] / 255.0 - np.asarray(MEAN)).max() <= 0.5 / 255


def test_damaged_per_channel_zero_points_are_refused(rgb_bundle):
    bundle, _ = rgb_bundle
    doc = json.loads((bundle.path / "device_int8.json").read_text())
    bad = json.loads(json.dumps(doc))
    bad["extractor"][0]["zp_in_channels"] = [0, 0]
    with pytest.raises(Int8ModelError, match="one value per input channel"):
        Int8DeviceModel.from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["input"]["zero_points"][1] += 1
    with pytest.raises(Int8ModelError, match="disagree with 'input'"):
        Int8DeviceModel.from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["format_version"] = 1
    with pytest.raises(Int8ModelError):
        Int8DeviceModel.from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["local"][0]["zp_in_channels"] = [0] * bad["local"][0]["shape"][-1]
    with pytest.raises(Int8ModelError, match="zp_in_channels"):
        Int8DeviceModel.from_json(bad)


@pytest.fixture(scope="module")
def rgb_driver(rgb_bundle, tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    bundle, _ = rgb_bundle
    out = tmp_path_factory.mktemp("rgblib")
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(bundle.path), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    padded = bundle.int8_device().extractor[0].kind == "conv"
    assert ("agn_p_extractor0" in (out / "agn_model.c").read_text()) == padded  # pad_in only where there is padding
    exe = tmp_path_factory.mktemp("rgbbin") / "driver"
    return compile_c([*sorted(out.glob("*.c")), DRIVER], exe, ["-I", str(out)]), out


def test_c_library_is_bit_exact_on_rgb_images(rgb_bundle, rgb_driver):
    """agn_device_infer's int16 logits and centroid indices, and agn_device_run's payloads (with and
    without a byte budget), equal the Python reference on RGB images, the mean-coloured one included."""
    from test_firmware_bitexact import run_driver

    bundle, _ = rgb_bundle
    rgb_driver, _ = rgb_driver
    model = bundle.int8_device()
    images = rgb_images(300, 2, bundle.input_shape[1])
    images[0] = np.asarray(model.input_zp) + 128
    reference = model.run(images)
    assert_driver_infer_matches(rgb_driver, bundle, images, reference)
    classes = bundle.num_classes
    codec = bundle.codec()
    for cap in (0, 40, header_size(0)):  # header_size(0): the header alone, no channel
        for i, (status, payload, sent, lg) in enumerate(run_driver(rgb_driver, images[:100], cap, classes)):
            expected, expected_sent = codec.encode_within(reference.indices[i], cap or None)
            assert status == 0 and payload == expected and sent == expected_sent, (cap, i)
            assert np.array_equal(lg, reference.logits[i])


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="needs qemu-system-arm and arm-none-eabi-gcc (.ci/setup installs both)")
def test_cortex_m7_firmware_is_bit_exact_on_rgb_images(tmp_path):
    """The Cortex-M7 build in QEMU: every FEATURES frame (logits, coded payload) of a padded RGB
    first conv equals the Python integer device part's, the mean-coloured image included."""
    from agilenn.firmware.build import build
    from test_firmware_qemu import assert_firmware_frames_equal_python

    bundle, _ = make_rgb_bundle(tmp_path / "b", "conv-padded")
    images = rgb_images(24, 3)
    images[0] = np.asarray(bundle.int8_device().input_zp) + 128
    firmware = build(bundle.path, tmp_path / "fw", "mps2-an500")
    assert_firmware_frames_equal_python(bundle.path, firmware, images)


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="needs qemu-system-arm and arm-none-eabi-gcc (.ci/setup installs both)")
def test_instruction_log_profile_survives_a_camera_image_larger_than_the_receive_ring(tmp_path):
    """Under QEMU's instruction log the CPU is far slower than the UART: a 3,072-byte image overruns
    the board's 1,024-byte receive ring. The board must hold bytes back in the UART, not drop them
    (it dropped them, and the run stalled waiting for the rest of the image)."""
    from agilenn.firmware.build import build
    from agilenn.firmware.profile import profile

    bundle, _ = make_rgb_bundle(tmp_path / "b", "conv-padded")
    firmware = build(bundle.path, tmp_path / "fw", "mps2-an500")
    counts, results = profile(bundle.path, firmware.elf, rgb_images(2, 5), timeout_s=120)
    assert [r["image"] for r in results] == [0, 1]
    assert counts["agn_conv_s8"] > 0 and counts["agn_rans_ctx_encode"] > 0


def test_rgb_library_is_clean_under_address_and_undefined_sanitizers(rgb_bundle, rgb_driver, tmp_path):
    bundle, _ = rgb_bundle
    driver, lib = rgb_driver
    exe = compile_c([*sorted(lib.glob("*.c")), DRIVER], tmp_path / "drv-san",
                    ["-I", str(lib), "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    images = rgb_images(20, 4, bundle.input_shape[1]).tobytes()
    for args in (["infer"], ["run", "40"]):
        runs = [subprocess.run([str(x), *args], input=images, capture_output=True, check=True, timeout=120).stdout
                for x in (exe, driver)]
        assert runs[0] == runs[1], args
