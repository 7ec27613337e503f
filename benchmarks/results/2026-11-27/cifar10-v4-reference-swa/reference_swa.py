"""Probe: does stochastic weight averaging lift CIFAR-10 v4's converged reference past 90 %?

    python benchmarks/results/2026-11-27/cifar10-v4-reference-swa/reference_swa.py [LR [EPOCHS [WORK]]]

Starts from the shipped reference.onnx (BatchNorm folded into the convolutions, so there are no
statistics to recompute after averaging) as torch code, trains on at a constant AdamW rate after a
200-step warm-up with the reference recipe's augmentation (shift, flip, random erasing 0.5), averages
the weights at the end of epochs 2..EPOCHS, and scores the running weights and the average on the
full 10k test split. Resumable per epoch (WORK keeps the checkpoint). At the end: the paired
comparison with the shipped reference (McNemar). Run from the repository root. docs/training.md,
"Weight averaging on version 4's reference", has the numbers of 2026-11-27 (history.json here; that
run kept the same running mean in a loop of its own, which torch's AveragedModel computes identically).
"""
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from agilenn.datasets import load_for_model
from agilenn.models import load_bundle
from agilenn.training import data as D
from agilenn.training.onnx_torch import OnnxModule

LR = float(sys.argv[1]) if len(sys.argv) > 1 else 3e-4
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
WORK = Path(sys.argv[3] if len(sys.argv) > 3 else f"runs/reference-swa-lr{LR:g}")
BATCH, WARMUP_STEPS = 256, 200
WORK.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(2)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
log = logging.getLogger("swa")

bundle = load_bundle("models/repository/agilenn-cifar10/4")
train, test = (load_for_model(bundle.manifest["dataset"], s, bundle.input_shape) for s in ("train", "test"))
x_train = torch.from_numpy(bundle.preprocess(train.images))
y_train = torch.from_numpy(np.asarray(train.labels, np.int64))
x_test = torch.from_numpy(bundle.preprocess(test.images))
y_test = torch.from_numpy(np.asarray(test.labels, np.int64))
net = OnnxModule(bundle.onnx_path("reference"), trainable=True)


def logits(m, x):
    y = m(x)
    return y[0] if isinstance(y, (tuple, list)) else y


@torch.no_grad()
def predictions(m):
    return torch.cat([logits(m, x_test[i:i + 1000]).argmax(1) for i in range(0, len(y_test), 1000)])


def accuracy(m):
    return float((predictions(m) == y_test).float().mean())


opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
swa = AveragedModel(net)  # the running mean of the averaged epochs' weights, as the trainer's
start, history = 0, []
ckpt = WORK / "ckpt.pt"
if ckpt.is_file():
    st = torch.load(ckpt, weights_only=False)
    net.load_state_dict(st["net"])
    opt.load_state_dict(st["opt"])
    swa.load_state_dict(st["swa"])
    start, history = st["epoch"], st["history"]
else:
    history.append({"epoch": 0, "acc": accuracy(net)})
    log.info("start: %s", history[-1])
steps = len(y_train) // BATCH
for epoch in range(start, EPOCHS):
    gen = torch.Generator().manual_seed(1000 + epoch)  # per epoch: a resumed run draws the same batches
    torch.manual_seed(1000 + epoch)
    order = torch.randperm(len(y_train), generator=gen)
    t0, total = time.time(), 0.0
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = LR * min(1.0, (epoch * steps + i + 1) / WARMUP_STEPS)
        idx = order[i * BATCH:(i + 1) * BATCH]
        xb = D.random_erase(D.augment(x_train[idx], gen=gen), 0.5, gen)
        loss = F.cross_entropy(logits(net, xb), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    if epoch >= 1:  # the first epoch leaves the annealed point: not averaged
        swa.update_parameters(net)
    history.append({"epoch": epoch + 1, "loss": total / steps, "acc": accuracy(net),
                    "swa": accuracy(swa) if swa.n_averaged else None, "n_avg": int(swa.n_averaged), "s": time.time() - t0})
    log.info("%s", history[-1])
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "history": history,
                "swa": swa.state_dict()}, ckpt)
    (WORK / "history.json").write_text(json.dumps(history, indent=1))

shipped = OnnxModule(bundle.onnx_path("reference"), trainable=False)
before, after = predictions(shipped) == y_test, predictions(swa) == y_test
only_before, only_after = int((before & ~after).sum()), int((~before & after).sum())
print(json.dumps({"shipped": float(before.float().mean()), "averaged": float(after.float().mean()),
                  "epochs_averaged": int(swa.n_averaged), "right_only_before": only_before, "right_only_after": only_after,
                  "mcnemar_z": (only_after - only_before) / max(1.0, (only_after + only_before) ** 0.5)}))
