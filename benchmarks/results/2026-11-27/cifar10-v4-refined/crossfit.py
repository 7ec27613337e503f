"""How much the merge calibration on (memorised) training images costs: 2-fold cross-fitting on the test split."""
import numpy as np, json
from agilenn.models.bundle import load_bundle
from agilenn.training.merge_calibration import device_outputs, remote_logits, fit_alpha
from agilenn.device_agent.device_model import single_thread_session
b = load_bundle('/work/main/models/repository/agilenn-cifar10/4')
d = np.load('data.npz'); x, y = d['xte'], d['yte']
local, idx = device_outputs(b, x)
R = idx.shape[1]
sess = single_thread_session(b.onnx_path('remote'))
rng = np.random.default_rng(0); perm = rng.permutation(len(y)); halves = [perm[:5000], perm[5000:]]
train_alpha = b.manifest['merge']['alpha_by_channels']
rows = []
for m in [1, 2, 4, 8, 12, 16, 20, 24]:
    rl = remote_logits(b, sess, idx, m)
    acc = lambda a, s: float(((a * local[s] + (1 - a) * rl[s]).argmax(1) == y[s]).mean())
    cross = np.mean([acc(fit_alpha(local[h], rl[h], y[h]), o) for h, o in (halves, halves[::-1])])
    alls = np.arange(len(y))
    rows.append((m, train_alpha[m], acc(train_alpha[m], alls), b.alpha, acc(b.alpha, alls), cross))
    print(rows[-1], flush=True)
