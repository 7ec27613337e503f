"""What the XAI losses buy: retrain only the joint stage of a finished run under several losses,
from the very same stage 1-3 checkpoints, and tabulate faithful skewness, accuracy, bytes and time.

    python -m agilenn.training.ablation --run runs/cifar10 --out runs/cifar10-ablation

Variants (``--variants``, default ``plain,ig2,ig8,saliency``):
    plain     lambda = 1: the plain split, no XAI losses
    ig2       the XAI losses with the 2-point trapezoid IG (the official implementation's)
    igM       the XAI losses with M-step Riemann IG (M >= 3; ``--ig-steps M`` names the default one)
    saliency  the XAI losses with |gradient| attribution
Every variant gets its own run directory OUT/<variant> holding copies of the base run's
ckpt/{reference,extractor,preselect}.pt (so every joint stage starts from one extractor and one
channel order) and the base run's config with only lambda / attribution / joint epochs changed.
Re-running the same command skips finished variants and resumes a cut-off one (the trainer's own
per-epoch checkpoints). ``--reuse NAME=RUN`` takes RUN's finished joint checkpoint (with its own
stage 1-3 and config) instead of training NAME here, e.g. a long run behind a shipped bundle.

Each variant's bundle is exported and measured like agilenn-train's (report.md next to it);
skewness is re-measured from the bundle's evaluator.onnx with m-step IG whose completeness gap is
reported (training/attribution.py), for the trained extractor and once for the initial one.
Writes OUT/ablation.md and OUT/ablation.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from .cli import unit_interval

log = logging.getLogger("agilenn.training")

STAGES = ("reference", "extractor", "preselect")  # shared by every variant; joint is each one's own
DEFAULT_IG_STEPS = 8
DEFAULT_XAI_LAMBDA = 0.8  # TrainConfig's default, for the XAI variants when the base run is a plain split
# Settings that may differ between calls without making a variant's earlier work invalid.
RUNTIME_KEYS = ("out", "data_dir", "device", "threads")


class AblationError(Exception):
    """A run directory or option that the ablation cannot use; the message names it."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    lam: float
    xai: str
    ig_steps: int
    reuse: Path | None = None  # a run whose finished joint checkpoint (and config) this variant takes


def attribution_label(xai: str, ig_steps: int) -> str:
    return "saliency" if xai == "saliency" else "IG 2-point" if ig_steps <= 1 else f"IG {ig_steps}-step"


def parse_variant(name: str, xai_lam: float) -> Variant:
    """plain | ig2 | ig<M> (M >= 3) | saliency -> the loss settings it trains with."""
    if name == "plain":  # the attribution only feeds the training-time skewness log here
        return Variant(name, 1.0, "ig", 0)
    if name == "ig2":
        return Variant(name, xai_lam, "ig", 0)
    if name == "saliency":
        return Variant(name, xai_lam, "saliency", 0)
    m = re.fullmatch(r"ig(\d+)", name)
    if m and int(m.group(1)) >= 3:
        return Variant(name, xai_lam, "ig", int(m.group(1)))
    raise AblationError(f"unknown variant {name!r}: use plain, ig2, ig<M> with M >= 3 (M-step IG) or saliency")


# ----------------------------------------------------------------------------- run directories

def load_config(run_dir: Path):
    """The TrainConfig a run directory's config.json records."""
    from .nets import ArchConfig
    from .trainer import TrainConfig

    path = run_dir / "config.json"
    if not path.is_file():
        raise AblationError(f"{run_dir}: no config.json (not an agilenn-train run directory)")
    d = json.loads(path.read_text())
    arch = d.pop("arch", {})
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise AblationError(f"{path}: unknown settings {unknown} (written by another agilenn version?)")
    return TrainConfig(**d, arch=ArchConfig(**{**arch, "input_hw": tuple(arch.get("input_hw", (28, 28)))}))


def check_stages(run_dir: Path, stages=STAGES) -> None:
    """Every named stage checkpoint exists and is finished (preselect has no epochs: it exists or not)."""
    import torch

    for stage in stages:
        p = run_dir / "ckpt" / f"{stage}.pt"
        if not p.is_file():
            raise AblationError(f"{run_dir}: {p.relative_to(run_dir)} is missing (stage {stage} has not run yet)")
        if stage != "preselect" and not torch.load(p, map_location="cpu", weights_only=False).get("done"):
            raise AblationError(f"{run_dir}: {p.relative_to(run_dir)} is not finished (stage {stage} still running?)")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_hashes(run_dir: Path) -> dict:
    return {stage: file_sha256(run_dir / "ckpt" / f"{stage}.pt") for stage in STAGES}


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy src to dst, or check that dst (from an earlier call) is the same file."""
    if dst.exists():
        if file_sha256(dst) != file_sha256(src):
            raise AblationError(f"{dst} differs from {src} (the source changed since this ablation started, or "
                                f"{dst.parent.parent.name} came from elsewhere): use a new --out or delete "
                                f"{dst.parent.parent}")
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)  # a cut-off copy never looks like a checkpoint


def _comparable(cfg) -> dict:
    """A config (TrainConfig or its JSON) as JSON data without the settings that may change between calls."""
    from .trainer import TrainConfig

    d = json.loads(json.dumps(cfg if isinstance(cfg, dict) else cfg.to_dict()))  # tuples -> lists, as on disk
    # a setting added after a run was started is that run's default, not a difference
    d = {**json.loads(json.dumps(TrainConfig().to_dict())), **d}
    return {k: v for k, v in d.items() if k not in RUNTIME_KEYS}


def prepare_variant(variant: Variant, base_dir: Path, base_cfg, out: Path, joint_epochs: int, overrides: dict):
    """OUT/<variant>: stage 1-3 checkpoints (the base run's, or the reused run's with its joint one)
    and config.json. Returns the variant's TrainConfig."""
    vdir = out / variant.name
    if variant.reuse is None:
        src_dir, stages = base_dir, STAGES
        cfg = dataclasses.replace(copy.deepcopy(base_cfg), lam=variant.lam, xai=variant.xai,
                                  ig_steps=variant.ig_steps, joint_epochs=joint_epochs)
    else:
        src_dir, stages = variant.reuse, (*STAGES, "joint")
        check_stages(src_dir, stages)
        cfg = load_config(src_dir)
        if cfg.dataset != base_cfg.dataset:
            raise AblationError(f"--reuse {variant.name}={src_dir}: dataset {cfg.dataset!r}, the base run's is "
                                f"{base_cfg.dataset!r}")
        # measured on the base run's test split, whatever subset the reused run used
        cfg = dataclasses.replace(cfg, test_subset=base_cfg.test_subset)
    # Variants compare what the joint stage's losses buy: the extra remote NNs (--remote-heads) are not trained
    cfg = dataclasses.replace(cfg, out=str(vdir), model_name=f"{base_cfg.model_name}-{variant.name}", remote_heads=0,
                              **overrides)
    for stage in stages:
        copy_checkpoint(src_dir / "ckpt" / f"{stage}.pt", vdir / "ckpt" / f"{stage}.pt")
    path = vdir / "config.json"
    if path.is_file():
        before, now = _comparable(json.loads(path.read_text())), _comparable(cfg)
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if diff:
            raise AblationError(f"{vdir} was started with other settings ({', '.join(diff)} differ): use a new --out "
                                f"or delete {vdir}")
    path.write_text(json.dumps(cfg.to_dict(), indent=1))
    return cfg


def joint_wall_time(vdir: Path, reuse: Path | None) -> tuple[float | None, str]:
    """Seconds the joint stage took and where that number comes from."""
    import torch

    st = torch.load(vdir / "ckpt" / "joint.pt", map_location="cpu", weights_only=False)
    if st.get("wall_s") is not None:
        return float(st["wall_s"]), "joint checkpoint"
    log_path = (reuse or vdir) / "train.log"  # checkpoints from before wall_s was recorded
    if log_path.is_file():
        per_epoch = {}  # a re-run epoch overwrites the earlier line
        for m in re.finditer(r"joint epoch (\d+)/\d+ .*\(([\d.]+)s\)$", log_path.read_text(), re.MULTILINE):
            per_epoch[int(m.group(1))] = float(m.group(2))
        if per_epoch and len(per_epoch) == st.get("epoch", len(per_epoch)):
            return float(sum(per_epoch.values())), f"{log_path} (sum of the per-epoch lines)"
    return None, "not recorded"


# ----------------------------------------------------------------------------- training and measuring

def joint_start_fingerprint(run, extractor) -> dict:
    """Hashes of what the joint stage starts from: the (permuted) extractor's weights, and the random
    state that draws the fresh parts' initial weights, the shuffles and the augmentation. Variants
    trained here share both; a base run's own joint stage does not (its stages 1-3 drew from the
    same generators first), so reusing it is another random draw of the same recipe."""
    import torch

    weights = hashlib.sha256()
    for key, t in extractor.state_dict().items():
        weights.update(key.encode())
        weights.update(t.detach().cpu().contiguous().numpy().tobytes())
    rng = hashlib.sha256(torch.get_rng_state().numpy().tobytes() + run.gen.get_state().numpy().tobytes())
    return {"extractor_sha256": weights.hexdigest(), "rng_sha256": rng.hexdigest()}


def faithful_audit(bundle_dir: Path, run, extractors: dict, samples: int | None, method: str, ig_steps: int) -> dict:
    """training/attribution.audit with the *bundle's* evaluator.onnx as judge; ``extractors`` maps a
    name to a torch module, or to None for the bundle's extractor.onnx (the trained one)."""
    from agilenn.models import load_bundle

    from .attribution import audit
    from .onnx_torch import OnnxModule

    bundle = load_bundle(bundle_dir)
    evaluator = OnnxModule(bundle.files["evaluator"])
    named = {name: (OnnxModule(bundle.files["extractor"]) if m is None else m.cpu()) for name, m in extractors.items()}
    x, y = run.sample("test", samples)
    return audit(evaluator, named, x, y, bundle.k, method, ig_steps)


def run_variant(variant: Variant, cfg, out: Path, command: str, full_export: bool, samples: int | None,
                initial: dict | None) -> tuple[dict, dict | None]:
    """Train (or resume, or load) the variant's joint stage, export and measure its bundle.
    ``initial``: the shared initial-extractor audit if already measured. Returns (result, audit of the
    initial extractor when it was measured here)."""
    from .trainer import Run, finish_bundle, run_preselect, train_extractor, train_joint, train_reference

    vdir = out / variant.name
    handler = logging.FileHandler(vdir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    try:
        t_start = time.time()
        run = Run(cfg, resume=True)
        ref = train_reference(run)
        extractor, evaluator = train_extractor(run, ref)
        perm = run_preselect(run, extractor, evaluator)  # extractor: now the joint stage's starting point
        start = joint_start_fingerprint(run, extractor)
        model = train_joint(run, extractor, evaluator, ref)
        t_trained = time.time()
        bundle = vdir / "bundle"
        # no initial extractor for the report's own audit: the table measures it once, not per variant
        finish_bundle(run, ref, model, evaluator, None, perm, bundle, command, full=full_export)
        audit = faithful_audit(bundle, run, {"trained": None}, samples, cfg.xai, cfg.ig_steps)
        measured_initial = None
        if initial is None:  # once per stage 1-3; its training-time claim in 2-point IG
            measured_initial = faithful_audit(bundle, run, {"initial": extractor}, samples, "ig", 0)["initial"]
        t_done = time.time()
    finally:
        log.removeHandler(handler)
        handler.close()
    wall, wall_source = joint_wall_time(vdir, variant.reuse)
    log.info("variant %s: joint stage %s s (%s); this call: training %.0f s, export + measurement %.0f s",
             variant.name, "?" if wall is None else f"{wall:.0f}", wall_source, t_trained - t_start, t_done - t_trained)
    manifest = json.loads((bundle / "manifest.json").read_text())
    result = {
        "variant": variant.name,
        "source": str(variant.reuse) if variant.reuse else "trained here",
        "lam": cfg.lam, "xai": cfg.xai, "ig_steps": cfg.ig_steps, "loss": variant_loss_label(cfg),
        "joint_epochs": cfg.joint_epochs,
        "joint_wall_s": wall, "joint_wall_source": wall_source,
        "stage_sha256": stage_hashes(vdir),
        "joint_start": start,
        "bundle": str(bundle),
        "full_export": full_export,
        "audit_samples": samples,
        "faithful": audit["trained"]["faithful"],
        "training_claim": audit["trained"]["training_method"],
        "saliency_skewness_mean": audit["trained"]["saliency_skewness_mean"],
        "nonzero_fraction": audit["trained"]["nonzero_fraction"],
        "audit_images": audit["samples"],
        "accuracy": accuracies(manifest),
        "payload": payload(manifest, full_export),
        "config": cfg.to_dict(),
    }
    return result, measured_initial


def variant_loss_label(cfg) -> str:
    return "none (λ = 1)" if cfg.lam >= 1 else attribution_label(cfg.xai, cfg.ig_steps)


def accuracies(manifest: dict) -> dict:
    m = manifest["metrics"]
    out = {key: m[f"{key}_accuracy"] for key in ("combined", "local", "remote", "reference")}
    out.update(test_images=m["test_samples"], numerics="float device part (ONNX) + codec, training's alpha")
    if "int8_device" in manifest:
        out["int8"] = manifest["int8_device"]["accuracy"]
    return out


def payload(manifest: dict, full_export: bool) -> dict:
    """Mean payload bytes (header included) and which coder and device numerics they are."""
    m = manifest["metrics"]
    coders = {"ans": m["ans_bytes_mean"], "rans": m["rans_bytes_mean"], "rans-ctx (float tables)": m["rans_ctx_bytes_mean"],
              "zstd": m["zstd_bytes_mean"], "raw": m["raw_bytes_mean"]}
    if full_export and "rans_ctx" in m:
        return {"bytes_mean": m["rans_ctx"]["bytes_mean"], "coder": "rans-ctx",
                "numerics": "int8 device part, context tables refit on it (the bundle's default coder)",
                "float_coders": coders}
    return {"bytes_mean": m["rans_bytes_mean"], "coder": "rans",
            "numerics": "float device part; --fast-export skipped the int8 part and the rans-ctx refit",
            "float_coders": coders}


# ----------------------------------------------------------------------------- table

def _pct(v) -> str:
    return f"{100 * v:.2f} %"


def _faithful_cells(f: dict) -> str:
    over = "" if f["met_tolerance"] else " ✗"
    return f"{f['skewness_mean']:.3f} | {f['ig_steps']} | {100 * f['completeness_relative']:.1f} %{over}"


def _wall(s) -> str:
    if s is None:
        return "n/a"
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


COLUMNS = ("variant", "λ", "XAI loss", "joint epochs", "faithful skewness", "IG m", "completeness gap",
           "Δ vs initial", "training-time claim (own attribution)", "local-only", "combined", "remote-only",
           "payload B (coder)", "joint wall time")


def markdown(summary: dict) -> str:
    ini = summary["initial"]
    rows = summary["variants"]
    shared = [r for r in rows if r.get("initial") is None]  # rows that start from the base run's extractor
    test_n = {r["accuracy"]["test_images"] for r in rows}
    audit_n = {r["audit_images"] for r in rows}
    base = summary["base"]
    split = ("the full test split" if base["test_subset"] is None else
             f"a fixed random subset of the test split (--test-subset {base['test_subset']})")
    lines = [
        f"# XAI ablation: {summary['dataset']}", "",
        f"Produced by `{summary['command']}` from the stage 1–3 checkpoints of `{base['run']}`; every variant "
        f"trained here starts its joint stage from that one extractor and channel order, with the base run's "
        "settings except λ and the attribution (and the joint epochs shown).", "",
        f"- Accuracy and bytes: {', '.join(str(n) for n in sorted(test_n))} test images ({split}) through the "
        "exported ONNX float device part, the codec and remote.onnx, merged with training's α (training/report.py).",
        f"- Faithful skewness: share of |IG| in the k local channels, m-step IG by each bundle's evaluator.onnx; m "
        f"doubled from 16 until the mean completeness gap is ≤ {100 * summary['tolerance']:.0f} % of the mean "
        f"|L(f) − L(0)| (✗: not met at m = 256); on {', '.join(str(n) for n in sorted(audit_n))} test images "
        f"({'all' if summary['audit_samples'] is None else 'a fixed random subset, seed ' + str(base['seed'])}).",
        "- Training-time claim: the same skewness under the attribution the variant trained with (the plain "
        "split trains with none; its value is 2-point IG's), on the same images.",
        f"- Payload: {summary['payload_note']}",
        "", "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS),
    ]
    if ini is not None:
        lines.append(f"| initial extractor (stage 2 + preselection) | — | — | — | {_faithful_cells(ini['faithful'])} | — | "
                     f"{ini['training_method']['skewness_mean']:.3f} (IG 2-point) | — | — | — | — | — |")
    notes = []
    for r in rows:
        name = r["variant"]
        own_initial = r.get("initial")
        if r["source"] != "trained here":
            notes.append(f"`{name}`: joint checkpoint reused from `{r['source']}`"
                         + ("" if own_initial is None else
                            f"; its own stage 1–3 differ from the base run's (its initial extractor: faithful "
                            f"skewness {own_initial['faithful']['skewness_mean']:.3f}, Δ computed against that)"))
        start = (own_initial or ini)["faithful"]["skewness_mean"]
        claim = r["training_claim"]
        p = r["payload"]
        a = r["accuracy"]
        lines.append(
            f"| {name}{' †' if r['source'] != 'trained here' else ''} | {r['lam']:g} | {r['loss']} | {r['joint_epochs']} | "
            f"{_faithful_cells(r['faithful'])} | {r['faithful']['skewness_mean'] - start:+.3f} | "
            f"{claim['skewness_mean']:.3f} ({attribution_label(claim['method'], claim['ig_steps'])}) | "
            f"{_pct(a['local'])} | {_pct(a['combined'])} | {_pct(a['remote'])} | {p['bytes_mean']:.1f} ({p['coder']}) | "
            f"{_wall(r['joint_wall_s'])} |")
    if shared:
        lines += ["", f"Reference NN of the base run: {_pct(shared[0]['accuracy']['reference'])}."]
    if notes:
        lines += ["", *[f"† {n}." for n in notes]]
    lines += ["", "Joint wall time: seconds of the joint stage summed over every process that ran it (from its "
              "checkpoint; for older runs the sum of train.log's per-epoch lines), on whatever machine ran it.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver

def run_ablation(base_dir: Path, out: Path, variant_names: list[str], *, reuse: dict | None = None,
                 joint_epochs: int | None = None, xai_lam: float | None = None, full_export: bool = True,
                 audit_samples: int | None = None, overrides: dict | None = None, command: str = "") -> dict:
    from .attribution import AUDIT_SAMPLES

    base_dir, out = Path(base_dir).resolve(), Path(out).resolve()
    if out == base_dir or base_dir in out.parents:
        raise AblationError(f"--out {out} lies inside the base run {base_dir}: the base run is only read")
    check_stages(base_dir)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    base_cfg = dataclasses.replace(load_config(base_dir), **overrides)
    samples = AUDIT_SAMPLES if audit_samples is None else (None if audit_samples <= 0 else audit_samples)
    if xai_lam is None:
        xai_lam = base_cfg.lam if base_cfg.lam < 1 else DEFAULT_XAI_LAMBDA
    reuse = {name: Path(p).resolve() for name, p in (reuse or {}).items()}
    # a reused variant's losses are whatever its own config says; its name is only a label
    variants = [Variant(name, float("nan"), "", 0, reuse=reuse[name]) if name in reuse else parse_variant(name, xai_lam)
                for name in dict.fromkeys([*variant_names, *reuse])]
    epochs = base_cfg.joint_epochs if joint_epochs is None else joint_epochs
    out.mkdir(parents=True, exist_ok=True)
    base_hashes = stage_hashes(base_dir)

    initial_path = out / "initial.json"
    initial = json.loads(initial_path.read_text()) if initial_path.is_file() else None
    if initial is not None and (initial["stage_sha256"] != base_hashes or initial["audit_samples"] != samples):
        initial = None  # measured for other checkpoints or another subset
    results = []
    for v in variants:
        cfg = prepare_variant(v, base_dir, base_cfg, out, epochs, overrides)
        result_path = out / v.name / "result.json"
        own_stages = stage_hashes(out / v.name) != base_hashes
        if result_path.is_file():
            done = json.loads(result_path.read_text())
            if (done["audit_samples"] == samples and done["full_export"] == full_export
                    and _comparable(done["config"]) == _comparable(cfg)):
                log.info("variant %s: finished earlier, skipped (%s)", v.name, result_path)
                results.append(done)
                continue
        log.info("variant %s: %s, λ %g, %s, %d joint epochs", v.name, "reusing " + str(v.reuse) if v.reuse else
                 "training", cfg.lam, variant_loss_label(cfg), cfg.joint_epochs)
        shared_initial = None if own_stages else (initial and initial["audit"])
        result, measured_initial = run_variant(v, cfg, out, command, full_export, samples, shared_initial)
        if measured_initial is not None:
            if own_stages:
                result["initial"] = {**measured_initial, "samples": result["audit_images"]}
            else:
                initial = {"stage_sha256": base_hashes, "audit_samples": samples,
                           "audit": {**measured_initial, "samples": result["audit_images"]}}
                initial_path.write_text(json.dumps(initial, indent=1) + "\n")
        result_path.write_text(json.dumps(result, indent=1) + "\n")
        results.append(result)

    from .attribution import COMPLETENESS_TOLERANCE

    payload_notes = {f"{r['payload']['coder']}: {r['payload']['numerics']}" for r in results}
    summary = {
        "dataset": base_cfg.dataset,
        "command": command,
        "base": {"run": str(base_dir), "stage_sha256": base_hashes, "test_subset": base_cfg.test_subset,
                 "seed": base_cfg.seed},
        "audit_samples": samples,
        "tolerance": COMPLETENESS_TOLERANCE,
        # None when no variant shares the base run's stage 1-3 (every one reused with its own)
        "initial": initial and initial["audit"],
        "payload_note": "; ".join(sorted(payload_notes)) + " (mean over the test images, header included).",
        "variants": results,
    }
    (out / "ablation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "ablation.md").write_text(markdown(summary))
    log.info("ablation table written to %s", out / "ablation.md")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agilenn.training.ablation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--run", required=True, type=Path,
                   help="base run directory with config.json and finished ckpt/{reference,extractor,preselect}.pt "
                        "(only read)")
    p.add_argument("--out", type=Path, help="ablation directory (default: RUN-ablation beside RUN)")
    p.add_argument("--variants", default=f"plain,ig2,ig{DEFAULT_IG_STEPS},saliency",
                   help="comma-separated: plain, ig2, ig<M>, saliency")
    p.add_argument("--ig-steps", type=int, default=None,
                   help=f"M of the m-step IG variant in the default list (default {DEFAULT_IG_STEPS})")
    p.add_argument("--lam", type=unit_interval, default=None,
                   help=f"lambda of the XAI variants (default: the base run's, or {DEFAULT_XAI_LAMBDA} if that is 1)")
    p.add_argument("--joint-epochs", type=int, default=None, help="joint epochs of every variant trained here "
                                                                  "(default: the base run's)")
    p.add_argument("--reuse", action="append", default=[], metavar="NAME=RUN",
                   help="take RUN's finished joint checkpoint (and its stage 1-3) as variant NAME instead of "
                        "training it; repeatable")
    p.add_argument("--fast-export", action="store_true",
                   help="skip the int8 device part, the rans-ctx refit and the merge calibration; bytes are then "
                        "the rans coder's on the float device part")
    p.add_argument("--audit-samples", type=int, default=None,
                   help="test images for the faithful skewness (default 2000, a fixed random subset; 0: all)")
    p.add_argument("--data-dir", default=None, help="dataset folder, if not the one config.json records")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the base run's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the base run's)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("the ablation needs the [train] extra (torch): pip install 'agilenn[train]'", file=sys.stderr)
        return 2
    from agilenn.datasets import DatasetNotFoundError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if args.ig_steps is not None:
        if args.ig_steps < 3:
            print("--ig-steps must be >= 3 (ig2 is the 2-point variant)", file=sys.stderr)
            return 2
        names = [f"ig{args.ig_steps}" if n == f"ig{DEFAULT_IG_STEPS}" else n for n in names]
    reuse = {}
    for item in args.reuse:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"--reuse {item!r}: expected NAME=RUN_DIR", file=sys.stderr)
            return 2
        reuse[name] = path
    if not (args.run / "config.json").is_file():  # before OUT is made: a mistyped --run leaves nothing behind
        print(f"ablation: {args.run}: not a run directory (no config.json)", file=sys.stderr)
        return 2
    out = args.out or args.run.with_name(args.run.resolve().name + "-ablation")
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True,
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "ablation.log")])
    try:
        run_ablation(args.run, out, names, reuse=reuse, joint_epochs=args.joint_epochs, xai_lam=args.lam,
                     full_export=not args.fast_export, audit_samples=args.audit_samples,
                     overrides={"data_dir": args.data_dir, "device": args.device, "threads": args.threads},
                     command="python -m agilenn.training.ablation " + shlex.join(argv))
    except (AblationError, DatasetNotFoundError) as exc:
        print(f"ablation: {exc}", file=sys.stderr)
        return 2
    print(out / "ablation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
