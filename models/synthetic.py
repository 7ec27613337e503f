"""A small, valid bundle with random weights, built with onnx.helper (no torch). For tests only.

Its ONNX graphs have the real contract's tensor names and shapes, so the agent, server, codec and
benchmarks can run end to end on it without a trained model:

    device:    image -> Conv(k=s+2p, stride=s, pads=p) -> Relu -> features[C]   (p = pad, default 0)
               features[:k] -> Flatten -> Gemm -> local_logits
               features[k:] -> remote_features
    remote:    remote_features -> Flatten -> Gemm -> remote_logits
    reference: image -> Conv -> Relu -> Flatten -> Gemm -> logits
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .bundle import (
    DEVICE_INPUT,
    DEVICE_LOCAL_LOGITS,
    DEVICE_REMOTE_FEATURES,
    FORMAT,
    FORMAT_VERSION,
    REFERENCE_INPUT,
    REFERENCE_LOGITS,
    REMOTE_INPUT,
    REMOTE_LOGITS,
    write_manifest,
)

OPSET = 17


def _tensor(name, array):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _save(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="agilenn-synthetic")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _conv_relu(prefix, input_name, c_in, c_out, stride, rng, pad=0):
    from onnx import helper

    kernel = stride + 2 * pad  # with `pad` zeros on every side the output is still input / stride
    w = rng.normal(0, 1.0 / np.sqrt(c_in * kernel * kernel), size=(c_out, c_in, kernel, kernel))
    b = rng.normal(0, 0.1, size=(c_out,)) + 0.5  # positive bias: most features are non-zero after Relu
    nodes = [
        helper.make_node("Conv", [input_name, f"{prefix}_w", f"{prefix}_b"], [f"{prefix}_conv"],
                         kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4),
        helper.make_node("Relu", [f"{prefix}_conv"], [f"{prefix}_out"]),
    ]
    return nodes, [_tensor(f"{prefix}_w", w), _tensor(f"{prefix}_b", b)], f"{prefix}_out"


def _ints(name, values):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _linear(prefix, input_name, output_name, n_in, n_out, rng):
    from onnx import helper

    w = rng.normal(0, 1.0 / np.sqrt(n_in), size=(n_out, n_in))
    b = rng.normal(0, 0.1, size=(n_out,))
    nodes = [
        helper.make_node("Flatten", [input_name], [f"{prefix}_flat"], axis=1),
        helper.make_node("Gemm", [f"{prefix}_flat", f"{prefix}_w", f"{prefix}_b"], [output_name], transB=1),
    ]
    return nodes, [_tensor(f"{prefix}_w", w), _tensor(f"{prefix}_b", b)]


def make_random_bundle(
    out_dir,
    name: str = "synthetic",
    version: str = "1",
    input_shape=(1, 28, 28),
    num_classes: int = 10,
    channels: int = 8,
    k: int = 2,
    feature_hw=(7, 7),
    levels: int = 4,
    alpha: float = 0.5,
    with_reference: bool = True,
    default_coder: str = "ans",
    seed: int = 0,
    mean=None,
    std=None,
    pad: int = 0,
    merge: dict | None = None,
) -> Path:
    """Write a bundle into out_dir and return its path.

    mean, std: the input normalisation per channel (default 0.5 and 0.25 for every channel); give
    RGB bundles different means per channel to exercise per-channel input zero points. pad: zero
    padding of the device's conv (kernel stride + 2 * pad), which the integer part must reproduce."""
    from onnx import TensorProto, helper

    from agilenn.codec.rans import DEFAULT_PRECISION, quantize_frequencies

    rng = np.random.default_rng(seed)
    c_in, h, w = input_shape
    fh, fw = feature_hw
    if h % fh or w % fw or h // fh != w // fw:
        raise ValueError(f"input {h}x{w} must be a whole, equal multiple of the features {fh}x{fw}")
    stride = h // fh
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remote = channels - k

    def value(name_, dims):
        return helper.make_tensor_value_info(name_, TensorProto.FLOAT, dims)

    # device part
    nodes, inits, feats = _conv_relu("ext", DEVICE_INPUT, c_in, channels, stride, rng, pad)
    inits += [_ints("ax1", [1]), _ints("s0", [0]), _ints("sk", [k]), _ints("sc", [channels])]
    nodes += [
        helper.make_node("Slice", [feats, "s0", "sk", "ax1"], ["local_feats"]),
        helper.make_node("Slice", [feats, "sk", "sc", "ax1"], [DEVICE_REMOTE_FEATURES]),
    ]
    lin_nodes, lin_inits = _linear("local", "local_feats", DEVICE_LOCAL_LOGITS, k * fh * fw, num_classes, rng)
    graph = helper.make_graph(
        nodes + lin_nodes, "device", [value(DEVICE_INPUT, ["N", c_in, h, w])],
        [value(DEVICE_LOCAL_LOGITS, ["N", num_classes]), value(DEVICE_REMOTE_FEATURES, ["N", remote, fh, fw])],
        inits + lin_inits,
    )
    _save(graph, out / "device.onnx")

    # remote part
    lin_nodes, lin_inits = _linear("remote", REMOTE_INPUT, REMOTE_LOGITS, remote * fh * fw, num_classes, rng)
    graph = helper.make_graph(lin_nodes, "remote", [value(REMOTE_INPUT, ["N", remote, fh, fw])],
                              [value(REMOTE_LOGITS, ["N", num_classes])], lin_inits)
    _save(graph, out / "remote.onnx")

    files = {"device": "device.onnx", "remote": "remote.onnx"}
    if with_reference:
        nodes, inits, feats = _conv_relu("ref", REFERENCE_INPUT, c_in, channels, stride, rng)
        lin_nodes, lin_inits = _linear("ref_head", feats, REFERENCE_LOGITS, channels * fh * fw, num_classes, rng)
        graph = helper.make_graph(nodes + lin_nodes, "reference", [value(REFERENCE_INPUT, ["N", c_in, h, w])],
                                  [value(REFERENCE_LOGITS, ["N", num_classes])], inits + lin_inits)
        _save(graph, out / "reference.onnx")
        files["reference"] = "reference.onnx"

    # Features after Relu of a positive-bias conv mostly fall in [0, ~2]; spread centroids there and
    # give the coder a skewed, channel-dependent table so ans has something to exploit.
    centroids = np.linspace(0.0, 2.0, levels).round(6).tolist()
    probabilities = rng.dirichlet(np.linspace(3.0, 0.5, levels), size=remote).round(6)
    probabilities = (probabilities / probabilities.sum(axis=1, keepdims=True)).tolist()
    frequencies = quantize_frequencies(probabilities, DEFAULT_PRECISION).tolist()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": name, "version": version},
        "dataset": "synthetic",
        "created": "1970-01-01T00:00:00Z",
        "command": f"agilenn.models.synthetic.make_random_bundle(seed={seed})",
        "input": {"shape": list(input_shape), "scale": 1 / 255,
                  "mean": [0.5] * c_in if mean is None else [float(m) for m in mean],
                  "std": [0.25] * c_in if std is None else [float(v) for v in std]},
        "classes": [f"class_{i}" for i in range(num_classes)],
        "features": {"channels": channels, "k": k, "height": fh, "width": fw},
        "quantizer": {"centroids": centroids},
        "alpha": alpha,
        "coder": {"default": default_coder, "zstd_level": 19, "symbol_probabilities": probabilities,
                  "frequency_bits": DEFAULT_PRECISION, "frequencies": frequencies},
        "files": files,
        "metrics": {"note": "random weights: accuracy is chance"},
    }
    if merge is not None:  # budget-aware merging (docs/bundle.md "merge")
        manifest["merge"] = merge
    write_manifest(out, manifest)
    return out


def main() -> None:  # pragma: no cover - convenience for humans
    import argparse

    parser = argparse.ArgumentParser(description="write a random-weight test bundle")
    parser.add_argument("out")
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    print(json.dumps(str(make_random_bundle(args.out, args.name, args.version))))


if __name__ == "__main__":  # pragma: no cover
    main()
