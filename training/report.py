"""Measure the exported bundle on the full test set through the *deployed* path (device.onnx ->
codec quantize/encode/decode -> remote.onnx -> alpha merge) and write report.json, report.md and
plots next to the bundle."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("agilenn.training")


def _image_bytes(images: np.ndarray) -> dict:
    """Mean PNG / JPEG (quality 75, Pillow's default) size of the raw uint8 images: the cost of just
    shipping the input to the server."""
    from PIL import Image

    png, jpg = [], []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        for fmt, sink, kw in (("PNG", png, {"optimize": True}), ("JPEG", jpg, {"quality": 75})):
            buf = io.BytesIO()
            pil.save(buf, format=fmt, **kw)
            sink.append(buf.tell())
    return {"png_bytes_mean": float(np.mean(png)), "jpeg_bytes_mean": float(np.mean(jpg))}


def channel_points(R: int) -> list[int]:
    """The counts of remote channels sent that the report's accuracy curve measures."""
    pts = {0, R} | {m for m in (1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64) if m < R}
    return sorted(pts)


BYTE_KEYS = ("ans_bytes_mean", "ans_bytes_p95", "rans_bytes_mean", "rans_ctx_bytes_mean", "zstd_bytes_mean",
             "raw_bytes_mean", "payload_header_bytes", "order0_entropy_body_bytes_mean")


def deployed_metrics(bundle_dir: Path, manifest: dict, x: np.ndarray, y: np.ndarray,
                     threads: int = 1) -> tuple[dict, dict]:
    """The bundle's accuracies, bytes and channel curve through the deployed path alone (device.onnx
    -> codec -> remote.onnx -> alpha merge; ``x`` normalised NCHW float32): no torch, so a bundle
    whose remote NN changed (refine_remote.py) is measured by the same code as a freshly trained one."""
    import onnxruntime as ort

    from agilenn.codec import FeatureCodec, dequantize, header_size, order0_entropy_bits, quantize

    n = len(y)
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    dev = ort.InferenceSession(str(bundle_dir / "device.onnx"), so, providers=["CPUExecutionProvider"])
    rem = ort.InferenceSession(str(bundle_dir / "remote.onnx"), so, providers=["CPUExecutionProvider"])
    refs = ort.InferenceSession(str(bundle_dir / "reference.onnx"), so, providers=["CPUExecutionProvider"])
    centroids = np.asarray(manifest["quantizer"]["centroids"], np.float32)
    alpha = np.float32(manifest["alpha"])
    codec = FeatureCodec.from_manifest(manifest)
    R = manifest["features"]["channels"] - manifest["features"]["k"]

    local, ref_logits, idx_all = [], [], []
    for i in range(0, n, 1000):
        xb = x[i:i + 1000]
        ll, rf = dev.run(["local_logits", "remote_features"], {"image": xb})
        local.append(ll)
        idx_all.append(quantize(rf, centroids))
        ref_logits.append(refs.run(["logits"], {"image": xb})[0])
    local, ref_logits, idx_all = np.concatenate(local), np.concatenate(ref_logits), np.concatenate(idx_all)

    def remote_logits(keep: int) -> np.ndarray:
        out = []
        for i in range(0, n, 1000):
            feats = dequantize(idx_all[i:i + 1000], centroids)
            feats[:, keep:] = 0.0  # truncated channels are zero-filled by the receiver
            out.append(rem.run(["remote_logits"], {"remote_features": feats.astype(np.float32)})[0])
        return np.concatenate(out)

    acc = lambda lg: float((lg.argmax(1) == y).mean())  # noqa: E731
    remote_full = remote_logits(R)
    merged = alpha * local + (np.float32(1) - alpha) * remote_full

    # bytes on the wire, per coder (full payload: header + body)
    sizes = {coder: np.array([len(codec.encode_indices(idx_all[j], coder)) for j in range(n)])
             for coder in ("ans", "rans", "rans-ctx", "zstd", "raw")}
    coders = {coder: float(s.mean()) for coder, s in sizes.items()}
    ans_sizes = sizes["ans"]

    # accuracy vs remote channels sent, and the ANS bytes that costs (both on every test sample)
    curve = []
    for m in channel_points(R):
        rl = remote_full if m == R else remote_logits(m)
        mg = alpha * local + (np.float32(1) - alpha) * rl
        ans_m = float(ans_sizes.mean()) if m == R else \
            float(np.mean([len(codec.encode_indices(idx_all[j], "ans", m)) for j in range(n)]))
        curve.append({"channels_sent": m, "combined_accuracy": acc(mg), "remote_accuracy": acc(rl),
                      "ans_bytes_mean": ans_m})

    # symbol statistics: empirical entropy of the test symbols, for comparison with ANS
    entropy_bytes = order0_entropy_bits(idx_all.reshape(n, R, -1), len(centroids)) / 8 / n
    metrics = {
        "test_samples": n,
        "reference_accuracy": acc(ref_logits),
        "combined_accuracy": acc(merged),
        "local_accuracy": acc(local),
        "remote_accuracy": acc(remote_full),
        "alpha": float(alpha),
        "ans_bytes_mean": coders["ans"],
        "ans_bytes_p95": float(np.percentile(ans_sizes, 95)),
        "rans_bytes_mean": coders["rans"],
        "rans_ctx_bytes_mean": coders["rans-ctx"],
        "zstd_bytes_mean": coders["zstd"],
        "raw_bytes_mean": coders["raw"],
        "payload_header_bytes": header_size(R, codec.payload_version),
        "order0_entropy_body_bytes_mean": float(entropy_bytes),
        "accuracy_vs_remote_channels": curve,
    }
    return metrics, {"merged": merged, "ans_sizes": ans_sizes}


def measure(run, ref, model, evaluator, bundle_dir: Path, manifest: dict) -> tuple[dict, dict]:
    """Returns (metrics for the manifest, per-sample arrays for the plots)."""
    import torch  # here, not at the top: the torch-free bundle tools import this module's helpers

    from .nets import prefix_mask
    from .xai import ZeroBaselineGrad, channel_importance, importance, skewness

    cfg, a = run.cfg, run.cfg.arch
    R = a.channels - a.k
    model, evaluator = model.cpu().eval(), evaluator.cpu().eval()  # export already moved the rest to CPU
    x, y = run.x_test, run.y_test.numpy()
    n = len(y)
    deployed, arrays = deployed_metrics(bundle_dir, manifest, x.numpy(), y, cfg.threads)

    # torch reference of the same pipeline: proves export + codec reproduce training's forward
    with torch.no_grad():
        torch_merged = torch.cat([model(x[i:i + 1000], remote_mask=prefix_mask(R, R))["merged"]
                                  for i in range(0, n, 1000)]).numpy()
    agreement = float((torch_merged.argmax(1) == arrays["merged"].argmax(1)).mean())

    # skewness of the importance (frozen evaluator, same XAI method as training)
    zg = ZeroBaselineGrad(evaluator, (a.channels, *a.feature_hw), a.num_classes)
    skews, ev_correct = [], 0
    for i in range(0, n, 500):
        xb, yb = x[i:i + 500], run.y_test[i:i + 500]
        with torch.no_grad():
            f = model.extractor(xb)
        I, ev_logits = importance(evaluator, f, yb, cfg.xai, cfg.ig_steps, zg)
        skews.append(skewness(channel_importance(I), a.k).detach().numpy())
        ev_correct += int((ev_logits.argmax(1) == yb).sum())
    skews = np.concatenate(skews)

    metrics = {
        **{key: deployed[key] for key in ("test_samples", "reference_accuracy", "combined_accuracy",
                                           "local_accuracy", "remote_accuracy")},
        "evaluator_accuracy_on_extractor_features": ev_correct / n,
        "torch_onnx_prediction_agreement": agreement,
        "alpha": deployed["alpha"],
        "rho": cfg.rho,
        "skewness_mean": float(skews.mean()),
        "skewness_median": float(np.median(skews)),
        "skewness_frac_ge_rho": float((skews >= cfg.rho).mean()),
        "skewness_frac_ge_0.8": float((skews >= 0.8).mean()),
        **{key: deployed[key] for key in BYTE_KEYS},
        **_image_bytes(run.test_raw.images),
        "accuracy_vs_remote_channels": deployed["accuracy_vs_remote_channels"],
    }
    return metrics, {"skews": skews, "ans_sizes": arrays["ans_sizes"]}


def _plots(bundle_dir: Path, metrics: dict, arrays: dict) -> list[str]:
    return [plot_skewness(bundle_dir, metrics, arrays["skews"]), plot_channel_curve(bundle_dir, metrics),
            plot_bytes(bundle_dir, metrics)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_skewness(bundle_dir: Path, metrics: dict, skews: np.ndarray) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(skews, bins=40, range=(0, 1), color="tab:blue")
    ax.axvline(metrics["rho"], color="k", ls="--", label=f"rho={metrics['rho']}")
    ax.set_xlabel("skewness (importance share of the k local channels)"); ax.set_ylabel("test images")
    ax.set_title(f"mean {metrics['skewness_mean']:.3f}, {100 * metrics['skewness_frac_ge_rho']:.1f}% >= rho")
    ax.legend(); fig.tight_layout(); fig.savefig(bundle_dir / "skewness.png", dpi=110); plt.close(fig)
    return "skewness.png"


def plot_channel_curve(bundle_dir: Path, metrics: dict) -> str:
    """accuracy_vs_channels.png from metrics' accuracy_vs_remote_channels and local_accuracy."""
    plt = _pyplot()
    curve = metrics["accuracy_vs_remote_channels"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([c["ans_bytes_mean"] for c in curve], [100 * c["combined_accuracy"] for c in curve], "o-", label="combined")
    ax.plot([c["ans_bytes_mean"] for c in curve], [100 * c["remote_accuracy"] for c in curve], "s--", label="remote only")
    ax.axhline(100 * metrics["local_accuracy"], color="tab:gray", ls=":", label="local only (no payload)")
    for c in curve:
        ax.annotate(str(c["channels_sent"]), (c["ans_bytes_mean"], 100 * c["combined_accuracy"]), fontsize=7,
                    xytext=(2, -9), textcoords="offset points")
    ax.set_xlabel("ANS payload bytes (labels: remote channels sent)"); ax.set_ylabel("test accuracy %")
    ax.set_ylim(max(0, 100 * min(c["remote_accuracy"] for c in curve) - 5), 100)
    ax.legend(); ax.grid(alpha=0.3); fig.tight_layout(); fig.savefig(bundle_dir / "accuracy_vs_channels.png", dpi=110)
    plt.close(fig)
    return "accuracy_vs_channels.png"


def plot_bytes(bundle_dir: Path, metrics: dict) -> str:
    """bytes.png: mean bytes per inference of the feature coders and of the raw image as PNG / JPEG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = ["ANS", "zstd", "raw", "PNG (image)", "JPEG (image)"]
    vals = [metrics[k] for k in ("ans_bytes_mean", "zstd_bytes_mean", "raw_bytes_mean", "png_bytes_mean",
                                 "jpeg_bytes_mean")]
    ax.bar(names, vals, color=["tab:green", "tab:olive", "tab:gray", "tab:red", "tab:orange"])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("bytes per inference (mean)"); fig.tight_layout(); fig.savefig(bundle_dir / "bytes.png", dpi=110)
    plt.close(fig)
    return "bytes.png"


def markdown(manifest: dict, metrics: dict, plots: list[str], cost: dict) -> str:
    """report.md from the manifest and the metrics (refine_remote.py rewrites a refined bundle's with it)."""
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    lines = [
        f"# {manifest['model']['name']} v{manifest['model']['version']} — training report", "",
        f"Dataset `{manifest['dataset']}`"
        + (f" ({manifest['dataset_note']})" if manifest.get("dataset_note") else "")
        + f", {metrics['test_samples']} test images, measured through the exported "
        "ONNX models and the codec (the deployed path).", "",
        f"Produced by: `{manifest['command']}`", "",
        "| metric | value |", "| --- | --- |",
        f"| reference NN accuracy | {pct(metrics['reference_accuracy'])} |",
        f"| combined (AgileNN) accuracy | {pct(metrics['combined_accuracy'])} |",
        f"| local-only accuracy | {pct(metrics['local_accuracy'])} |",
        f"| remote-only accuracy | {pct(metrics['remote_accuracy'])} |",
        f"| evaluator accuracy on extractor features | {pct(metrics['evaluator_accuracy_on_extractor_features'])} |",
        f"| alpha | {metrics['alpha']:.4f} |",
        f"| skewness mean / median | {metrics['skewness_mean']:.3f} / {metrics['skewness_median']:.3f} |",
        f"| skewness ≥ ρ={metrics['rho']} | {pct(metrics['skewness_frac_ge_rho'])} |",
        f"| skewness ≥ 0.8 | {pct(metrics['skewness_frac_ge_0.8'])} |",
        f"| ANS bytes / inference (mean, p95) | {metrics['ans_bytes_mean']:.1f}, {metrics['ans_bytes_p95']:.0f} |",
        f"| rans / rans-ctx (context-adaptive) bytes / inference | {metrics['rans_bytes_mean']:.1f} / "
        f"{metrics['rans_ctx_bytes_mean']:.1f} |",
        f"| zstd bytes / inference | {metrics['zstd_bytes_mean']:.1f} |",
        f"| raw bytes / inference | {metrics['raw_bytes_mean']:.1f} |",
        f"| order-0 entropy of the body | {metrics['order0_entropy_body_bytes_mean']:.1f} B "
        f"(+{metrics.get('payload_header_bytes', 13)} B header) |",
        f"| PNG / JPEG of the raw image | {metrics['png_bytes_mean']:.1f} / {metrics['jpeg_bytes_mean']:.1f} |",
        f"| device part MACs | {cost['macs']:,} |",
        f"| device part params | {cost['params']:,} |",
        f"| device part tables (int8 weights, int32 bias, requantization) | {cost['weight_bytes']:,} B |",
        f"| device part arena (peak SRAM of the generated C library) | {cost['arena_bytes']:,} B |",
        "", "## Accuracy vs remote channels sent", "",
        "Leading remote channels kept, the rest zero-filled by the receiver (payload truncation). With 0 "
        f"channels the agent answers from the local predictor alone ({pct(metrics['local_accuracy'])}).", "",
        "| channels sent | ANS bytes | combined | remote only |", "| --- | --- | --- | --- |",
    ]
    for c in metrics["accuracy_vs_remote_channels"]:
        lines.append(f"| {c['channels_sent']} | {c['ans_bytes_mean']:.1f} | {pct(c['combined_accuracy'])} | "
                     f"{pct(c['remote_accuracy'])} |")
    if "xai_audit" in metrics:
        lines += _audit_markdown(metrics["xai_audit"])
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    return "\n".join(lines)


def xai_audit(run, model, evaluator, initial_extractor=None) -> dict:
    """Faithful skewness (m-step IG meeting the completeness check) of the trained extractor, and of
    the one joint training started from, on a fixed random subset of the test split."""
    from .attribution import AUDIT_SAMPLES, audit

    x, y = run.sample("test", AUDIT_SAMPLES)
    extractors = {"trained": model.extractor.cpu()}
    if initial_extractor is not None:
        extractors = {"initial": initial_extractor.cpu(), **extractors}
    return audit(evaluator.cpu(), extractors, x, y, run.cfg.arch.k, run.cfg.xai, run.cfg.ig_steps)


def _audit_markdown(audit: dict) -> list[str]:
    lines = ["", "## XAI audit", "",
             f"Skewness = share of |attribution| in the k local channels, on {audit['samples']:,} test images (a fixed "
             "random subset). *Faithful*: integrated gradients with m steps, m doubled until IG's completeness "
             f"gap |Σ attr − (L(f) − L(0))| is at most {100 * audit['tolerance']:.0f} % of |L(f) − L(0)| on average "
             "(training/attribution.py). Zero features get zero attribution against a zero baseline, so the "
             "non-zero rates are part of the story.", "",
             "| extractor | faithful skewness (mean) | ≥ 0.8 | IG steps m | completeness gap | training attribution | "
             "saliency | non-zero local / remote |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("initial", "trained"):
        if name not in audit:
            continue
        a = audit[name]
        f, t = a["faithful"], a["training_method"]
        method = ("saliency" if t["method"] == "saliency" else
                  "IG 2-point" if t["ig_steps"] <= 1 else f"IG {t['ig_steps']}-step")
        lines.append(f"| {name} | {f['skewness_mean']:.3f} | {100 * f['frac_ge_0.8']:.1f} % | {f['ig_steps']} | "
                     f"{100 * f['completeness_relative']:.1f} %{'' if f['met_tolerance'] else ' (over tolerance)'} | "
                     f"{t['skewness_mean']:.3f} ({method}) | {a['saliency_skewness_mean']:.3f} | "
                     f"{100 * a['nonzero_fraction']['local']:.0f} % / {100 * a['nonzero_fraction']['remote']:.0f} % |")
    return lines


def write_report(run, ref, model, evaluator, bundle_dir: Path, manifest: dict, initial_extractor=None) -> dict:
    bundle_dir = Path(bundle_dir)
    metrics, arrays = measure(run, ref, model, evaluator, bundle_dir, manifest)
    metrics["xai_audit"] = xai_audit(run, model, evaluator, initial_extractor)
    plots = _plots(bundle_dir, metrics, arrays)
    # the device cost comes from the C generator's plan (agilenn.firmware), the one source of it
    from agilenn.firmware.cost import bundle_device_cost
    from agilenn.models import load_bundle

    cost = bundle_device_cost(load_bundle(bundle_dir))
    report = {"model": manifest["model"], "dataset": manifest["dataset"], "command": manifest["command"],
              "metrics": metrics, "device_cost": cost, "config": run.cfg.to_dict()}
    (bundle_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (bundle_dir / "report.md").write_text(markdown(manifest, metrics, plots, cost))
    log.info("report: combined %.4f reference %.4f local %.4f remote %.4f skew %.3f (>=rho %.3f) ans %.1fB",
             metrics["combined_accuracy"], metrics["reference_accuracy"], metrics["local_accuracy"],
             metrics["remote_accuracy"], metrics["skewness_mean"], metrics["skewness_frac_ge_rho"],
             metrics["ans_bytes_mean"])
    return metrics
