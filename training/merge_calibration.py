"""Budget-aware merging: alpha per number of remote channels sent, and the break-even count.

    python -m agilenn.training.merge_calibration --bundle models/repository/agilenn-fashion-mnist/1

Training fits one alpha for the full payload, but under a byte budget the agent sends only the
leading m of R remote channels and the server zero-fills the rest, so the remote logits get weaker
as m shrinks and one alpha over-trusts them (on the shipped Fashion-MNIST bundle 1 or 2 channels
merged with training's alpha are *below* the local predictor alone). This step, run on an existing
bundle without torch:

1. runs the bundle's device part (the integer one when the bundle has it: what the agent and the C
   library send) and remote.onnx on the dataset's TRAINING split, once per m = 0..R with channels
   m.. zero-filled exactly as the server's decoder does;
2. picks alpha_m on a fixed grid (ALPHA_GRID) maximizing training accuracy of
   alpha_m * local + (1 - alpha_m) * remote_m, ties broken by the lower training cross-entropy,
   then by the larger alpha (deterministic; alpha = 1 is on the grid, so alpha_m never does worse
   than local-only on the training data);
3. sets the break-even ``min_channels``: the smallest m from which on every count beats local-only
   on the training data by more than BREAK_EVEN_Z paired standard errors (McNemar's: the images
   the two answer differently), so a gain within training noise never costs air time;
4. writes ``merge`` (alpha_by_channels, min_channels, how they were fitted) into the manifest, and
   measures the result on the TEST split: ``metrics.merge`` (one row per m: bytes with the bundle's
   default coder, accuracy with the single alpha, with alpha_m, and what the agent answers), plus a
   plot and a section of report.md.

The agent (device_agent/agent.py) merges with alpha_m for the m it sent and sends nothing when the
budget admits fewer than ``min_channels`` (reason ``budget``). docs/bundle.md has the field.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np

log = logging.getLogger("agilenn.training")

ALPHA_GRID = np.linspace(0.0, 1.0, 201, dtype=np.float32)  # step 0.005: finer changes no training prediction
BREAK_EVEN_Z = 2.0  # paired standard errors a count must beat local-only by (about 97.7 % one-sided)
PLOT = "merge_accuracy_vs_bytes.png"
REPORT_SECTION = "## Budget-aware merging"


# --- the pieces, on arrays ----------------------------------------------------------------------
def device_outputs(bundle, images: np.ndarray, batch: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(local logits float32 [N, classes], centroid indices uint8 [N, R, h, w]) as the agent computes them."""
    if bundle.has_int8_device:
        model = bundle.int8_device()
        local, indices = [], []
        for i in range(0, len(images), batch):
            out = model.run(images[i:i + batch])
            local.append(model.dequantize_logits(out.logits))
            indices.append(out.indices)
        return np.concatenate(local), np.concatenate(indices)
    from agilenn.device_agent.device_model import single_thread_session
    from agilenn.models.bundle import DEVICE_INPUT, DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES

    session, codec = single_thread_session(bundle.onnx_path("device")), bundle.codec()
    local, indices = [], []
    for i in range(0, len(images), batch):
        x = bundle.preprocess(images[i:i + batch])
        ll, rf = session.run([DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES], {DEVICE_INPUT: x})
        local.append(ll.astype(np.float32))
        indices.append(codec.quantize(rf))
    return np.concatenate(local), np.concatenate(indices)


def remote_logits(bundle, session, indices: np.ndarray, channels_sent: int, batch: int = 5000) -> np.ndarray:
    """remote.onnx on the features the server decodes from a payload with ``channels_sent`` channels."""
    from agilenn.codec import dequantize
    from agilenn.models.bundle import REMOTE_INPUT, REMOTE_LOGITS

    centroids = bundle.codec().centroids
    out = []
    for i in range(0, len(indices), batch):
        feats = np.zeros(indices[i:i + batch].shape, np.float32)  # the server's zero fill (codec.decode)
        feats[:, :channels_sent] = dequantize(indices[i:i + batch, :channels_sent], centroids)
        out.append(session.run([REMOTE_LOGITS], {REMOTE_INPUT: feats})[0])
    return np.concatenate(out).astype(np.float32)


def merged(alpha, local: np.ndarray, remote: np.ndarray) -> np.ndarray:
    """Bundle.merge's arithmetic (float32)."""
    a = np.float32(alpha)
    return a * local + (np.float32(1) - a) * remote


def fit_alpha(local: np.ndarray, remote: np.ndarray, labels: np.ndarray, grid: np.ndarray = ALPHA_GRID) -> float:
    """The grid alpha with the best accuracy; ties: lower cross-entropy, then larger alpha."""
    correct = np.array([int((merged(a, local, remote).argmax(1) == labels).sum()) for a in grid])
    tied = grid[correct == correct.max()]
    if len(tied) == 1:
        return float(tied[0])

    def nll(a) -> float:  # rounded: float32 merge noise is ~1e-7
        z = merged(a, local, remote).astype(np.float64)
        z -= z.max(1, keepdims=True)
        return round(float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels])), 6)

    return float(min(tied, key=lambda a: (nll(a), -float(a))))


def paired_gain(pred: np.ndarray, local_pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy gain over local-only, its paired standard error) from the discordant images."""
    n = len(labels)
    b = int(((pred == labels) & (local_pred != labels)).sum())  # merged right, local wrong
    c = int(((pred != labels) & (local_pred == labels)).sum())
    gain = (b - c) / n
    se = np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return gain, float(se)


def break_even(gains: list[tuple[float, float]], z: float = BREAK_EVEN_Z) -> int:
    """Smallest m from which on every count's gain exceeds z standard errors; len(gains) if none does."""
    m = len(gains)
    while m > 0 and gains[m - 1][0] > z * gains[m - 1][1]:
        m -= 1
    return m


# --- the bundle step ----------------------------------------------------------------------------
def calibrate(bundle, images: np.ndarray, labels: np.ndarray, split: str) -> dict:
    """The manifest's ``merge`` object, fitted on ``images``/``labels`` (the training split)."""
    from agilenn.device_agent.device_model import single_thread_session

    local, indices = device_outputs(bundle, images)
    session = single_thread_session(bundle.onnx_path("remote"))
    local_pred = local.argmax(1)
    alphas, accs, gains = [], [], []
    for m in range(bundle.remote_channels + 1):
        remote = remote_logits(bundle, session, indices, m)
        a = fit_alpha(local, remote, labels)
        pred = merged(a, local, remote).argmax(1)
        alphas.append(a)
        accs.append(round(float((pred == labels).mean()), 6))
        gains.append(paired_gain(pred, local_pred, labels))
    min_channels = break_even(gains)
    return {
        "alpha_by_channels": alphas,
        "min_channels": min_channels,
        "calibration": {
            "split": split,
            "images": int(len(labels)),
            "numerics": "int8" if bundle.has_int8_device else "float",
            "alpha_grid": f"{len(ALPHA_GRID)} points in [0, 1]",
            "objective": "accuracy, ties: cross-entropy, then larger alpha",
            "break_even_z": BREAK_EVEN_Z,
            "local_accuracy": round(float((local_pred == labels).mean()), 6),
            "combined_accuracy": accs,
        },
    }


def evaluate(bundle, merge: dict, images: np.ndarray, labels: np.ndarray, split: str,
             up_to: int | None = None) -> dict:
    """One row per channel count 0..R (or 0..up_to) on ``images`` (the test split): mean payload bytes
    with the bundle's default coder, accuracy with the single alpha and with alpha_m, and the agent's answer."""
    from agilenn.device_agent.device_model import single_thread_session

    local, indices = device_outputs(bundle, images)
    session = single_thread_session(bundle.onnx_path("remote"))
    codec = bundle.codec()
    acc = lambda logits: float((logits.argmax(1) == labels).mean())  # noqa: E731
    local_acc = acc(local)
    rows, previous = [], local.argmax(1)
    for m in range(bundle.remote_channels + 1 if up_to is None else up_to + 1):
        remote = remote_logits(bundle, session, indices, m)
        per_count = merged(merge["alpha_by_channels"][m], local, remote)
        sends = m >= merge["min_channels"]
        answer = per_count.argmax(1) if sends else local.argmax(1)
        # the change against one channel fewer, and its paired standard error: is a dip only noise?
        change, se = paired_gain(answer, previous, labels)
        rows.append({"channels": m, "bytes_mean": payload_bytes_mean(codec, indices, m),
                     "single_alpha_accuracy": acc(merged(bundle.alpha, local, remote)),
                     "per_count_alpha_accuracy": acc(per_count),
                     "agent_sends": sends, "agent_accuracy": float((answer == labels).mean()),
                     "agent_change_vs_one_fewer": change, "agent_change_se": se})
        previous = answer
    return {"split": split, "images": int(len(labels)), "coder": codec.default_coder,
            "payload_version": codec.payload_version, "local_accuracy": local_acc,
            "min_channels": merge["min_channels"], "rows": rows}


def payload_bytes_mean(codec, indices: np.ndarray, channels_sent: int) -> float:
    """Mean payload size (header + body) of the leading ``channels_sent`` channels."""
    from agilenn.codec import header_size

    if codec.default_coder == "rans-ctx":  # batched: the per-payload path is ~100x slower
        coder = codec._coder("rans-ctx")._coder
        bodies = coder.encode_batch(indices[:, :channels_sent])
        return float(header_size(channels_sent, codec.payload_version) + np.mean([len(b) for b in bodies]))
    return float(np.mean([len(codec.encode_indices(x, None, channels_sent)) for x in indices]))


def agent_curve(table: dict) -> list[tuple[float, float]]:
    """(bytes, accuracy) of what the agent answers under a budget admitting m channels, m = 0..R."""
    return [(r["bytes_mean"] if r["agent_sends"] else 0.0, r["agent_accuracy"]) for r in table["rows"]]


def _plot(bundle_dir: Path, table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    x = [r["bytes_mean"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(x, [100 * r["single_alpha_accuracy"] for r in rows], "s--", color="tab:gray", ms=3,
            label="payload sent, single alpha")
    ax.plot(x, [100 * r["per_count_alpha_accuracy"] for r in rows], "o-", color="tab:blue", ms=3,
            label="payload sent, alpha per count")
    curve = agent_curve(table)
    ax.plot([b for b, _ in curve], [100 * a for _, a in curve], "D", color="tab:green", ms=4, mfc="none",
            label=f"agent (nothing sent below {table['min_channels']} ch)")
    ax.axhline(100 * table["local_accuracy"], color="k", ls=":", lw=1, label="local only (0 bytes)")
    for r in rows:
        ax.annotate(str(r["channels"]), (r["bytes_mean"], 100 * r["per_count_alpha_accuracy"]), fontsize=6,
                    xytext=(2, -8), textcoords="offset points")
    lo = min(100 * r["single_alpha_accuracy"] for r in rows[1:])
    top = 100 * max(r["per_count_alpha_accuracy"] for r in rows)
    ax.set_ylim(max(lo - 1, 100 * table["local_accuracy"] - 6), top + 1)
    ax.set_xlabel(f"mean payload bytes ({table['coder']}; labels: remote channels sent)")
    ax.set_ylabel(f"{table['split']} accuracy %")
    ax.legend(fontsize=7, loc="lower right"); ax.grid(alpha=0.3); fig.tight_layout()
    fig.savefig(bundle_dir / PLOT, dpi=110)
    plt.close(fig)


def markdown(merge: dict, table: dict) -> str:
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    cal = merge["calibration"]
    n = merge["min_channels"]
    lines = [
        REPORT_SECTION, "",
        f"alpha per number of remote channels sent, fitted on {cal['images']:,} {cal['split']} images through the "
        f"{cal['numerics']} device part and remote.onnx with the unsent channels zero-filled as the server does "
        f"(`python -m agilenn.training.merge_calibration`). Break-even: **{n} channel{'' if n == 1 else 's'}** (the "
        f"smallest count from which on every count beats local-only on the training data by more than "
        f"{cal['break_even_z']:g} paired standard errors); under a byte budget admitting fewer the agent sends "
        "nothing and answers from the local predictor (reason `budget`).", "",
        f"Measured on {table['images']:,} {table['split']} images; bytes with the default coder `{table['coder']}`. "
        f"Local only: {pct(table['local_accuracy'])} with 0 bytes.", "",
        "| channels sent | mean bytes | alpha_m | single alpha | alpha per count | agent answers |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in table["rows"]:
        agent = (f"{pct(r['agent_accuracy'])} ({r['bytes_mean']:.1f} B)" if r["agent_sends"]
                 else f"{pct(r['agent_accuracy'])} (local, 0 B)")
        lines.append(f"| {r['channels']} | {r['bytes_mean']:.1f} | {merge['alpha_by_channels'][r['channels']]:.3f} | "
                     f"{pct(r['single_alpha_accuracy'])} | {pct(r['per_count_alpha_accuracy'])} | {agent} |")
    worst = min(table["rows"][1:], key=lambda r: r["agent_change_vs_one_fewer"])
    below = sum(r["agent_accuracy"] < table["local_accuracy"] for r in table["rows"])
    lines += ["", f"What the agent answers is below local-only for {below} of {len(table['rows'])} budgets. Its "
              f"largest drop from one channel fewer is {100 * -worst['agent_change_vs_one_fewer']:.2f} pp (at "
              f"{worst['channels']} channels; paired standard error {100 * worst['agent_change_se']:.2f} pp), "
              "a drop of 0 meaning monotone.", "", f"![{PLOT}]({PLOT})", ""]
    return "\n".join(lines)


def _update_report(bundle_dir: Path, section: str) -> None:
    """Replace (or append) this step's section of report.md, leaving training's sections alone."""
    path = bundle_dir / "report.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    text = re.sub(rf"\n*{re.escape(REPORT_SECTION)}\n.*?(?=\n## |\Z)", "", text, flags=re.DOTALL).rstrip("\n")
    path.write_text((text + "\n\n" if text else "") + section, encoding="utf-8")


def _fixed_subset(split, n: int | None):
    """A fixed random subset (seed 0) of n items of (images, labels), and the words that say so."""
    images, labels = split
    if n is None or n >= len(labels):
        return split, ""
    idx = np.sort(np.random.default_rng(0).permutation(len(labels))[:n])
    return (np.asarray(images)[idx], np.asarray(labels)[idx]), f" ({n} of {len(labels)} images, fixed random subset, seed 0)"


def add_merge_calibration(bundle_dir, train=None, test=None, report: bool = True,
                          train_images: int | None = None, test_images: int | None = None,
                          train_note: str | None = None) -> dict:
    """Calibrate, write ``merge`` and ``metrics.merge`` into the manifest (+ plot, report.md); returns the table.

    train / test: (uint8 images, labels); default: the bundle's dataset's splits. train_images /
    test_images: use only a fixed random subset of that many (every channel count runs remote.onnx
    over every image: R+1 passes, which for a CIFAR-sized remote NN on 50k images is hours on 2 CPUs).
    train_note: what the train images are, when not the split itself (e.g. a hold-out no net trained on)."""
    from agilenn.models import load_bundle, write_manifest
    from agilenn.training.datasets import load_dataset

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    dataset = bundle.manifest.get("dataset", "")
    if train is None:
        d = load_dataset(dataset, "train")
        train = (d.images, d.labels)
    if test is None:
        d = load_dataset(dataset, "test")
        test = (d.images, d.labels)
    train, subset_note = _fixed_subset(train, train_images)
    train_note = (train_note or "") + subset_note
    test, test_note = _fixed_subset(test, test_images)
    merge = calibrate(bundle, np.asarray(train[0]), np.asarray(train[1]), f"{dataset} train{train_note}")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["merge"] = merge
    write_manifest(bundle_dir, manifest)  # validates
    bundle = load_bundle(bundle_dir)
    table = evaluate(bundle, merge, np.asarray(test[0]), np.asarray(test[1]), f"{dataset} test{test_note}")
    manifest["metrics"] = {**manifest.get("metrics", {}), "merge": table}
    write_manifest(bundle_dir, manifest)
    if report:
        _plot(bundle_dir, table)
        _update_report(bundle_dir, markdown(merge, table))
    log.info("merge: break-even %d channels, alpha %s", merge["min_channels"],
             [round(a, 3) for a in merge["alpha_by_channels"]])
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory (its manifest is rewritten)")
    parser.add_argument("--no-report", action="store_true", help="leave report.md and the plot alone")
    parser.add_argument("--train-images", type=int, help="calibrate on a fixed random subset of this many training images")
    parser.add_argument("--test-images", type=int, help="evaluate on a fixed random subset of this many test images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = add_merge_calibration(args.bundle, report=not args.no_report, train_images=args.train_images,
                                  test_images=args.test_images)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
