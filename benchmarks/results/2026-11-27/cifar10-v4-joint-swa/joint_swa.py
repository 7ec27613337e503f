"""Probe: does stochastic weight averaging of the whole joint model (device part, remote NN) lift
CIFAR-10 v4's combined accuracy, the gap to the reference that only retraining can close?

    python benchmarks/results/2026-11-27/cifar10-v4-joint-swa/joint_swa.py [LR [EPOCHS [WORK]]]

Starts from the shipped bundle's float graphs as torch code (device.onnx: extractor, local predictor;
remote.onnx; BatchNorm folded, so there are no statistics to recompute after averaging), the remote
channels quantized to the bundle's (frozen) centroids by the joint stage's soft-to-hard quantizer and
nested channel dropout as in the joint stage, alpha fixed at the bundle's. Loss as the joint stage's
without its XAI terms: 0.8 x [(1 - w) CE + w KD (to reference.onnx, T = 4) on the merged logits plus
0.5 x CE of the local and the remote logits alone] + 0.5 x the rate hinge above 1.2 bits per symbol
(version 4's settings). The symbols' order-0 entropy is reported to show what moved in bytes (a first
run without the rate term: history-no-rate-term.json, +50 B in five epochs). Constant AdamW rate after a 200-step
warm-up, shift/flip augmentation, the weights at the end of epochs 2..EPOCHS averaged; every epoch
scored on the full 10k test split (float device part, quantized remote channels, all of them).
Resumable per epoch. Run from the repository root. (The run of 2026-11-27 kept the same running mean
in a loop of its own; torch's AveragedModel, which the trainer uses, computes it identically.)
"""
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from agilenn.datasets import load_for_model
from agilenn.models import load_bundle
from agilenn.training import data as D
from agilenn.training.nets import SoftHardQuantizer, nested_dropout_mask
from agilenn.training.trainer import soft_rate_bits
from agilenn.training.onnx_torch import OnnxModule

LR = float(sys.argv[1]) if len(sys.argv) > 1 else 2e-4
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
WORK = Path(sys.argv[3] if len(sys.argv) > 3 else f"runs/joint-swa-lr{LR:g}")
BATCH, WARMUP_STEPS, DISTILL_W, TEMP, AUX, P_FULL = 256, 200, 0.5, 4.0, 0.5, 0.5
LAM, RATE_WEIGHT, RATE_TARGET_BITS, MIN_GAP = 0.8, 0.5, 1.2, 0.1  # version 4's joint-stage settings
WORK.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(2)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
log = logging.getLogger("joint-swa")

bundle = load_bundle("models/repository/agilenn-cifar10/4")
alpha = float(bundle.manifest["alpha"])
centroids = torch.from_numpy(bundle.codec().centroids)
midpoints = (centroids[:-1] + centroids[1:]) / 2
train, test = (load_for_model(bundle.manifest["dataset"], s, bundle.input_shape) for s in ("train", "test"))
x_train = torch.from_numpy(bundle.preprocess(train.images))
y_train = torch.from_numpy(np.asarray(train.labels, np.int64))
x_test = torch.from_numpy(bundle.preprocess(test.images))
y_test = torch.from_numpy(np.asarray(test.labels, np.int64))
so = ort.SessionOptions()
so.intra_op_num_threads = 2
teacher = ort.InferenceSession(str(bundle.onnx_path("reference")), so, providers=["CPUExecutionProvider"])


class Joint(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.device = OnnxModule(bundle.onnx_path("device"), output=("local_logits", "remote_features"), trainable=True)
        self.remote = OnnxModule(bundle.onnx_path("remote"), trainable=True)
        self.quantizer = SoftHardQuantizer(len(centroids), min_gap=MIN_GAP)
        self.quantizer.set_centroids(centroids)
        self.quantizer.deltas.requires_grad_(False)  # the bundle's levels stay

    def forward(self, x, mask=None):
        local, f = self.device(x)
        idx = torch.bucketize(f.detach(), midpoints)  # nearest centroid, ties to the lower (codec.quantize)
        q, rate_p = self.quantizer(f)
        remote = self.remote(q if mask is None else q * mask)
        return local, remote, alpha * local + (1 - alpha) * remote, idx, rate_p


net = Joint()


@torch.no_grad()
def score(m):
    out = [m(x_test[i:i + 1000]) for i in range(0, len(y_test), 1000)]
    local, remote, merged, idx = (torch.cat(t) for t in list(zip(*out))[:4])
    acc = {k: float((v.argmax(1) == y_test).float().mean()) for k, v in (("combined", merged), ("local", local),
                                                                         ("remote", remote))}
    # empirical entropy of the symbols, per channel, summed: bits per image before any context model
    hist = torch.stack([torch.bincount(idx[:, c].flatten(), minlength=len(centroids)) for c in range(idx.shape[1])])
    p = hist.float() / hist.sum(1, keepdim=True)
    bits = float(-(p * torch.log2(p.clamp_min(1e-12))).sum(1).sum()) * idx.shape[2] * idx.shape[3]
    return {**acc, "order0_bytes": bits / 8}


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
    history.append({"epoch": 0, **score(net)})
    log.info("start: %s", history[-1])
steps = len(y_train) // BATCH
R = int(bundle.manifest["features"]["channels"]) - int(bundle.manifest["features"]["k"])
for epoch in range(start, EPOCHS):
    gen = torch.Generator().manual_seed(2000 + epoch)
    torch.manual_seed(2000 + epoch)
    order = torch.randperm(len(y_train), generator=gen)
    t0, total = time.time(), 0.0
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = LR * min(1.0, (epoch * steps + i + 1) / WARMUP_STEPS)
        idx = order[i * BATCH:(i + 1) * BATCH]
        xb, yb = D.augment(x_train[idx], gen=gen), y_train[idx]
        t = torch.from_numpy(teacher.run(["logits"], {"image": xb.numpy()})[0])
        local, remote, merged, _, rate_p = net(xb, nested_dropout_mask(len(yb), R, P_FULL))
        kd = F.kl_div(F.log_softmax(merged / TEMP, 1), F.log_softmax(t / TEMP, 1), reduction="batchmean",
                      log_target=True) * TEMP ** 2
        prediction = ((1 - DISTILL_W) * F.cross_entropy(merged, yb) + DISTILL_W * kd
                      + AUX * (F.cross_entropy(local, yb) + F.cross_entropy(remote, yb)))
        loss = LAM * prediction + RATE_WEIGHT * F.relu(soft_rate_bits(rate_p) - RATE_TARGET_BITS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    if epoch >= 1:
        swa.update_parameters(net)
    history.append({"epoch": epoch + 1, "loss": total / steps, "running": score(net),
                    "average": score(swa) if swa.n_averaged else None, "n_avg": int(swa.n_averaged),
                    "s": time.time() - t0})
    log.info("%s", history[-1])
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "history": history,
                "swa": swa.state_dict()}, ckpt)
    (WORK / "history.json").write_text(json.dumps(history, indent=1))
