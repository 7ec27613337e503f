"""Helpers for train_cifar10.sh on a rented GPU: size the stages to a wall-clock budget from a
probe, and pack the run directories so that they fit what the machine may send back.

    python deploy/gpu/gpu_runs.py plan SECONDS_LEFT PROBE_DIR N_PROBE N_FULL STARTUP_S [EXTRA_REF_EPOCHS]
    python deploy/gpu/gpu_runs.py collect OUT_DIR RUN_DIR...

plan prints shell assignments (REF_EPOCHS=..., JOINT_EPOCHS=..., ...). Epoch seconds come from the
probe's train.log lines (`... (12.3s)`), scaled from N_PROBE to N_FULL training images; the joint
stage's were measured with all four joint runs sharing the GPU, as they will in the real run.
EXTRA_REF_EPOCHS: epoch-times the reference spends after REF_EPOCHS (its weight averaging and the
BatchNorm pass after it: train_cifar10.sh's SWA_EXTRA), which come out of the reference's half.
"""
from __future__ import annotations

import io
import math
import re
import sys
import tarfile
from pathlib import Path

SPLIT_BYTES = 15 * 2**20   # the device tool returns files of at most 16 MiB ...
MAX_TOTAL = 56 * 2**20     # ... and at most 64 MiB in all (logs travel beside the parts)
JOINT_RUNS = ("main", "plain", "saliency", "ig8")


def epoch_seconds(log: Path, stage: str) -> float:
    found = re.findall(rf"{stage} epoch \d+/\d+ .*\(([\d.]+)s\)$", log.read_text(), re.MULTILINE)
    if not found:
        raise SystemExit(f"plan: {log} has no '{stage} epoch' line (did the probe run?)")
    return float(found[-1])


def plan(seconds_left: float, probe: Path, n_probe: int, n_full: int, startup_s: float,
         extra_ref_epochs: int = 0) -> dict:
    scale = n_full / n_probe
    t_ref = epoch_seconds(probe / "stages" / "train.log", "reference") * scale
    t_ext = epoch_seconds(probe / "stages" / "train.log", "extractor") * scale
    t_joint = {r: epoch_seconds(probe / r / "train.log", "joint") * scale for r in JOINT_RUNS}
    usable = seconds_left - 2 * startup_s - t_ext - 15  # two process starts, the extractor epoch, preselection
    # half for the reference (the accuracy every other number leans on), half for the four joint runs
    ref_epochs = max(8, min(150, math.floor(0.5 * usable / t_ref) - extra_ref_epochs))
    joint_budget = usable - (ref_epochs + extra_ref_epochs) * t_ref
    # main and plain get the same epochs (the ablation compares them); saliency and m-step IG as many as fit
    joint_epochs = max(2, min(60, math.floor(joint_budget / max(t_joint["main"], t_joint["plain"]))))
    out = {"REF_EPOCHS": ref_epochs, "JOINT_EPOCHS": joint_epochs,
           "SAL_EPOCHS": max(1, min(joint_epochs, math.floor(joint_budget / t_joint["saliency"]))),
           "IG8_EPOCHS": max(1, min(joint_epochs, math.floor(joint_budget / t_joint["ig8"])))}
    print(f"# plan: {seconds_left:.0f}s left; full-data epoch seconds: reference {t_ref:.1f}, extractor {t_ext:.1f}, "
          + ", ".join(f"joint {r} {t:.1f}" for r, t in t_joint.items()), file=sys.stderr)
    return out


def slim(path: Path) -> bytes:
    """An unfinished checkpoint without its optimizer state (resumable, with a fresh optimizer)."""
    import torch

    st = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("opt", "sched"):
        st.pop(key, None)
    buf = io.BytesIO()
    torch.save(st, buf)
    return buf.getvalue()


def collect(out: Path, runs: list[Path]) -> None:
    """The first run's files, and the others' minus their copies of its stage 1-3 checkpoints."""
    shared = ("reference.pt", "extractor.pt", "preselect.pt")

    def wanted(p: Path, first: bool) -> bool:
        return p.is_file() and p.suffix in (".pt", ".json", ".log") and (first or p.name not in shared)
    # (tar name, file): RUN/ckpt/joint.pt travels as <run folder name>/ckpt/joint.pt
    files = [(str(Path(r.name) / p.relative_to(r)), p) for i, r in enumerate(runs) if r.is_dir()
             for p in sorted(r.rglob("*")) if wanted(p, i == 0)]
    big = sum(p.stat().st_size for _, p in files) > MAX_TOTAL
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, p in files:
            data = slim(p) if (big and p.suffix == ".pt") else p.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(blob), SPLIT_BYTES):
        (out / f"runs.tar.part{i // SPLIT_BYTES:02d}").write_bytes(blob[i:i + SPLIT_BYTES])
    print(f"collect: {len(files)} files, {len(blob) / 2**20:.1f} MiB{' (optimizer state dropped)' if big else ''}"
          f" in {math.ceil(len(blob) / SPLIT_BYTES)} parts")


def main(argv: list[str]) -> int:
    if argv[:1] == ["plan"] and len(argv) in (6, 7):
        extra = int(argv[6]) if len(argv) == 7 else 0
        for key, v in plan(float(argv[1]), Path(argv[2]), int(argv[3]), int(argv[4]), float(argv[5]), extra).items():
            print(f"{key}={v}")
        return 0
    if argv[:1] == ["collect"] and len(argv) >= 3:
        collect(Path(argv[1]), [Path(a) for a in argv[2:]])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
