"""How much precision the reply's logits need: predictions with compact logits vs float32.

    python -m agilenn.benchmarks.logits_precision [--bundle DIR] [--limit N]

Runs the whole test set through the bundle exactly as agent and server do (the integer device part
when the bundle has one, the centroid indices dequantized, remote.onnx; reference.onnx for the
edge-only images), then rounds the logits the server would send to each compact form and counts the
predictions that change: the merged AgileNN prediction for remote logits, the reference prediction
for images. Prints one JSON document (benchmarks/RESULTS.md quotes it).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from agilenn.server.logits import FORMATS, decode_logits, encode_logits


def _run(session, name, x, batch=1000):
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def measure(bundle, images: np.ndarray, labels: np.ndarray) -> dict:
    from agilenn.codec.quantize import dequantize
    from agilenn.device_agent.device_model import DevicePart, single_thread_session

    codec = bundle.codec()
    device = DevicePart(bundle)
    local, remote_in = [], []
    for image in images:
        out = device.run(image)
        local.append(out.local_logits)
        remote_in.append(dequantize(out.indices(codec), codec.centroids))
    local = np.stack(local).astype(np.float32)
    remote = _run(single_thread_session(bundle.onnx_path("remote")), "remote_features", np.stack(remote_in))
    results = {"images": int(len(images)), "formats": {}}
    reference = None
    if bundle.has("reference"):
        reference = _run(single_thread_session(bundle.onnx_path("reference")), "image", bundle.preprocess(images))
    base_merged = np.argmax(bundle.merge(local, remote), axis=1)
    base_ref = None if reference is None else np.argmax(reference, axis=1)
    for fmt in FORMATS:
        enc = [encode_logits(r, fmt) for r in remote]
        back = np.stack([decode_logits(m) for m in enc])
        merged = np.argmax(bundle.merge(local, back), axis=1)
        row = {"logits_message_bytes": int(np.mean([m.ByteSize() for m in enc])),
               "merged_predictions_changed": int((merged != base_merged).sum()),
               "merged_accuracy": round(float((merged == labels).mean()), 4),
               "max_abs_error": float(np.abs(back - remote).max())}
        if reference is not None:
            ref_back = np.stack([decode_logits(encode_logits(r, fmt)) for r in reference])
            row["reference_predictions_changed"] = int((np.argmax(ref_back, axis=1) != base_ref).sum())
        results["formats"][fmt] = row
    results["float32_merged_accuracy"] = round(float((base_merged == labels).mean()), 4)
    return results


def main(argv=None) -> None:
    from agilenn.datasets import load_dataset
    from agilenn.models import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="models/repository/agilenn-fashion-mnist/1")
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all)")
    args = parser.parse_args(argv)
    test = load_dataset("fashion-mnist", "test")
    n = args.limit or len(test)
    json.dump(measure(load_bundle(args.bundle), test.images[:n], test.labels[:n]), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
