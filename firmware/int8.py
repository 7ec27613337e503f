"""The integer device part: its data (the bundle's device_int8.json) and the numpy reference executor.

Everything here is exact integer arithmetic, the same the generated C library does, so the agent,
the C library and the server agree on every byte (docs/firmware.md has the formulas).

Tensors are int8, HWC (channels last), per-tensor scale s and zero point zp: real = s * (q - zp).
Weights are int8 with one scale per output channel, zero point 0, range [-127, 127]. Biases are
int32 in the accumulator's scale s_in * s_w[o]. Per layer and output channel o:

    acc[o] = bias[o] + sum over taps and input channels of w * (x - zp_in)     (int32, exact)
    y[o]   = clamp(zp_out + rshift_round(acc[o] * M[o], n[o]), act_min, act_max)

with M[o] in [2^30, 2^31) and n[o] in [1, 62] chosen so that M * 2^-n ~= s_in * s_w[o] / s_out[o],
and ONE rounding mode everywhere:

    rshift_round(v, n) = floor((v + 2^(n-1)) / 2^n)      round half up (towards +infinity)

computed on int64 (|acc| < 2^31 and M < 2^31, so acc * M + 2^(n-1) < 2^63). Padding taps contribute
nothing (they stand for x = zp_in, i.e. real 0). ReLU6 is the clamp: act_min = zp_out (real 0),
act_max = min(127, zp_out + round(6 / s_out)).

The input (q = pixel - 128, int8 HWC) may have one zero point per channel (RGB data normalised with
per-channel means): then the first layer has zp_in_channels[c] = rint(mean[c] / scale) - 128 and
subtracts zp_in_channels[c] from channel c, and a padding tap of channel c still contributes nothing:
it stands for the pixel value rint(mean[c] / scale), the float model's zero padding (pixel value
mean[c] / scale) rounded to a pixel level; the rest of the mean is in the bias (quantize.py). Only a
first conv / conv1x1 layer may carry zp_in_channels; files that use it are format_version 2
(version 1 files are written unchanged where every channel has the same zero point).

The centroid quantizer works on the int8 remote features: index = #{i : q > T[i]} with the integer
thresholds T[i] = floor(mid[i] / s_r + zp_r), mid[i] the midpoints between neighbouring centroids;
for integer q that is exactly "real value > midpoint", the float quantizer's rule (ties go lower).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "agilenn-int8-device"
FORMAT_VERSION = 2  # the newest this module reads and writes; 2 adds per-channel input zero points
PER_TENSOR_FORMAT_VERSION = 1  # what a file without per-channel zero points is still written as
ROUNDING = "round-half-up: floor((acc*M + 2^(n-1)) / 2^n), int64"


class Int8ModelError(ValueError):
    """An integer device model that cannot be used; the message names the field."""


@dataclass
class Layer:
    """One conv (any group count) or dense layer. Weights: conv [O, KH, KW, I/groups] (OHWI),
    dense [O, I] with I in the HWC order of the flattened input."""

    name: str
    op: str  # "conv" or "dense"
    weights: np.ndarray  # int8
    bias: np.ndarray  # int32 [O]
    multiplier: np.ndarray  # int64 [O], in [2^30, 2^31)
    rshift: np.ndarray  # int64 [O], in [1, 62]
    zp_in: int
    zp_out: int
    act_min: int
    act_max: int
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    out_scale: float = 0.0  # informative: the real scale of the output (first channel's for split tensors)
    # Per-input-channel zero points [I] (the first layer of an RGB model), or None: zp_in for every
    # channel. When set, zp_in is zp_in_channels[0] (informative).
    zp_in_channels: np.ndarray | None = None

    @property
    def zp_subtracted(self):
        """What accumulate() subtracts from the input: the int zp_in, or the [I] per-channel array."""
        return self.zp_in if self.zp_in_channels is None else np.asarray(self.zp_in_channels, np.int64)

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[0])

    @property
    def kind(self) -> str:
        """Which C kernel runs it: conv, dwconv, conv1x1 or dense."""
        if self.op == "dense":
            return "dense"
        o, kh, kw, ig = self.weights.shape
        if self.groups > 1:
            if ig != 1 or self.groups != o:
                raise Int8ModelError(f"layer {self.name}: only depthwise grouped convs are supported")
            return "dwconv"
        if kh == kw == 1 and self.stride == (1, 1) and not any(self.pads):
            return "conv1x1"
        return "conv"

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.op == "dense":
            return 1, 1
        _, kh, kw, _ = self.weights.shape
        t, l, b, r = self.pads
        return (h + t + b - kh) // self.stride[0] + 1, (w + l + r - kw) // self.stride[1] + 1

    def to_json(self) -> dict:
        d = {"name": self.name, "op": self.op, "shape": list(self.weights.shape),
             "weights": self.weights.reshape(-1).astype(int).tolist(), "bias": self.bias.astype(int).tolist(),
             "multiplier": self.multiplier.astype(int).tolist(), "rshift": self.rshift.astype(int).tolist(),
             "zp_in": int(self.zp_in), "zp_out": int(self.zp_out),
             "act_min": int(self.act_min), "act_max": int(self.act_max), "out_scale": float(self.out_scale)}
        if self.op == "conv":
            d.update(stride=list(self.stride), pads=list(self.pads), groups=int(self.groups))
        if self.zp_in_channels is not None:
            d["zp_in_channels"] = [int(z) for z in self.zp_in_channels]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Layer":
        where = f"layer {d.get('name')!r}"
        try:
            shape = tuple(int(s) for s in d["shape"])
            w = np.asarray(d["weights"], np.int64)
            if w.size != int(np.prod(shape)) or w.min(initial=0) < -127 or w.max(initial=0) > 127:
                raise Int8ModelError(f"{where}: weights must be {shape} values in [-127, 127]")
            o = shape[0]
            arrays = {k: np.asarray(d[k], np.int64) for k in ("bias", "multiplier", "rshift")}
            for k, a in arrays.items():
                if a.shape != (o,):
                    raise Int8ModelError(f"{where}: {k} must list {o} values")
            if np.any(arrays["multiplier"] < 1 << 30) or np.any(arrays["multiplier"] >= 1 << 31):
                raise Int8ModelError(f"{where}: multiplier must lie in [2^30, 2^31)")
            if np.any(arrays["rshift"] < 1) or np.any(arrays["rshift"] > 62):
                raise Int8ModelError(f"{where}: rshift must lie in [1, 62]")
            if np.any(np.abs(arrays["bias"]) >= 1 << 30):
                raise Int8ModelError(f"{where}: |bias| must stay below 2^30")
            layer = cls(name=str(d["name"]), op=str(d["op"]), weights=w.reshape(shape).astype(np.int8),
                        bias=arrays["bias"].astype(np.int32), multiplier=arrays["multiplier"],
                        rshift=arrays["rshift"], zp_in=int(d["zp_in"]), zp_out=int(d["zp_out"]),
                        act_min=int(d["act_min"]), act_max=int(d["act_max"]), out_scale=float(d.get("out_scale", 0)))
            if layer.op == "conv":
                layer.stride = tuple(int(s) for s in d["stride"])
                layer.pads = tuple(int(p) for p in d["pads"])
                layer.groups = int(d["groups"])
                if len(shape) != 4:
                    raise Int8ModelError(f"{where}: conv weights must be [O, KH, KW, I/groups]")
            elif layer.op == "dense":
                if len(shape) != 2:
                    raise Int8ModelError(f"{where}: dense weights must be [O, I]")
            else:
                raise Int8ModelError(f"{where}: unknown op {layer.op!r}")
            layer.kind  # noqa: B018 - validates the group structure
            if "zp_in_channels" in d:
                z = np.asarray(d["zp_in_channels"], np.int64)
                if layer.kind not in ("conv", "conv1x1") or z.shape != (shape[-1],):
                    raise Int8ModelError(f"{where}: zp_in_channels needs a conv (groups 1) layer and one value per "
                                         f"input channel ({shape[-1]})")
                if z.min() < -128 or z.max() > 127:
                    raise Int8ModelError(f"{where}: zp_in_channels must lie in [-128, 127]")
                layer.zp_in_channels = z
            return layer
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, Int8ModelError):
                raise
            raise Int8ModelError(f"{where}: {exc.__class__.__name__}: {exc}") from None


@dataclass
class Int8DeviceModel:
    """image (uint8 HWC) -> extractor -> [local | remote] -> local predictor -> int16 logits,
    remote -> centroid indices."""

    input_hwc: tuple  # (H, W, C)
    input_zp: tuple  # per channel: the first layer computes (pixel - 128) - input_zp[c]
    input_scale: float
    extractor: list  # [Layer]; the last one's output is the feature tensor [h, w, C]
    k: int
    local_scale: float
    remote_scale: float
    thresholds: np.ndarray  # int [L-1], ascending
    local: list  # [Layer]; the last one is the dense layer with int16 output
    logit_scale: float
    calibration: dict

    # --- shapes -----------------------------------------------------------------------------
    def tensor_shapes(self) -> list:
        """(name, (h, w, c)) of every activation tensor in execution order, input first."""
        h, w, c = self.input_hwc
        shapes = [("input", (h, w, c))]
        for layer in self.extractor:
            h, w = layer.out_hw(h, w)
            shapes.append((layer.name, (h, w, layer.out_channels)))
        fh, fw = h, w
        shapes.append(("local_in", (fh, fw, self.k)))
        for layer in self.local:
            h, w = layer.out_hw(h, w) if layer.op != "dense" else (1, 1)
            shapes.append((layer.name, (h, w, layer.out_channels)))
        return shapes

    @property
    def feature_hwc(self) -> tuple:
        h, w, _ = self.input_hwc
        for layer in self.extractor:
            h, w = layer.out_hw(h, w)
        return h, w, self.extractor[-1].out_channels

    @property
    def num_classes(self) -> int:
        return self.local[-1].out_channels

    @property
    def levels(self) -> int:
        return int(self.thresholds.size) + 1

    def layers(self) -> list:
        return [*self.extractor, *self.local]

    @property
    def per_channel_input(self) -> bool:
        """The input channels have different zero points (the first layer has zp_in_channels)."""
        return len(set(int(z) for z in self.input_zp)) > 1

    @property
    def format_version(self) -> int:
        return FORMAT_VERSION if self.per_channel_input else PER_TENSOR_FORMAT_VERSION

    # --- JSON -------------------------------------------------------------------------------
    def to_json(self) -> dict:
        inp = {"height": self.input_hwc[0], "width": self.input_hwc[1], "channels": self.input_hwc[2]}
        if self.per_channel_input:
            inp.update(zero_points=[int(z) for z in self.input_zp], scale=float(self.input_scale),
                       note="q = pixel - 128; real input u = pixel * scale - mean[c] = scale * (q - zero_points[c]) "
                            "with the mean rounded to a pixel level, 1/std folded into the first layer")
        else:
            inp.update(zero_point=int(self.input_zp[0]), scale=float(self.input_scale),
                       note="q = pixel - 128; real normalized input = scale * (q - zero_point) per channel")
        return {
            "format": FORMAT, "format_version": self.format_version, "rounding": ROUNDING,
            "layout": "activations int8 HWC; conv weights OHWI int8; dense weights [O, I] with I in HWC order",
            "input": inp,
            "extractor": [layer.to_json() for layer in self.extractor],
            "split": {"k": int(self.k), "local_scale": float(self.local_scale), "remote_scale": float(self.remote_scale),
                      "zero_point": int(self.extractor[-1].zp_out)},
            "quantizer": {"thresholds": [int(t) for t in self.thresholds]},
            "local": [layer.to_json() for layer in self.local],
            "logits": {"dtype": "int16", "scale": float(self.logit_scale), "zero_point": 0},
            "calibration": self.calibration,
        }

    @classmethod
    def from_json(cls, d: dict, where: str = "int8 device model") -> "Int8DeviceModel":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise Int8ModelError(f"{where}: 'format' must be {FORMAT!r}")
        version = d.get("format_version")
        if version not in (PER_TENSOR_FORMAT_VERSION, FORMAT_VERSION):
            raise Int8ModelError(f"{where}: unknown format_version {version!r} (reads 1 and {FORMAT_VERSION})")
        try:
            inp = d["input"]
            channels = int(inp["channels"])
            if version >= 2 and "zero_points" in inp:
                zps = tuple(int(z) for z in inp["zero_points"])
            else:
                zps = (int(inp["zero_point"]),) * channels
            model = cls(
                input_hwc=(int(inp["height"]), int(inp["width"]), channels),
                input_zp=zps, input_scale=float(inp["scale"]),
                extractor=[Layer.from_json(x) for x in d["extractor"]],
                k=int(d["split"]["k"]), local_scale=float(d["split"]["local_scale"]),
                remote_scale=float(d["split"]["remote_scale"]),
                thresholds=np.asarray(d["quantizer"]["thresholds"], np.int64),
                local=[Layer.from_json(x) for x in d["local"]],
                logit_scale=float(d["logits"]["scale"]), calibration=dict(d.get("calibration", {})),
            )
        except (KeyError, TypeError) as exc:
            raise Int8ModelError(f"{where}: missing or bad field {exc}") from None
        t = model.thresholds
        if t.ndim != 1 or t.size < 1 or np.any(np.diff(t) < 0) or t.min() < -129 or t.max() > 127:
            raise Int8ModelError(f"{where}: 'quantizer.thresholds' must be ascending integers in [-129, 127]")
        if not model.extractor or not model.local or model.local[-1].op != "dense":
            raise Int8ModelError(f"{where}: needs extractor layers and a local predictor ending in a dense layer")
        if not 0 < model.k < model.extractor[-1].out_channels:
            raise Int8ModelError(f"{where}: 'split.k' must be in 1..channels-1")
        first = model.extractor[0]
        if len(model.input_zp) != model.input_hwc[2] or any(not -128 <= z <= 127 for z in model.input_zp):
            raise Int8ModelError(f"{where}: 'input.zero_points' must list one value in [-128, 127] per channel")
        first_zps = (tuple(int(z) for z in first.zp_in_channels) if first.zp_in_channels is not None
                     else (first.zp_in,) * model.input_hwc[2])
        if first_zps != model.input_zp:
            raise Int8ModelError(f"{where}: the first layer's input zero points {list(first_zps)} disagree with "
                                 f"'input' {list(model.input_zp)}")
        if any(layer.zp_in_channels is not None for layer in model.layers()[1:]):
            raise Int8ModelError(f"{where}: only the first layer may have zp_in_channels")
        if version < 2 and model.per_channel_input:
            raise Int8ModelError(f"{where}: per-channel input zero points need format_version 2")
        return model

    def save(self, path) -> str:
        """Write the JSON; returns its sha256 (hex)."""
        text = json.dumps(self.to_json(), separators=(",", ":")) + "\n"
        Path(path).write_text(text, encoding="utf-8")
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path) -> "Int8DeviceModel":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise Int8ModelError(f"{path}: not readable JSON ({exc})") from None
        return cls.from_json(d, str(path))

    # --- execution --------------------------------------------------------------------------
    def run(self, images: np.ndarray) -> "Int8Output":
        """uint8 images [N, H, W, C] (or [N, H, W]) -> int16 logits [N, classes] and uint8 centroid
        indices [N, C - k, h, w] (channel-major, as the payload carries them)."""
        x = np.asarray(images)
        h, w, c = self.input_hwc
        if x.ndim == 3 and c == 1:
            x = x[..., None]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, c):
            raise ValueError(f"images must be uint8 [N, {h}, {w}, {c}] (NHWC), got {x.dtype} {list(x.shape)}")
        t = x.astype(np.int64) - 128
        for layer in self.extractor:
            t = run_layer(layer, t)
        features = t
        indices = centroid_indices(features[..., self.k:], self.thresholds)
        t = features[..., : self.k]
        for layer in self.local:
            t = run_layer(layer, t)
        return Int8Output(logits=t.astype(np.int16), indices=indices.transpose(0, 3, 1, 2).copy(),
                          features=features.astype(np.int8))

    def dequantize_logits(self, logits: np.ndarray) -> np.ndarray:
        return (np.asarray(logits, np.float32) * np.float32(self.logit_scale)).astype(np.float32)


@dataclass
class Int8Output:
    logits: np.ndarray  # int16 [N, classes]
    indices: np.ndarray  # uint8 [N, C - k, h, w]
    features: np.ndarray  # int8 [N, h, w, C], the extractor's output (test vectors)


# --- the integer operations (the C kernels do exactly this) --------------------------------------
def rshift_round(v: np.ndarray, n: np.ndarray) -> np.ndarray:
    """floor((v + 2^(n-1)) / 2^n) on int64: round half up. numpy's >> on int64 is arithmetic (floor)."""
    v = np.asarray(v, np.int64)
    n = np.asarray(n, np.int64)
    return (v + (np.int64(1) << (n - 1))) >> n


def requantize(acc: np.ndarray, layer: Layer) -> np.ndarray:
    """acc int64 [..., O] -> clamp(zp_out + rshift_round(acc * M, n), act_min, act_max)."""
    y = rshift_round(acc * layer.multiplier, layer.rshift) + layer.zp_out
    return np.clip(y, layer.act_min, layer.act_max)


def _patches(x: np.ndarray, kh: int, kw: int, stride: tuple, pads: tuple) -> np.ndarray:
    """x [N, H, W, C] (already x - zp, so zero padding is exact) -> [N, OH, OW, KH, KW, C]."""
    t, l, b, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    n, hp, wp, c = xp.shape
    oh, ow = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
    out = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, :, i, j, :] = xp[:, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1], :]
    return out


def accumulate(layer: Layer, x: np.ndarray) -> np.ndarray:
    """int32 accumulators of one layer, as int64 [N, OH, OW, O] (dense: [N, O]).

    The sums run in float64 so numpy can use BLAS: every product and partial sum is an integer below
    2^31 (checked at quantization: K * 255 * 127 + |bias| < 2^31), far inside float64's exact range
    of 2^53, so the result is the exact integer the C code computes."""
    # per-channel zero points broadcast over the last (channel) axis of the HWC input; padding comes
    # after the subtraction, so a padding tap of channel c stands for x = zp_in_channels[c] (real 0)
    xs = (np.asarray(x, np.int64) - layer.zp_subtracted).astype(np.float64)
    w = layer.weights.astype(np.float64)
    if layer.op == "dense":
        acc = xs.reshape(xs.shape[0], -1) @ w.T
    else:
        o, kh, kw, ig = w.shape
        p = _patches(xs, kh, kw, layer.stride, layer.pads)
        if layer.groups == 1:
            acc = p.reshape(*p.shape[:3], -1) @ w.reshape(o, -1).T
        else:  # depthwise: channel c is filtered by w[c]
            acc = np.einsum("nhwijc,cij->nhwc", p, w[..., 0], optimize=True)
    return np.rint(acc).astype(np.int64) + layer.bias.astype(np.int64)


def run_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    return requantize(accumulate(layer, x), layer)


def centroid_indices(q: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """index = #{i : q > T[i]} for int8 remote features q."""
    q = np.asarray(q, np.int64)
    idx = np.zeros(q.shape, np.uint8)
    for t in np.asarray(thresholds, np.int64):
        idx += (q > t).astype(np.uint8)
    return idx
