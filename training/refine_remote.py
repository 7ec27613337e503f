"""Refine a bundle's remote NN on its frozen device part: a server-side upgrade of a shipped model.

    python -m agilenn.training.refine_remote --bundle models/repository/agilenn-cifar10/4 \\
        --out models/repository/agilenn-cifar10/5 --work runs/c10-refine --epochs 10

Why from a bundle and not from a training run: the run's checkpoints do not outlive the machine that
trained them (a rented GPU's go with it), but the bundle holds all the server half needs:
device.onnx (the device part as trained, float), remote.onnx (where the refinement starts) and
reference.onnx (the distillation teacher). Nothing on the device changes: device.onnx, the integer
device part, the coder tables and therefore the payload bytes and any firmware already flashed stay
exactly as they were; only remote.onnx and the merge weights are new.

Training is remote_heads.py's recipe on one copy: cross-entropy on ``alpha * local + (1 - alpha) *
remote`` with a trainable alpha, plus ``aux_weight`` times the remote NN's own CE, a
``distill_weight`` share of KL to the reference at ``distill_temp``, nested dropout over the remote
channels (so truncated payloads still merge well), shift-and-flip augmentation, AdamW with warm-up
and cosine. The device part and the teacher run through onnxruntime, the remote NN as torch code
(onnx_torch.OnnxModule). Exported graphs have BatchNorm folded into the convolutions, so the net
trains without normalisation: on CIFAR-10 v4 AdamW at 1e-3 lost 2 pp in its first two epochs,
2e-4 (the default) gained from the first.

Afterwards the bundle carries the trained alpha (as a freshly exported one carries its joint
stage's), is measured through the deployed path (report.deployed_metrics, int8 device part
included), and merge_calibration fits alpha per channel count, as for any bundle. Resumable: the
work directory keeps one checkpoint per finished epoch, and each epoch's random draws are seeded
by the epoch, so a resumed run draws what an uninterrupted one would have.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("agilenn.training")

CHECKPOINT = "refine_remote.pt"
EVAL_IMAGES = 2000      # per-epoch score: a fixed random subset of the test split


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _DevicePart:
    """The frozen device part and teacher through onnxruntime: local logits, the remote channels as
    the server decodes them (centroid values), and the reference's logits."""

    def __init__(self, bundle, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = max(1, threads), 1
        self.device = ort.InferenceSession(str(bundle.onnx_path("device")), so, providers=["CPUExecutionProvider"])
        self.reference = ort.InferenceSession(str(bundle.onnx_path("reference")), so,
                                              providers=["CPUExecutionProvider"])
        self.codec = bundle.codec()

    def __call__(self, x: np.ndarray):
        import torch

        local, features = self.device.run(["local_logits", "remote_features"], {"image": x})
        q = self.codec.centroids[self.codec.quantize(features)]
        return torch.from_numpy(local), torch.from_numpy(np.ascontiguousarray(q, np.float32))

    def teacher(self, x: np.ndarray):
        import torch

        return torch.from_numpy(self.reference.run(["logits"], {"image": x})[0])


def _config(args) -> dict:
    """What decides the trained weights: a resume with other settings is refused."""
    return {key: getattr(args, key) for key in ("epochs", "lr", "batch_size", "distill_weight", "distill_temp",
                                                "aux_weight", "nested_p_full", "seed", "train_subset")}


def train(bundle, args, train_ds, test_ds) -> tuple:
    """(trained OnnxModule, trained alpha, per-epoch log) for ``bundle``'s remote NN."""
    import torch
    from .data import augment
    from .nets import nested_dropout_mask
    from .onnx_torch import OnnxModule
    from .remote_heads import MergeHead, head_loss, warmup_cosine

    torch.set_num_threads(max(1, args.threads))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_ds, test_ds = train_ds.subset(args.train_subset, seed=0), test_ds.subset(EVAL_IMAGES, seed=0)
    x_train = torch.from_numpy(bundle.preprocess(train_ds.images))
    y_train = torch.from_numpy(np.asarray(train_ds.labels, np.int64))
    device = _DevicePart(bundle, args.threads)
    eval_local, eval_q = device(bundle.preprocess(test_ds.images))
    y_eval = torch.from_numpy(np.asarray(test_ds.labels, np.int64))

    a0 = float(bundle.manifest["alpha"])
    # the remote NN and a trainable alpha, in the convention of the training (nets.alpha_of)
    head = MergeHead(OnnxModule(bundle.onnx_path("remote"), trainable=True),
                     torch.tensor([math.log(a0), math.log(1 - a0)]))
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4)
    config, start, history = _config(args), 0, []
    ckpt_path = work / CHECKPOINT
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["config"] != config or ck["source_remote_sha256"] != _sha256(bundle.onnx_path("remote")):
            raise ValueError(f"{ckpt_path} was started with other settings or another bundle "
                             f"({ck['config']}); use another --work directory")
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["opt"])
        start, history = ck["epoch"], ck["history"]
        log.info("refine remote: resuming at epoch %d of %d", start + 1, args.epochs)

    @torch.no_grad()
    def score() -> dict:  # (the graph has no dropout or BatchNorm: no train/eval modes to switch)
        r, merged = (torch.cat(t) for t in zip(*(head(eval_local[i:i + 1000], eval_q[i:i + 1000])
                                                 for i in range(0, len(y_eval), 1000))))
        return {"remote": float((r.argmax(1) == y_eval).float().mean()),
                "merged": float((merged.argmax(1) == y_eval).float().mean()), "alpha": head.alpha().item()}

    if start == 0 and not history:
        history.append({"epoch": 0, **score()})
        log.info("refine remote: before: test (fixed %d) remote %.4f merged %.4f", len(y_eval),
                 history[0]["remote"], history[0]["merged"])
    R = eval_q.shape[1]
    steps = math.ceil(len(y_train) / args.batch_size)
    total = max(1, args.epochs * steps)
    gen = torch.Generator()
    for epoch in range(start, args.epochs):
        gen.manual_seed(args.seed + epoch)  # per epoch: a resumed run draws what an uninterrupted one would
        torch.manual_seed(args.seed + epoch)
        order = torch.randperm(len(y_train), generator=gen)
        t0, tot = time.time(), 0.0
        for i in range(steps):
            step = epoch * steps + i
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(args.lr, step, total)
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            xb, yb = augment(x_train[idx], gen=gen).numpy(), y_train[idx]
            local, q = device(xb)
            remote, merged = head(local, q * nested_dropout_mask(len(yb), R, args.nested_p_full))
            t_logits = device.teacher(xb) if args.distill_weight > 0 else None
            loss = head_loss(remote, merged, yb, t_logits, args.aux_weight, args.distill_weight, args.distill_temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(yb)
            if (i + 1) % max(1, steps // 4) == 0:  # a line now and then: progress shows in a log file
                rate = (i + 1) / (time.time() - t0)
                log.info("refine remote epoch %d/%d step %d/%d  %.1f steps/s, epoch ETA %.0fs", epoch + 1,
                         args.epochs, i + 1, steps, rate, (steps - i - 1) / rate)
        history.append({"epoch": epoch + 1, "loss": tot / len(y_train), **score(), "seconds": time.time() - t0})
        h = history[-1]
        log.info("refine remote epoch %d/%d  loss %.4f | test (fixed %d): remote %.4f merged %.4f | alpha %.3f (%.0fs)",
                 epoch + 1, args.epochs, h["loss"], len(y_eval), h["remote"], h["merged"], h["alpha"], h["seconds"])
        torch.save({"config": config, "source_remote_sha256": _sha256(bundle.onnx_path("remote")),
                    "head": head.state_dict(), "opt": opt.state_dict(),
                    "epoch": epoch + 1, "history": history}, ckpt_path)
    return head.body, head.alpha().item(), history


def write_bundle(src, out: Path, remote, alpha: float, history: list, args, command: str, calibration, test) -> dict:
    """Copy ``src`` to ``out`` with the refined remote.onnx and alpha, and every remote-dependent
    measurement redone; returns the new manifest. ``calibration``: (the images the merge calibration
    fits on, the words that say which, or None for the training split)."""
    from agilenn.firmware.bundle_int8 import evaluate as evaluate_int8
    from agilenn.firmware.bundle_int8 import update_report as update_int8_report
    from agilenn.models import load_bundle, write_manifest

    from . import report
    from .merge_calibration import add_merge_calibration

    if out.exists():
        raise FileExistsError(f"{out} exists; the refined bundle is a new version directory")
    shutil.copytree(src.path, out)
    remote.save(out / "remote.onnx")
    manifest = json.loads((out / "manifest.json").read_text())
    source = f"{manifest['model']['name']}/{manifest['model']['version']}"
    manifest["model"]["version"] = str(args.version)
    # the trained alpha, as a freshly exported bundle carries its joint stage's; the per-count merge
    # weights (what the agent uses) are calibrated last, as for any bundle
    manifest["alpha"] = alpha
    manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest["remote_refinement"] = {
        "source": source, "source_remote_sha256": _sha256(src.onnx_path("remote")), "command": command,
        "config": _config(args), "trained_alpha": alpha, "history": history,
        "history_test_images": min(EVAL_IMAGES, len(test)),
    }
    # The source's per-count merge weights were fitted to its remote NN: gone until refitted below, so
    # the int8 evaluation merges with the single alpha, as a freshly exported bundle's does.
    manifest.pop("merge", None)
    manifest["metrics"].pop("merge", None)
    write_manifest(out, manifest)
    bundle = load_bundle(out)
    deployed, _ = report.deployed_metrics(out, manifest, bundle.preprocess(test.images),
                                          np.asarray(test.labels), args.threads)
    manifest["metrics"] = {**manifest["metrics"], **deployed}
    manifest["int8_device"]["accuracy"] = evaluate_int8(bundle, bundle.int8_device(), test.images,
                                                        np.asarray(test.labels))
    write_manifest(out, manifest)
    _rewrite_report(out, manifest, history, source)
    update_int8_report(out, manifest["int8_device"], manifest["device_cost"])
    calib, note = calibration
    add_merge_calibration(out, train=(calib.images, calib.labels), test=(test.images, test.labels),
                          train_images=args.merge_train_images, train_note=note)
    return json.loads((out / "manifest.json").read_text())


def _rewrite_report(out: Path, manifest: dict, history: list, source: str) -> None:
    """The training report's head (the table and the channel curve) from the new metrics, with a
    section saying where the remote NN came from; the device part's sections are kept as they were
    (the int8 and merge sections are rewritten by their own tools right after)."""
    from agilenn.firmware.bundle_int8 import REPORT_BEGIN as INT8_BEGIN

    from . import report

    metrics = manifest["metrics"]
    plots = ["skewness.png", report.plot_channel_curve(out, metrics), "bytes.png"]
    head = report.markdown(manifest, metrics, [p for p in plots if (out / p).is_file()], manifest["device_cost"])
    before, after = history[0], history[-1]
    section = "\n".join([
        "## Remote NN refined on the frozen device part", "",
        f"Version {manifest['model']['version']} is `{source}` with its remote NN trained on for "
        f"{after['epoch']} epochs (training/refine_remote.py): device part, integer device part, coder "
        f"tables and payload bytes are `{source}`'s; the skewness and XAI audit above are its measurements "
        "too (nothing they depend on changed).", "",
        f"Command: `{manifest['remote_refinement']['command']}`", "",
        f"| fixed {manifest['remote_refinement']['history_test_images']:,} test images | remote only | "
        "combined (trained alpha) | alpha |", "|---|---|---|---|",
        *[f"| epoch {h['epoch']} | {100 * h['remote']:.2f} % | {100 * h['merged']:.2f} % | {h['alpha']:.3f} |"
          for h in (before, after)], "",
    ])
    text = (out / "report.md").read_text()
    tail = text[text.index(INT8_BEGIN):] if INT8_BEGIN in text else ""
    (out / "report.md").write_text(head.rstrip("\n") + "\n\n" + section + "\n" + tail)
    js = out / "report.json"
    doc = json.loads(js.read_text())
    doc.update(model=manifest["model"], metrics=metrics, remote_refinement=manifest["remote_refinement"])
    js.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv=None) -> None:
    from .cli import positive_int, unit_interval
    from .trainer import MERGE_CALIBRATION_IMAGES  # the export's subset, for the same reason

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="the bundle whose remote NN is refined (left as it is)")
    p.add_argument("--out", type=Path, required=True, help="the new bundle's directory (must not exist)")
    p.add_argument("--version", required=True, help="the new bundle's model version")
    p.add_argument("--work", type=Path, required=True, help="checkpoint directory (resumes from it)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--lr", type=float, default=2e-4, help="peak AdamW learning rate (BatchNorm is folded: keep it low)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--distill-weight", type=unit_interval, default=0.5,
                   help="share of the loss that is KL to reference.onnx")
    p.add_argument("--distill-temp", type=float, default=4.0)
    p.add_argument("--aux-weight", type=float, default=0.5, help="extra CE on the remote NN alone")
    p.add_argument("--nested-p-full", type=unit_interval, default=0.5,
                   help="share of samples that keep every remote channel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None, help="train on a fixed random subset of this many images")
    p.add_argument("--merge-train-images", type=int, default=MERGE_CALIBRATION_IMAGES,
                   help="training images the per-channel-count merge is calibrated on")
    p.add_argument("--data-dir", help="where the bundle's data set lives, if not its default place")
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args(argv)
    if args.out.exists():
        p.error(f"--out {args.out} exists; the refined bundle is a new version directory")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from agilenn.datasets import load_for_model
    from agilenn.models import load_bundle

    from .data import merge_holdout_note, merge_holdout_rows

    src = load_bundle(args.bundle)
    if not src.has_int8_device:
        p.error(f"{args.bundle} has no integer device part (run agilenn-firmware quantize first)")
    command = shlex.join(["python", "-m", "agilenn.training.refine_remote", *(sys.argv[1:] if argv is None else argv)])
    train_ds, test_ds = (load_for_model(src.manifest["dataset"], split, src.input_shape, args.data_dir)
                         for split in ("train", "test"))
    # a bundle trained with a merge hold-out: the refinement leaves it out too, for the calibration
    config = src.manifest.get("training", {}).get("config", {})
    train_ds, held_out = merge_holdout_rows(train_ds, config)
    calibration = ((train_ds, None) if held_out is None
                   else (held_out, merge_holdout_note(held_out, config.get("seed", 0))))
    remote, alpha, history = train(src, args, train_ds, test_ds)
    manifest = write_bundle(src, args.out, remote, alpha, history, args, command, calibration, test_ds)
    m = manifest["metrics"]
    print(json.dumps({"combined_float": m["combined_accuracy"], "remote": m["remote_accuracy"],
                      "int8_combined": manifest["int8_device"]["accuracy"]["int8_combined"],
                      "agent_all_channels": m["merge"]["rows"][-1]["agent_accuracy"], "alpha": manifest["alpha"]},
                     indent=1))


if __name__ == "__main__":
    main()
