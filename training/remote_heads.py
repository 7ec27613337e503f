"""After the joint stage (optional, ``--remote-heads N``): more remote NNs for the server, trained once the device
part is fixed, and averaged with the joint stage's remote NN.

Why a stage of its own: the server can afford far more compute than the device, and once the joint
stage is over nothing on the device moves any more (extractor, local predictor, quantizer centroids).
A remote NN trained against those frozen features can no longer pull information out of the local
channels, so what the joint stage must forbid (distillation into the remote branch lowered the
skewness, docs/training.md) is harmless here, and there are no integrated gradients to pay for:
an epoch costs what a reference epoch costs, a third of a joint one.

Each head starts as a copy of the joint stage's remote NN and is trained on with its own seed (batch
order, augmentation, dropout, nested-dropout masks), AdamW with warm-up and cosine. Heads from a
fresh initialisation were tried first on Fashion-MNIST version 4: after 20 epochs one reached only
90.86 % alone (the joint stage's remote NN: 91.81 %), and averaging it in lowered the combined
accuracy from 92.19 % to 91.95 %. Copies keep what 40 reference and 24 joint epochs taught the body.
What the stage buys there is small: +0.1 to +0.2 pp combined for 3-4x the server's remote compute
(docs/training.md, "Extra remote NNs on version 4"); the features, not the remote NN, bound it.

The heads train as the remote half of the merge: cross-entropy on ``alpha * local + (1 - alpha) *
head`` with an alpha of the head's own (starting at the joint stage's; holding it fixed measured
the same), plus ``aux_weight`` times the head's own CE (it must
work alone), the distillation share of the joint stage (``distill_weight``, now also on the remote
branch), and nested dropout over the remote channels so the merge still degrades gracefully when
the sender truncates. The ensemble then replaces ``model.remote`` (one remote.onnx that averages
the logits of the joint stage's remote NN and the heads), and alpha is refitted to it on training
images; the export's merge calibration refits alpha per channel count on what the integer part
sends, as for any bundle. The device part is untouched, so firmware already flashed with the same
version's device part keeps working: this is a server-side upgrade.
"""
from __future__ import annotations

import copy
import logging
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .nets import AgileNN, Body, RemoteEnsemble, alpha_of, nested_dropout_mask

log = logging.getLogger("agilenn.train")

STAGE = "remote_heads"


def add_remote_heads(run, model: AgileNN, reference) -> AgileNN:
    """Train ``cfg.remote_heads`` extra remote NNs on ``model``'s frozen device part (resumable: the
    checkpoint holds the finished heads and the one in progress) and return ``model`` with
    ``model.remote`` the average of the joint stage's remote NN and the heads, alpha refitted."""
    cfg = run.cfg
    if cfg.remote_heads <= 0:
        return model
    if isinstance(model.remote, RemoteEnsemble):
        raise ValueError("add_remote_heads: the model's remote NN is already an ensemble")
    from .trainer import _freeze  # the stage helpers live with the other stages

    teacher = _freeze(copy.deepcopy(reference)) if cfg.distill_weight > 0 else None
    _freeze(model)
    R = cfg.arch.channels - cfg.arch.k
    st = run.load(STAGE) or {"heads": [], "current": None}
    done = st["heads"]
    while len(done) < cfg.remote_heads:
        head = _train_head(run, model, teacher, done, resume=st.get("current"))
        done.append(head.state_dict())
        st = {"heads": done, "current": None}
        run.save(STAGE, st)
    # a resumed run asking for fewer heads than were trained averages the first ones
    heads = [_body(R, cfg.arch, s) for s in done[:cfg.remote_heads]]
    model.remote = RemoteEnsemble([model.remote, *heads]).to(run.dev).eval()
    if st.get("alpha_logits") is not None and st.get("alpha_heads") == cfg.remote_heads:
        model.alpha_logits.data = st["alpha_logits"].to(run.dev)
        log.info("remote heads: resumed finished stage (%d heads, alpha %.4f)", len(heads), model.alpha.item())
        return model.eval()
    fit_alpha(run, model)
    run.save(STAGE, {"heads": done, "current": None, "alpha_logits": model.alpha_logits.detach().cpu(),
                     "alpha_heads": cfg.remote_heads})
    return model.eval()


def _body(in_channels: int, arch, state: dict) -> Body:
    from .trainer import _freeze

    body = Body(in_channels, arch)
    body.load_state_dict(state)
    return _freeze(body)


def _train_head(run, model: AgileNN, teacher, done: list, resume: dict | None) -> Body:
    """Head number len(done) + 1; ``done`` (the finished heads' states) goes into every checkpoint."""
    cfg = run.cfg
    index = len(done)
    R = cfg.arch.channels - cfg.arch.k
    head = MergeHead(copy.deepcopy(model.remote), model.alpha_logits).to(run.dev)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.remote_lr, weight_decay=1e-4)
    start = 0
    if resume is not None and resume["index"] == index:
        head.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        start = resume["epoch"]
        log.info("remote head %d: resuming at epoch %d", index + 1, start + 1)
    steps = run.steps_per_epoch()
    total = max(1, cfg.remote_epochs * steps)
    x_eval, y_eval = run.sample("test", 2000)
    net = distributed.wrap(head, run.dist, run.dev)  # what training steps call (DDP when sharded)
    from .trainer import _bar  # the stage helpers live with the other stages

    for epoch in range(start, cfg.remote_epochs):
        # Seeded per head and epoch: each head sees its own batches, augmentations and masks, and a
        # run resumed at an epoch draws exactly what the uninterrupted one would have.
        run.gen.manual_seed(cfg.seed + 1000 * (index + 1) + epoch)
        torch.manual_seed(cfg.seed + 1000 * (index + 1) + epoch)
        head.train()
        t0, tot, n = time.time(), 0.0, 0
        for i, (xb, yb) in enumerate(_bar(run, f"remote head {index + 1}", epoch, cfg.remote_epochs)):
            step = epoch * steps + i
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(cfg.remote_lr, step, total)
            local, q = _device_side(model, xb)  # no_grad: the device part is frozen
            q = q * nested_dropout_mask(len(yb), R, cfg.nested_p_full, run.dev)
            remote, merged = net(local, q)
            with torch.no_grad():
                t_logits = None if teacher is None else teacher(xb)
            loss = head_loss(remote, merged, yb, t_logits, cfg.aux_weight, cfg.distill_weight, cfg.distill_temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.detach() * len(yb); n += len(yb)
        distributed.sync_buffers(head, run.dist)
        acc = _accuracies(model, head, x_eval, y_eval, run.dev)
        log.info("remote head %d epoch %d/%d  loss %.4f | test (fixed 2,000): head %.4f merged %.4f | alpha %.3f "
                 "(%.1fs)", index + 1, epoch + 1, cfg.remote_epochs, float(tot) / max(1, n), acc["head"],
                 acc["merged"], head.alpha().item(), time.time() - t0)
        run.save(STAGE, {"heads": done, "current": {"index": index, "model": head.state_dict(),
                                                               "opt": opt.state_dict(), "epoch": epoch + 1}})
    return head.body.eval()


def warmup_cosine(peak: float, step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total``: a 100-step linear warm-up, then cosine to zero."""
    return peak * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / total))


def head_loss(remote, merged, labels, teacher_logits, aux_weight: float, distill_weight: float,
              distill_temp: float) -> torch.Tensor:
    """A remote NN's loss as the remote half of the merge: CE on the merge plus ``aux_weight`` times its
    own CE; with teacher logits, that mixed ``(1 - w) : w`` with the same two terms as distillation."""
    from .trainer import distill_loss

    loss = F.cross_entropy(merged, labels) + aux_weight * F.cross_entropy(remote, labels)
    if teacher_logits is None:
        return loss
    T, w = distill_temp, distill_weight
    kd = distill_loss(merged, teacher_logits, T) + aux_weight * distill_loss(remote, teacher_logits, T)
    return (1 - w) * loss + w * kd


class MergeHead(nn.Module):
    """A remote NN and its own alpha, trained together (one module, so DDP keeps both in step). The
    joint stage's alpha is only where each head's starts: it is refitted once the heads are averaged."""

    def __init__(self, body: nn.Module, alpha_logits: torch.Tensor):
        super().__init__()
        self.body = body
        self.alpha_logits = nn.Parameter(alpha_logits.detach().clone())

    def alpha(self) -> torch.Tensor:
        return alpha_of(self.alpha_logits)

    def forward(self, local, q):
        remote = self.body(q)
        a = self.alpha()
        return remote, a * local + (1 - a) * remote


@torch.no_grad()
def _device_side(model: AgileNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local logits and the hard-quantized remote channels, as the frozen device part sends them."""
    model.eval()
    _, local, q, _ = model.device_side(x)
    return local, q


@torch.no_grad()
def _accuracies(model: AgileNN, head: "MergeHead", x, y, dev, batch: int = 1000) -> dict:
    head.eval()
    cor = {"head": 0, "merged": 0}
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i:i + batch].to(dev), y[i:i + batch].to(dev)
        local, q = _device_side(model, xb)
        r, merged = head(local, q)
        cor["head"] += (r.argmax(1) == yb).sum().item()
        cor["merged"] += (merged.argmax(1) == yb).sum().item()
    return {key: v / max(1, x.shape[0]) for key, v in cor.items()}


ALPHA_FIT_IMAGES = 10_000


@torch.no_grad()
def fit_alpha(run, model: AgileNN) -> None:
    """alpha for the ensemble on a fixed subset of training images (every remote channel sent, no
    augmentation), by the rule the export's merge calibration uses per channel count (best accuracy,
    ties by cross-entropy): each head trained an alpha of its own, and averaged logits are smoother
    than any one head's, so the weight is fitted to the average."""
    from .merge_calibration import fit_alpha as fit_merge_alpha

    x, y = run.sample("train", ALPHA_FIT_IMAGES)
    locs, rems = [], []
    for i in range(0, x.shape[0], 1000):
        local, q = _device_side(model, x[i:i + 1000].to(run.dev))
        locs.append(local.cpu())
        rems.append(model.remote(q).cpu())
    a = fit_merge_alpha(torch.cat(locs).numpy(), torch.cat(rems).numpy(), y.numpy())
    a = min(max(a, 1e-3), 1 - 1e-3)  # alpha_of(logits) never reaches the grid's ends
    before = model.alpha.item()
    model.alpha_logits.data = torch.tensor([math.log(a), math.log(1 - a)], device=model.alpha_logits.device)
    log.info("remote heads: alpha refitted on %d training images: %.3f -> %.3f", x.shape[0], before, a)
