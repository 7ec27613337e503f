"""The offline training stages. Each stage checkpoints after every epoch under <out>/ckpt/ and is
skipped (or resumed mid-way) on ``--resume``.

1 reference   train stem+body on the dataset; the body alone becomes the frozen evaluator
2 extractor   extractor := reference stem, fine-tuned so the frozen evaluator classifies its features
3 preselect   Algorithm 1: reorder extractor channels by importance
4 joint       extractor + local predictor + quantizer + remote NN + alpha, with the XAI losses and
              nested channel dropout on the (importance-ordered) remote channels
"""
from __future__ import annotations

import copy
import json
import logging
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from agilenn.datasets import load_dataset

from . import data as D
from . import distributed
from .nets import AgileNN, ArchConfig, ReferenceNN, nested_dropout_mask, prefix_mask
from .preselect import channel_order, measure_channel_importance
from .remote_heads import add_remote_heads
from .xai import ZeroBaselineGrad, channel_importance, disorder_loss, importance, skewness, skewness_loss

log = logging.getLogger("agilenn.training")


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"
    model_name: str = "agilenn-fashion-mnist"
    model_version: str = "1"
    data_note: str | None = None  # what the data is, said next to every number (e.g. "JPEG q75 re-encoding")
    data_dir: str | None = None
    out: str = "runs/agilenn"
    device: str = "cpu"
    seed: int = 0
    threads: int = 2
    batch_size: int = 128
    train_subset: int | None = None
    test_subset: int | None = None
    # stage 1
    ref_epochs: int = 15
    ref_lr: float = 0.1
    ref_nested_p_full: float = 0.1  # reference NN: share of samples that see all C stem channels
    ref_label_smoothing: float = 0.0  # stage 1's cross-entropy target: 1 - s on the label, s spread over all
    # stochastic weight averaging after the one-cycle schedule: this many epochs at a constant rate, the
    # weights at each epoch's end averaged, BatchNorm statistics measured again for the average
    ref_swa_epochs: int = 0
    ref_swa_lr: float = 0.0    # that rate (0: ref_lr / 10)
    # stage 2
    extractor_epochs: int = 1
    extractor_lr: float = 1e-3
    # stage 3
    preselect: str = "topk_appearance"
    preselect_samples: int = 5000
    # stage 4/5
    joint_epochs: int = 15
    joint_lr: float = 2e-3
    xai: str = "ig"
    ig_steps: int = 0          # 0: the official 2-point trapezoid
    rho: float = 0.8
    lam: float = 0.8
    aux_weight: float = 0.5    # extra CE on local-only and remote-only logits (both must work alone)
    eval_ce_weight: float = 0.25  # keep the frozen evaluator accurate on the extractor's features
    rate_weight: float = 0.5   # weight of the rate hinge on the soft assignments' entropy ...
    rate_target_bits: float = 1.4  # ... which only pushes above this many bits per symbol
    nested_p_full: float = 0.5  # nested dropout: share of samples that keep every remote channel
    flip: bool = True
    # random erasing in stages 1-2 only: with it in the joint stage Fashion-MNIST ended at 86.7 % local,
    # 91.6 % combined, skewness 0.81, without it 87.2 %, 91.9 %, 0.87 (docs/training.md, version 2)
    ref_erase_p: float = 0.0
    distill_weight: float = 0.0  # joint stage: share of the prediction loss that is KL to the frozen reference
    distill_temp: float = 4.0
    # training images no stage trains on; the merge calibration fits alpha on them (0: it fits on
    # training images the nets have seen, which on CIFAR-10 they had memorised)
    merge_holdout: int = 0
    remote_heads: int = 0      # after the joint stage: extra remote NNs on the frozen device part, averaged (0: none)
    remote_epochs: int = 12    # ... epochs per head
    remote_lr: float = 1e-3    # ... peak AdamW learning rate (warm-up, then cosine)
    arch: ArchConfig = field(default_factory=ArchConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arch"] = self.arch.to_dict()
        return d


class Run:
    """Everything the stages share: config, data tensors, checkpoint paths, device."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg, self.resume = cfg, resume
        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Under torchrun: this rank's place in the group (distributed.py); one process otherwise.
        self.dist, device = distributed.init(cfg.device)
        self.dev = torch.device(device)
        if self.dev.type == "cuda":
            # fixed shapes every step: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "ckpt"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        train = load_dataset(cfg.dataset, "train", cfg.data_dir).subset(cfg.train_subset, cfg.seed)
        # Out of every stage, the reference's included: the extractor starts as its stem and the remote
        # NN as its body, so images the reference trained on are half-memorised by the nets the merge
        # weighs (CIFAR-10 v5 held out after stage 1 only: 91.4 % combined there, 86.8 % on test).
        train, self.merge_holdout_raw = D.split_merge_holdout(train, cfg.merge_holdout, cfg.seed)
        if self.merge_holdout_raw is not None:
            log.info("merge hold-out: %d training images set aside for the merge calibration; every stage "
                     "trains on the other %d", len(self.merge_holdout_raw), len(train))
        test = load_dataset(cfg.dataset, "test", cfg.data_dir).subset(cfg.test_subset, cfg.seed)
        self.classes = train.classes
        self.mean, self.std = D.channel_stats(train)
        self.x_train, self.y_train = D.to_tensor(train, self.mean, self.std)
        self.x_test, self.y_test = D.to_tensor(test, self.mean, self.std)
        self.train_raw, self.test_raw = train, test
        c, h, w = train.shape_chw
        cfg.arch.in_channels, cfg.arch.input_hw = c, (h, w)
        cfg.arch.num_classes = len(self.classes)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.x_batches, self.y_batches = self._batch_source()

    def merge_calibration_split(self):
        """(images, labels, words that say which) the export's merge calibration fits alpha on: the
        merge hold-out when the run has one, else the training split."""
        held = self.merge_holdout_raw
        if held is None:
            return self.train_raw.images, self.train_raw.labels, None
        return held.images, held.labels, D.merge_holdout_note(held, self.cfg.seed)

    def _batch_source(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where training batches are cut and augmented: on the GPU when the training split fits in a
        quarter of its free memory. On an H100 the CPU-side gather, augmentation and copy of each batch
        were most of a CIFAR-10 reference step (3.2 s per epoch at 16 ms per step, 5-9 ms of it
        augmenting); the random draws stay on the CPU generator, so the batches are the same numbers."""
        if self.dev.type != "cuda":
            return self.x_train, self.y_train
        need = self.x_train.element_size() * self.x_train.nelement()
        free, _ = torch.cuda.mem_get_info(self.dev)
        if need > free // 4:
            log.info("training split (%.0f MiB) stays on the CPU: %.0f MiB free on the GPU", need / 2**20, free / 2**20)
            return self.x_train, self.y_train
        return self.x_train.to(self.dev), self.y_train.to(self.dev)

    # --- helpers ----------------------------------------------------------------------------
    def ckpt(self, stage: str) -> Path:
        return self.ckpt_dir / f"{stage}.pt"

    def load(self, stage: str):
        p = self.ckpt(stage)
        return torch.load(p, map_location="cpu", weights_only=False) if (self.resume and p.exists()) else None

    def save(self, stage: str, state: dict) -> None:
        if not self.dist.main:
            return  # every rank holds the same model; rank 0 writes it
        tmp = self.ckpt(stage).with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.ckpt(stage))

    def train_batches(self, erase_p: float = 0.0):
        d = self.dist
        for xb, yb in D.batches(self.x_batches, self.y_batches, self.cfg.batch_size, True, self.gen):
            # The whole global batch is augmented on every rank, so all ranks draw the same numbers
            # from self.gen; each then keeps its stride of it.
            xb = D.random_erase(D.augment(xb, flip=self.cfg.flip, gen=self.gen), erase_p, self.gen)
            if d.enabled:
                if len(yb) < d.world:
                    continue  # a last batch too small to give every rank a sample
                xb, yb = xb[d.rank::d.world], yb[d.rank::d.world]
            yield xb.to(self.dev, non_blocking=True), yb.to(self.dev, non_blocking=True)

    def sample(self, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed random subset of n items of a split (all of it when n is None or too big).

        Never the first n: image folders load class by class, so a prefix can be one class."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        if n is None or n >= x.shape[0]:
            return x, y
        idx = torch.from_numpy(np.sort(np.random.default_rng(self.cfg.seed).permutation(x.shape[0])[:n]))
        return x[idx], y[idx]

    def steps_per_epoch(self) -> int:
        return math.ceil(self.x_train.shape[0] / self.cfg.batch_size)

    @torch.no_grad()
    def accuracy(self, fn, x=None, y=None, batch_size: int = 1000) -> float:
        x = self.x_test if x is None else x
        y = self.y_test if y is None else y
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            correct += (fn(x[i:i + batch_size].to(self.dev)).argmax(1).cpu() == y[i:i + batch_size]).sum().item()
        return correct / max(1, x.shape[0])


def _freeze(m: nn.Module) -> nn.Module:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _load_optimizer(st: dict, opt, stage: str) -> bool:
    """Restore the optimizer's state from a checkpoint when it has one. A checkpoint carried back from
    a rented GPU may have lost it (deploy/gpu/gpu_runs.py drops it to fit the trip): the run then
    goes on with fresh moments/momentum and the learning rate where the schedule stood."""
    if "opt" in st:
        opt.load_state_dict(st["opt"])
        return True
    log.warning("%s: checkpoint has no optimizer state; resuming at epoch %d with a fresh optimizer", stage,
                st["epoch"] + 1)
    return False


def _bar(run: Run, stage: str, epoch: int, epochs: int, erase_p: float = 0.0):
    """Progress over one epoch's batches: a tqdm bar on a terminal; otherwise (a background run
    logging to a file, where tqdm prints nothing) a log line every LOG_EVERY_S with rate and ETA."""
    desc, batches = f"{stage} {epoch + 1}/{epochs}", run.train_batches(erase_p)
    if not run.dist.main:  # under torchrun only rank 0 reports
        return batches
    if sys.stderr.isatty():
        return tqdm(batches, total=run.steps_per_epoch(), desc=desc, leave=False, mininterval=5.0)
    return _logged_progress(batches, run.steps_per_epoch(), desc)


LOG_EVERY_S = 30.0  # seconds between progress lines when not on a terminal


def _logged_progress(batches, total: int, desc: str, every_s: float = LOG_EVERY_S):
    t0 = last = time.time()
    for step, batch in enumerate(batches, 1):
        yield batch
        now = time.time()
        if now - last >= every_s and step < total:
            last = now
            rate = step / (now - t0)
            log.info("%s: step %d/%d (%.0f%%), %.2f steps/s, epoch ETA %.0fs", desc, step, total,
                     100.0 * step / total, rate, (total - step) / rate)


# ================================================================= stage 1: reference NN

def train_reference(run: Run) -> ReferenceNN:
    cfg = run.cfg
    model = ReferenceNN(cfg.arch).to(run.dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.ref_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    # OneCycleLR divides by its warm-up's length, pct_start * total - 1 steps: under 5 in all it is zero
    # (a tiny run crashed with ZeroDivisionError); only runs that short see a schedule longer than the run
    total = max(5, cfg.ref_epochs * run.steps_per_epoch())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.ref_lr, total_steps=total, pct_start=0.25)
    start, swa_state = 0, None
    st = run.load("reference")
    if st is not None:
        model.load_state_dict(st["model"])
        if st.get("done"):
            log.info("reference: resumed finished stage (test acc %.4f)", st["test_acc"])
            return model
        start, swa_state = st["epoch"], st.get("swa")
        optimizer_restored = _load_optimizer(st, opt, "reference")
        if start < cfg.ref_epochs:  # (past them, the averaging epochs run at a constant rate: no schedule)
            if optimizer_restored:
                sched.load_state_dict(st["sched"])
            else:  # the one-cycle schedule is a function of the step: replay it to where the run stopped
                with warnings.catch_warnings():  # stepping a schedule with no optimizer step is the point here
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                    for _ in range(start * run.steps_per_epoch()):
                        sched.step()
        log.info("reference: resuming at epoch %d", start + 1)
    acc = st["test_acc"] if st is not None else run.accuracy(model.eval()) if cfg.ref_epochs == 0 else 0.0
    net = distributed.wrap(model, run.dist, run.dev)  # what training steps call (DDP when sharded)
    for epoch in range(start, cfg.ref_epochs):
        acc = _reference_epoch(run, model, net, opt, sched.step, epoch)
        run.save("reference", {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                               "epoch": epoch + 1, "done": False, "test_acc": acc})
    state = {"model": model.state_dict(), "epoch": cfg.ref_epochs, "done": True, "test_acc": acc}
    if cfg.ref_swa_epochs > 0:
        model, state = _reference_swa(run, model, net, opt, max(start, cfg.ref_epochs), swa_state, acc)
    run.save("reference", state)
    return model.eval()


def _reference_epoch(run: Run, model: ReferenceNN, net, opt, after_step, epoch: int) -> float:
    """One epoch of stage 1's training (``after_step`` sets the rate for the next step); the test accuracy."""
    cfg = run.cfg
    epochs = cfg.ref_epochs + cfg.ref_swa_epochs
    model.train()
    t0, tot, n = time.time(), 0.0, 0
    for xb, yb in _bar(run, "reference", epoch, epochs, cfg.ref_erase_p):
        loss = F.cross_entropy(net(xb, ref_feature_mask(len(yb), cfg.arch, cfg.ref_nested_p_full, run.dev)), yb,
                               label_smoothing=cfg.ref_label_smoothing)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); after_step()
        tot += loss.detach() * len(yb); n += len(yb)  # a tensor: no GPU sync per step
    distributed.sync_buffers(model, run.dist)
    acc = run.accuracy(model.eval())
    log.info("reference epoch %d/%d  loss %.4f  test_acc %.4f  (%.1fs)", epoch + 1, epochs,
             float(tot) / max(1, n), acc, time.time() - t0)
    return acc


def _reference_swa(run: Run, model: ReferenceNN, net, opt, start: int, swa_state, acc: float):
    """Stochastic weight averaging (Izmailov et al., UAI 2018) after the one-cycle schedule: ref_swa_epochs
    more epochs at a constant rate, the weights at each epoch's end averaged (torch's AveragedModel), then
    the average's BatchNorm statistics measured on the training split (update_bn), since averaged
    weights make features that no running statistic saw. Returns (the averaged net, its final checkpoint).

    Why: the one-cycle end point sits near the edge of a flat region; the average of points sampled
    around it generalises better. On CIFAR-10 v4's shipped reference (BatchNorm folded, AdamW 3e-4,
    11 averaged epochs) it gave 89.84 -> 90.10 % (docs/training.md, "Weight averaging")."""
    from torch.optim.swa_utils import AveragedModel, update_bn

    cfg = run.cfg
    lr = cfg.ref_swa_lr or cfg.ref_lr / 10
    swa = AveragedModel(model)
    if swa_state is not None:
        swa.load_state_dict(swa_state)
    for g in opt.param_groups:
        g["lr"] = lr
    end = cfg.ref_epochs + cfg.ref_swa_epochs
    for epoch in range(start, end):
        acc = _reference_epoch(run, model, net, opt, lambda: None, epoch)
        swa.update_parameters(model)
        run.save("reference", {"model": model.state_dict(), "opt": opt.state_dict(), "swa": swa.state_dict(),
                               "epoch": epoch + 1, "done": False, "test_acc": acc})
    averaged = swa.module
    # BatchNorm statistics for the averaged weights, over training batches as training augments them
    # (no erasing: test images have no blanked rectangles)
    update_bn((xb for xb, _ in run.train_batches()), averaged, device=run.dev)
    distributed.sync_buffers(averaged, run.dist)
    swa_acc = run.accuracy(averaged.eval())
    log.info("reference: weight average of %d epochs at lr %g: test_acc %.4f (the last epoch's weights: %.4f)",
             int(swa.n_averaged), lr, swa_acc, acc)
    return averaged, {"model": averaged.state_dict(), "epoch": end, "done": True, "test_acc": swa_acc,
                      "test_acc_before_averaging": acc, "swa_epochs_averaged": int(swa.n_averaged)}


def ref_feature_mask(batch: int, a: ArchConfig, p_full: float, device) -> torch.Tensor | None:
    """Nested dropout on the reference's stem channels: the first k always survive, the rest are cut
    to a random prefix. The body thus learns to lean on channels in order of their index, so the
    evaluator's importance is already skewed towards the first k (the local ones) and ordered among
    the remote ones before joint training starts, and the local channels carry a self-sufficient
    summary of the image (what the local predictor needs)."""
    if p_full >= 1.0:
        return None
    rest = nested_dropout_mask(batch, a.channels - a.k + 1, p_full, device)[:, :-1]  # 0..C-k remote kept
    return torch.cat([torch.ones(batch, a.k, 1, 1, device=device), rest], 1)


# ================================================================= stage 2: feature extractor

def evaluator_accuracy(run: Run, extractor, evaluator, x=None, y=None) -> float:
    extractor.eval()
    return run.accuracy(lambda xb: evaluator(extractor(xb)), x, y)


def train_extractor(run: Run, ref: ReferenceNN):
    """Extractor pre-processing: start from the reference stem (so the frozen evaluator already reads
    its features) and fine-tune it against the frozen evaluator."""
    cfg = run.cfg
    extractor = copy.deepcopy(ref.stem).to(run.dev)
    evaluator = _freeze(copy.deepcopy(ref.body).to(run.dev))
    st = run.load("extractor")
    start = 0
    opt = torch.optim.Adam(extractor.parameters(), lr=cfg.extractor_lr)
    if st is not None:
        extractor.load_state_dict(st["extractor"])
        if st.get("done"):
            log.info("extractor: resumed finished stage (evaluator acc %.4f)", st["eval_acc"])
            return extractor, evaluator
        _load_optimizer(st, opt, "extractor"); start = st["epoch"]
    acc = evaluator_accuracy(run, extractor, evaluator)
    log.info("extractor init from reference stem: evaluator acc on extractor features %.4f", acc)
    net = distributed.wrap(extractor, run.dist, run.dev)
    for epoch in range(start, cfg.extractor_epochs):
        extractor.train()
        t0, tot, n = time.time(), 0.0, 0
        steps = run.steps_per_epoch()
        for i, (xb, yb) in enumerate(_bar(run, "extractor", epoch, cfg.extractor_epochs, cfg.ref_erase_p)):
            for g in opt.param_groups:  # cosine within the stage
                g["lr"] = cfg.extractor_lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + i) /
                                                                 (cfg.extractor_epochs * steps)))
            loss = F.cross_entropy(evaluator(net(xb)), yb)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            tot += loss.detach() * len(yb); n += len(yb)
        distributed.sync_buffers(extractor, run.dist)
        acc = evaluator_accuracy(run, extractor, evaluator)
        log.info("extractor epoch %d/%d  loss %.4f  evaluator_acc_on_extractor %.4f  (%.1fs)", epoch + 1,
                 cfg.extractor_epochs, float(tot) / max(1, n), acc, time.time() - t0)
        run.save("extractor", {"extractor": extractor.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                               "done": False, "eval_acc": acc})
    run.save("extractor", {"extractor": extractor.state_dict(), "epoch": cfg.extractor_epochs, "done": True,
                           "eval_acc": acc})
    return extractor.eval(), evaluator


# ================================================================= stage 3: preselection

def run_preselect(run: Run, extractor, evaluator):
    cfg = run.cfg
    st = run.load("preselect")
    if st is not None:
        perm = st["perm"]
        log.info("preselect: resumed, channel order %s", perm.tolist())
    else:
        xs, ys = run.sample("train", cfg.preselect_samples)
        zg = ZeroBaselineGrad(evaluator, (cfg.arch.channels, *cfg.arch.feature_hw), cfg.arch.num_classes)
        part = distributed.shard(xs.shape[0], run.dist)  # sharded: each rank its chunk, rows gathered back in order
        ci = measure_channel_importance(evaluator, extractor, xs[part].to(run.dev), ys[part].to(run.dev), cfg.xai,
                                        cfg.ig_steps, zg)
        ci = distributed.gather_rows(ci, run.dist).to(run.dev)
        perm = channel_order(ci.cpu(), cfg.arch.k, cfg.preselect)
        before = skewness(ci, cfg.arch.k).mean().item()
        after = skewness(ci[:, perm.to(ci.device)], cfg.arch.k).mean().item()
        log.info("preselect (%s): skewness of first k=%d channels %.3f -> %.3f; order %s", cfg.preselect,
                 cfg.arch.k, before, after, perm.tolist())
        run.save("preselect", {"perm": perm, "skew_before": before, "skew_after": after})
    # permute the extractor's outputs and the evaluator's inputs together: the evaluator's function
    # is unchanged, only which channel sits where
    extractor.permute_outputs(perm.to(run.dev))
    evaluator.permute_inputs(perm.to(run.dev))
    return perm


# ================================================================= stage 4/5: joint training

@torch.no_grad()
def init_centroids(model: AgileNN, x: torch.Tensor) -> None:
    """0 plus quantiles of the positive remote feature values: a sensible start for ReLU6 features."""
    model.extractor.eval()
    f = model.extractor(x)[:, model.cfg.k:].reshape(-1)
    pos = f[f > 1e-3]
    L = model.quantizer.deltas.numel() + 1
    if pos.numel() < L:
        return
    qs = torch.tensor([(i - 0.5) / (L - 1) for i in range(1, L)], device=pos.device)
    vals = torch.quantile(pos[:200_000], qs)
    model.quantizer.set_centroids(torch.cat([torch.zeros(1, device=pos.device), vals]))


def soft_rate_bits(soft_p: torch.Tensor) -> torch.Tensor:
    """Entropy (bits/symbol) of each remote channel's batch-average soft assignment, averaged over
    channels: a differentiable proxy for what the static per-channel ANS model will pay."""
    p = soft_p.mean(dim=(0, 2, 3))  # [C-k, L]
    return -(p * torch.log2(p + 1e-9)).sum(1).mean()


def build_agilenn(cfg: TrainConfig, extractor, evaluator) -> AgileNN:
    k = cfg.arch.k
    return AgileNN(cfg.arch, copy.deepcopy(extractor), evaluator.sliced_copy(slice(k, None), cfg.arch))


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """Hinton et al.'s knowledge distillation: KL(teacher || student) on logits softened by ``temp``,
    times temp^2 so its gradients keep the scale of a cross-entropy as temp changes."""
    return F.kl_div(F.log_softmax(student_logits / temp, 1), F.log_softmax(teacher_logits / temp, 1),
                    reduction="batchmean", log_target=True) * temp * temp


def train_joint(run: Run, extractor, evaluator, reference: ReferenceNN | None = None) -> AgileNN:
    """Stage 4/5. ``reference``: stage 1's NN, a frozen copy of which is distilled into the merged and
    local logits when ``cfg.distill_weight`` > 0 (it sees the whole image through every stem channel,
    so its soft labels carry what the quantized remote channels and the k local ones lose)."""
    cfg = run.cfg
    if cfg.distill_weight > 0 and reference is None:
        raise ValueError("distill_weight > 0 needs the reference NN to distil from")
    teacher = _freeze(copy.deepcopy(reference)) if cfg.distill_weight > 0 else None
    a = cfg.arch
    k, R = a.k, a.channels - a.k
    model = build_agilenn(cfg, extractor, evaluator).to(run.dev)
    for p in model.remote.parameters():  # the evaluator copy was frozen
        p.requires_grad_(True)
    init_centroids(model, run.sample("train", 2000)[0].to(run.dev))
    pretrained = list(model.extractor.parameters()) + list(model.remote.parameters())
    fresh = list(model.local.parameters()) + [model.quantizer.deltas, model.alpha_logits]
    opt = torch.optim.AdamW([{"params": pretrained, "lr": cfg.joint_lr * 0.5, "base": cfg.joint_lr * 0.5},
                             {"params": fresh, "lr": cfg.joint_lr * 2, "base": cfg.joint_lr * 2}],
                            weight_decay=1e-4)
    zg = ZeroBaselineGrad(evaluator, (a.channels, *a.feature_hw), a.num_classes)
    start = 0
    wall_s = 0.0  # joint-stage seconds summed over every process that worked on it (a cut-off run resumes)
    st = run.load("joint")
    if st is not None:
        model.load_state_dict(st["model"])
        if st.get("done"):
            log.info("joint: resumed finished stage (alpha %.4f)", model.alpha.item())
            return model.eval()
        _load_optimizer(st, opt, "joint"); start = st["epoch"]; wall_s = st.get("wall_s", 0.0)
        log.info("joint: resuming at epoch %d", start + 1)
    steps = run.steps_per_epoch()
    total = max(1, cfg.joint_epochs * steps)
    net = distributed.wrap(model, run.dist, run.dev)
    for epoch in range(start, cfg.joint_epochs):
        model.train()
        t0 = time.time()
        sums = {"loss": 0.0, "ce": 0.0, "skew_loss": 0.0, "disorder": 0.0, "rate": 0.0, "skew": 0.0,
                "train_acc": 0.0, "eval_acc": 0.0}
        n = 0
        bar = _bar(run, "joint", epoch, cfg.joint_epochs)
        for i, (xb, yb) in enumerate(bar):
            t = (epoch * steps + i) / total
            for g in opt.param_groups:  # short warm-up, then cosine to zero
                g["lr"] = g["base"] * min(1.0, (epoch * steps + i + 1) / 100) * 0.5 * (1 + math.cos(math.pi * t))
            mask = nested_dropout_mask(len(yb), R, cfg.nested_p_full, run.dev)
            out = net(xb, remote_mask=mask)
            # lam == 1 (the plain split baseline) needs no double backprop: the XAI terms weigh nothing
            I, ev_logits = importance(evaluator, out["features"], yb, cfg.xai, cfg.ig_steps, zg,
                                      create_graph=cfg.lam < 1)
            ci = channel_importance(I)
            ce = F.cross_entropy(out["merged"], yb)
            ce = ce + cfg.aux_weight * (F.cross_entropy(out["local"], yb) + F.cross_entropy(out["remote"], yb))
            ce = ce + cfg.eval_ce_weight * F.cross_entropy(ev_logits, yb)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                T, w = cfg.distill_temp, cfg.distill_weight
                # Convex (Hinton et al.): the prediction loss keeps its scale, so the XAI terms keep their
                # pull. Not on the remote branch: with it (added on top of the CE, weight 1) skewness fell
                # from 0.81 to 0.69 over Fashion-MNIST epochs 1-5 - the extractor moved information into
                # the remote channels to match the teacher there.
                kd = distill_loss(out["merged"], t_logits, T) + cfg.aux_weight * distill_loss(out["local"], t_logits, T)
                ce = (1 - w) * ce + w * kd
            l_skew, l_dis = skewness_loss(ci, k, cfg.rho), disorder_loss(ci, k)
            rate = soft_rate_bits(out["soft_p"])
            # a hinge, not a plain penalty: an unconditional entropy term collapses the remote
            # channels onto one symbol (tried: 0.2 bits/symbol, remote accuracy -7 pp)
            loss = cfg.lam * ce + (1 - cfg.lam) * (l_skew + l_dis) + cfg.rate_weight * F.relu(rate - cfg.rate_target_bits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(yb); n += b
            with torch.no_grad():  # summed as tensors: read back once per epoch, not 8 GPU syncs per step
                for key, v in (("loss", loss), ("ce", ce), ("skew_loss", l_skew), ("disorder", l_dis), ("rate", rate)):
                    sums[key] += v.detach() * b
                sums["skew"] += skewness(ci, k).sum()
                sums["train_acc"] += (out["merged"].argmax(1) == yb).sum()
                sums["eval_acc"] += (ev_logits.argmax(1) == yb).sum()
            if i % 50 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}", skew=f"{skewness(ci, k).mean().item():.2f}")
        m = {key: float(v) / max(1, n) for key, v in sums.items()}  # rank 0's shard when sharded
        distributed.sync_buffers(model, run.dist)
        test = evaluate_split(run, model, evaluator, n_max=2000)
        log.info("joint epoch %d/%d  loss %.4f ce %.4f L_skew %.4f L_dis %.4f rate %.3fb | train: skew %.3f acc %.4f "
                 "evaluator_acc %.4f | test: combined %.4f local %.4f remote %.4f evaluator_on_extractor %.4f "
                 "skew %.3f | alpha %.3f centroids %s (%.1fs)", epoch + 1, cfg.joint_epochs, m["loss"], m["ce"],
                 m["skew_loss"], m["disorder"], m["rate"], m["skew"], m["train_acc"], m["eval_acc"],
                 test["combined"], test["local"], test["remote"], test["evaluator"], test["skew"],
                 model.alpha.item(), [round(c, 3) for c in model.quantizer.sorted_centroids().tolist()],
                 time.time() - t0)
        wall_s += time.time() - t0
        run.save("joint", {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                           "done": False, "wall_s": wall_s,
                           "log": {**m, **{f"test_{a_}": v for a_, v in test.items()}}})
    finalize_centroids(model)
    run.save("joint", {"model": model.state_dict(), "epoch": cfg.joint_epochs, "done": True, "wall_s": wall_s})
    return model.eval()


def finalize_centroids(model: AgileNN) -> None:
    """The codec needs strictly ascending centroids; the parametrisation guarantees ascending, and
    a gap that underflowed in float32 is widened (nearest-centroid assignment is unaffected)."""
    c = model.quantizer.sorted_centroids().clone()
    for i in range(1, c.numel()):
        c[i] = torch.maximum(c[i], c[i - 1] + 1e-4)
    model.quantizer.set_centroids(c)


@torch.no_grad()
def _hard_forward(model: AgileNN, xb, keep: int | None = None):
    R = model.cfg.channels - model.cfg.k
    mask = None if keep is None else prefix_mask(keep, R, xb.device)
    return model(xb, remote_mask=mask)


def evaluate_split(run: Run, model: AgileNN, evaluator, n_max: int | None = None, batch_size: int = 500) -> dict:
    """Test-set accuracies (every remote channel sent) and mean skewness on a fixed random subset of
    n_max samples (the whole test set when n_max is None)."""
    model.eval()
    x, y = run.sample("test", n_max)
    cor = {"combined": 0, "local": 0, "remote": 0, "evaluator": 0}
    skew_sum = 0.0
    zg = ZeroBaselineGrad(evaluator, (model.cfg.channels, *model.cfg.feature_hw), model.cfg.num_classes)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(run.dev), y[i:i + batch_size].to(run.dev)
        out = _hard_forward(model, xb)
        I, ev_logits = importance(evaluator, out["features"], yb, run.cfg.xai, run.cfg.ig_steps, zg)
        skew_sum += skewness(channel_importance(I), model.cfg.k).sum().item()
        for key, lg in (("combined", out["merged"]), ("local", out["local"]), ("remote", out["remote"]),
                        ("evaluator", ev_logits)):
            cor[key] += (lg.argmax(1) == yb).sum().item()
    n = max(1, x.shape[0])
    res = {key: v / n for key, v in cor.items()}
    res["skew"] = skew_sum / n
    model.train()
    return res


def run_all(cfg: TrainConfig, resume: bool = False, command: str = "", bundle_dir: str | None = None,
            train_only: bool = False) -> Path | None:
    """All stages, then export + report. Returns the bundle directory (None when ``train_only``: the
    stages' checkpoints are the result, and a later ``resume`` run, anywhere, exports them; how a rented
    GPU trains and a CPU machine does the export, which needs no GPU)."""
    run = Run(cfg, resume)
    if run.dist.main:
        (run.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if run.dist.enabled:
        log.info("data parallel: %d processes (%s), global batch %d", run.dist.world,
                 "nccl" if run.dev.type == "cuda" else "gloo", cfg.batch_size)
    log.info("data: %s train %d test %d, input %s, features %dx%dx%d (k=%d)", cfg.dataset, len(run.y_train),
             len(run.y_test), run.train_raw.shape_chw, cfg.arch.channels, *cfg.arch.feature_hw, cfg.arch.k)
    ref = train_reference(run)
    extractor, evaluator = train_extractor(run, ref)
    perm = run_preselect(run, extractor, evaluator)
    model = train_joint(run, extractor, evaluator, ref)
    model = add_remote_heads(run, model, ref)
    if train_only:
        log.info("training stages finished; checkpoints in %s (export with --resume, without --train-only)",
                 run.ckpt_dir)
        distributed.finish(run.dist)
        return None
    if not run.dist.main:  # rank 0 exports and reports
        distributed.finish(run.dist)
        return None
    bundle = Path(bundle_dir) if bundle_dir else run.out / "bundle"
    # extractor: stage 2's, permuted by preselection; the start of joint training (which copies it)
    finish_bundle(run, ref, model, evaluator, extractor, perm, bundle, command)
    distributed.finish(run.dist)
    return bundle


# Training images the merge calibration fits on (a fixed random subset): it runs remote.onnx once per
# channel count over each of them, which on all 50k CIFAR-10 images with its remote NN took hours.
MERGE_CALIBRATION_IMAGES = 10_000


def finish_bundle(run: Run, ref, model: AgileNN, evaluator, initial_extractor, perm, bundle: Path, command: str,
                  full: bool = True) -> dict:
    """Export the bundle and measure it (report.md/json). ``full=False`` stops there and skips the
    integer device part, the context coder's refit and the merge calibration (the slow steps; the
    ablation's --fast-export). Returns the report's metrics."""
    from .export import export_bundle, update_manifest_metrics
    from .report import write_report

    manifest = export_bundle(run, ref, model, bundle, command, evaluator=evaluator, channel_order=perm)
    metrics = write_report(run, ref, model, evaluator, bundle, manifest, initial_extractor=initial_extractor)
    update_manifest_metrics(bundle, metrics)
    if not full:
        log.info("bundle written to %s (no integer part, context refit or merge calibration)", bundle)
        return metrics
    # The integer device part (what an MCU runs): quantized on training images, int8 vs float
    # measured on the test set, recorded in the manifest and the report.
    from agilenn.firmware.bundle_int8 import CALIBRATION_IMAGES, add_int8_device

    calib = run.train_raw.subset(CALIBRATION_IMAGES, seed=0)
    add_int8_device(bundle, calib.images, run.test_raw.images, run.test_raw.labels,
                    calibration_label=f"{run.cfg.dataset} train, {len(calib)} images (seed 0)")
    # The context coder's tables, refitted on what the integer part sends (training/context_tables.py).
    from .context_tables import add_context_tables

    add_context_tables(bundle, run.train_raw.images, run.test_raw.images)
    # Last, as it needs both: alpha per remote channel count and the break-even, fitted on what the
    # integer part sends, bytes measured with the context coder (training/merge_calibration.py).
    from .merge_calibration import add_merge_calibration

    images, labels, held_out = run.merge_calibration_split()
    add_merge_calibration(bundle, (images, labels), (run.test_raw.images, run.test_raw.labels),
                          train_images=MERGE_CALIBRATION_IMAGES, train_note=held_out)
    # Last of all: remote channels that send centroid 0.0 on every training image (float and int8)
    # are dropped, and the steps above redone on the pruned bundle (training/prune_channels.py).
    # It runs on the finished bundle because "dead" means dead in what the integer part sends,
    # and its before/after check compares two complete bundles.
    from .prune_channels import NothingToPrune, prune_dead_channels

    try:
        prune_dead_channels(bundle, run.train_raw, run.test_raw, command=f"{command} (export step)")
    except NothingToPrune as exc:
        log.info("prune: %s", exc)
    log.info("bundle written to %s", bundle)
    return metrics
