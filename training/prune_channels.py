"""Drop dead remote channels from a bundle: channels that send centroid 0.0 on every training image.

    python -m agilenn.training.prune_channels --bundle models/repository/agilenn-fashion-mnist/1

A remote channel whose centroid index is the one of centroid 0.0 on EVERY image of the bundle's
training split, under every numerics the bundle ships (the float device.onnx and, when present, the
integer device part the agent and the C library run: what the device actually sends), carries no
information: the server feeds remote.onnx a 0.0 there whether the channel is sent or not. It still
costs device MACs and flash (the extractor's last conv computes it), coder tables and payload body
symbols. This tool removes it everywhere, numpy + onnx + onnxruntime only (no torch):

1. device.onnx: the output channels of the extractor's last Conv (and of a BatchNormalization after
   it); the remote channel Slice then ends at the new channel count;
2. remote.onnx: the input channels of every consumer of ``remote_features`` (Conv weights' input
   axis, or the matching columns of a Flatten -> Gemm). Exactly lossless on the training images:
   the remote NN saw 0.0 in those channels on all of them (zero padding of a Conv is 0.0 too);
3. manifest.json: ``features.channels``, the per-channel coder tables (``symbol_probabilities``,
   ``frequencies``: rows of the dropped channels removed, which is what refitting them gives, as
   each row is one channel's own statistics; ``context`` rows as a stopgap until step 5 refits it),
   a provisional ``merge`` and a ``pruned`` section recording what was dropped and why;
4. the integer device part, re-quantized from the pruned device.onnx with the original calibration
   (firmware/bundle_int8.py; the dead channels never set a calibration range, so the kept channels
   get the same integers), with its device cost;
5. with ``refit`` (the default; the trainer does these steps itself right after): the rans-ctx
   tables (training/context_tables.py) and the budget-aware merge (training/merge_calibration.py)
   refitted on the training split; then the device cost is measured again (the coder tables are
   part of the library's flash);
6. before vs after on the test split, through the deployed path (the same function before and after):
   accuracy and predictions of the float and the integer path, payload bytes per coder; into
   ``pruned.check``, ``metrics`` and report.md/report.json (a "Dead remote channels" section; the
   deployed-path rows of the training report are rewritten with the pruned bundle's numbers).

extractor.onnx and evaluator.onnx (the XAI audit's pair, optional) are left as training made them:
they describe the training-time extractor with all ``pruned.trained_channels`` channels, in the
order of ``xai.channel_order``, which is what the attribution audit re-measures; ``pruned.dropped``
names the dropped channels in that numbering. Local channels (index < k) are never dropped, and
the tool refuses (NothingToPrune, exit status 3) when no remote channel is dead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("agilenn.training")

REPORT_SECTION = "## Dead remote channels"
CODERS = ("ans", "rans", "rans-ctx", "zstd", "raw")
EXIT_NOTHING_TO_PRUNE = 3


class PruneError(ValueError):
    """A bundle this tool cannot prune; the message names the file and what was wrong."""


class NothingToPrune(PruneError):
    """Every remote channel carries a non-zero centroid on at least one training image."""


# --- finding dead channels ----------------------------------------------------------------------
def zero_index(centroids) -> int:
    """The centroid index that decodes to 0.0 (the server's zero-fill value); PruneError if none does."""
    c = np.asarray(centroids, np.float64)
    hits = np.flatnonzero(c == 0.0)
    if hits.size != 1:
        raise PruneError(f"quantizer.centroids {c.tolist()} has no centroid 0.0: a channel that always sends the "
                         "same other centroid is not zero for the remote NN, so dropping it would not be lossless")
    return int(hits[0])


def _float_session(bundle, role: str):
    from agilenn.device_agent.device_model import single_thread_session

    return single_thread_session(bundle.onnx_path(role))


def device_outputs(bundle, images: np.ndarray, numerics: str, batch: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(local logits float32 [N, classes], centroid indices uint8 [N, R, h, w]) of the float
    (``numerics="float"``: device.onnx + the codec's quantizer) or the integer device part."""
    from agilenn.models.bundle import DEVICE_INPUT, DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES

    local, indices = [], []
    if numerics == "int8":
        model = bundle.int8_device()
        for i in range(0, len(images), batch):
            out = model.run(images[i:i + batch])
            local.append(model.dequantize_logits(out.logits))
            indices.append(out.indices)
    else:
        session, codec = _float_session(bundle, "device"), bundle.codec()
        for i in range(0, len(images), batch):
            ll, rf = session.run([DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES],
                                 {DEVICE_INPUT: bundle.preprocess(images[i:i + batch])})
            local.append(ll.astype(np.float32))
            indices.append(codec.quantize(rf))
    return np.concatenate(local), np.concatenate(indices)


def bundle_numerics(bundle) -> list[str]:
    """The device parts a bundle ships: float always, int8 when it has the integer part."""
    return ["float", "int8"] if bundle.has_int8_device else ["float"]


def find_dead_channels(bundle, images: np.ndarray, batch: int = 2000) -> dict:
    """Remote channels (0-based remote indices) whose index is the zero centroid's on every image,
    per numerics the bundle ships, and ``dead``: those dead under all of them."""
    zero = zero_index(bundle.manifest["quantizer"]["centroids"])
    per = {}
    for numerics in bundle_numerics(bundle):
        alive = np.zeros(bundle.remote_channels, bool)
        for i in range(0, len(images), batch):
            _, idx = device_outputs(bundle, images[i:i + batch], numerics, batch)
            alive |= (idx != zero).any(axis=(0, 2, 3))
        per[numerics] = [int(c) for c in np.flatnonzero(~alive)]
    dead = sorted(set.intersection(*(set(v) for v in per.values())))
    return {"zero_index": zero, "per_numerics": per, "dead": dead}


# --- ONNX surgery -------------------------------------------------------------------------------
def _graph_maps(graph):
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {t.name: t for t in graph.initializer}
    return producers, consumers, inits


def _replace_init(graph, inits: dict, consumers: dict, name: str, array: np.ndarray, where: str) -> None:
    """Overwrite initializer ``name`` in place; refuse when another node shares it (it would change too)."""
    from onnx import numpy_helper

    if name not in inits:
        raise PruneError(f"{where}: {name!r} is not an initializer (computed weights are not supported)")
    if len(consumers.get(name, [])) != 1:
        raise PruneError(f"{where}: initializer {name!r} is shared by {len(consumers.get(name, []))} nodes")
    inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))


def _set_channel_dim(value_info, channels: int) -> None:
    dim = value_info.type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = channels


def _int_value(graph, inits, producers, name: str) -> int:
    from onnx import helper, numpy_helper

    if name in inits:
        return int(numpy_helper.to_array(inits[name]).reshape(-1)[0])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return int(numpy_helper.to_array(attrs["value"]).reshape(-1)[0])
    raise PruneError(f"Slice bound {name!r} is not a constant")


def prune_device_onnx(src, dst, keep: list[int], k: int) -> None:
    """device.onnx with only the feature channels ``keep`` (sorted, all of 0..k-1 among them)."""
    import onnx
    from onnx import numpy_helper

    from agilenn.models.bundle import DEVICE_REMOTE_FEATURES

    where = str(src)
    model = onnx.load(str(src))
    g = model.graph
    producers, consumers, inits = _graph_maps(g)
    remote_slice = producers.get(DEVICE_REMOTE_FEATURES)
    if remote_slice is None or remote_slice.op_type != "Slice":
        raise PruneError(f"{where}: {DEVICE_REMOTE_FEATURES!r} must come from a channel Slice of the extractor output")
    feat = remote_slice.input[0]
    # Walk back from the features to the Conv that makes them: activations are per element, a
    # BatchNormalization has per-channel parameters that lose the same channels.
    tensor, convs, bns = feat, [], []
    while True:
        node = producers.get(tensor)
        if node is None:
            raise PruneError(f"{where}: no Conv before {feat!r}")
        if tensor != feat and len(consumers.get(tensor, [])) != 1:
            raise PruneError(f"{where}: {tensor!r} between the last Conv and the features feeds several nodes")
        if node.op_type in ("Relu", "Clip"):
            tensor = node.input[0]
        elif node.op_type == "BatchNormalization":
            bns.append(node)
            tensor = node.input[0]
        elif node.op_type == "Conv":
            convs.append(node)
            break
        else:
            raise PruneError(f"{where}: {node.op_type} node {node.name!r} between the extractor's last Conv and "
                             f"{feat!r} is not supported (Conv [BatchNormalization] [Relu|Clip] is)")
    conv = convs[0]
    w = numpy_helper.to_array(inits[conv.input[1]]) if conv.input[1] in inits else None
    if w is None:
        raise PruneError(f"{where}: Conv {conv.name!r} has no weight initializer")
    channels = w.shape[0]
    if any(a.name == "group" and a.i != 1 for a in conv.attribute):
        raise PruneError(f"{where}: the extractor's last Conv {conv.name!r} is grouped; only group=1 can lose outputs")
    if not (list(range(k)) == keep[:k] and all(k <= c < channels for c in keep[k:])):
        raise PruneError(f"{where}: channels to keep {keep} must include every local channel 0..{k - 1}")
    sel = np.asarray(keep)
    _replace_init(g, inits, consumers, conv.input[1], w[sel], where)
    if len(conv.input) > 2 and conv.input[2]:
        _replace_init(g, inits, consumers, conv.input[2], numpy_helper.to_array(inits[conv.input[2]])[sel], where)
    for bn in bns:
        for name in bn.input[1:5]:
            _replace_init(g, inits, consumers, name, numpy_helper.to_array(inits[name])[sel], where)
    # The Slices of the features: the local one must stay inside [0, k); the remote one now ends at C'.
    for node in consumers.get(feat, []):
        if node.op_type != "Slice":
            raise PruneError(f"{where}: the features {feat!r} feed a {node.op_type}; only channel Slices are supported")
        start, end, axis = (_int_value(g, inits, producers, n) for n in node.input[1:4])
        if axis != 1:
            raise PruneError(f"{where}: Slice {node.name!r} must cut channels (axis 1)")
        if node is remote_slice:
            if start != k:
                raise PruneError(f"{where}: the remote Slice starts at {start}, the manifest's k is {k}")
            ends = f"{node.name or 'remote_slice'}_pruned_end"
            g.initializer.append(numpy_helper.from_array(np.asarray([len(keep)], np.int64), ends))
            node.input[2] = ends
        elif min(end, channels) > k:
            raise PruneError(f"{where}: Slice {node.name!r} reads channels [{start}, {end}) beyond the local ones")
    for out in g.output:
        if out.name == DEVICE_REMOTE_FEATURES:
            _set_channel_dim(out, len(keep) - k)
    del g.value_info[:]  # intermediate shapes of the old channel count; onnxruntime infers them again
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def prune_remote_onnx(src, dst, keep_remote: list[int], feature_hw: tuple[int, int]) -> None:
    """remote.onnx reading only the remote channels ``keep_remote``: each consumer of
    remote_features loses those input channels (Conv group=1, or Flatten(axis=1) -> Gemm)."""
    import onnx
    from onnx import helper, numpy_helper

    from agilenn.models.bundle import REMOTE_INPUT

    where = str(src)
    model = onnx.load(str(src))
    g = model.graph
    producers, consumers, inits = _graph_maps(g)
    sel = np.asarray(keep_remote)
    users = consumers.get(REMOTE_INPUT, [])
    if not users:
        raise PruneError(f"{where}: nothing reads {REMOTE_INPUT!r}")
    for node in users:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and node.input[0] == REMOTE_INPUT and attrs.get("group", 1) == 1:
            w = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
            if w is None:
                raise PruneError(f"{where}: Conv {node.name!r} has no weight initializer")
            _replace_init(g, inits, consumers, node.input[1], w[:, sel], where)
        elif node.op_type == "Flatten" and attrs.get("axis", 1) == 1 and len(consumers.get(node.output[0], [])) == 1 \
                and consumers[node.output[0]][0].op_type == "Gemm" and consumers[node.output[0]][0].input[0] == node.output[0]:
            gemm = consumers[node.output[0]][0]
            ga = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
            w = numpy_helper.to_array(inits[gemm.input[1]]) if gemm.input[1] in inits else None
            if w is None:
                raise PruneError(f"{where}: Gemm {gemm.name!r} has no weight initializer")
            hw = int(feature_hw[0] * feature_hw[1])
            cols = (sel[:, None] * hw + np.arange(hw)[None, :]).reshape(-1)  # NCHW flattening: c * h * w + pos
            if ga.get("transA", 0):
                raise PruneError(f"{where}: Gemm {gemm.name!r} with transA is not supported")
            w = w[:, cols] if ga.get("transB", 0) else w[cols, :]
            _replace_init(g, inits, consumers, gemm.input[1], w, where)
        else:
            raise PruneError(f"{where}: {REMOTE_INPUT!r} feeds a {node.op_type} node {node.name!r}; only Conv "
                             "(group 1) and Flatten -> Gemm can lose input channels")
    for inp in g.input:
        if inp.name == REMOTE_INPUT:
            _set_channel_dim(inp, len(keep_remote))
    del g.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


# --- the manifest -------------------------------------------------------------------------------
def pruned_manifest(manifest: dict, dead: list[int], evidence: dict, command: str) -> dict:
    """The manifest without the remote channels ``dead`` (0-based remote indices); the integer part
    is taken out (re-quantized by the caller), coder.context and merge are provisional (refitted)."""
    m = json.loads(json.dumps(manifest))
    feats = m["features"]
    c, k = feats["channels"], feats["k"]
    r = c - k
    keep_remote = [i for i in range(r) if i not in set(dead)]
    rows = lambda table: [table[i] for i in keep_remote]  # noqa: E731
    feats["channels"] = k + len(keep_remote)
    coder = m.get("coder", {})
    for key in ("symbol_probabilities", "frequencies"):
        if coder.get(key) is not None:
            coder[key] = rows(coder[key])
    if coder.get("context") is not None:
        coder["context"]["row_map"] = rows(coder["context"]["row_map"])
        coder["context"]["fitted_on"]["provisional"] = "rows of the unpruned fit; refit with agilenn.training.context_tables"
    if m.get("merge") is not None:
        m["merge"]["alpha_by_channels"] = m["merge"]["alpha_by_channels"][:len(keep_remote) + 1]
        m["merge"]["min_channels"] = min(m["merge"]["min_channels"], len(keep_remote) + 1)
    # the integer part and its cost describe the old device.onnx
    m["files"].pop("int8_device", None)
    m.pop("int8_device", None)
    m.pop("device_cost", None)
    # channel numbering of training (extractor.onnx, evaluator.onnx, xai.channel_order)
    before = m.get("pruned")
    trained = before["trained_channels"] if before else c
    current = [ch for ch in range(trained) if ch not in set(before["dropped"])] if before else list(range(c))
    newly = [current[k + i] for i in dead]
    m["pruned"] = {
        "trained_channels": trained,
        "dropped": sorted((before["dropped"] if before else []) + newly),
        "reason": f"centroid {evidence['zero_index']} (value 0.0) on every image of {evidence['split']} "
                  f"({evidence['images']:,} images) under every numerics the bundle ships "
                  f"({', '.join(evidence['per_numerics'])}): the remote NN receives 0.0 there whether sent or not",
        "evidence": evidence,
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    return m


# --- before / after on the test split -----------------------------------------------------------
def deployed_results(bundle, images: np.ndarray, labels: np.ndarray) -> dict:
    """Per numerics: local logits, merged logits (every remote channel sent, the bundle's alpha for
    the full payload), predictions, accuracies, and payload bytes per coder of what that part sends."""
    from agilenn.codec import dequantize, header_size
    from agilenn.models.bundle import REMOTE_INPUT, REMOTE_LOGITS

    codec = bundle.codec()
    remote = _float_session(bundle, "remote")
    out = {}
    for numerics in bundle_numerics(bundle):
        local, idx = device_outputs(bundle, images, numerics)
        rl = np.concatenate([remote.run([REMOTE_LOGITS], {REMOTE_INPUT: dequantize(idx[i:i + 2000], codec.centroids)})[0]
                             for i in range(0, len(idx), 2000)])
        merged = bundle.merge(local, rl)
        sizes = {}
        for coder in CODERS:
            if coder not in codec.available_coders:
                continue
            sizes[coder] = float(np.mean([len(codec.encode_indices(idx[j], coder)) for j in range(len(idx))]))
        out[numerics] = {"merged": merged, "local": local, "remote": rl, "indices": idx,
                         "combined_accuracy": float((merged.argmax(1) == labels).mean()),
                         "local_accuracy": float((local.argmax(1) == labels).mean()),
                         "remote_accuracy": float((rl.argmax(1) == labels).mean()),
                         "bytes_mean": sizes, "header_bytes": header_size(codec.shape[0], codec.payload_version)}
    return out


def compare(before: dict, after: dict, dropped_remote: list[int], zero: int, split: str) -> dict:
    """What pruning changed on ``split``: per numerics, accuracies and bytes before/after, how many
    predictions differ, the largest merged-logit difference, and on how many images a dropped
    channel was not zero (0 means the test images agree with the training evidence)."""
    res = {"split": split, "numerics": {}}
    for numerics, b in before.items():
        a = after[numerics]
        n = len(b["merged"])
        nonzero = int((b["indices"][:, dropped_remote] != zero).any(axis=(1, 2, 3)).sum())
        res["numerics"][numerics] = {
            "images": n,
            "combined_accuracy": [b["combined_accuracy"], a["combined_accuracy"]],
            "local_accuracy": [b["local_accuracy"], a["local_accuracy"]],
            "remote_accuracy": [b["remote_accuracy"], a["remote_accuracy"]],
            "predictions_changed": int((b["merged"].argmax(1) != a["merged"].argmax(1)).sum()),
            "max_abs_logit_difference": float(np.abs(b["merged"] - a["merged"]).max()),
            "local_logits_identical": bool(np.array_equal(b["local"], a["local"])),
            "images_with_dropped_channel_nonzero": nonzero,
            "bytes_mean": {c: [b["bytes_mean"][c], a["bytes_mean"].get(c)] for c in b["bytes_mean"]},
        }
    return res


# --- report -------------------------------------------------------------------------------------
def report_section(pruned: dict, cost_before: dict | None, cost_after: dict | None) -> str:
    check = pruned.get("check", {})
    lines = [REPORT_SECTION, "",
             f"Dropped feature channels {pruned['dropped']} of the {pruned['trained_channels']} training made "
             f"(`python -m agilenn.training.prune_channels`): {pruned['reason']}. device.onnx lost them as outputs of "
             "the extractor's last conv, remote.onnx as inputs, the coder tables their rows; the integer device "
             "part was re-quantized with its original calibration, the rans-ctx tables and the budget-aware merge "
             "refitted. extractor.onnx / evaluator.onnx keep all training channels (the XAI audit's numbering).", ""]
    for numerics, c in check.get("numerics", {}).items():
        pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
        lines += [f"On {c['images']:,} images of {check['split']}, {numerics} device part: "
                  f"{c['predictions_changed']} predictions changed, largest merged-logit difference "
                  f"{c['max_abs_logit_difference']:.2g}, local logits {'identical' if c['local_logits_identical'] else 'changed'}, "
                  f"{c['images_with_dropped_channel_nonzero']} images where a dropped channel was not zero.", "",
                  "| | before | after |", "| --- | --- | --- |",
                  f"| combined accuracy | {pct(c['combined_accuracy'][0])} | {pct(c['combined_accuracy'][1])} |",
                  f"| local-only accuracy | {pct(c['local_accuracy'][0])} | {pct(c['local_accuracy'][1])} |",
                  f"| remote-only accuracy | {pct(c['remote_accuracy'][0])} | {pct(c['remote_accuracy'][1])} |"]
        for coder, (b, a) in c["bytes_mean"].items():
            lines.append(f"| {coder} payload bytes (mean, all channels) | {b:.2f} | "
                         f"{'—' if a is None else f'{a:.2f}'} |")
        lines.append("")
    if cost_before and cost_after:
        fmt = lambda v: "—" if v is None else f"{v:,}"  # noqa: E731
        lines += ["| device cost (generated C library) | before | after |", "| --- | --- | --- |"]
        for key in ("macs", "params", "weight_bytes", "flash_bytes", "arena_bytes"):
            lines.append(f"| {key} | {fmt(cost_before.get(key))} | {fmt(cost_after.get(key))} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _replace_section(text: str, section: str) -> str:
    """Replace (or insert before the int8 section, else append) this tool's section of report.md."""
    text = re.sub(rf"\n*{re.escape(REPORT_SECTION)}\n.*?(?=\n## |\n<!-- |\Z)", "", text, flags=re.DOTALL).rstrip("\n")
    marker = "\n<!-- int8-device:begin -->"
    if marker in text:
        head, tail = text.split(marker, 1)
        return head.rstrip("\n") + "\n\n" + section + marker + tail + "\n"
    return (text + "\n\n" if text else "") + section


def _rewrite_rows(text: str, metrics: dict) -> str:
    """The training report's deployed-path rows and its channel table, with the pruned bundle's numbers."""
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    rows = {
        "| combined (AgileNN) accuracy |": f"| combined (AgileNN) accuracy | {pct(metrics['combined_accuracy'])} |",
        "| local-only accuracy |": f"| local-only accuracy | {pct(metrics['local_accuracy'])} |",
        "| remote-only accuracy |": f"| remote-only accuracy | {pct(metrics['remote_accuracy'])} |",
        "| ANS bytes / inference": f"| ANS bytes / inference (mean, p95) | {metrics['ans_bytes_mean']:.1f}, "
                                   f"{metrics['ans_bytes_p95']:.0f} |",
        "| zstd bytes / inference |": f"| zstd bytes / inference | {metrics['zstd_bytes_mean']:.1f} |",
        "| raw bytes / inference |": f"| raw bytes / inference | {metrics['raw_bytes_mean']:.1f} |",
        "| order-0 entropy of the body |": f"| order-0 entropy of the body | "
                                          f"{metrics['order0_entropy_body_bytes_mean']:.1f} B (+13 B header) |",
    }
    ctx = metrics.get("rans_ctx")
    if ctx is not None:
        rows["| rans / rans-ctx"] = (f"| rans / rans-ctx (context-adaptive) bytes / inference | "
                                     f"{ctx.get('rans_bytes_mean', metrics['rans_bytes_mean']):.1f} / {ctx['bytes_mean']:.1f} "
                                     f"({ctx['numerics']} device part, {ctx['samples']:,} test images; "
                                     "`python -m agilenn.training.context_tables`) |")
    out, in_table, in_head = [], False, True
    for line in text.split("\n"):
        in_head = in_head and not line.startswith("## ")  # the rows live in the first table only
        if in_table:
            if line.startswith("|"):
                continue
            in_table = False
        if line.startswith("| channels sent | ANS bytes |"):
            out += [line, "| --- | --- | --- | --- |"]
            out += [f"| {c['channels_sent']} | {c['ans_bytes_mean']:.1f} | {pct(c['combined_accuracy'])} | "
                    f"{pct(c['remote_accuracy'])} |" for c in metrics["accuracy_vs_remote_channels"]]
            in_table = True
            continue
        hit = next((new for prefix, new in rows.items() if in_head and line.startswith(prefix)), None)
        out.append(hit if hit is not None else line)
    return "\n".join(out)


def deployed_metrics(bundle, images: np.ndarray, labels: np.ndarray) -> dict:
    """training/report.py's deployed-path metrics (float device part, the bundle's alpha), without torch:
    the ones that depend on the remote channels."""
    from agilenn.codec import order0_entropy_bits
    from .merge_calibration import remote_logits
    from .report import channel_points

    codec = bundle.codec()
    local, idx = device_outputs(bundle, images, "float")
    remote = _float_session(bundle, "remote")
    alpha = np.float32(bundle.alpha)
    acc = lambda lg: float((lg.argmax(1) == labels).mean())  # noqa: E731
    r = bundle.remote_channels
    n = len(labels)
    sizes = {coder: np.array([len(codec.encode_indices(idx[j], coder)) for j in range(n)])
             for coder in CODERS if coder in codec.available_coders}
    curve = []
    for m in channel_points(r):
        rl = remote_logits(bundle, remote, idx, m)
        if m == r:
            full = rl
        ans = float(sizes["ans"].mean()) if m == r else \
            float(np.mean([len(codec.encode_indices(idx[j], "ans", m)) for j in range(n)]))
        curve.append({"channels_sent": m, "combined_accuracy": acc(alpha * local + (np.float32(1) - alpha) * rl),
                      "remote_accuracy": acc(rl), "ans_bytes_mean": ans})
    merged = alpha * local + (np.float32(1) - alpha) * full
    return {
        "combined_accuracy": acc(merged), "local_accuracy": acc(local), "remote_accuracy": acc(full),
        "ans_bytes_mean": float(sizes["ans"].mean()), "ans_bytes_p95": float(np.percentile(sizes["ans"], 95)),
        **{f"{c.replace('-', '_')}_bytes_mean": float(s.mean()) for c, s in sizes.items() if c != "ans"},
        "order0_entropy_body_bytes_mean": float(order0_entropy_bits(idx.reshape(n, r, -1), codec.levels) / 8 / n),
        "accuracy_vs_remote_channels": curve,
    }


def update_report(bundle_dir: Path, manifest: dict, metrics_update: dict, section: str) -> None:
    """report.md (rows, channel table, this tool's section), report.json, and the two plots drawn
    from the rewritten metrics (skewness.png describes the training-time extractor: kept)."""
    md, js = bundle_dir / "report.md", bundle_dir / "report.json"
    if md.is_file():
        from .report import plot_bytes, plot_channel_curve

        metrics = manifest["metrics"]
        if (bundle_dir / "accuracy_vs_channels.png").is_file():
            plot_channel_curve(bundle_dir, metrics)
        if (bundle_dir / "bytes.png").is_file() and all(f"{k}_bytes_mean" in metrics for k in ("png", "jpeg")):
            plot_bytes(bundle_dir, metrics)
        md.write_text(_replace_section(_rewrite_rows(md.read_text(encoding="utf-8"), manifest["metrics"]), section),
                      encoding="utf-8")
    if js.is_file():
        doc = json.loads(js.read_text())
        doc.setdefault("metrics", {}).update(metrics_update)
        doc["pruned"] = manifest["pruned"]
        if "device_cost" in manifest:
            doc["device_cost"] = manifest["device_cost"]
        js.write_text(json.dumps(doc, indent=1) + "\n")


# --- the whole step -----------------------------------------------------------------------------
def int8_kept_identical(old, new, keep_remote: list[int]) -> bool:
    """Whether the re-quantized integer part is the old one minus the dropped output channels of the
    extractor's last layer (every other integer, the split scales and thresholds the same)."""
    k = old.k
    keep = np.asarray(list(range(k)) + [k + i for i in keep_remote])
    old_layers, new_layers = old.layers(), new.layers()
    last = len(old.extractor) - 1
    if len(old_layers) != len(new_layers):
        return False
    for i, (a, b) in enumerate(zip(old_layers, new_layers)):
        sel = keep if i == last else slice(None)
        for name in ("weights", "bias", "multiplier", "rshift"):
            if not np.array_equal(np.asarray(getattr(a, name))[sel], np.asarray(getattr(b, name))):
                return False
        if (a.zp_in, a.zp_out, a.act_min, a.act_max) != (b.zp_in, b.zp_out, b.act_min, b.act_max):
            return False
    return (old.local_scale, old.remote_scale, old.logit_scale) == (new.local_scale, new.remote_scale, new.logit_scale) \
        and np.array_equal(old.thresholds, new.thresholds)


def _calibration_images(manifest: dict, train):
    """The integer part's original calibration set: the first ``images`` of the training split's
    fixed random order (bundle_int8.add_int8_device's default, and the trainer's)."""
    n = int(manifest["int8_device"]["calibration"]["images"])
    return train.subset(n, seed=0).images, manifest["int8_device"]["calibration"].get("dataset")


def prune_dead_channels(bundle_dir, train=None, test=None, refit: bool = True, command: str = "") -> dict:
    """Find and drop the dead remote channels of the bundle in ``bundle_dir`` (rewritten in place,
    only after every step succeeded on a copy). ``train`` / ``test``: agilenn.datasets.Dataset
    (default: the bundle's dataset's splits). Returns the manifest's new ``pruned`` section.
    NothingToPrune when no remote channel is dead."""
    from agilenn.models import load_bundle, write_manifest
    from agilenn.training.datasets import load_dataset

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    dataset = bundle.manifest.get("dataset", "")
    train = load_dataset(dataset, "train") if train is None else train
    test = load_dataset(dataset, "test") if test is None else test
    split = f"{train.name} {train.split}"

    found = find_dead_channels(bundle, train.images)
    dead = found["dead"]
    log.info("dead remote channels on %d %s images: %s (per numerics %s)", len(train), split, dead, found["per_numerics"])
    if not dead:
        raise NothingToPrune(f"{bundle_dir}: no dead remote channel: each of the {bundle.remote_channels} remote "
                             f"channels sends a non-zero centroid on at least one of the {len(train):,} images of "
                             f"{split} (per numerics: {found['per_numerics']}); nothing to drop")
    if len(dead) == bundle.remote_channels:
        raise PruneError(f"{bundle_dir}: every remote channel is dead on {split}; dropping them all leaves no remote "
                         "part (retrain instead)")
    before = deployed_results(bundle, test.images, test.labels)
    cost_before = bundle.manifest.get("device_cost")
    evidence = {"split": split, "images": len(train), "zero_index": found["zero_index"],
                "per_numerics": found["per_numerics"], "remote_dropped": dead}
    k, r = bundle.k, bundle.remote_channels
    keep_remote = [i for i in range(r) if i not in set(dead)]

    with tempfile.TemporaryDirectory(prefix="agilenn-prune-") as tmp:
        work = Path(tmp) / bundle_dir.name
        shutil.copytree(bundle_dir, work)
        prune_device_onnx(bundle_dir / bundle.manifest["files"]["device"], work / bundle.manifest["files"]["device"],
                          list(range(k)) + [k + i for i in keep_remote], k)
        prune_remote_onnx(bundle_dir / bundle.manifest["files"]["remote"], work / bundle.manifest["files"]["remote"],
                          keep_remote, bundle.feature_hw)
        manifest = pruned_manifest(bundle.manifest, dead, evidence, command)
        int8_file = bundle.manifest["files"].get("int8_device")
        if int8_file:
            (work / int8_file).unlink()
        write_manifest(work, manifest)
        if bundle.has_int8_device:
            from agilenn.firmware.bundle_int8 import add_int8_device

            calib, label = _calibration_images(bundle.manifest, train)
            add_int8_device(work, calib, test.images, test.labels, calibration_label=label)
        if refit:
            if bundle.manifest.get("coder", {}).get("context") is not None:
                from .context_tables import add_context_tables

                add_context_tables(work, train.images, test.images)
            if bundle.manifest.get("merge") is not None:
                from .merge_calibration import add_merge_calibration

                add_merge_calibration(work, (train.images, train.labels), (test.images, test.labels))
        if bundle.has_int8_device:  # the coder tables are part of the library's flash: measure it last
            from agilenn.firmware.bundle_int8 import refresh_device_cost

            refresh_device_cost(work)
        pruned = load_bundle(work)
        after = deployed_results(pruned, test.images, test.labels)
        manifest = json.loads((work / "manifest.json").read_text())
        manifest["pruned"]["check"] = compare(before, after, dead, found["zero_index"], f"{test.name} {test.split}")
        if bundle.has_int8_device:
            same = int8_kept_identical(bundle.int8_device(), pruned.int8_device(), keep_remote)
            manifest["pruned"]["check"]["int8_kept_integers_identical"] = same
            if not same:
                log.warning("the re-quantized integer part differs from the original beyond the dropped channels "
                            "(a different calibration set?); pruned.check has the effect on the test split")
        metrics_update = deployed_metrics(pruned, test.images, test.labels)
        manifest["metrics"] = {**manifest.get("metrics", {}), **metrics_update}
        write_manifest(work, manifest)
        update_report(work, manifest, metrics_update,
                      report_section(manifest["pruned"], cost_before, manifest.get("device_cost")))
        load_bundle(work)  # the result must validate before it replaces anything
        # Swap in: every file of the pruned copy, then drop the old integer file if it was renamed.
        for f in work.iterdir():
            shutil.copy2(f, bundle_dir / f.name)
    log.info("pruned %s: dropped remote channels %s; %s", bundle_dir, dead, json.dumps(manifest["pruned"]["check"]))
    return manifest["pruned"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory (rewritten in place)")
    parser.add_argument("--dataset", help="data set whose train/test splits to use (default: the manifest's)")
    parser.add_argument("--data-dir", help="where the data set lives (default: its standard place)")
    parser.add_argument("--no-refit", action="store_true",
                        help="leave the rans-ctx tables and the merge calibration provisional (refit them yourself)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from agilenn.models import BundleError, load_bundle
    from agilenn.training.datasets import load_dataset

    try:
        dataset = args.dataset or load_bundle(args.bundle).manifest.get("dataset", "")
        train, test = (load_dataset(dataset, s, args.data_dir) for s in ("train", "test"))
        command = "python -m agilenn.training.prune_channels " + " ".join(argv if argv is not None else sys.argv[1:])
        pruned = prune_dead_channels(args.bundle, train, test, refit=not args.no_refit, command=command)
    except NothingToPrune as exc:
        print(f"prune_channels: refused: {exc}", file=sys.stderr)
        return EXIT_NOTHING_TO_PRUNE
    except (PruneError, BundleError) as exc:
        print(f"prune_channels: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(pruned, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
