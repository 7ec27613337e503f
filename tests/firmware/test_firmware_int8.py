"""The integer device part in Python: its arithmetic, its quantizer thresholds, the bundle format,
the quantize command on a synthetic bundle, and the agent's choice of numerics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agilenn.codec import quantize
from agilenn.firmware.int8 import Int8DeviceModel, Int8ModelError, centroid_indices, rshift_round
from agilenn.firmware.quantize import quantize_multiplier
from agilenn.models import DEFAULT_REPOSITORY, BundleError, load_bundle
from agilenn.models.model_repository import shipped_versions
from agilenn.models.synthetic import make_random_bundle


def test_rshift_round_is_round_half_up():
    v = np.array([5, 6, 7, -5, -6, -7, 4, -4, 12, -12], np.int64)
    # v / 4 = 1.25 1.5 1.75 -1.25 -1.5 -1.75 1 -1 3 -3 -> half goes up (towards +infinity)
    assert rshift_round(v, 2).tolist() == [1, 2, 2, -1, -1, -2, 1, -1, 3, -3]


@given(st.floats(min_value=1e-12, max_value=0.99, allow_nan=False))
def test_quantized_multiplier_is_within_half_an_ulp(m):
    mult, n = quantize_multiplier(m)
    assert 1 << 30 <= mult < 1 << 31 and 1 <= n <= 62
    if n < 62:
        assert abs(mult * 2.0 ** -n - m) <= 2.0 ** -(n + 1)


@example(gaps=[0.9999999999999999], scale=0.03125)  # a midpoint an ulp below a grid point
@given(st.lists(st.floats(min_value=0.001, max_value=1.0), min_size=1, max_size=5),
       st.floats(min_value=0.001, max_value=0.05))
def test_integer_thresholds_agree_with_the_float_quantizer(gaps, scale):
    """index = #{i : q > T[i]} equals nearest-centroid (ties lower) on the real value s * (q + 128)."""
    centroids = np.concatenate([[0.0], np.cumsum(gaps)]).astype(np.float64)
    mids = (centroids[:-1] + centroids[1:]) / 2
    thresholds = np.clip(np.floor(mids / scale).astype(np.int64) - 128, -129, 127)  # as firmware/quantize.py
    q = np.arange(-128, 128)
    # the float rule "value > midpoint" on the int8 grid, compared in units of the scale (in float64
    # a value that equals a midpoint exactly could round either way when multiplied back)
    expected = np.searchsorted(mids / scale, q + 128, side="left")
    assert np.array_equal(centroid_indices(q, thresholds), expected)


@pytest.fixture(scope="module")
def quantized_synthetic(tmp_path_factory):
    """A synthetic bundle with an integer device part added by the same function as the CLI."""
    from agilenn.firmware.bundle_int8 import add_int8_device

    path = make_random_bundle(tmp_path_factory.mktemp("q") / "b", seed=3)
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    test = rng.integers(0, 256, (200, 28, 28, 1), dtype=np.uint8)
    section = add_int8_device(path, calib, test, rng.integers(0, 10, 200), calibration_label="random")
    return path, section


def test_quantize_writes_format_2_and_the_int8_section(quantized_synthetic):
    path, section = quantized_synthetic
    b = load_bundle(path)
    assert b.manifest["format_version"] == 2 and b.has_int8_device
    assert b.manifest["files"]["int8_device"] == "device_int8.json" == section["file"]
    model = b.int8_device()
    assert model.logit_scale == b.manifest["int8_device"]["logits"]["scale"]
    assert {"macs", "params", "weight_bytes", "arena_bytes"} <= set(b.manifest["device_cost"])
    # the integer part tracks the float one on its own calibration distribution
    assert section["accuracy"]["local_prediction_agreement"] > 0.9
    assert section["accuracy"]["index_agreement"] > 0.9


def test_int8_json_round_trips_and_rejects_damage(quantized_synthetic, tmp_path):
    path, _ = quantized_synthetic
    doc = json.loads((path / "device_int8.json").read_text())
    model = Int8DeviceModel.from_json(doc)
    assert Int8DeviceModel.from_json(model.to_json()).to_json() == model.to_json()
    bad = json.loads(json.dumps(doc))
    bad["extractor"][0]["multiplier"][0] = 5
    with pytest.raises(Int8ModelError, match="multiplier must lie in"):
        Int8DeviceModel.from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["extractor"][0]["weights"][0] = 128
    with pytest.raises(Int8ModelError, match=r"\[-127, 127\]"):
        Int8DeviceModel.from_json(bad)


def test_a_damaged_int8_file_fails_at_load_naming_it(quantized_synthetic, tmp_path):
    import shutil

    src, _ = quantized_synthetic
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    (dst / "device_int8.json").write_text("{")
    with pytest.raises(BundleError, match="device_int8.json"):
        load_bundle(dst)


def test_format_1_bundles_still_load(tmp_path):
    path = make_random_bundle(tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    b = load_bundle(path)
    assert not b.has_int8_device
    manifest["int8_device"] = {"file": "x.json", "logits": {"scale": 1.0}}
    manifest["files"]["int8_device"] = "x.json"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="needs format_version 2"):
        load_bundle(path)


def test_agent_uses_the_integer_part_by_default_and_float_on_request(quantized_synthetic):
    from agilenn.device_agent.agent import Agent
    from agilenn.device_agent.device_model import DevicePart

    path, _ = quantized_synthetic
    b = load_bundle(path)
    image = np.random.default_rng(5).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    with Agent(b, None) as agent:
        assert agent.device.numerics == "int8"
        r = agent.infer(image)
    out = b.int8_device().run(image[None])
    np.testing.assert_array_equal(r.local_logits, b.int8_device().dequantize_logits(out.logits[0]))
    floaty = DevicePart(b, "float").run(image)
    assert floaty.remote_indices is None and floaty.remote_features is not None
    assert np.array_equal(floaty.indices(b.codec()), quantize(floaty.remote_features, b.codec().centroids))
    with pytest.raises(ValueError, match="no integer device part"):
        DevicePart(load_bundle(make_random_bundle(path.parent / "plain")), "int8")


# every Fashion-MNIST bundle the repository ships (a new version cannot skip the check)
@pytest.mark.parametrize("name", [f"{model}/{version}" for model, version in shipped_versions("fashion-mnist")])
def test_shipped_bundles_carry_the_int8_part_within_the_accuracy_targets(name):
    """Measured by `agilenn-firmware quantize` on the full 10k test set: combined within 0.3 pp of
    float, local-only within 0.5 pp; the report shows both."""
    path = DEFAULT_REPOSITORY / name
    b = load_bundle(path)
    acc = b.manifest["int8_device"]["accuracy"]
    assert acc["test_samples"] == 10000
    assert acc["float_combined"] - acc["int8_combined"] <= 0.003
    assert acc["float_local"] - acc["int8_local"] <= 0.005
    report = (path / "report.md").read_text()
    assert "## Integer device part (int8)" in report and f"{100 * acc['int8_combined']:.2f} %" in report
    assert json.loads((path / "report.json").read_text())["int8_device"]["accuracy"] == acc


def test_weights_reached_through_identity_nodes_are_read(tmp_path):
    """torch.onnx stores equal tensors once and routes other users through Identity nodes; the
    int8 reader must see the same layers as when every conv has its own initializer."""
    import onnx
    from onnx import helper

    from agilenn.firmware.quantize import read_device_onnx

    bundle = load_bundle(make_random_bundle(tmp_path / "b", seed=4))
    path = bundle.path / "device.onnx"
    plain = read_device_onnx(path, bundle.input_shape)
    model = onnx.load(str(path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    alias = conv.input[1] + "_alias"
    model.graph.node.insert(0, helper.make_node("Identity", [conv.input[1]], [alias]))
    conv.input[1] = alias
    aliased_path = tmp_path / "aliased.onnx"
    onnx.save(model, str(aliased_path))
    aliased = read_device_onnx(aliased_path, bundle.input_shape)
    assert aliased.k == plain.k and len(aliased.extractor) == len(plain.extractor) >= 1
    assert len(aliased.local) == len(plain.local)
    for a, b in zip(aliased.extractor + aliased.local, plain.extractor + plain.local):
        fa, fb = vars(a), vars(b)
        assert fa.keys() == fb.keys()
        for key in fa:
            assert np.array_equal(np.asarray(fa[key]), np.asarray(fb[key])), key


def test_a_channel_weight_decay_all_but_killed_quantizes_to_its_bias():
    """CIFAR-10 version 4's 300-epoch reference left 1x1-conv channels with weights ~1e-20 and a
    bias ~1e-11: at wmax/127 that bias needs ~1e13 accumulator units. The weight scale is raised
    until the bias fits, the weights round to 0, and the channel outputs its (float) bias; the live
    channels keep wmax/127 and match float within one step."""
    from agilenn.firmware.int8 import run_layer
    from agilenn.firmware.quantize import BIAS_UNITS_MAX, FloatLayer, _quantize_layer

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (4, 1, 1, 6))
    b = np.array([0.1, -0.2, 0.0, 0.0])
    w[2], b[2] = 2e-20, -2e-11    # dead, as trained
    w[3], b[3] = 1e-20, 0.4       # no signal, but a bias that carries through the ReLU6
    layer = FloatLayer("expand", "conv", w, b, act="relu6")
    x = rng.uniform(0, 2, (2, 5, 5, 6))
    s_in, zp_in = 2.0 / 255, -128
    s_out = 6.0 / 255
    q = _quantize_layer(layer, s_in, zp_in, np.full(4, s_out), -128)
    assert np.abs(q.bias).max() <= BIAS_UNITS_MAX
    assert not q.weights[2].any() and not q.weights[3].any()
    xq = np.clip(np.rint(x / s_in) + zp_in, -128, 127).astype(np.int8)
    got = (run_layer(q, xq).astype(np.float64) + 128) * s_out
    want = layer.run((xq.astype(np.float64) - zp_in) * s_in)
    assert np.abs(got - want).max() <= s_out
    assert np.allclose(got[..., 2], 0.0) and np.allclose(got[..., 3], 0.4, atol=s_out)
