"""Small pieces: nested-dropout masks, augmentation, random erasing, distillation loss, quantizer."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from agilenn.training.data import augment, random_erase  # noqa: E402
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_on_the_gpu_are_the_cpus_numbers():
    """Training batches are cut and augmented on the GPU when the data fits there (trainer.Run): the
    random draws stay on the CPU generator, so a GPU run sees exactly the CPU run's pixels."""
    from agilenn.training.data import batches_match_cpu
    assert batches_match_cpu("cuda")


def test_the_batch_comparison_sees_a_difference(monkeypatch):
    """batches_match_cpu on the CPU itself is true; with an augmentation that depends on where it runs
    (here: on a second call) it must say false, or the GPU check above could not fail."""
    from agilenn.training import data as D
    assert D.batches_match_cpu("cpu")
    calls = {"n": 0}
    real = D.random_erase

    def drifting(x, p, gen=None):
        calls["n"] += 1
        out = real(x, p, gen)
        return out + 1e-3 if calls["n"] > 3 else out  # the second epoch's batches differ
    monkeypatch.setattr(D, "random_erase", drifting)
    assert not D.batches_match_cpu("cpu")


def test_random_erase_blanks_one_rectangle_in_the_chosen_share():
    x = torch.ones(2000, 1, 28, 28)
    y = random_erase(x, 0.5, gen=torch.Generator().manual_seed(0))
    erased = (y == 0)[:, 0]
    hit = erased.flatten(1).any(1)
    assert 0.45 < hit.float().mean() < 0.55
    area = erased.flatten(1).float().mean(1)[hit]
    assert area.min() >= 1 / 784 and area.max() <= 0.40  # 2-33 % of the image, up to rounding
    for m in erased[hit][:50]:  # one axis-aligned rectangle: its bounding box is all erased
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert (y[~hit] == 1).all()
    # the same generator state erases the same pixels (resumed and sharded runs agree)
    again = random_erase(x, 0.5, gen=torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    assert random_erase(x, 0.0) is x


def test_distill_loss_is_zero_at_the_teacher_and_grows_away_from_it():
    from agilenn.training.trainer import distill_loss
    t = torch.randn(64, 10)
    assert distill_loss(t, t, 4.0).abs() < 1e-5
    near, far = distill_loss(t + 0.1 * torch.randn(64, 10), t, 4.0), distill_loss(torch.randn(64, 10), t, 4.0)
    assert 0 < near < far
    s = torch.zeros(64, 10, requires_grad=True)
    distill_loss(s, t, 4.0).backward()
    # the T^2 factor: the gradient is (softmax(s/T) - softmax(t/T)) * T / batch, not shrunk by 1/T
    expect = (torch.softmax(s.detach() / 4, 1) - torch.softmax(t / 4, 1)) * 4 / 64
    assert torch.allclose(s.grad, expect, atol=1e-6)


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


@pytest.mark.parametrize("flag", ["--rho", "--lam", "--nested-p-full", "--ref-nested-p-full", "--ref-erase-p",
                                  "--distill-weight", "--ref-label-smoothing"])
def test_probability_and_convex_weight_flags_refuse_values_outside_the_unit_interval(flag, capsys):
    """These flags are shares or convex weights: 1.5 or -0.1 used to train silently as 1 or 0 (or as a
    negative CE weight for --lam); now argparse names the flag and the value."""
    from agilenn.training.cli import build_parser

    parser = build_parser()
    assert getattr(parser.parse_args([flag, "1"]), flag[2:].replace("-", "_")) == 1.0
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit):
            parser.parse_args([flag, bad])
        assert flag in capsys.readouterr().err


def test_ablation_lambda_is_checked_like_the_trainers(tmp_path, capsys):
    from agilenn.training.ablation import main

    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--lam", "2"])
    assert "--lam" in capsys.readouterr().err
