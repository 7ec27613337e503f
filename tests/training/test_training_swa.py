"""--ref-swa-epochs: stochastic weight averaging after the reference's one-cycle schedule. The reference
the later stages get is the average of the weights at the end of each averaging epoch, with BatchNorm
statistics measured again for it, and an interrupted run resumes the average where it stood."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from agilenn.training.nets import ArchConfig  # noqa: E402


def _config(tmp_path, **kw):
    from training_test_helpers import write_fashion_mnist

    from agilenn.training.trainer import TrainConfig

    data = write_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    kw = {"ref_swa_epochs": 2, **kw}
    return TrainConfig(data_dir=str(data), out=str(tmp_path / "run"), threads=1, batch_size=64, ref_epochs=1,
                       arch=ArchConfig(channels=10, k=2, body_width=16), **kw)


def _snapshots(monkeypatch):
    """Record the weights and the rate after every stage-1 epoch."""
    from agilenn.training import trainer

    shots, real = [], trainer._reference_epoch

    def recording(run, model, net, opt, after_step, epoch):
        acc = real(run, model, net, opt, after_step, epoch)
        shots.append(({k: v.detach().clone() for k, v in model.state_dict().items()}, opt.param_groups[0]["lr"]))
        return acc
    monkeypatch.setattr(trainer, "_reference_epoch", recording)
    return shots


def test_the_reference_is_the_average_of_the_averaging_epochs(tmp_path, monkeypatch):
    from agilenn.training.trainer import Run, train_reference

    shots = _snapshots(monkeypatch)
    run = Run(_config(tmp_path, ref_swa_lr=0.01))
    model = train_reference(run)
    assert len(shots) == 3  # one one-cycle epoch, two averaging epochs
    assert [lr for _, lr in shots[1:]] == [0.01, 0.01]  # a constant rate
    state = model.state_dict()
    for name, p in model.named_parameters():
        assert torch.allclose(p, (shots[1][0][name] + shots[2][0][name]) / 2, atol=1e-6), name
    # BatchNorm statistics measured again for the averaged weights: neither the last epoch's nor the
    # ones the average was created with
    bn = [k for k in state if k.endswith("running_mean")]
    assert bn
    for k in bn:
        assert not torch.equal(state[k], shots[2][0][k]) and not torch.equal(state[k], shots[0][0][k]), k
    ck = torch.load(run.ckpt("reference"), weights_only=False)
    assert ck["done"] and ck["epoch"] == 3 and ck["swa_epochs_averaged"] == 2
    assert ck["test_acc"] == pytest.approx(run.accuracy(model.eval()))
    assert "test_acc_before_averaging" in ck
    for k, v in ck["model"].items():
        assert torch.equal(v, state[k]), k


class MachineGone(Exception):
    pass


def test_an_interrupted_average_resumes_where_it_stood(tmp_path, monkeypatch):
    from agilenn.training import trainer
    from agilenn.training.trainer import Run, train_reference

    cfg = _config(tmp_path)
    real = trainer._reference_epoch

    def cut_in_the_second_averaging_epoch(run, model, net, opt, after_step, epoch):
        if epoch == 2:
            raise MachineGone
        return real(run, model, net, opt, after_step, epoch)
    monkeypatch.setattr(trainer, "_reference_epoch", cut_in_the_second_averaging_epoch)
    with pytest.raises(MachineGone):
        train_reference(Run(cfg))
    ck = torch.load(Run(cfg).ckpt("reference"), weights_only=False)
    assert not ck["done"] and ck["epoch"] == 2 and int(ck["swa"]["n_averaged"]) == 1
    assert ck["opt"]["param_groups"][0]["lr"] == pytest.approx(cfg.ref_lr / 10)  # the default rate

    monkeypatch.setattr(trainer, "_reference_epoch", real)  # the machine is back
    shots = _snapshots(monkeypatch)
    train_reference(Run(cfg, resume=True))
    assert len(shots) == 1 and shots[0][1] == pytest.approx(cfg.ref_lr / 10)  # only the missing epoch ran
    ck = torch.load(Run(cfg).ckpt("reference"), weights_only=False)
    assert ck["done"] and ck["swa_epochs_averaged"] == 2  # the epoch before the cut is in the average


def test_without_averaging_the_reference_is_the_last_epochs(tmp_path, monkeypatch):
    from agilenn.training.trainer import Run, train_reference

    shots = _snapshots(monkeypatch)
    run = Run(_config(tmp_path, ref_swa_epochs=0))
    model = train_reference(run)
    assert len(shots) == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, shots[0][0][k]), k
    ck = torch.load(run.ckpt("reference"), weights_only=False)
    assert ck["done"] and ck["epoch"] == 1 and "swa_epochs_averaged" not in ck


def test_the_cli_flags_reach_the_config():
    from agilenn.training.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--ref-swa-epochs", "20", "--ref-swa-lr", "0.02"]))
    assert (cfg.ref_swa_epochs, cfg.ref_swa_lr) == (20, 0.02)
    assert cfg.to_dict()["ref_swa_epochs"] == 20  # recorded in the bundle's training config
    for bad in (["--ref-swa-epochs", "-1"], ["--ref-swa-lr", "-0.1"], ["--ref-swa-lr", "nan"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
