"""Coder table: bytes per payload for each coder against the order-0 entropy of real features.

    python -m agilenn.benchmarks.codec_bench [--bundle DIR] [--limit N] [--json OUT]

Runs the bundle's device part on Fashion-MNIST test images (or the bundle's dataset), quantizes the
remote features, and codes every sample with each coder. The entropy floor is the empirical order-0
entropy of the same symbols, per channel (what any static per-channel model can at best reach);
"model" is the cross-entropy under the manifest's tables (what the ans coder is asked to reach).
For rans-ctx the relevant floor is the conditional entropy of the same symbols given their context
(channel and neighbours, as the manifest's coder.context forms it), measured on the test symbols
themselves, beside the cross-entropy under the manifest's (training-set) context tables.
The symbols are the device part's as the agent sends them: the integer part when the bundle has one
(``--numerics auto``, the agent's default), else the float ONNX part quantized by the codec.
Times are per payload, measured in this process, so compare coders by ratio, not across machines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agilenn.codec import cross_entropy_bits, header_size, order0_entropy_bits
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


def device_indices(bundle, images: np.ndarray, numerics: str = "auto") -> np.ndarray:
    """Centroid indices [N, C - k, h, w] as the agent sends them with the given numerics."""
    from agilenn.device_agent.device_model import resolve_numerics

    if resolve_numerics(bundle, numerics) == "int8":
        model = bundle.int8_device()
        return np.concatenate([model.run(images[i:i + 2000]).indices for i in range(0, len(images), 2000)])
    return bundle.codec().quantize(device_features(bundle, images))


def context_entropy_bits(indices: np.ndarray, context) -> tuple[float, float]:
    """(conditional entropy of the symbols given (channel, context) on these symbols themselves,
    cross-entropy under the context tables), total bits."""
    n, c, h, w = indices.shape
    levels = context.levels
    key = (context.contexts_of(indices) + np.arange(c).reshape(1, -1, 1, 1) * context.contexts) * levels + indices
    counts = np.bincount(key.reshape(-1), minlength=c * context.contexts * levels).reshape(-1, levels).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(counts * np.log2(np.where(counts > 0, counts / totals, 1.0)))
    probs = context.frequencies[context.row_map.reshape(-1)] / float(1 << context.frequency_bits)
    xent = -(counts * np.log2(probs)).sum()
    return float(entropy), float(xent)


def coder_table(bundle, features: np.ndarray | None = None, indices: np.ndarray | None = None) -> dict:
    codec = bundle.codec()
    header = header_size(codec.shape[0], codec.payload_version)  # every payload here sends every channel
    indices = codec.quantize(features) if indices is None else indices  # [N, C, h, w]
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
            "body_bytes_mean": float(sizes.mean() - header),
            "body_over_entropy": float((sizes.mean() - header) / entropy_bytes) if entropy_bytes else None,
            "encode_us": 1e6 * t_enc / n,
            "decode_us": 1e6 * t_dec / n,
        }
    result = {
        "bundle": f"{bundle.name}:{bundle.version}",
        "samples": n,
        "remote_shape": [c, h, w],
        "levels": codec.levels,
        "header_bytes": header,
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
    if codec.context is not None:
        entropy, xent = context_entropy_bits(indices, codec.context)
        result["context_entropy_bytes_mean"] = entropy / 8 / n
        result["context_tables_xent_bytes_mean"] = xent / 8 / n
        result["context_neighbours"] = list(codec.context.neighbours)
        result["context_rows"] = int(codec.context.frequencies.shape[0])
        result["context_table_bytes"] = codec.context.flash_bytes()["total"]
        row = rows["rans-ctx"]
        row["body_over_context_entropy"] = row["body_bytes_mean"] / result["context_entropy_bytes_mean"]
        row["body_over_model_xent"] = row["body_bytes_mean"] / result["context_tables_xent_bytes_mean"]
        coder = codec._coder("rans-ctx")._coder
        t_batch = time.perf_counter()
        bodies = coder.encode_batch(indices)
        result["rans_ctx_batch_encode_us"] = 1e6 * (time.perf_counter() - t_batch) / n
        if sum(map(len, bodies)) != round(row["body_bytes_mean"] * n):
            raise AssertionError("rans-ctx batch and per-payload encoders disagree")
    if codec.probabilities is not None:
        xent = cross_entropy_bits(symbols, codec.probabilities) / 8 / n
        result["model_cross_entropy_bytes_mean"] = xent
        for name, row in rows.items():
            if name != "rans-ctx":  # judged against its own (context) tables above
                row["body_over_model_xent"] = row["body_bytes_mean"] / xent if xent else None
    return result


# (neighbours, max rows) compared by --compare-contexts; the shipped choice is left, up, prev with 32.
CONTEXT_CHOICES = [(("left",), 32), (("up",), 32), (("prev",), 32), (("left", "up"), 32), (("left", "up"), 64),
                   (("left", "prev"), 32), (("up", "prev"), 32), (("left", "up", "prev"), 16),
                   (("left", "up", "prev"), 32), (("left", "up", "prev"), 64), (("left", "up", "prev"), 128)]


def compare_contexts(bundle, train_indices: np.ndarray, test_indices: np.ndarray) -> str:
    """Fit rans-ctx tables for each context choice on the training symbols; code the test symbols."""
    from agilenn.codec.context_fit import fit_context
    from agilenn.codec.rans_ctx import ContextCoder, ContextModel

    c, h, w = test_indices.shape[1:]
    levels = bundle.codec().levels
    lines = ["| neighbours | max rows | rows | flash B | body B | payload B |", "|---|---:|---:|---:|---:|---:|"]
    for neighbours, rows in CONTEXT_CHOICES:
        model = ContextModel(fit_context(train_indices, levels, neighbours, rows), c, h, w, levels)
        body = float(np.mean([len(b) for b in ContextCoder(model).encode_batch(test_indices)]))
        lines.append(f"| {', '.join(neighbours)} | {rows} | {model.frequencies.shape[0]} | "
                     f"{model.flash_bytes()['total']} | {body:.1f} | {body + header_size(c):.1f} |")
    return "\n".join(lines)


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
        *([f"rans-ctx: neighbours {', '.join(result['context_neighbours'])}, {result['context_rows']} rows, "
           f"{result['context_table_bytes']} B of tables in flash; conditional entropy "
           f"{result['context_entropy_bytes_mean']:.1f} B/inference (the context model's floor), training tables' "
           f"cross-entropy {result['context_tables_xent_bytes_mean']:.1f} B, batch encode "
           f"{result['rans_ctx_batch_encode_us']:.0f} µs/payload"] if "context_rows" in result else []),
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
    parser.add_argument("--compare-contexts", action="store_true",
                        help="also fit rans-ctx tables for several context choices on the training split and "
                             "code the test images with each")
    parser.add_argument("--numerics", choices=("auto", "int8", "float"), default="auto",
                        help="device part numerics (default auto: the integer part when the bundle has one, "
                             "as the agent)")
    args = parser.parse_args(argv)

    try:
        bundle = load_bundle(args.bundle) if args.bundle else load_bundle(default_bundle_dir())
    except BundleError as exc:
        raise SystemExit(f"no bundle to benchmark: {exc}")
    from agilenn.training.datasets import load_dataset

    name = args.dataset or bundle.manifest.get("dataset", "fashion-mnist")
    # The test-only synthetic bundle has Fashion-MNIST's input shape but no dataset of its own.
    dataset = load_dataset("fashion-mnist" if name == "synthetic" else name, "test", args.data_dir)
    test_indices = device_indices(bundle, dataset.images[: args.limit], args.numerics)
    result = coder_table(bundle, indices=test_indices)
    print(format_table(result))
    if args.compare_contexts:
        train = load_dataset("fashion-mnist" if name == "synthetic" else name, "train", args.data_dir)
        print("\n" + compare_contexts(bundle, device_indices(bundle, train.images, args.numerics), test_indices))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
