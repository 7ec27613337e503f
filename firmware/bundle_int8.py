"""Add the integer device part to a bundle: quantize, measure int8 vs float, write the file, the
manifest section (format_version 2) and the report section.

    agilenn-firmware quantize --bundle DIR        (agilenn-train's export runs the same function)
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from .int8 import Int8DeviceModel
from .plan import device_cost
from .quantize import quantize_device

log = logging.getLogger("agilenn.firmware")

INT8_FILE = "device_int8.json"
CALIBRATION_IMAGES = 2000
REPORT_BEGIN, REPORT_END = "<!-- int8-device:begin -->", "<!-- int8-device:end -->"


def evaluate(bundle, model: Int8DeviceModel, images: np.ndarray, labels: np.ndarray, batch: int = 2000) -> dict:
    """Local-only and combined accuracy of the float (device.onnx) and the integer device part,
    both through the deployed remote path (centroid indices -> remote.onnx -> alpha merge)."""
    from agilenn.device_agent.device_model import single_thread_session

    dev = single_thread_session(bundle.onnx_path("device"))
    rem = single_thread_session(bundle.onnx_path("remote"))
    codec = bundle.codec()
    hits = {k: 0 for k in ("float_local", "float_combined", "int8_local", "int8_combined")}
    same_idx = same_pred_local = same_pred_combined = 0
    for i in range(0, len(labels), batch):
        x, y = images[i:i + batch], labels[i:i + batch]
        f_local, f_remote = dev.run(None, {"image": bundle.preprocess(x)})
        f_idx = codec.quantize(f_remote)
        out = model.run(x)
        i_local = model.dequantize_logits(out.logits)
        f_rl = rem.run(None, {"remote_features": codec.centroids[f_idx]})[0]
        i_rl = rem.run(None, {"remote_features": codec.centroids[out.indices]})[0]
        f_comb, i_comb = bundle.merge(f_local, f_rl).argmax(1), bundle.merge(i_local, i_rl).argmax(1)
        hits["float_local"] += int((f_local.argmax(1) == y).sum())
        hits["int8_local"] += int((i_local.argmax(1) == y).sum())
        hits["float_combined"] += int((f_comb == y).sum())
        hits["int8_combined"] += int((i_comb == y).sum())
        same_idx += int((f_idx == out.indices).sum())
        same_pred_local += int((f_local.argmax(1) == i_local.argmax(1)).sum())
        same_pred_combined += int((f_comb == i_comb).sum())
    n = len(labels)
    res = {k: v / n for k, v in hits.items()}
    res.update(test_samples=n, index_agreement=same_idx / (n * int(np.prod(codec.shape))),
               local_prediction_agreement=same_pred_local / n, combined_prediction_agreement=same_pred_combined / n,
               local_drop_pp=round(100 * (res["float_local"] - res["int8_local"]), 4),
               combined_drop_pp=round(100 * (res["float_combined"] - res["int8_combined"]), 4))
    return res


def measured_cost(bundle_dir, model: Int8DeviceModel) -> dict:
    """The plan's cost, with flash measured on a generated Cortex-M7 build when that is possible
    (the coder sources and tables exist and arm-none-eabi-gcc is installed)."""
    from .generate import generate

    try:
        with tempfile.TemporaryDirectory() as tmp:
            cost = generate(bundle_dir, tmp).cost
            return {k: v for k, v in cost.items() if k not in ("model", "generator_version")}
    except Exception as exc:  # noqa: BLE001 - any reason the library cannot be built yet: report the plan only
        log.warning("flash not measured (%s); the plan's cost has no code size", exc)
        return device_cost(model)


def add_int8_device(bundle_dir, calibration_images=None, test_images=None, test_labels=None,
                    calibration_count: int = CALIBRATION_IMAGES, calibration_label: str | None = None) -> dict:
    """Quantize, evaluate and record; returns the manifest's int8_device section."""
    from agilenn.models import load_bundle, write_manifest
    from agilenn.training.datasets import load_dataset

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    dataset = bundle.manifest.get("dataset", "")
    if calibration_images is None:
        calibration_images = load_dataset(dataset, "train").subset(calibration_count, seed=0).images
        calib_source = f"{dataset} train, {len(calibration_images)} images (seed 0)"
    else:
        calib_source = calibration_label or f"{len(calibration_images)} caller-given images"
    model = quantize_device(bundle, calibration_images, calib_source)
    sha = model.save(bundle_dir / INT8_FILE)
    model = Int8DeviceModel.load(bundle_dir / INT8_FILE)  # evaluate exactly what was written
    if test_images is None:
        test = load_dataset(dataset, "test")
        test_images, test_labels = test.images, test.labels
    accuracy = evaluate(bundle, model, test_images, test_labels)
    log.info("int8 device part: local %.4f (float %.4f), combined %.4f (float %.4f)", accuracy["int8_local"],
             accuracy["float_local"], accuracy["int8_combined"], accuracy["float_combined"])

    # Re-read right before writing: other tools (the coder tables) edit the same manifest.
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["format_version"] = 2
    manifest["files"]["int8_device"] = INT8_FILE
    section = {
        "file": INT8_FILE,
        "sha256": sha,
        "format_version": model.format_version,
        "scheme": "int8 weights per output channel (symmetric), int8 activations per tensor (min/max), int32 bias "
                  "and accumulators, fixed-point multiplier + shift, round half up",
        "logits": {"dtype": "int16", "scale": model.logit_scale, "zero_point": 0},
        "calibration": model.calibration,
        "accuracy": accuracy,
    }
    manifest["int8_device"] = section
    write_manifest(bundle_dir, manifest)
    # the cost needs the final manifest (the generator tags the library with its hash)
    cost = measured_cost(bundle_dir, model)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["device_cost"] = cost
    write_manifest(bundle_dir, manifest)
    update_report(bundle_dir, section, cost)
    return section


def refresh_device_cost(bundle_dir) -> dict:
    """Measure the device cost again (after the generator or the C sources changed) and rewrite the
    manifest's device_cost and the report's rows, leaving the integer part as it is."""
    from agilenn.models import write_manifest

    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    cost = measured_cost(bundle_dir, Int8DeviceModel.load(bundle_dir / manifest["files"]["int8_device"]))
    manifest["device_cost"] = cost
    write_manifest(bundle_dir, manifest)
    update_report(bundle_dir, manifest["int8_device"], cost)
    return cost


def report_markdown(section: dict, cost: dict) -> str:
    a = section["accuracy"]
    flash = f"{cost['flash_bytes']:,} B" if cost.get("flash_bytes") is not None else "not measured"
    lines = [
        REPORT_BEGIN,
        "## Integer device part (int8)",
        "",
        f"`{section['file']}`: {section['scheme']}. Calibrated on {section['calibration'].get('dataset', '')}. "
        f"Local logits leave as int16 (scale {section['logits']['scale']:.4g}).",
        "",
        f"| on {a['test_samples']:,} test images | float (device.onnx) | int8 | difference |",
        "|---|---|---|---|",
        f"| local-only accuracy | {100 * a['float_local']:.2f} % | {100 * a['int8_local']:.2f} % | "
        f"{-a['local_drop_pp']:+.2f} pp |",
        f"| combined accuracy | {100 * a['float_combined']:.2f} % | {100 * a['int8_combined']:.2f} % | "
        f"{-a['combined_drop_pp']:+.2f} pp |",
        f"| centroid indices equal to float's | | {100 * a['index_agreement']:.2f} % | |",
        "",
        f"Device cost (the generated C library, agilenn.firmware.plan): {cost['macs']:,} MACs, {cost['params']:,} "
        f"parameters, {cost['weight_bytes']:,} B of tables, flash {flash}, arena {cost['arena_bytes']:,} B.",
        REPORT_END,
    ]
    return "\n".join(lines) + "\n"


def _cost_rows(text: str, cost: dict) -> str:
    """The training report's device-cost rows, rewritten with the generated library's figures
    (reports written before format 2 carry an older estimate there). Idempotent."""
    flash = f"{cost['flash_bytes']:,} B" if cost.get("flash_bytes") is not None else "not measured"
    new = [f"| device part params | {cost['params']:,} |",
           f"| device part tables (int8 weights, int32 bias, requantization) | {cost['weight_bytes']:,} B |",
           f"| device part flash (code + tables, Cortex-M7 -O2) | {flash} |",
           f"| device part arena (peak SRAM of the generated C library) | {cost['arena_bytes']:,} B |"]
    owned = ("| device part params |", "| device part int8 flash |", "| device part peak activations (int8) |",
             "| device part tables ", "| device part flash ", "| device part arena ")
    out = []
    for line in text.split("\n"):
        if line.startswith("| device part MACs |"):
            out.append(f"| device part MACs | {cost['macs']:,} |")
        elif line.startswith("| device part params |"):
            out += new
        elif not line.startswith(owned):
            out.append(line)
    return "\n".join(out)


def update_report(bundle_dir, section: dict, cost: dict) -> None:
    """Replace (or append) the int8 section of report.md and the int8_device key of report.json."""
    bundle_dir = Path(bundle_dir)
    md = bundle_dir / "report.md"
    if md.is_file():
        text = md.read_text()
        if REPORT_BEGIN in text and REPORT_END in text:
            head, rest = text.split(REPORT_BEGIN, 1)
            tail = rest.split(REPORT_END, 1)[1].lstrip("\n")
            text = head + report_markdown(section, cost) + tail
        else:
            text = text.rstrip("\n") + "\n\n" + report_markdown(section, cost)
        md.write_text(_cost_rows(text, cost))
    js = bundle_dir / "report.json"
    if js.is_file():
        doc = json.loads(js.read_text())
        doc["int8_device"] = {**section, "device_cost": cost}
        doc["device_cost"] = cost
        js.write_text(json.dumps(doc, indent=1) + "\n")
