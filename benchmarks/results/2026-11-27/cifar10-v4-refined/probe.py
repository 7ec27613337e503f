"""Probe: refine agilenn-cifar10/4's remote NN on its frozen device part (CPU), measure combined."""
import sys, time, math, json, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
import onnxruntime as ort
from pathlib import Path
from agilenn.models.bundle import load_bundle
from agilenn.datasets import load_for_model
from agilenn.training.onnx_torch import OnnxModule
from agilenn.training.data import augment
from agilenn.training.nets import nested_dropout_mask
from agilenn.codec.quantize import quantize, dequantize
torch.set_num_threads(2)
B = Path('/work/main/models/repository/agilenn-cifar10/4')
EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
LR = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-3
KDW = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
OUT = Path(sys.argv[4] if len(sys.argv) > 4 else 'run1'); OUT.mkdir(exist_ok=True)
bundle = load_bundle(B)
cache = Path('/work/runs/c10r/data.npz')
if not cache.exists():
    tr = load_for_model(bundle.manifest['dataset'], 'train', bundle.input_shape)
    te = load_for_model(bundle.manifest['dataset'], 'test', bundle.input_shape)
    np.savez(cache, xtr=tr.images, ytr=tr.labels, xte=te.images, yte=te.labels)
d = np.load(cache)
xtr, ytr, xte, yte = d['xtr'], d['ytr'], d['xte'], d['yte']
print('data', xtr.shape, xte.shape, flush=True)
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
dev_s = ort.InferenceSession(str(B / 'device.onnx'), so, providers=['CPUExecutionProvider'])
ref_s = ort.InferenceSession(str(B / 'reference.onnx'), so, providers=['CPUExecutionProvider'])
cent = np.asarray(bundle.manifest['quantizer']['centroids'], np.float32)
alpha0 = bundle.manifest['alpha']
def device(x):  # normalized float NCHW numpy -> local logits, dequantized remote features
    ll, rf = dev_s.run(['local_logits', 'remote_features'], {'image': x})
    return torch.from_numpy(ll), torch.from_numpy(dequantize(quantize(rf, cent), cent))
print([i.name for i in dev_s.get_inputs()], [i.name for i in ref_s.get_inputs()], flush=True)
remote = OnnxModule(B / 'remote.onnx')
for name in list(remote._buffers):
    t = remote._buffers[name]
    if t.is_floating_point() and t.ndim >= 1:
        del remote._buffers[name]; remote.register_parameter(name, nn.Parameter(t.clone()))
a_logit = nn.Parameter(torch.tensor(math.log(alpha0 / (1 - alpha0))))
params = list(remote.parameters()) + [a_logit]
opt = torch.optim.AdamW([{'params': list(remote.parameters()), 'weight_decay': 1e-4}, {'params': [a_logit], 'weight_decay': 0}], lr=LR)
xte_n = bundle.preprocess(xte)
te_local, te_q = [], []
for i in range(0, len(xte_n), 1000):
    l, q = device(xte_n[i:i+1000]); te_local.append(l); te_q.append(q)
te_local, te_q = torch.cat(te_local), torch.cat(te_q)
yte_t = torch.from_numpy(yte)
@torch.no_grad()
def evaluate():
    r = torch.cat([remote(te_q[i:i+1000].contiguous(memory_format=torch.channels_last)) for i in range(0, len(te_q), 1000)])
    out = {'remote': (r.argmax(1) == yte_t).float().mean().item()}
    for a in [torch.sigmoid(a_logit).item(), alpha0, 0.25, 0.3, 0.35, 0.4]:
        out[f'merged@{a:.3f}'] = ((a * te_local + (1 - a) * r).argmax(1) == yte_t).float().mean().item()
    return out
print('before', evaluate(), flush=True)
xtr_n = torch.from_numpy(bundle.preprocess(xtr)); ytr_t = torch.from_numpy(ytr)
bs = 256; steps = math.ceil(len(xtr_n) / bs); total = EPOCHS * steps
gen = torch.Generator().manual_seed(1)
T = 4.0
R = te_q.shape[1]
for ep in range(EPOCHS):
    t0 = time.time(); tot = 0; n = 0
    order = torch.randperm(len(xtr_n), generator=gen)
    for i in range(steps):
        step = ep * steps + i
        for g in opt.param_groups:
            g['lr'] = LR * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / total))
        idx = order[i*bs:(i+1)*bs]
        xb = augment(xtr_n[idx], gen=gen); yb = ytr_t[idx]
        xnp = xb.numpy()
        local, q = device(xnp)
        q = (q * nested_dropout_mask(len(yb), R, 0.5)).contiguous(memory_format=torch.channels_last)
        r = remote(q); a = torch.sigmoid(a_logit)
        merged = a * local + (1 - a) * r
        loss = F.cross_entropy(merged, yb) + 0.5 * F.cross_entropy(r, yb)
        if KDW > 0:
            t = torch.from_numpy(ref_s.run(None, {ref_s.get_inputs()[0].name: xnp})[0])
            pt = F.softmax(t / T, 1)
            kd = lambda z: F.kl_div(F.log_softmax(z / T, 1), pt, reduction='batchmean') * T * T
            loss = (1 - KDW) * loss + KDW * (kd(merged) + 0.5 * kd(r))
        opt.zero_grad(); loss.backward(); opt.step()
        tot += loss.item() * len(yb); n += len(yb)
    ev = evaluate()
    print(f'epoch {ep+1}/{EPOCHS} loss {tot/n:.4f} alpha {torch.sigmoid(a_logit).item():.3f} {ev} ({time.time()-t0:.0f}s)', flush=True)
    torch.save({'remote': remote.state_dict(), 'a_logit': a_logit.detach(), 'epoch': ep + 1}, OUT / 'ckpt.pt')
