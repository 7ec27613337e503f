"""Write the rans-ctx tables (manifest ``coder.context``) of a bundle, learned on its training set.

    python -m agilenn.training.context_tables --bundle models/repository/agilenn-fashion-mnist/1

The symbols are what the device sends: the integer device part's centroid indices when the bundle
has one (the agent's default numerics), else the float device part's, on the dataset's training
split. The test split then measures the payload (every payload decoded back and compared), and the
result goes to ``metrics.rans_ctx`` of the manifest. ``coder.default`` becomes ``rans-ctx``.
training's export fits the same tables on the float symbols when it writes a bundle; the trainer
refits them here once the integer device part exists.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("agilenn.training")


def device_indices(bundle, images: np.ndarray, batch: int = 2000) -> np.ndarray:
    """uint8 [N, C - k, h, w]: what the device part (integer when the bundle has one) sends."""
    if bundle.has_int8_device:
        model = bundle.int8_device()
        return np.concatenate([model.run(images[i:i + batch]).indices for i in range(0, len(images), batch)])
    from agilenn.device_agent.device_model import single_thread_session

    session, codec = single_thread_session(bundle.onnx_path("device")), bundle.codec()
    return np.concatenate([codec.quantize(session.run(["remote_features"], {"image": bundle.preprocess(images[i:i + batch])})[0])
                           for i in range(0, len(images), batch)])


def measure(codec, indices: np.ndarray) -> dict:
    """Mean / p99 payload bytes of rans-ctx and rans on ``indices``, every payload decoded back exactly."""
    from agilenn.codec import header_size

    coder = codec._coder("rans-ctx")._coder
    bodies = coder.encode_batch(indices)
    for j, body in enumerate(bodies):
        if not np.array_equal(coder.decode(body, indices.shape[1]), indices[j]):
            raise AssertionError(f"rans-ctx round trip differs on sample {j}")
    header = header_size(indices.shape[1], codec.payload_version)
    sizes = np.array([header + len(b) for b in bodies])
    out = {"samples": int(len(sizes)), "bytes_mean": float(sizes.mean()), "bytes_p99": float(np.percentile(sizes, 99)),
           "decoded_exactly": True, "flash_bytes": codec.context.flash_bytes()["total"]}
    if codec.frequencies is not None:
        from agilenn.codec.rans import EncoderTables

        c, hw = indices.shape[1], indices.shape[2] * indices.shape[3]
        order0 = EncoderTables(codec.frequencies, codec.frequency_bits).encode_batch(
            indices.reshape(len(indices), -1), np.repeat(np.arange(c), hw))
        out["rans_bytes_mean"] = float(header + np.mean([len(b) for b in order0]))
    return out


def add_context_tables(bundle_dir, train_images=None, test_images=None, **fit_options) -> dict:
    """Fit, write coder.context (+ default rans-ctx) and metrics.rans_ctx; returns the metrics."""
    from agilenn.codec import FeatureCodec
    from agilenn.codec.context_fit import fit_context
    from agilenn.models import load_bundle, write_manifest
    from agilenn.training.datasets import load_dataset

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    dataset = bundle.manifest.get("dataset", "")
    if train_images is None:
        train_images = load_dataset(dataset, "train").images
    if test_images is None:
        test_images = load_dataset(dataset, "test").images
    numerics = "int8" if bundle.has_int8_device else "float"
    context = fit_context(device_indices(bundle, train_images), bundle.codec().levels, **fit_options)
    context["fitted_on"].update(split=f"{dataset} train", numerics=numerics)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["coder"]["context"] = context
    manifest["coder"]["default"] = "rans-ctx"
    result = measure(FeatureCodec.from_manifest(manifest), device_indices(bundle, test_images))
    result.update(split=f"{dataset} test", numerics=numerics)
    manifest.setdefault("metrics", {})["rans_ctx"] = result
    write_manifest(bundle_dir, manifest)
    log.info("rans-ctx tables: %d rows, %d B flash; test payload %.1f B mean (rans %.1f B)",
             len(context["frequencies"]), result["flash_bytes"], result["bytes_mean"], result.get("rans_bytes_mean", 0))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory (its manifest is rewritten)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(add_context_tables(args.bundle), indent=1))


if __name__ == "__main__":
    main()
