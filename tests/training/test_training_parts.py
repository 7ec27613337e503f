"""Small pieces: nested-dropout masks, augmentation, quantizer."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from agilenn.training.data import augment  # noqa: E402
from agilenn.training.nets import SoftHardQuantizer, nested_dropout_mask, prefix_mask  # noqa: E402


def test_nested_masks_are_prefixes():
    m = nested_dropout_mask(500, 6, 0.3)[:, :, 0, 0]
    kept = m.sum(1)
    assert ((m.cumsum(1) == torch.arange(1, 7).float()) | (m == 0)).all()  # ones then zeros
    assert kept.min() >= 1 and kept.max() == 6
    assert 0.3 < (kept == 6).float().mean() < 0.6  # p_full plus the uniform share of 6
    assert prefix_mask(2, 4)[0, :, 0, 0].tolist() == [1, 1, 0, 0]


def test_augment_keeps_shape_and_content():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    y = augment(x, pad=2, flip=False, gen=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    for n in range(2):  # a shifted crop: every output value comes from the same image
        assert set(y[n].unique().tolist()) <= set(x[n].unique().tolist())


def test_quantizer_forward_is_hard_backward_is_soft():
    q = SoftHardQuantizer(3)
    q.set_centroids(torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(q.centroids, torch.tensor([0.0, 1.0, 2.0]), atol=1e-5)
    f = torch.tensor([0.2, 0.9, 1.6, 5.0], requires_grad=True)
    out, soft_p = q(f)
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 2.0, 2.0]), atol=1e-5)
    out.sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert torch.allclose(soft_p.sum(-1), torch.ones(4))
