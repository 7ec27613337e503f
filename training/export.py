"""Write the bundle: device.onnx, remote.onnx, reference.onnx and manifest.json (docs/bundle.md)."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .data import SCALE

OPSET = 17


class DevicePart(nn.Module):
    """image -> (local_logits, remote_features before quantization)."""

    def __init__(self, extractor: nn.Module, local: nn.Module, k: int):
        super().__init__()
        self.extractor, self.local, self.k = extractor, local, k

    def forward(self, image):
        f = self.extractor(image)
        return self.local(f[:, :self.k]), f[:, self.k:]


def _export(module: nn.Module, example, path: Path, inputs: list[str], outputs: list[str]) -> None:
    module = module.eval()
    axes = {n: {0: "N"} for n in inputs + outputs}
    kwargs = dict(input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET)
    try:
        torch.onnx.export(module, (example,), str(path), dynamo=False, **kwargs)
    except TypeError:  # an older torch without the dynamo switch
        torch.onnx.export(module, (example,), str(path), **kwargs)


@torch.no_grad()
def train_symbols(model, x: torch.Tensor, centroids: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Centroid indices uint8 [N, R, h, w] of the remote channels on ``x`` (the training set),
    quantized exactly as the codec does (nearest centroid in numpy)."""
    from agilenn.codec import quantize

    model.eval()
    k = model.cfg.k
    return np.concatenate([quantize(model.extractor(x[i:i + batch_size])[:, k:].cpu().numpy(), centroids)
                           for i in range(0, x.shape[0], batch_size)])


def symbol_probabilities(model, x: torch.Tensor, centroids: np.ndarray, batch_size: int = 1000,
                         symbols: np.ndarray | None = None) -> np.ndarray:
    """Per remote channel, how often each centroid index occurs on ``x`` (the training set; or on
    the given ``symbols`` of it). Add-one smoothing keeps every symbol encodable."""
    idx = train_symbols(model, x, centroids, batch_size) if symbols is None else symbols
    L = len(centroids)
    counts = np.stack([np.bincount(idx[:, ch].reshape(-1), minlength=L) for ch in range(idx.shape[1])])
    counts = counts.astype(np.float64) + 1.0
    return counts / counts.sum(1, keepdims=True)


def rans_tables(probabilities, precision: int | None = None) -> dict:
    """The rans coder's integer tables (docs/protocol.md), computed once here and stored in the
    manifest so that no decoder and no C encoder ever recomputes them."""
    from agilenn.codec.rans import DEFAULT_PRECISION, quantize_frequencies

    bits = DEFAULT_PRECISION if precision is None else precision
    return {"frequency_bits": bits, "frequencies": quantize_frequencies(probabilities, bits).tolist()}


def context_tables(symbols: np.ndarray, levels: int, split: str) -> dict:
    """The rans-ctx coder's tables (codec/context_fit.py) from the float part's training symbols;
    the trainer refits them on the integer device part's symbols once that exists
    (training/context_tables.py)."""
    from agilenn.codec.context_fit import fit_context

    context = fit_context(symbols, levels)
    context["fitted_on"].update(split=split, numerics="float")
    return context


def export_bundle(run, ref, model, bundle_dir: Path, command: str, evaluator=None, channel_order=None) -> dict:
    """Writes the ONNX files and manifest.json. With ``evaluator`` (the frozen body that judged
    importance, reading features in the trained extractor's channel order) the bundle also carries
    evaluator.onnx + extractor.onnx and an 'xai' section, so skewness can be re-measured from it
    (training/attribution.py)."""
    from agilenn.models.bundle import FORMAT_VERSION, write_manifest

    cfg, a = run.cfg, run.cfg.arch
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    ref = ref.cpu().eval()
    c_in, (h, w) = a.in_channels, a.input_hw
    fh, fw = a.feature_hw
    R = a.channels - a.k
    img = torch.zeros(2, c_in, h, w)
    device_part = DevicePart(model.extractor, model.local, a.k).eval()
    _export(device_part, img, bundle_dir / "device.onnx", ["image"], ["local_logits", "remote_features"])
    _export(model.remote, torch.zeros(2, R, fh, fw), bundle_dir / "remote.onnx", ["remote_features"], ["remote_logits"])
    _export(ref, img, bundle_dir / "reference.onnx", ["image"], ["logits"])
    files = {"device": "device.onnx", "remote": "remote.onnx", "reference": "reference.onnx"}
    xai = None
    if evaluator is not None:
        _export(evaluator.cpu().eval(), torch.zeros(2, a.channels, fh, fw), bundle_dir / "evaluator.onnx",
                ["features"], ["logits"])
        _export(model.extractor, img, bundle_dir / "extractor.onnx", ["image"], ["features"])
        files.update(evaluator="evaluator.onnx", extractor="extractor.onnx")
        xai = {"method": cfg.xai, "ig_steps": cfg.ig_steps, "rho": cfg.rho, "preselect": cfg.preselect,
               # channel_order[i]: which of the stage-2 extractor's channels preselection put at position i
               "channel_order": [int(c) for c in channel_order] if channel_order is not None else None}

    centroids = model.quantizer.sorted_centroids().numpy().astype(np.float32)
    symbols = train_symbols(model, run.x_train, centroids)
    probs = symbol_probabilities(model, run.x_train, centroids, symbols=symbols)
    manifest = {
        "format": "agilenn-bundle",
        "format_version": FORMAT_VERSION,
        "model": {"name": cfg.model_name, "version": cfg.model_version},
        "dataset": cfg.dataset,
        **({"dataset_note": cfg.data_note} if cfg.data_note else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command,
        "input": {"shape": [c_in, h, w], "scale": SCALE, "mean": run.mean, "std": run.std},
        "classes": list(run.classes),
        "features": {"channels": a.channels, "k": a.k, "height": fh, "width": fw},
        "quantizer": {"centroids": [float(c) for c in centroids]},
        # float32 -> float: bundle.merge() casts back to float32, reproducing training exactly
        "alpha": float(model.alpha.detach().float().item()),
        "coder": {"default": "rans-ctx", "zstd_level": 19, "symbol_probabilities": probs.round(8).tolist()},
        "files": files,
        "metrics": {},
        # device_cost and the integer device part are added by agilenn.firmware.bundle_int8 after the report
        "training": {"config": cfg.to_dict()},
    }
    if xai is not None:
        manifest["xai"] = xai
    # re-normalise after rounding so each row sums to 1 in the JSON
    p = np.asarray(manifest["coder"]["symbol_probabilities"])
    manifest["coder"]["symbol_probabilities"] = (p / p.sum(1, keepdims=True)).tolist()
    manifest["coder"].update(rans_tables(manifest["coder"]["symbol_probabilities"]))
    manifest["coder"]["context"] = context_tables(symbols, len(centroids), f"{cfg.dataset} train")
    write_manifest(bundle_dir, manifest)
    return manifest


def update_manifest_metrics(bundle_dir: Path, metrics: dict) -> None:
    from agilenn.models.bundle import write_manifest

    path = Path(bundle_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"] = metrics
    write_manifest(bundle_dir, manifest)
