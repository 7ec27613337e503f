"""`agilenn-train`: dataset -> AgileNN bundle (reference NN, extractor, preselection, joint XAI
training, export, report). Every stage checkpoints under --out; --resume picks up where it stopped.

Example (the shipped Fashion-MNIST bundle is produced this way, see docs/training.md):
    agilenn-train --dataset fashion-mnist --out runs/fmnist --bundle-dir models/repository/agilenn-fashion-mnist/1
Data parallel over N processes (DistributedDataParallel; gloo on CPU, nccl on GPUs; training/distributed.py):
    torchrun --standalone --nproc_per_node N -m agilenn.training.cli --threads 1 --dataset fashion-mnist --out ...
"""
from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from pathlib import Path

from agilenn.datasets import DATASETS, IMAGEFOLDER_PREFIX, DatasetNotFoundError, check_dataset_name


def build_parser() -> argparse.ArgumentParser:
    from .trainer import TrainConfig
    from .nets import ArchConfig

    d, a = TrainConfig(), ArchConfig()
    p = argparse.ArgumentParser(prog="agilenn-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and run")
    g.add_argument("--dataset", default=d.dataset, type=_dataset_arg,
                   help=f"one of {', '.join(DATASETS)}, or imagefolder:PATH (PATH/train/<class>/*.jpg|png, PATH/test/...)")
    g.add_argument("--data-dir", default=None, help="dataset folder (default: the dataset's standard location)")
    g.add_argument("--out", default=d.out, help="run directory: checkpoints, log, config")
    g.add_argument("--bundle-dir", default=None, help="where to write the bundle (default: OUT/bundle)")
    g.add_argument("--name", default=None, help="model name in the manifest (default: agilenn-DATASET)")
    g.add_argument("--version", default=d.model_version, help="model version in the manifest")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    g.add_argument("--train-only", action="store_true",
                   help="stop after the training stages (checkpoints only, no bundle): e.g. train on a rented GPU, "
                        "copy --out back, and export there with --resume")
    g.add_argument("--device", default=d.device, help="cpu or cuda")
    g.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--data-note", default=None,
                   help="what the data is, recorded in the manifest and printed next to every number in the "
                        "report (e.g. 'CIFAR-10 re-encoded as JPEG q75, not the original pixels')")
    g.add_argument("--train-subset", type=int, default=None, help="use only N training images (smoke runs)")
    g.add_argument("--test-subset", type=int, default=None, help="use only N test images (smoke runs)")
    g.add_argument("--epochs", type=int, default=None, help="set every stage's epochs at once (smoke runs)")
    g = p.add_argument_group("architecture")
    g.add_argument("--channels", type=int, default=a.channels, help="C, extractor output channels")
    g.add_argument("--k", type=int, default=None, help="local channels (default round(0.2*C))")
    g.add_argument("--stride", type=int, default=a.stride, choices=(2, 4), help="feature stride")
    g.add_argument("--stem-width", type=int, default=a.stem_width)
    g.add_argument("--stem-expand", type=int, default=a.stem_expand,
                   help="width of a 1x1 conv after the stem's first conv, at its resolution (0: none)")
    g.add_argument("--body-width", type=int, default=a.body_width)
    g.add_argument("--body-blocks", type=int, default=a.body_blocks)
    g.add_argument("--local-width", type=int, default=a.local_width)
    g.add_argument("--centroids", type=int, default=a.centroids, help="quantizer levels L")
    g.add_argument("--centroid-min-gap", type=float, default=a.centroid_min_gap,
                   help="smallest distance between neighbouring centroids")
    g = p.add_argument_group("stages")
    g.add_argument("--ref-epochs", type=int, default=d.ref_epochs)
    g.add_argument("--ref-lr", type=float, default=d.ref_lr)
    g.add_argument("--ref-nested-p-full", type=unit_interval, default=d.ref_nested_p_full,
                   help="reference NN: share of samples seeing all stem channels (the rest keep the first k "
                        "plus a random prefix); 1 disables")
    g.add_argument("--extractor-epochs", type=int, default=d.extractor_epochs)
    g.add_argument("--extractor-lr", type=float, default=d.extractor_lr)
    g.add_argument("--preselect", default=d.preselect, choices=("none", "global_importance", "topk_appearance"))
    g.add_argument("--preselect-samples", type=int, default=d.preselect_samples)
    g.add_argument("--joint-epochs", type=int, default=d.joint_epochs)
    g.add_argument("--joint-lr", type=float, default=d.joint_lr)
    g.add_argument("--remote-heads", type=non_negative_int, default=d.remote_heads,
                   help="after the joint stage: refine N copies of its remote NN on the frozen device part (own seeds, "
                        "distillation) and average them with it; a server-side change only (0: none)")
    g.add_argument("--remote-epochs", type=non_negative_int, default=d.remote_epochs, help="epochs per extra remote NN")
    g.add_argument("--remote-lr", type=float, default=d.remote_lr, help="peak AdamW learning rate of the extra remote NNs")
    g = p.add_argument_group("losses")
    g.add_argument("--xai", default=d.xai, choices=("ig", "saliency"))
    g.add_argument("--ig-steps", type=int, default=d.ig_steps, help="0: 2-point trapezoid; m>1: m-step Riemann")
    g.add_argument("--rho", type=unit_interval, default=d.rho, help="skewness target of the hinge")
    g.add_argument("--lam", type=unit_interval, default=d.lam, help="lambda: weight of CE vs the XAI losses")
    g.add_argument("--aux-weight", type=float, default=d.aux_weight, help="extra CE on local-only and remote-only")
    g.add_argument("--eval-ce-weight", type=float, default=d.eval_ce_weight,
                   help="CE of the frozen evaluator on the extractor's features")
    g.add_argument("--rate-weight", type=float, default=d.rate_weight,
                   help="weight of the rate hinge: entropy of the soft assignments above --rate-target-bits")
    g.add_argument("--rate-target-bits", type=float, default=d.rate_target_bits,
                   help="bits per remote symbol the rate hinge allows for free")
    g.add_argument("--nested-p-full", type=unit_interval, default=d.nested_p_full,
                   help="nested dropout: share of samples that keep every remote channel")
    g.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation (digits)")
    g.add_argument("--ref-label-smoothing", type=unit_interval, default=d.ref_label_smoothing,
                   help="stage 1: label smoothing of the reference NN's cross-entropy (0: none)")
    g.add_argument("--ref-swa-epochs", type=non_negative_int, default=d.ref_swa_epochs,
                   help="stage 1: after the one-cycle schedule, this many epochs at a constant rate whose weights "
                        "are averaged (stochastic weight averaging; 0: none)")
    g.add_argument("--ref-swa-lr", type=non_negative_float, default=d.ref_swa_lr,
                   help="the averaging epochs' learning rate (0: --ref-lr / 10)")
    g.add_argument("--merge-holdout", type=non_negative_int, default=d.merge_holdout,
                   help="training images set aside (a fixed random subset) that no stage trains on; the "
                        "export's merge calibration fits alpha on them (0: it fits on images the nets trained on)")
    g.add_argument("--ref-erase-p", type=unit_interval, default=d.ref_erase_p,
                   help="random erasing: share of training images with one rectangle blanked while training "
                        "the reference NN and fine-tuning the extractor (stages 1-2; never in the joint stage)")
    g.add_argument("--distill-weight", type=unit_interval, default=d.distill_weight,
                   help="joint stage: share w in [0, 1] of the prediction loss that is distillation from the "
                        "frozen reference NN into the merged and local logits: (1-w) CE + w KD (0: none)")
    g.add_argument("--distill-temp", type=float, default=d.distill_temp,
                   help="softmax temperature of the distillation loss")
    return p


def config_from_args(args):
    from .nets import ArchConfig
    from .trainer import TrainConfig

    k = args.k if args.k is not None else max(1, round(0.2 * args.channels))
    arch = ArchConfig(channels=args.channels, k=k, stem_width=args.stem_width, stem_expand=args.stem_expand, stride=args.stride,
                      body_width=args.body_width, body_blocks=args.body_blocks, local_width=args.local_width, centroids=args.centroids,
                      centroid_min_gap=args.centroid_min_gap)
    epochs = {}
    if args.epochs is not None:
        epochs = {"ref_epochs": args.epochs, "extractor_epochs": args.epochs, "joint_epochs": args.epochs,
                  "remote_epochs": args.epochs}
    kw = dict(dataset=args.dataset, data_dir=args.data_dir, out=args.out, device=args.device, seed=args.seed,
              threads=args.threads, batch_size=args.batch_size, train_subset=args.train_subset,
              test_subset=args.test_subset, ref_epochs=args.ref_epochs, ref_lr=args.ref_lr,
              ref_nested_p_full=args.ref_nested_p_full,
              extractor_epochs=args.extractor_epochs, extractor_lr=args.extractor_lr, preselect=args.preselect,
              preselect_samples=args.preselect_samples, joint_epochs=args.joint_epochs, joint_lr=args.joint_lr,
              remote_heads=args.remote_heads, remote_epochs=args.remote_epochs, remote_lr=args.remote_lr,
              xai=args.xai, ig_steps=args.ig_steps, rho=args.rho, lam=args.lam, aux_weight=args.aux_weight,
              eval_ce_weight=args.eval_ce_weight, rate_weight=args.rate_weight,
              rate_target_bits=args.rate_target_bits, nested_p_full=args.nested_p_full,
              flip=not args.no_flip and args.dataset != "svhn", ref_erase_p=args.ref_erase_p,
              ref_label_smoothing=args.ref_label_smoothing,
              ref_swa_epochs=args.ref_swa_epochs, ref_swa_lr=args.ref_swa_lr, merge_holdout=args.merge_holdout,
              distill_weight=args.distill_weight, distill_temp=args.distill_temp, arch=arch,
              model_name=args.name or f"agilenn-{_dataset_slug(args.dataset)}", model_version=args.version,
              data_note=args.data_note)
    kw.update(epochs)
    return TrainConfig(**kw)


def _dataset_arg(value: str) -> str:
    try:
        return check_dataset_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def unit_interval(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1]")
    return v


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def non_negative_int(value: str) -> int:
    v = _whole_number(value)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return v


def non_negative_float(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not v >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} is not a number >= 0")
    return v


def positive_int(value: str) -> int:
    v = _whole_number(value)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not at least 1")
    return v


def _dataset_slug(dataset: str) -> str:
    """A model-name-safe word for the data set: the folder's name for imagefolder:PATH."""
    if dataset.startswith(IMAGEFOLDER_PREFIX):
        name = Path(dataset[len(IMAGEFOLDER_PREFIX):].rstrip("/")).name or "images"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "images"
    return dataset


def main(argv: list[str] | None = None) -> int:
    try:
        import torch  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as exc:
        print(f"agilenn-train needs the [train] extra ({exc.name} missing): pip install 'agilenn[train]'",
              file=sys.stderr)
        return 2
    from pathlib import Path

    from .distributed import world_from_env
    from .trainer import run_all

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    main_rank = world_from_env().main  # under torchrun only rank 0 logs to the console and train.log
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", force=True,
                        handlers=[logging.StreamHandler()]
                        + ([logging.FileHandler(Path(cfg.out) / "train.log")] if main_rank else []))
    command = shlex.join(["agilenn-train", *argv])
    try:
        bundle = run_all(cfg, resume=args.resume, command=command, bundle_dir=args.bundle_dir,
                         train_only=args.train_only)
    except DatasetNotFoundError as exc:
        print(f"agilenn-train: {exc}", file=sys.stderr)
        return 2
    if bundle is not None:  # None: a torchrun rank other than 0
        print(bundle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
