"""Coder table: bytes per payload for each coder against the order-0 entropy of real features.

    python -m agilenn.benchmarks.codec_bench [--bundle DIR] [--limit N] [--json OUT]

Runs the bundle's device part on Fashion-MNIST test images (or the bundle's dataset), quantizes the
remote features, and codes every sample with each coder. The entropy floor is the empirical order-0
entropy of the same symbols, per channel (what any static per-channel model can at best reach);
"model" is the cross-entropy under the manifest's tables (what the ans coder is asked to reach).
Times are per payload, measured in this process, so compare coders by ratio, not across machines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agilenn.codec import HEADER_SIZE, cross_entropy_bits, order0_entropy_bits
from agilenn.device_agent.device_model import single_thread_session
from agilenn.models import DEFAULT_MODEL, DEFAULT_REPOSITORY, BundleError, load_bundle


def default_bundle_dir() -> Path:
    """The shipped default bundle (highest version)."""
    from agilenn.models import ModelRepository

    return ModelRepository([DEFAULT_REPOSITORY]).resolve(DEFAULT_MODEL).path


def device_features(bundle, images: np.ndarray, batch: int = 256) -> np.ndarray:
    session = single_thread_session(bundle.onnx_path("device"))
    out = []
    for start in range(0, len(images), batch):
        x = bundle.preprocess(images[start : start + batch])
        out.append(session.run(["remote_features"], {"image": x})[0])
    return np.concatenate(out)


def coder_table(bundle, features: np.ndarray) -> dict:
    codec = bundle.codec()
    indices = codec.quantize(features)  # [N, C, h, w]
    n, c, h, w = indices.shape
    symbols = indices.reshape(n, c, h * w)
    entropy_bytes = order0_entropy_bits(symbols, codec.levels) / 8 / n
    rows = {}
    for name in codec.available_coders:
        payloads, t_enc = [], time.perf_counter()
        for sample in indices:
            payloads.append(codec.encode_indices(sample, coder=name))
        t_enc = time.perf_counter() - t_enc
        t_dec = time.perf_counter()
        for payload, sample in zip(payloads, indices):
            decoded, _ = codec.decode_indices(payload)
            if not np.array_equal(decoded, sample):
                raise AssertionError(f"{name} round trip is not exact")
        t_dec = time.perf_counter() - t_dec
        sizes = np.array([len(p) for p in payloads])
        rows[name] = {
            "bytes_mean": float(sizes.mean()),
            "bytes_p99": float(np.percentile(sizes, 99)),
            "body_bytes_mean": float(sizes.mean() - HEADER_SIZE),
            "body_over_entropy": float((sizes.mean() - HEADER_SIZE) / entropy_bytes) if entropy_bytes else None,
            "encode_us": 1e6 * t_enc / n,
            "decode_us": 1e6 * t_dec / n,
        }
    result = {
        "bundle": f"{bundle.name}:{bundle.version}",
        "samples": n,
        "remote_shape": [c, h, w],
        "levels": codec.levels,
        "header_bytes": HEADER_SIZE,
        "entropy_bytes_mean": entropy_bytes,
        "raw_bits_bytes": c * h * w * np.log2(codec.levels) / 8,
        "coders": rows,
    }
    if codec.frequencies is not None:
        from agilenn.codec.rans import EncoderTables

        result["rans_frequency_bits"] = codec.frequency_bits
        result["rans_table_bytes"] = int(codec.frequencies.size * 2)  # uint16 entries in flash
        # The vectorised encoder (all samples at once, as training's export and this benchmark can).
        tables = EncoderTables(codec.frequencies, codec.frequency_bits)
        t_batch = time.perf_counter()
        bodies = tables.encode_batch(symbols.reshape(n, -1), np.repeat(np.arange(c), h * w))
        result["rans_batch_encode_us"] = 1e6 * (time.perf_counter() - t_batch) / n
        if sum(map(len, bodies)) != round(rows["rans"]["body_bytes_mean"] * n):
            raise AssertionError("rans batch and per-payload encoders disagree")
    if codec.probabilities is not None:
        xent = cross_entropy_bits(symbols, codec.probabilities) / 8 / n
        result["model_cross_entropy_bytes_mean"] = xent
        for row in rows.values():
            row["body_over_model_xent"] = row["body_bytes_mean"] / xent if xent else None
    return result


def format_table(result: dict) -> str:
    lines = [
        f"bundle {result['bundle']}: {result['samples']} samples, remote features {result['remote_shape']}, "
        f"{result['levels']} levels, header {result['header_bytes']} B",
        f"order-0 entropy floor: {result['entropy_bytes_mean']:.1f} B/inference"
        + (f"; manifest tables' cross-entropy: {result['model_cross_entropy_bytes_mean']:.1f} B"
           if "model_cross_entropy_bytes_mean" in result else "")
        + (f"; rans tables: {result['rans_frequency_bits']}-bit, {result['rans_table_bytes']} B as uint16, "
           f"batch encode {result['rans_batch_encode_us']:.0f} µs/payload"
           if "rans_table_bytes" in result else ""),
        "",
        "| coder | bytes mean | bytes p99 | body / entropy | body / model xent | encode µs | decode µs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["coders"].items():
        lines.append(
            f"| {name} | {row['bytes_mean']:.1f} | {row['bytes_p99']:.0f} | {row['body_over_entropy']:.3f} | "
            f"{row.get('body_over_model_xent') or float('nan'):.3f} | "
            f"{row['encode_us']:.0f} | {row['decode_us']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: the shipped default)")
    parser.add_argument("--dataset", help="dataset to draw images from (default: the bundle's)")
    parser.add_argument("--data-dir", help="dataset folder (default: the dataset's standard place)")
    parser.add_argument("--limit", type=int, default=2000, help="test images to code (default 2000)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)

    try:
        bundle = load_bundle(args.bundle) if args.bundle else load_bundle(default_bundle_dir())
    except BundleError as exc:
        raise SystemExit(f"no bundle to benchmark: {exc}")
    from agilenn.training.datasets import load_dataset

    name = args.dataset or bundle.manifest.get("dataset", "fashion-mnist")
    # The test-only synthetic bundle has Fashion-MNIST's input shape but no dataset of its own.
    dataset = load_dataset("fashion-mnist" if name == "synthetic" else name, "test", args.data_dir)
    features = device_features(bundle, dataset.images[: args.limit])
    result = coder_table(bundle, features)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
