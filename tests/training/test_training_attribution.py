"""Faithful attribution: IG's completeness gap shrinks with m and meets the tolerance; the 1-interval
trapezoid is training's 2-point IG; the ONNX evaluator runs as differentiable torch code."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def evaluator_and_features():
    from agilenn.training.nets import ArchConfig, Body

    torch.manual_seed(0)
    cfg = ArchConfig(channels=8, k=2, body_width=8)
    body = Body(cfg.channels, cfg).eval()
    f = torch.relu(torch.randn(40, 8, 7, 7))
    y = torch.randint(0, 10, (40,))
    return body, f, y


def test_completeness_gap_shrinks_with_steps(evaluator_and_features):
    from agilenn.training.attribution import completeness_gap, integrated_gradients

    body, f, y = evaluator_and_features
    rel = []
    for m in (1, 4, 64):
        attr, delta = integrated_gradients(body, f, y, m)
        gap, target = completeness_gap(attr, delta)
        rel.append(gap / target)
    assert rel[2] < rel[1] < rel[0] and rel[2] < 0.05


def test_one_interval_is_trainings_two_point_ig(evaluator_and_features):
    from agilenn.training.attribution import integrated_gradients
    from agilenn.training.xai import importance

    body, f, y = evaluator_and_features
    attr, _ = integrated_gradients(body, f, y, 1)
    two_point, _ = importance(body, f, y, "ig", 0)
    torch.testing.assert_close(attr.abs(), two_point, rtol=1e-5, atol=1e-7)


def test_faithful_skewness_meets_tolerance(evaluator_and_features):
    from agilenn.training.attribution import measure_skewness

    body, f, y = evaluator_and_features
    result, per_sample = measure_skewness(body, f, y, k=2)
    assert result.met_tolerance and result.completeness_relative <= 0.05
    assert result.ig_steps in (16, 32, 64, 128, 256) and per_sample.shape == (40,)
    assert 0.0 <= result.skewness_mean <= 1.0


def test_onnx_evaluator_matches_torch_values_and_gradients(tmp_path, evaluator_and_features):
    from agilenn.training.export import _export
    from agilenn.training.onnx_torch import OnnxModule

    body, f, y = evaluator_and_features
    for m in body.modules():  # non-trivial BatchNorm statistics, folded into Conv by the export
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    _export(body, torch.zeros(2, 8, 7, 7), tmp_path / "ev.onnx", ["features"], ["logits"])
    onnx_body = OnnxModule(tmp_path / "ev.onnx")
    a, b = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    la, lb = body(a), onnx_body(b)
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-5)
    (ga,) = torch.autograd.grad(la[:, 3].sum(), a)
    (gb,) = torch.autograd.grad(lb[:, 3].sum(), b)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_onnx_module_names_unsupported_ops(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from agilenn.training.onnx_torch import OnnxModule

    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "s.onnx")
    with pytest.raises(ValueError, match=r"ONNX ops \['Softmax'\] are not supported"):
        OnnxModule(tmp_path / "s.onnx")


def test_onnx_module_runs_a_shipped_device_part_with_both_outputs():
    """device.onnx (extractor, the split into local and remote channels by Slice, local predictor) as
    torch code gives onnxruntime's two outputs; a bundle's device part can then be trained on."""
    import onnxruntime as ort

    from agilenn.models import load_bundle
    from agilenn.training.onnx_torch import OnnxModule

    bundle = load_bundle("models/repository/agilenn-cifar10/4")
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(bundle.onnx_path("device")), providers=["CPUExecutionProvider"]).run(
        ["local_logits", "remote_features"], {"image": x})
    got = OnnxModule(bundle.onnx_path("device"), output=("local_logits", "remote_features"), trainable=True)(
        torch.from_numpy(x))
    assert [g.shape for g in got] == [(3, 10), (3, 24, 8, 8)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g.detach(), torch.from_numpy(w), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"no output named \['logits'\].*'local_logits', 'remote_features'"):
        OnnxModule(bundle.onnx_path("device"), output="logits")


def test_onnx_slice_with_steps_is_refused_by_name():
    from agilenn.training.onnx_torch import _slice

    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(_slice(x, torch.tensor([1]), torch.tensor([2**62]), torch.tensor([1])), x[:, 1:])
    assert torch.equal(_slice(x, torch.tensor([0, -2]), torch.tensor([1, 4])), x[0:1, -2:4])
    with pytest.raises(ValueError, match=r"Slice with steps \[2\] is not supported"):
        _slice(x, torch.tensor([0]), torch.tensor([3]), torch.tensor([1]), torch.tensor([2]))
