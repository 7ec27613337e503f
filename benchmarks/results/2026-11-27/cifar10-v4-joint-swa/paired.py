"""Paired comparison of the averaged joint model (joint_swa.py's checkpoint) with the shipped version 4
(McNemar), what paired.json holds:

    python benchmarks/results/2026-11-27/cifar10-v4-joint-swa/paired.py [CKPT]
"""
import copy, json, sys
import numpy as np, torch
from agilenn.models import load_bundle
from agilenn.datasets import load_for_model
from agilenn.training.onnx_torch import OnnxModule
torch.set_num_threads(2)
b = load_bundle("models/repository/agilenn-cifar10/4"); a = float(b.manifest["alpha"])
c = torch.from_numpy(b.codec().centroids); mid = (c[:-1] + c[1:]) / 2
te = load_for_model(b.manifest["dataset"], "test", b.input_shape)
x = torch.from_numpy(b.preprocess(te.images)); y = torch.from_numpy(np.asarray(te.labels))
dev = OnnxModule(b.onnx_path("device"), output=("local_logits", "remote_features"), trainable=True)
rem = OnnxModule(b.onnx_path("remote"), trainable=True)
def pred(d, r):
    out = []
    with torch.no_grad():
        for i in range(0, len(y), 1000):
            l, f = d(x[i:i+1000]); out.append((a * l + (1 - a) * r(c[torch.bucketize(f, mid)])).argmax(1))
    return torch.cat(out) == y
before = pred(dev, rem)
st = torch.load(sys.argv[1] if len(sys.argv) > 1 else "runs/joint-swa-lr0.0002/ckpt.pt", weights_only=False)["swa"]
d2, r2 = copy.deepcopy(dev), copy.deepcopy(rem)
d2.load_state_dict({k[len("module.device."):]: v for k, v in st.items() if k.startswith("module.device.")})
r2.load_state_dict({k[len("module.remote."):]: v for k, v in st.items() if k.startswith("module.remote.")})
after = pred(d2, r2)
ob, oa = int((before & ~after).sum()), int((~before & after).sum())
print(json.dumps({"shipped_combined": float(before.float().mean()), "averaged_combined": float(after.float().mean()),
  "right_only_before": ob, "right_only_after": oa, "mcnemar_z": (oa - ob) / (oa + ob) ** 0.5}))
