import numpy as np, torch
from agilenn.models.bundle import load_bundle
from agilenn.training.merge_calibration import device_outputs, remote_logits, fit_alpha
from agilenn.device_agent.device_model import single_thread_session
from agilenn.training.data import augment, random_erase
b = load_bundle('/work/main/models/repository/agilenn-cifar10/4')
d = np.load('data.npz')
rng = np.random.default_rng(0); sel = np.sort(rng.permutation(50000)[:10000])
xtr, ytr = d['xtr'][sel], d['ytr'][sel]
# augment in uint8 space: shift (replicate pad 4) + flip, as training's augment does on normalized tensors
g = torch.Generator().manual_seed(0)
xa = augment(torch.from_numpy(xtr).permute(0,3,1,2).float(), gen=g).permute(0,2,3,1).round().clamp(0,255).byte().numpy()
sess = single_thread_session(b.onnx_path('remote'))
lt, it = device_outputs(b, d['xte']); yte = d['yte']
for name, x in (('plain', xtr), ('shift+flip', xa)):
    local, idx = device_outputs(b, x)
    for m in (8, 16, 24):
        rl = remote_logits(b, sess, idx, m)
        a = fit_alpha(local, rl, ytr)
        rlt = remote_logits(b, sess, it, m)
        acc_tr = ((a*local+(1-a)*rl).argmax(1)==ytr).mean(); rem_tr=(rl.argmax(1)==ytr).mean()
        acc_te = ((a*lt+(1-a)*rlt).argmax(1)==yte).mean()
        print(name, m, 'alpha', a, 'train combined', acc_tr, 'train remote', rem_tr, 'test combined', acc_te, flush=True)
