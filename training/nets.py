"""The networks: reference NN (= stem + body), feature extractor, local predictor, remote NN,
soft-to-hard quantizer, and the AgileNN wrapper that merges local and remote logits.

Shapes for Fashion-MNIST with the defaults: image 1x28x28 -> features Cx7x7 (stride 4).
The stem is deliberately MCU-sized (~55K MACs at C=24) because it *is* the device's feature
extractor; all the heavy lifting happens in the body, which becomes the evaluator and the
initialisation of the remote NN.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ArchConfig:
    in_channels: int = 1
    num_classes: int = 10
    channels: int = 24        # C: extractor output channels
    k: int = 5                # first k channels stay on the device
    stem_width: int = 16      # width of the first (strided) conv
    stem_expand: int = 0      # >0: a 1x1 conv to this width after it, at the same resolution (0: none)
    stride: int = 4           # total feature stride: 2 (14x14 on FMNIST) or 4 (7x7)
    body_width: int = 64      # width of the body (evaluator / remote NN)
    body_blocks: int = 2      # residual blocks at feature resolution (one strided block follows)
    local_width: int = 32     # width of the local predictor's pointwise conv
    centroids: int = 4        # L: quantizer levels
    centroid_min_gap: float = 0.0  # smallest allowed distance between neighbouring centroids
    input_hw: tuple = (28, 28)

    @property
    def feature_hw(self) -> tuple[int, int]:
        h, w = (self.input_hw[0] + 1) // 2, (self.input_hw[1] + 1) // 2
        return ((h + 1) // 2, (w + 1) // 2) if self.stride == 4 else (h, w)

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Stem(nn.Module):
    """Feature extractor: strided 3x3 conv, [1x1 expansion,] depthwise(-strided) 3x3, pointwise to C.

    The final ReLU6 bounds features to [0, 6] and makes many of them exactly zero, which is
    what lets a 4-level quantizer + ANS code them in ~1-2 bits each.

    The optional expansion (``stem_expand``) gives the stem a second non-linear layer before the
    last downsampling, where a colour image's low-level cues live: on CIFAR-10 the reference NN
    memorised its training set through the single-layer stem's 8x8 map (docs/training.md). It costs
    H*W*stem_width*stem_expand MACs at the first conv's resolution, so it suits a narrow first conv.
    """

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        w = cfg.stem_width
        e = cfg.stem_expand or w
        self.conv1 = conv_bn(cfg.in_channels, w, 3, stride=2)
        # Identity when off: no parameters, so the state_dict (and every older checkpoint) keeps its keys
        self.expand = conv_bn(w, e, 1) if cfg.stem_expand else nn.Identity()
        self.dw = conv_bn(e, e, 3, stride=2 if cfg.stride == 4 else 1, groups=e)
        self.pw = conv_bn(e, cfg.channels, 1)

    def forward(self, x):
        return self.pw(self.dw(self.expand(self.conv1(x))))

    def permute_outputs(self, perm: torch.Tensor) -> None:
        """Reorder output channels in place (Algorithm 1's channel preselection)."""
        conv, bn = self.pw[0], self.pw[1]
        conv.weight.data = conv.weight.data[perm].clone()
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(bn, name)
            t.data = t.data[perm].clone()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.c1 = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
        self.c2 = conv_bn(cout, cout, 3, 1, act=None)
        self.skip = None if (cin == cout and stride == 1) else conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x):
        return F.relu(self.c2(self.c1(x)) + (x if self.skip is None else self.skip(x)))


class Body(nn.Module):
    """Small ResNet on the C-channel feature map: the evaluator, and the remote NN's init.

    Blocks stay at the feature resolution and only the last one downsamples (to 1.5x width):
    parameters are what make the bundle big (remote.onnx and reference.onnx each carry a body),
    and 3x3 convs at 7x7 buy more accuracy per parameter than wide ones at 4x4.
    """

    def __init__(self, in_channels: int, cfg: ArchConfig):
        super().__init__()
        w = cfg.body_width
        w2 = (3 * w) // 2
        self.entry = conv_bn(in_channels, w, 3, act=nn.ReLU)
        self.blocks = nn.Sequential(*[BasicBlock(w, w) for _ in range(cfg.body_blocks)],
                                    BasicBlock(w, w2, stride=2))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(w2, cfg.num_classes)

    def forward(self, f):
        x = self.blocks(self.entry(f))
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))

    def permute_inputs(self, perm: torch.Tensor) -> None:
        conv = self.entry[0]
        conv.weight.data = conv.weight.data[:, perm].clone()

    def sliced_copy(self, channels: slice, cfg: ArchConfig) -> "Body":
        """A copy that only reads input channels ``channels`` (how the remote NN is initialised)."""
        sub = Body(len(range(cfg.channels)[channels]), cfg)
        state = {k: v.clone() for k, v in self.state_dict().items()}
        state["entry.0.weight"] = state["entry.0.weight"][:, channels].clone()
        sub.load_state_dict(state)
        return sub


class RemoteEnsemble(nn.Module):
    """Several remote NNs on the same remote channels; the server's remote NN is their mean logit
    (training/remote_heads.py). One module, so remote.onnx stays one graph with one input and output."""

    def __init__(self, bodies: list[nn.Module]):
        super().__init__()
        self.bodies = nn.ModuleList(bodies)

    def forward(self, f):
        return torch.stack([b(f) for b in self.bodies]).mean(0)


class ReferenceNN(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.stem = Stem(cfg)
        self.body = Body(cfg.channels, cfg)

    def forward(self, x, feature_mask: torch.Tensor | None = None):
        f = self.stem(x)
        return self.body(f if feature_mask is None else f * feature_mask)


class LocalPredictor(nn.Module):
    """Depthwise-separable conv head on the k local channels: must be useful alone (offline mode),
    yet cheap (~20K MACs). Keeps spatial layout via a strided depthwise conv instead of GAP-only.
    """

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        k, w = cfg.k, cfg.local_width
        self.dw1 = conv_bn(k, k, 3, groups=k)
        self.pw1 = conv_bn(k, w, 1)
        self.dw2 = conv_bn(w, w, 3, stride=2, groups=w)
        h, wd = cfg.feature_hw
        # flatten, not global pooling: where a garment's parts are matters for a head this small
        self.fc = nn.Linear(w * ((h + 1) // 2) * ((wd + 1) // 2), cfg.num_classes)

    def forward(self, f_local):
        x = self.dw2(self.pw1(self.dw1(f_local)))
        return self.fc(torch.flatten(x, 1))


class SoftHardQuantizer(nn.Module):
    """Soft-to-hard scalar quantizer with L learned centroids (Agustsson et al. 2017).

    Forward value is the hard nearest-centroid reconstruction (what the codec sends); gradients
    flow through the soft assignment softmax(-sigma * d^2) (straight-through estimator).

    Centroids are c_0 = 0 (ReLU6 features are exactly 0 most of the time, and 0 must stay exact)
    and c_l = c_{l-1} + softplus(delta_l): ascending by construction, so levels can neither merge
    nor be parked outside the data range (tried with free centroids: three of four drifted below
    0, leaving a 2-level quantizer).
    """

    def __init__(self, levels: int, init_max: float = 3.0, sigma: float = 4.0, min_gap: float = 0.0):
        super().__init__()
        self.min_gap = min_gap  # without it the CE pulls c_1 onto 0 (the many exact zeros' soft value)
        self.deltas = nn.Parameter(torch.zeros(levels - 1))
        self.set_centroids(torch.linspace(0.0, init_max, levels))
        self.sigma = sigma

    @property
    def centroids(self) -> torch.Tensor:
        zero = torch.zeros(1, device=self.deltas.device, dtype=self.deltas.dtype)
        return torch.cat([zero, torch.cumsum(self.min_gap + F.softplus(self.deltas), 0)])

    def set_centroids(self, values: torch.Tensor) -> None:
        """Initialise from ascending values (the first is taken as 0)."""
        gaps = (torch.diff(values.detach().float()) - self.min_gap).clamp_min(1e-3)
        self.deltas.data = (gaps + torch.log(-torch.expm1(-gaps))).to(self.deltas.device)  # softplus^-1

    def sorted_centroids(self) -> torch.Tensor:
        return self.centroids.detach()

    def assignments(self, f):
        c = self.centroids
        d = (f.unsqueeze(-1) - c) ** 2  # [..., L]
        return torch.softmax(-self.sigma * d, dim=-1), d.argmin(dim=-1), c

    def forward(self, f):
        """Returns (quantized f, soft assignments for the rate term). The rate's assignments see the
        centroids detached: the rate should shape the features, not move the levels."""
        soft_p, idx, c = self.assignments(f)
        soft = (soft_p * c).sum(-1)
        hard = c[idx]
        rate_p = torch.softmax(-self.sigma * (f.unsqueeze(-1) - c.detach()) ** 2, dim=-1)
        return soft + (hard - soft).detach(), rate_p


def alpha_of(alpha_logits: torch.Tensor) -> torch.Tensor:
    """The merge weight of the local logits, kept as two logits so it stays inside (0, 1)."""
    return torch.softmax(alpha_logits, 0)[0]


class AgileNN(nn.Module):
    """Device part (extractor + local predictor) and remote part (quantizer + remote NN), merged
    with alpha = softmax(w)[0]: logits = alpha * local + (1 - alpha) * remote (same at inference).
    """

    def __init__(self, cfg: ArchConfig, extractor: Stem, remote: Body):
        super().__init__()
        self.cfg = cfg
        self.extractor = extractor
        self.local = LocalPredictor(cfg)
        self.quantizer = SoftHardQuantizer(cfg.centroids, min_gap=cfg.centroid_min_gap)
        self.remote = remote
        self.alpha_logits = nn.Parameter(torch.zeros(2))

    @property
    def alpha(self) -> torch.Tensor:
        return alpha_of(self.alpha_logits)

    def device_side(self, x):
        """What the device computes: features, local logits, and the quantized remote channels it sends
        (with the soft assignments the rate term needs)."""
        f = self.extractor(x)
        k = self.cfg.k
        q, soft_p = self.quantizer(f[:, k:])
        return f, self.local(f[:, :k]), q, soft_p

    def forward(self, x, remote_mask: torch.Tensor | None = None):
        """remote_mask: [N or 1, C-k, 1, 1] of 0/1; zeroed channels are ones the sender truncated
        (the receiver zero-fills them), see :func:`prefix_mask` / :func:`nested_dropout_mask`."""
        f, local_logits, q, soft_p = self.device_side(x)
        if remote_mask is not None:
            q = q * remote_mask
        remote_logits = self.remote(q)
        a = self.alpha
        merged = a * local_logits + (1 - a) * remote_logits
        return {"features": f, "local": local_logits, "remote": remote_logits, "merged": merged,
                "soft_p": soft_p, "q": q}


def nested_dropout_mask(batch: int, channels: int, p_full: float, device=None) -> torch.Tensor:
    """Per-sample prefix masks: with prob p_full keep all channels, else keep a uniform 1..channels
    prefix. Training on random prefixes teaches the remote NN to degrade gracefully when the
    sender drops trailing (least important) channels to fit a byte budget.
    """
    keep = torch.randint(1, channels + 1, (batch,), device=device)
    keep = torch.where(torch.rand(batch, device=device) < p_full, torch.full_like(keep, channels), keep)
    ar = torch.arange(channels, device=device)
    return (ar[None, :] < keep[:, None]).float()[:, :, None, None]


def prefix_mask(keep: int, channels: int, device=None) -> torch.Tensor:
    """[1, channels, 1, 1] mask keeping the first ``keep`` remote channels."""
    return (torch.arange(channels, device=device) < keep).float().view(1, channels, 1, 1)
