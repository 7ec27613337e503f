"""agilenn-firmware generate: the self-contained C99 device library of one bundle.

    out/
      agilenn_device.h      the public header (API, sizes, model identity)
      agn_model.h, agn_model.c   generated: the layer table, the const weight tables, the arena plan
      agn_device.c, agn_kernels.*, agn_payload.*, agn_config.h, agn_common.*   static sources
      agn_rans.h, agn_rans_core.h + agn_rans.c or agn_rans_ctx.*   the bundle's default coder: rans-ctx (coder id 4) when
                            the manifest's coder.default is rans-ctx and it has coder.context, else
                            rans (coder id 3); only that coder's tables and code are linked
      agn_frame.*           the serial framing (static sources)
      device_cost.json      MACs, parameters, flash and arena of this library (agilenn.firmware.plan)

The static sources live in agilenn/firmware/csrc; @NAME@ placeholders in them are filled here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import GENERATOR_VERSION
from .int8 import Int8DeviceModel, Int8ModelError
from .plan import device_cost, make_plan

CSRC = Path(__file__).parent / "csrc"
INT8_FILE = "device_int8.json"
# Static sources copied into every library; the coder's and the framing's join when present.
STATIC_SOURCES = ["agn_common.h", "agn_common.c", "agn_config.h", "agn_kernels.h", "agn_kernels.c",
                  "agn_infer.c", "agn_payload.h", "agn_payload.c", "agn_device.c"]
# Per payload coder: its sources (agn_rans_ctx.c shares agn_rans_core.h's inline steps, not agn_rans.c's code)
# and its payload coder id (docs/protocol.md).
CODER_SOURCES = {"rans": ["agn_rans.h", "agn_rans_core.h", "agn_rans.c"],
                 "rans-ctx": ["agn_rans.h", "agn_rans_core.h", "agn_rans_ctx.h", "agn_rans_ctx.c"]}
CODER_IDS = {"rans": 3, "rans-ctx": 4}
FRAME_SOURCES = ["agn_frame.h", "agn_frame.c"]
KIND = {"conv": "AGN_KIND_CONV", "dwconv": "AGN_KIND_DWCONV", "conv1x1": "AGN_KIND_CONV1X1", "dense": "AGN_KIND_DENSE"}


def version_num(version: str = GENERATOR_VERSION) -> int:
    major, minor, patch = (int(x) for x in version.split("."))
    return major * 10000 + minor * 100 + patch


@dataclass
class Generated:
    out: Path
    sources: list  # the .c files to compile
    cost: dict
    model: Int8DeviceModel


def load_int8(bundle) -> Int8DeviceModel:
    name = bundle.manifest.get("files", {}).get("int8_device", INT8_FILE)
    path = Path(bundle.path) / name
    if not path.is_file():
        raise Int8ModelError(f"{bundle.path}: no integer device part ({name}); run "
                             f"`agilenn-firmware quantize --bundle {bundle.path}` first")
    return Int8DeviceModel.load(path)


def _c_array(ctype: str, name: str, values, per_line: int = 24, suffix: str = "") -> str:
    vals = [f"{int(v)}{suffix}" for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    {body}\n}};\n"


def _coder_tables(bundle, channels: int, levels: int):
    """(precision, frequencies int [channels, levels]) of the rans coder from the manifest, or None."""
    coder = bundle.manifest.get("coder", {})
    if coder.get("frequencies") is None or coder.get("frequency_bits") is None:
        return None
    freq = np.asarray(coder["frequencies"], dtype=np.int64)
    precision = int(coder["frequency_bits"])
    if freq.shape != (channels, levels):
        raise Int8ModelError(f"manifest coder.frequencies is {list(freq.shape)}, expected [{channels}, {levels}]")
    return precision, freq


def payload_coder(bundle) -> str:
    """The coder the generated library sends: the bundle's default when C has it (rans-ctx needs
    coder.context), else rans, the order-0 coder every bundle with rans tables has."""
    coder = bundle.manifest.get("coder", {})
    if coder.get("default") == "rans-ctx" and coder.get("context") is not None:
        return "rans-ctx"
    return "rans"


def _context_model(bundle, channels: int, height: int, width: int, levels: int):
    """The manifest's coder.context, validated as the Python codec validates it."""
    from agilenn.codec.rans_ctx import ContextModel

    try:
        return ContextModel(bundle.manifest["coder"]["context"], channels, height, width, levels)
    except ValueError as exc:
        raise Int8ModelError(f"{bundle.path}: manifest {exc}") from exc


def render(text: str, values: dict) -> str:
    """Fill the @NAME@ placeholders of a template; a placeholder left unfilled is a generator bug."""
    import re

    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = sorted(set(re.findall(r"@[A-Z][A-Z0-9_]*@", text)))
    if left:
        raise RuntimeError(f"template placeholders left unfilled: {left}")
    return text


def generate(bundle_dir, out_dir) -> Generated:
    from agilenn.codec.payload import VERSION_COMPACT, header_size, model_check
    from agilenn.models import load_bundle

    bundle = load_bundle(bundle_dir)
    model = load_int8(bundle)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_hash = hashlib.sha256((Path(bundle.path) / "manifest.json").read_bytes()).hexdigest()
    fh, fw, fc = model.feature_hwc
    remote = fc - model.k
    if (remote, fh, fw) != bundle.remote_feature_shape:
        raise Int8ModelError(f"{bundle.path}: the integer model's remote features {[remote, fh, fw]} "
                             f"disagree with the manifest's {list(bundle.remote_feature_shape)}")
    coder = payload_coder(bundle)
    coder_sources = CODER_SOURCES[coder]
    have_frame = all((CSRC / f).is_file() for f in FRAME_SOURCES)
    if coder == "rans-ctx":
        coder_tables = _context_model(bundle, remote, fh, fw, model.levels)
        coder_table_bytes = coder_tables.flash_bytes()["total"]
    else:
        tables = _coder_tables(bundle, remote, model.levels)
        if tables is None:
            raise Int8ModelError(f"{bundle.path}: the C library needs the rans coder's tables (manifest "
                                 f"coder.frequencies and coder.frequency_bits) or coder.context")
        coder_tables = tables
        # one agn_rans_symbol (uint32 + 2 x uint16 + uint8, padded) per entry
        coder_table_bytes = int(tables[1].size) * 12
    count = remote * fh * fw
    from agilenn.codec.rans import max_body_bytes

    payload_header = header_size(remote, VERSION_COMPACT)  # what agn_payload.c writes
    payload_max = payload_header + max_body_bytes(count)
    plan = make_plan(model)
    logit_scale = f"{model.logit_scale:.9e}f"
    values = {
        "GENERATOR_VERSION": GENERATOR_VERSION, "GENERATOR_VERSION_NUM": version_num(),
        "MODEL_NAME": bundle.name, "MODEL_VERSION": bundle.version, "MODEL_HASH": manifest_hash,
        "MODEL_HASH32": f"0x{manifest_hash[:8]}u",
        "IMAGE_HEIGHT": model.input_hwc[0], "IMAGE_WIDTH": model.input_hwc[1], "IMAGE_CHANNELS": model.input_hwc[2],
        "NUM_CLASSES": model.num_classes, "LOGIT_SCALE": logit_scale, "REMOTE_CHANNELS": remote,
        "PAYLOAD_MAX_BYTES": payload_max, "PAYLOAD_HEADER_BYTES": payload_header, "ARENA_BYTES": plan.arena_bytes,
        "PAYLOAD_MODEL_CHECK": f"0x{model_check(model.levels, remote, fh, fw):02X}u",
        "CODER_ID": CODER_IDS[coder], "CODER_NAME": coder,
    }
    (out / "agilenn_device.h").write_text(render((CSRC / "agilenn_device.h.in").read_text(), values))
    for name in STATIC_SOURCES + coder_sources + (FRAME_SOURCES if have_frame else []):
        text = (CSRC / name).read_text()
        (out / name).write_text(render(text, values) if "@" in text else text)
    (out / "agn_model.h").write_text(_model_h(bundle, model, plan, values, coder, coder_tables))
    (out / "agn_model.c").write_text(_model_c(bundle, model, plan, values, coder, coder_tables))
    code = None
    cost = device_cost(model, code_bytes=code, coder_table_bytes=coder_table_bytes)
    sources = sorted(p.name for p in out.glob("*.c"))
    sizes = arm_size(out, sources)
    if sizes is not None:
        cost["code_bytes"] = max(0, sizes["text"] + sizes["data"] - cost["weight_bytes"])
        cost["flash_bytes"] = sizes["text"] + sizes["data"]
        cost["arm_size"] = sizes
    cost["generator_version"] = GENERATOR_VERSION
    cost["model"] = {"name": bundle.name, "version": bundle.version, "manifest_sha256": manifest_hash}
    cost["payload_max_bytes"] = payload_max
    cost["coder"] = {"name": coder, "id": CODER_IDS[coder], "table_bytes": coder_table_bytes}
    (out / "device_cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    return Generated(out, sources, cost, model)


ARM_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-O2", "-std=c99", "-ffunction-sections", "-fdata-sections"]


def arm_size(out: Path, sources: list, exclude=("agn_frame.c",)) -> dict | None:
    """text/data/bss of the device library (without the serial framing, which firmware needs anyway)
    built for Cortex-M7 -O2; None when arm-none-eabi-gcc is not installed."""
    import subprocess
    import tempfile

    gcc, size = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")
    if gcc is None or size is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        objs = []
        for src in sources:
            if src in exclude:
                continue
            obj = Path(tmp) / (Path(src).stem + ".o")
            res = subprocess.run([gcc, *ARM_FLAGS, "-c", str(out / src), "-o", str(obj)], capture_output=True,
                                 text=True)
            if res.returncode:
                raise RuntimeError(f"arm-none-eabi-gcc failed on {src}:\n{res.stderr}")
            objs.append(str(obj))
        res = subprocess.run([size, "-t", *objs], check=True, capture_output=True, text=True).stdout
    total = res.strip().splitlines()[-1].split()
    return {"text": int(total[0]), "data": int(total[1]), "bss": int(total[2]), "flags": " ".join(ARM_FLAGS)}


def _header_comment(bundle, values, what: str) -> str:
    return (f"/* {what}\n * Generated by agilenn-firmware {values['GENERATOR_VERSION']} for {values['MODEL_NAME']} "
            f"version {values['MODEL_VERSION']}\n * (manifest sha256 {values['MODEL_HASH']}). Do not edit. */\n")


def _model_h(bundle, model, plan, values, coder, tables) -> str:
    fh, fw, fc = model.feature_hwc
    sizes = {name: b.size for name, b in plan.buffers.items()}
    offs = {
        "INPUT": "input", "FEATURES": model.extractor[-1].name, "INDICES": "indices", "LOCAL_IN": "local_in",
        "LOGITS": model.local[-1].name, "SCRATCH": "scratch",
    }
    lines = [_header_comment(bundle, values, "agn_model.h: the model's layer table, tables and arena plan (internal)."),
             "#ifndef AGN_MODEL_H\n#define AGN_MODEL_H\n",
             '#include "agilenn_device.h"\n#include "agn_kernels.h"\n'
             + ('#include "agn_rans_ctx.h"\n' if coder == "rans-ctx" else '#include "agn_rans.h"\n'),
             f"#if AGN_API_VERSION_MAJOR != 1 || AGN_GENERATOR_VERSION_NUM != {values['GENERATOR_VERSION_NUM']} "
             f"|| AGN_MODEL_HASH32 != {values['MODEL_HASH32']}",
             '#error "agn_model.h was generated for another bundle or generator than agilenn_device.h: generate again"',
             "#endif\n",
             "enum { AGN_KIND_CONV = 0, AGN_KIND_DWCONV = 1, AGN_KIND_CONV1X1 = 2, AGN_KIND_DENSE = 3 };\n",
             "/* One layer: its kernel, parameters, shapes and where its input and output sit in the arena. */",
             "typedef struct agn_layer {\n    uint8_t kind;\n    agn_conv_params p;\n    agn_dims in_dims, out_dims;\n"
             "    uint32_t in_offset, out_offset;\n} agn_layer;\n",
             f"#define AGN_MODEL_LAYERS {len(model.layers())}",
             f"#define AGN_EXTRACTOR_LAYERS {len(model.extractor)}",
             f"#define AGN_SPLIT_K {model.k}       /* feature channels [0, k) stay local, [k, C) are sent */",
             f"#define AGN_FEATURE_HEIGHT {fh}\n#define AGN_FEATURE_WIDTH {fw}\n#define AGN_FEATURE_CHANNELS {fc}",
             f"#define AGN_LEVELS {model.levels}   /* centroids of the quantizer */",
             f"#define AGN_PAYLOAD_CODER_ID {values['CODER_ID']}   /* {coder}: the coder agn_payload.c sends */",
             f"#define AGN_PAYLOAD_MODEL_CHECK {values['PAYLOAD_MODEL_CHECK']}   /* payload byte 1 (agn_payload.h) */",
             f"#define AGN_RANS_PRECISION {precision_of(coder, tables)}   /* its frequency rows sum to 2^precision */",
             "",
             "/* The arena plan (bytes): each buffer lives from the step that writes it to the last that reads it;",
             " * buffers alive at the same time never overlap (checked below). */"]
    for key, name in offs.items():
        lines.append(f"#define AGN_OFF_{key} {plan.offset(name)}u   /* {name}: {sizes[name]} B */")
    for name, b in plan.buffers.items():
        lines.append(f"#define AGN_BUF_{_ident(name)}_OFF {b.offset}u")
        lines.append(f"#define AGN_BUF_{_ident(name)}_SIZE {b.size}u")
    for name, b in plan.buffers.items():
        lines.append(f"AGN_STATIC_ASSERT(AGN_BUF_{_ident(name)}_OFF + AGN_BUF_{_ident(name)}_SIZE <= AGN_ARENA_BYTES, "
                     f"arena_holds_{_ident(name).lower()});")
    for a, b in plan.overlapping_live_pairs():
        ia, ib = _ident(a.name), _ident(b.name)
        lines.append(f"AGN_STATIC_ASSERT(AGN_BUF_{ia}_OFF + AGN_BUF_{ia}_SIZE <= AGN_BUF_{ib}_OFF || "
                     f"AGN_BUF_{ib}_OFF + AGN_BUF_{ib}_SIZE <= AGN_BUF_{ia}_OFF, live_{ia.lower()}_{ib.lower()}_apart);")
    lines.append("AGN_STATIC_ASSERT(AGN_ARENA_BYTES % AGN_ARENA_ALIGN == 0, arena_size_aligned);\n")
    lines += ["extern const agn_layer agn_model_layers[AGN_MODEL_LAYERS];",
              "/* the centroid quantizer: index_of[q + 128] = #{i : q > thresholds[i]} for int8 q */",
              "extern const uint8_t agn_model_centroid_index[256];",
              "/* agn_infer.c: steps 1-4 of agn_device_run (logits at AGN_OFF_LOGITS, indices at AGN_OFF_INDICES),",
              " * and its halves: steps 1-3 (indices, and the local predictor's input), then step 4 */",
              "void agn_device_infer(const uint8_t *image, uint8_t *arena);",
              "void agn_device_infer_features(const uint8_t *image, uint8_t *arena);",
              "void agn_device_infer_local(uint8_t *arena);",
              *(["/* the rans-ctx coder's model (manifest coder.context): frequency rows prepared as",
                  " * agn_rans_prepare() would (reciprocals), bins and row map, all const: in flash */",
                  "extern const agn_rans_ctx_model agn_model_rans_ctx;"] if coder == "rans-ctx" else
                ["/* the rans coder's tables (manifest coder.frequencies), one per remote channel, prepared as",
                 " * agn_rans_prepare() would (reciprocals), but const: in flash, no start-up work */",
                 "extern const agn_rans_model agn_model_rans;"]),
              "\n#endif /* AGN_MODEL_H */\n"]
    return "\n".join(lines)


def precision_of(coder: str, tables) -> int:
    return tables.frequency_bits if coder == "rans-ctx" else tables[0]


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).upper()


def _model_c(bundle, model, plan, values, coder, tables) -> str:
    shapes = dict(model.tensor_shapes())
    parts = [_header_comment(bundle, values, "agn_model.c: the model's const tables (flash)."),
             '#include "agn_model.h"\n',
             f"#if AGN_MODEL_HASH32 != {values['MODEL_HASH32']} || AGN_GENERATOR_VERSION_NUM != {values['GENERATOR_VERSION_NUM']}",
             '#error "agn_model.c belongs to another bundle or generator version than agilenn_device.h"',
             "#endif\n"]
    entries = []
    src = "input"
    for i, layer in enumerate(model.layers()):
        if i == len(model.extractor):
            src = "local_in"
        n = _ident(layer.name).lower()
        w = layer.weights
        parts.append(f"/* {layer.name}: {layer.kind}, weights {list(layer.weights.shape)} int8, out scale {layer.out_scale:.6g} */")
        if layer.kind in ("conv", "conv1x1"):  # int16 pairs as uint32, blocks of four rows interleaved
            parts.append(_c_array("uint32_t", f"agn_w_{n}", weight_pairs(w), 8, "u"))
            weights, pairs = "NULL", f"agn_w_{n}"
        else:
            w = depthwise_blocks(w[..., 0]) if layer.kind == "dwconv" else packed_rows(w)
            parts.append(_c_array("int8_t", f"agn_w_{n}", w))
            weights, pairs = f"agn_w_{n}", "NULL"
        bias, pad_in = c_bias_and_padding(layer)
        if pad_in is not None:
            parts.append("/* per-channel input zero points zp_c: the bias below is bias - sum w * (zp_c - zp_in) */")
        parts.append(_c_array("int32_t", f"agn_b_{n}", bias, 8))
        parts.append(_c_array("int32_t", f"agn_m_{n}", layer.multiplier, 8))
        parts.append(_c_array("uint8_t", f"agn_s_{n}", layer.rshift))
        pad_name = "NULL"
        if pad_in is not None and layer.kind == "conv":  # a 1x1 conv has no padding taps
            parts.append("/* pad_in[c] = zp_c - zp_in: what a padding tap of input channel c is as (x - zp_in) */")
            parts.append(_c_array("int16_t", f"agn_p_{n}", pad_in))
            pad_name = f"agn_p_{n}"
        ih, iw, ic = shapes[src]
        oh, ow, oc = shapes[layer.name]
        if layer.op == "dense":
            kh = kw = sh = sw = pt = pl = 1
            pt = pl = 0
        else:
            _, kh, kw, _ = layer.weights.shape
            sh, sw = layer.stride
            pt, pl = layer.pads[0], layer.pads[1]
        entries.append(
            f"    {{{KIND[layer.kind]},\n"
            f"     {{{weights}, {pairs}, agn_b_{n}, {{agn_m_{n}, agn_s_{n}}}, {pad_name}, {layer.zp_in}, {layer.zp_out}, {layer.act_min}, "
            f"{layer.act_max}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}}},\n"
            f"     {{1, {ih}, {iw}, {ic}}}, {{1, {oh}, {ow}, {oc}}}, AGN_BUF_{_ident(src)}_OFF, "
            f"AGN_BUF_{_ident(layer.name)}_OFF}}")  # the offsets the static asserts of agn_model.h check
        src = layer.name
    parts.append("const agn_layer agn_model_layers[AGN_MODEL_LAYERS] = {\n" + ",\n".join(entries) + "\n};\n")
    parts.append(f"/* centroid index of every int8 remote feature q: index_of[q + 128] = #{{i : q > thresholds[i]}},\n"
                 f" * thresholds {[int(t) for t in model.thresholds]} */")
    parts.append(_c_array("uint8_t", "agn_model_centroid_index", centroid_index_table(model.thresholds), 32)
                 .replace("static const", "const", 1))
    if coder == "rans-ctx":
        parts.append(_rans_ctx_tables(tables))
    else:
        parts.append(_rans_tables(tables[1], tables[0]))
    return "\n".join(parts)


def centroid_index_table(thresholds) -> np.ndarray:
    """index_of[q + 128] = #{i : q > thresholds[i]} for q in [-128, 127] (agn_centroid_index_s8)."""
    q = np.arange(-128, 128, dtype=np.int64)
    return (q[:, None] > np.asarray(thresholds, np.int64)[None, :]).sum(axis=1).astype(np.uint8)


def depthwise_blocks(weights: np.ndarray) -> np.ndarray:
    """Depthwise weights [c][kh][kw] as agn_dwconv_s8 reads them: the channels in blocks of four,
    each block [tap][4 channels] (the four channels of a tap adjacent, as in the HWC input), then
    the channels past the last full block as they are, [c][tap]. Flat."""
    w = np.asarray(weights).reshape(weights.shape[0], -1)  # [c][taps]
    blocked = w.shape[0] // 4 * 4
    head = w[:blocked].reshape(-1, 4, w.shape[1]).transpose(0, 2, 1).reshape(-1)
    return np.concatenate([head, w[blocked:].reshape(-1)])


def weight_pairs(weights: np.ndarray) -> np.ndarray:
    """The weights of a conv or pointwise conv layer as the C kernels read them (agn_kernels.c,
    dot_pairs() and dot4_pairs()): rows [c_out][n] (n = kh * kw * c_in, OHWI order) padded with zeros
    to a multiple of 4, each two neighbours one uint32 pair(w[2k], w[2k+1]) = (w[2k] & 0xFFFF) |
    w[2k+1] << 16 (the int16 pairs of SMLAD), each block of four rows interleaved (for each group of
    four inputs the four rows' two words), the rows after the last full block plain. Flat uint32."""
    rows = np.asarray(weights, np.int64).reshape(weights.shape[0], -1)
    out_ch, n = rows.shape
    rows = np.pad(rows, ((0, 0), (0, -n % 4)))
    words = (rows[:, 0::2] & 0xFFFF) | ((rows[:, 1::2] & 0xFFFF) << 16)  # [o][n4 / 2]
    groups = words.reshape(out_ch, -1, 2)  # [o][g][2 words]
    blocked = out_ch // 4 * 4
    head = groups[:blocked].reshape(-1, 4, groups.shape[1], 2).transpose(0, 2, 1, 3)  # [block][g][row][2]
    return np.concatenate([head.reshape(-1), groups[blocked:].reshape(-1)]).astype(np.uint64)


def packed_rows(weights: np.ndarray) -> np.ndarray:
    """The weights of a conv, pointwise conv or dense layer as the C kernels read them (agn_kernels.c,
    dot() and dot4()): rows [c_out][n] (n = kh * kw * c_in, OHWI order) padded with zeros to a
    multiple of 4; in each row every group of four stored as w[4g], w[4g+2], w[4g+1], w[4g+3]
    (SXTB16 then gives the int16 pairs that line up with the activations for SMLAD); each block of
    four rows interleaved (for each group the four rows' groups), the rows after the last full
    block plain. Flat."""
    rows = np.asarray(weights).reshape(weights.shape[0], -1)
    out_ch, n = rows.shape
    rows = np.pad(rows, ((0, 0), (0, -n % 4)))
    groups = rows.reshape(out_ch, -1, 4)[:, :, [0, 2, 1, 3]]  # [o][g][4]
    blocked = out_ch // 4 * 4
    head = groups[:blocked].reshape(-1, 4, groups.shape[1], 4).transpose(0, 2, 1, 3)  # [block][g][row][4]
    return np.concatenate([head.reshape(-1), groups[blocked:].reshape(-1)])


def c_bias_and_padding(layer) -> tuple:
    """(bias, pad_in) of one layer as the C kernels take them.

    Per-tensor zero point: (layer.bias, None). Per-channel input zero points zp_c (the first conv of
    an RGB model) go into the per-tensor kernel exactly (agn_kernels.h): with zp_in = zp_0,
        pad_in[c] = zp_c - zp_in                         int, |pad_in[c]| <= 255
        bias'[o]  = bias[o] - sum_{ky, kx, c} w[o, ky, kx, c] * pad_in[c]
    so that bias' + sum_inside w * (x - zp_in) + sum_padding w * pad_in[c] = bias + sum_inside
    w * (x - zp_c), the Python reference's accumulator. Every partial sum of that form stays below
    2 * taps * 255 * 127 + |bias|, which must be < 2^31 (checked here)."""
    if layer.zp_in_channels is None:
        return layer.bias, None
    if layer.kind not in ("conv", "conv1x1"):
        raise Int8ModelError(f"layer {layer.name}: per-channel input zero points need a conv (groups 1) layer")
    pad_in = np.asarray(layer.zp_in_channels, np.int64) - int(layer.zp_in)
    w = layer.weights.astype(np.int64)  # [O, KH, KW, I]
    bias = layer.bias.astype(np.int64) - (w * pad_in).reshape(w.shape[0], -1).sum(axis=1)
    taps = int(np.prod(w.shape[1:]))
    if 2 * taps * 255 * 127 + int(np.abs(layer.bias).max(initial=0)) >= 1 << 31:
        raise Int8ModelError(f"layer {layer.name}: {taps} taps with per-channel input zero points overflow int32")
    return bias, pad_in


def rans_symbol(f: int, start: int) -> tuple:
    """(rcp, freq, start, rcp_shift) of one table entry, as agn_rans_prepare() computes it:
    l = ceil(log2 f), rcp = floor(2^(31+l) / f), rcp_shift = 31 + l (agn_rans.h explains why)."""
    l = (int(f) - 1).bit_length()
    return (1 << (31 + l)) // int(f), int(f), int(start), 31 + l


def _symbol_rows(freq: np.ndarray) -> list:
    """The initializers of agn_rans_symbol[tables * levels], table-major."""
    rows = []
    for t, row in enumerate(np.asarray(freq, np.int64)):
        start = 0
        for s, f in enumerate(row.tolist()):
            rcp, fr, st, sh = rans_symbol(f, start)
            rows.append(f"    {{{rcp}u, {fr}u, {st}u, {sh}u}}")
            start += f
    return rows


def _rans_tables(freq: np.ndarray, precision: int) -> str:
    rows = _symbol_rows(freq)
    tables, levels = freq.shape
    return ("/* rans: symbols[t * levels + s] = {rcp, freq, start, rcp_shift} of symbol s in table t */\n"
            f"static const agn_rans_symbol agn_rans_symbols[{len(rows)}] = {{\n" + ",\n".join(rows) + "\n};\n"
            f"const agn_rans_model agn_model_rans = {{agn_rans_symbols, {tables}u, {levels}u, {precision}u}};\n")


def _rans_ctx_tables(context) -> str:
    """The const agn_rans_ctx_model of a validated ContextModel (agn_rans_ctx.h): its frequency rows
    prepared as agn_rans_prepare() would, the bins and the channel-major row map."""
    freq = np.asarray(context.frequencies, np.int64)
    rows = _symbol_rows(freq)
    num_rows, levels = freq.shape
    channels, height, width = context.shape
    codes = [f"AGN_CTX_{name.upper()}" for name in context.neighbours]  # left, up, prev: 0, 1, 2
    codes += ["0"] * (3 - len(codes))
    return ("/* rans-ctx frequency rows: symbols[t * levels + s] = {rcp, freq, start, rcp_shift} of symbol s in row t */\n"
            f"static const agn_rans_symbol agn_ctx_symbols[{len(rows)}] = {{\n" + ",\n".join(rows) + "\n};\n"
            f"static const agn_rans_model agn_ctx_rows = {{agn_ctx_symbols, {num_rows}u, {levels}u, "
            f"{context.frequency_bits}u}};\n"
            "/* bins[v]: the bin of neighbour value v (v = levels: outside the payload) */\n"
            + _c_array("uint8_t", "agn_ctx_bins", context.bins)
            + f"/* row_map[c * {context.contexts} + ctx]: the frequency row of context ctx in remote channel c */\n"
            + _c_array("uint8_t", "agn_ctx_row_map", context.row_map, 25)
            + f"/* neighbours {list(context.neighbours)}, most significant first */\n"
            f"const agn_rans_ctx_model agn_model_rans_ctx = {{&agn_ctx_rows, agn_ctx_bins, agn_ctx_row_map, "
            f"{{{', '.join(codes)}}}, {len(context.neighbours)}u, {context.num_bins}u, {channels}u, {height}u, "
            f"{width}u}};\n")
