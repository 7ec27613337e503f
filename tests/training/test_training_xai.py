"""The XAI losses and importance against hand-computed values on small tensors."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from agilenn.training.preselect import channel_order  # noqa: E402
from agilenn.training.xai import (  # noqa: E402
    ZeroBaselineGrad, channel_importance, disorder_loss, importance, skewness, skewness_loss,
)

# two samples, C=4 channels, k=2 local
CI = torch.tensor([[4.0, 3.0, 2.0, 1.0],   # s = 7/10; remote max 2 < local min 3 -> no disorder
                   [1.0, 2.0, 3.0, 4.0]])  # s = 3/10; disorder (4 - 1)/10


def test_skewness_by_hand():
    assert skewness(CI, 2).tolist() == pytest.approx([0.7, 0.3])


def test_skewness_loss_by_hand():
    # mean(max(0, 0.8 - s)) = (0.1 + 0.5) / 2
    assert skewness_loss(CI, 2, 0.8).item() == pytest.approx(0.3)
    assert skewness_loss(CI, 2, 0.2).item() == pytest.approx(0.0)  # hinge stops at rho


def test_disorder_loss_by_hand():
    # mean(max(0, (max remote - min local) / total)) = (max(0, -1/10) + 3/10) / 2
    assert disorder_loss(CI, 2).item() == pytest.approx(0.15)


def test_channel_importance_sums_space():
    I = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    np.testing.assert_allclose(channel_importance(I).numpy(), I.numpy().sum((2, 3)))


class LinearEval(torch.nn.Module):
    """logits = W vec(f) + b: its CE gradient has a closed form, g(z) = W^T (softmax(Wz + b) - onehot)."""

    def __init__(self, W, b):
        super().__init__()
        self.W, self.b = torch.tensor(W), torch.tensor(b)

    def forward(self, f):
        return f.flatten(1) @ self.W.T + self.b


def _ref_grad(W, b, z, y):
    logits = W @ z + b
    p = np.exp(logits - logits.max())
    p /= p.sum()
    p[y] -= 1.0
    return W.T @ p


@pytest.fixture
def linear_case():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 2 * 2 * 2)).astype(np.float32)  # 3 classes, f is [2, 2, 2]
    b = rng.normal(size=3).astype(np.float32)
    f = rng.uniform(0, 2, size=(2, 2, 2, 2)).astype(np.float32)
    y = np.array([0, 2])
    return W, b, f, y


def test_ig_trapezoid_matches_hand_formula(linear_case):
    W, b, f, y = linear_case
    ev = LinearEval(W, b)
    I, _ = importance(ev, torch.tensor(f), torch.tensor(y), "ig")
    for n in range(2):
        z = f[n].reshape(-1)
        want = np.abs(0.5 * (_ref_grad(W, b, np.zeros_like(z), y[n]) + _ref_grad(W, b, z, y[n])) * z)
        np.testing.assert_allclose(I[n].reshape(-1).numpy(), want, rtol=1e-5, atol=1e-6)
    # the cached per-class g(0) table gives the same answer
    zg = ZeroBaselineGrad(ev, (2, 2, 2), 3)
    I2, _ = importance(ev, torch.tensor(f), torch.tensor(y), "ig", zero_grad=zg)
    np.testing.assert_allclose(I2.numpy(), I.numpy(), rtol=1e-6)


def test_ig_riemann_and_saliency(linear_case):
    W, b, f, y = linear_case
    ev = LinearEval(W, b)
    m = 4
    I, _ = importance(ev, torch.tensor(f), torch.tensor(y), "ig", ig_steps=m)
    S, _ = importance(ev, torch.tensor(f), torch.tensor(y), "saliency")
    for n in range(2):
        z = f[n].reshape(-1)
        avg = sum(_ref_grad(W, b, z * i / m, y[n]) for i in range(1, m + 1)) / m
        np.testing.assert_allclose(I[n].reshape(-1).numpy(), np.abs(z * avg), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(S[n].reshape(-1).numpy(), np.abs(_ref_grad(W, b, z, y[n])), rtol=1e-5, atol=1e-6)


def test_xai_losses_are_differentiable_through_importance():
    """Double backprop: the skewness loss has a gradient w.r.t. the features through g(f)."""
    torch.manual_seed(0)
    ev = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                             torch.nn.Linear(8 * 9, 3))
    f = torch.rand(2, 4, 3, 3, requires_grad=True)
    I, _ = importance(ev, f, torch.tensor([0, 1]), "ig", create_graph=True)
    loss = skewness_loss(channel_importance(I), 1, 0.99) + disorder_loss(channel_importance(I), 1)
    (g,) = torch.autograd.grad(loss, f)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_channel_orders():
    ci = torch.tensor([[1.0, 5.0, 3.0, 0.0], [0.0, 4.0, 6.0, 1.0], [2.0, 9.0, 0.5, 0.1]])
    assert channel_order(ci, 2, "none").tolist() == [0, 1, 2, 3]
    assert channel_order(ci, 2, "global_importance").tolist() == [1, 2, 0, 3]
    # top-2 appearances: ch1 x3, ch2 x2, ch0 x1, ch3 x0
    assert channel_order(ci, 2, "topk_appearance").tolist() == [1, 2, 0, 3]
    with pytest.raises(ValueError):
        channel_order(ci, 2, "bogus")
