"""Post-training int8 quantization of a bundle's device part (device.onnx), numpy + onnx only.

The CMSIS-NN / TensorFlow Lite Micro scheme (Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018; the TFLite int8 spec):
int8 weights with one symmetric scale per output channel, int8 activations with a per-tensor scale
and zero point calibrated (min/max) on training images, int32 biases and accumulators, and a
fixed-point multiplier + shift per output channel for requantization. The formulas the integers
obey are in agilenn.firmware.int8.

Device-part specifics:
- The input normalisation (x = (pixel * scale - mean_c) / std_c) is folded in: 1/std_c goes into the
  first conv's weights (input channel c), the mean becomes the input zero point
  zp_c = rint(mean_c / scale) - 128 of q = pixel - 128 (the mean rounded to the nearest pixel level,
  ties to even).
  One zero point (grayscale): the mean is rounded everywhere, an error below 0.5 pixel levels
  (0.5 * scale / std after normalisation; Fashion-MNIST's mean is 0.07 levels from its zp).
  Per channel when the means differ (RGB): the first layer subtracts zp_c from channel c, and the
  rest of the mean, r_c = mean_c / scale - (zp_c + 128) pixel levels, goes into its bias
  (b - scale * sum w' * r_c), so the inside of the image is normalised exactly; a padding tap adds
  nothing and so stands for the pixel value zp_c + 128, the float model's zero padding (pixel
  mean_c / scale) rounded to a pixel level: the only rounding of the normalisation. On a CIFAR-10
  bundle that changes 0.2 % of the float device part's combined predictions, rounding the mean
  everywhere 1.5 % (docs/firmware.md). Single-zero-point models keep the first rule so that
  existing bundles quantize to the same integers.
- The extractor's last layer feeds two consumers with different needs, so its output channels get
  two scales (the per-channel multiplier makes that free): the k local channels a scale calibrated
  for the local predictor, the remote channels one that spends all 255 steps below the top centroid
  midpoint (every value above it is the top index anyway), which makes the integer thresholds of the
  centroid quantizer nearly exact.
- The local logits leave as int16 with a calibrated scale (see agilenn_device.h for why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .int8 import Int8DeviceModel, Int8ModelError, Layer, _patches

RELU6_MAX = 6.0


@dataclass
class FloatLayer:
    """A conv or dense layer of the device graph with BatchNorm folded in, weights OHWI / [O, I]."""

    name: str
    op: str
    w: np.ndarray
    b: np.ndarray
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    groups: int = 1
    act: str | None = None  # "relu6", "relu" or None
    flatten_chw: tuple | None = None  # dense after Flatten of an NCHW tensor: its (C, H, W)

    def run(self, x: np.ndarray) -> np.ndarray:
        """float64 HWC forward (zero padding in the real domain)."""
        if self.op == "dense":
            y = x.reshape(x.shape[0], -1) @ self.w.T + self.b
        else:
            o, kh, kw, ig = self.w.shape
            p = _patches(x, kh, kw, self.stride, self.pads)
            if self.groups == 1:
                y = p.reshape(*p.shape[:3], -1) @ self.w.reshape(o, -1).T + self.b
            else:
                y = np.einsum("nhwijc,cij->nhwc", p, self.w[..., 0], optimize=True) + self.b
        if self.act == "relu6":
            y = np.clip(y, 0.0, RELU6_MAX)
        elif self.act == "relu":
            y = np.maximum(y, 0.0)
        return y


@dataclass
class FloatDevicePart:
    extractor: list
    k: int
    local: list
    input_chw: tuple
    notes: list = field(default_factory=list)


# --- reading device.onnx --------------------------------------------------------------------------
def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def read_device_onnx(path, input_chw: tuple) -> FloatDevicePart:
    """Walk device.onnx: image -> (Conv [BN] [Clip|Relu])* -> two channel Slices; the local one ->
    (Conv [BN] [Clip|Relu])* -> Flatten -> Gemm -> local_logits. Anything else is an error that names
    the node: the generator supports this family of graphs (agilenn-train's), not arbitrary ONNX."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    consts = {}
    for node in g.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"]).astype(np.float64)
    values = {**init, **consts}
    # The ONNX exporter stores equal parameter tensors once and feeds the other users through
    # Identity nodes (seen when two convs' folded biases come out identical): follow them.
    weight_aliases = set()  # output names (protobuf wrappers have no stable identity)
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
            weight_aliases.add(node.output[0])
    consumers: dict = {}
    for node in g.node:
        if node.op_type == "Constant" or (node.op_type == "Identity" and node.output[0] in weight_aliases):
            continue
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name):
        users = consumers.get(name, [])
        if len(users) != 1:
            raise Int8ModelError(f"{path}: tensor {name!r} feeds {len(users)} nodes where the device graph has one")
        return users[0]

    def conv_chain(tensor, prefix, chw):
        """Conv(+BN)(+act) layers from ``tensor`` on; returns (layers, last tensor, its CHW)."""
        layers = []
        while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type == "Conv":
            node = consumers[tensor][0]
            a = _attrs(node)
            w = values[node.input[1]]
            b = values[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
            if a.get("dilations", [1, 1]) != [1, 1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise Int8ModelError(f"{path}: Conv {node.name!r}: dilation/auto_pad are not supported")
            out = node.output[0]
            nxt = consumers.get(out, [])
            if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization":  # fold BN (export may not have)
                bn = nxt[0]
                gamma, beta, mean, var = (values[n] for n in bn.input[1:5])
                eps = _attrs(bn).get("epsilon", 1e-5)
                s = gamma / np.sqrt(var + eps)
                w = w * s[:, None, None, None]
                b = (b - mean) * s + beta
                out = bn.output[0]
                nxt = consumers.get(out, [])
            act = None
            if len(nxt) == 1 and nxt[0].op_type == "Clip":
                lo, hi = (values[n] if n else None for n in (list(nxt[0].input) + ["", ""])[1:3])
                if lo is None or float(lo) != 0.0 or hi is None or float(hi) != RELU6_MAX:
                    raise Int8ModelError(f"{path}: Clip {nxt[0].name!r}: only ReLU6 (0, 6) is supported")
                act, out = "relu6", nxt[0].output[0]
            elif len(nxt) == 1 and nxt[0].op_type == "Relu":
                act, out = "relu", nxt[0].output[0]
            kh, kw = w.shape[2:]
            pads = tuple(a.get("pads", [0, 0, 0, 0]))
            stride = tuple(a.get("strides", [1, 1]))
            groups = int(a.get("group", 1))
            layer = FloatLayer(f"{prefix}{len(layers)}", "conv", np.ascontiguousarray(w.transpose(0, 2, 3, 1)), b,
                               stride, (pads[0], pads[1], pads[2], pads[3]), groups, act)
            c, h, wd = chw
            chw = (w.shape[0], (h + pads[0] + pads[2] - kh) // stride[0] + 1, (wd + pads[1] + pads[3] - kw) // stride[1] + 1)
            layers.append(layer)
            tensor = out
        return layers, tensor, chw

    image = g.input[0].name
    extractor, feat, feat_chw = conv_chain(image, "extractor", input_chw)
    if not extractor:
        raise Int8ModelError(f"{path}: the device graph does not start with a Conv on {image!r}")
    slices = consumers.get(feat, [])
    if len(slices) != 2 or any(s.op_type != "Slice" for s in slices):
        raise Int8ModelError(f"{path}: the extractor output {feat!r} must feed two channel Slices (local, remote)")
    spans = []
    for s in slices:
        starts, ends, axes = (int(values[n][0]) for n in s.input[1:4])
        if axes != 1:
            raise Int8ModelError(f"{path}: Slice {s.name!r} must cut channels (axis 1)")
        spans.append((starts, min(ends, feat_chw[0]), s))
    spans.sort(key=lambda t: t[0])
    (l0, k, local_slice), (r0, r1, remote_slice) = spans
    if l0 != 0 or r0 != k or r1 != feat_chw[0]:
        raise Int8ModelError(f"{path}: Slices must cut channels [0, k) and [k, C), got {spans[0][:2]} {spans[1][:2]}")
    local, t, chw = conv_chain(local_slice.output[0], "local", (k, *feat_chw[1:]))
    node = only_consumer(t)
    if node.op_type not in ("Flatten", "Reshape"):
        raise Int8ModelError(f"{path}: the local predictor must end in Flatten -> Gemm, found {node.op_type}")
    gemm = only_consumer(node.output[0])
    if gemm.op_type != "Gemm":
        raise Int8ModelError(f"{path}: the local predictor must end in Flatten -> Gemm, found {gemm.op_type}")
    a = _attrs(gemm)
    w = values[gemm.input[1]] * a.get("alpha", 1.0)
    if not a.get("transB", 0):
        w = w.T
    b = values[gemm.input[2]] * a.get("beta", 1.0) if len(gemm.input) > 2 else np.zeros(w.shape[0])
    # ONNX flattens NCHW as (c, y, x); our tensors are HWC, so reorder the columns to (y, x, c).
    c, h, wd = chw
    w_hwc = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    local.append(FloatLayer(f"local{len(local)}", "dense", np.ascontiguousarray(w_hwc), b, flatten_chw=chw))
    return FloatDevicePart(extractor, k, local, tuple(input_chw))


# --- calibration and quantization -----------------------------------------------------------------
def quantize_multiplier(m: float) -> tuple[int, int]:
    """real m > 0 -> (M, n) with M in [2^30, 2^31), n in [1, 62], M * 2^-n ~= m (round to nearest)."""
    if not m > 0 or not math.isfinite(m):
        raise Int8ModelError(f"requantization multiplier {m!r} must be positive and finite")
    frac, exp = math.frexp(m)  # m = frac * 2^exp, frac in [0.5, 1)
    mult = int(round(frac * (1 << 31)))
    if mult == 1 << 31:
        mult //= 2
        exp += 1
    n = 31 - exp
    if n > 62:  # so small a multiplier maps everything to the zero point; keep n in range
        return 1 << 30, 62
    if n < 1:
        raise Int8ModelError(f"requantization multiplier {m:g} >= 2^30 cannot be represented")
    return mult, n


def _act_range(y: np.ndarray, act: str | None) -> tuple[float, float]:
    lo, hi = float(y.min()), float(y.max())
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # real 0 must be exact (padding, ReLU)
    if act in ("relu6", "relu"):
        lo = 0.0
    if act == "relu6":
        hi = min(hi, RELU6_MAX)
    return lo, max(hi, 1e-6)


def _scale_zp(lo: float, hi: float) -> tuple[float, int]:
    s = (hi - lo) / 255.0
    zp = int(round(-128 - lo / s))
    return s, int(np.clip(zp, -128, 127))


BIAS_UNITS_MAX = (1 << 30) - 2  # |int32 bias| stays below 2^30, so bias + taps * 255 * 127 stays below 2^31


def _quantize_layer(f: FloatLayer, s_in: float, zp_in, s_out: np.ndarray, zp_out: int,
                    out_bits: int = 8) -> Layer:
    o = f.w.shape[0]
    wmax = np.abs(f.w.reshape(o, -1)).max(axis=1)
    s_w = np.where(wmax > 0, wmax / 127.0, 1.0)
    # A channel weight decay has all but killed (weights ~1e-20, bias ~1e-11: CIFAR-10 version 4's
    # 300-epoch reference left such channels in the 1x1 expansion) would need a bias of ~1e13
    # accumulator units at wmax/127. Its weight scale is raised until the bias fits in 2^30 - 2 units:
    # its weights then round to 0 and it outputs its bias, which is what the float channel does.
    # Channels whose bias already fits keep wmax/127, so nothing else changes.
    s_w = np.maximum(s_w, np.abs(f.b) / (s_in * BIAS_UNITS_MAX))
    wq = np.clip(np.rint(f.w / s_w.reshape((o,) + (1,) * (f.w.ndim - 1))), -127, 127).astype(np.int8)
    acc_scale = s_in * s_w
    zps = np.atleast_1d(np.asarray(zp_in, np.int64))
    zp_channels = zps if zps.size > 1 and len(set(zps.tolist())) > 1 else None
    bias = np.rint(f.b / acc_scale).astype(np.int64)
    mult, shift = zip(*(quantize_multiplier(float(acc_scale[i] / s_out[i])) for i in range(o)))
    qmin, qmax = (-128, 127) if out_bits == 8 else (-(1 << 15), (1 << 15) - 1)
    if f.act in ("relu6", "relu"):
        act_min = zp_out
        act_max = qmax if f.act == "relu" else int(min(qmax, zp_out + np.floor(RELU6_MAX / s_out.min() + 0.5)))
    else:
        act_min, act_max = qmin, qmax
    # The accumulator bound: |x - zp_in| <= 255, |w| <= 127, K taps, plus the bias, all below 2^31.
    taps = int(np.prod(f.w.shape[1:]))
    bound = taps * 255 * 127 + int(np.abs(bias).max(initial=0))
    if bound >= 1 << 31 or np.abs(bias).max(initial=0) >= 1 << 30:
        raise Int8ModelError(f"layer {f.name}: accumulator bound {bound} reaches 2^31")
    return Layer(name=f.name, op=f.op, weights=wq, bias=bias.astype(np.int32),
                 multiplier=np.asarray(mult, np.int64), rshift=np.asarray(shift, np.int64),
                 zp_in=int(zps[0]), zp_out=int(zp_out), act_min=int(act_min), act_max=int(act_max),
                 stride=f.stride, pads=f.pads, groups=f.groups, out_scale=float(s_out[0]),
                 zp_in_channels=zp_channels)


def quantize_device(bundle, calibration_images: np.ndarray, dataset: str = "") -> Int8DeviceModel:
    """Quantize ``bundle``'s device.onnx with uint8 NHWC calibration images (training images)."""
    spec = bundle.manifest["input"]
    c_in, h, w = bundle.input_shape
    part = read_device_onnx(bundle.onnx_path("device"), (c_in, h, w))
    if part.k != bundle.k:
        raise Int8ModelError(f"{bundle.path}: device.onnx splits at k={part.k}, the manifest says {bundle.k}")
    scale = float(spec["scale"])
    mean = np.asarray(spec["mean"], np.float64)
    std = np.asarray(spec["std"], np.float64)
    if mean.shape == (1,) and c_in > 1:
        mean, std = np.repeat(mean, c_in), np.repeat(std, c_in)
    if mean.shape != (c_in,) or std.shape != (c_in,):
        raise Int8ModelError(f"{bundle.path}: input.mean/std must list {c_in} values, got {mean.tolist()} {std.tolist()}")
    # The mean of channel c rounded to a pixel level (np.rint: nearest, ties to even) is the pixel
    # value that stands for real 0 in that channel: zp_c on q = pixel - 128.
    level = mean / scale
    if np.any(level < 0) or np.any(level > 255):
        raise Int8ModelError(f"{bundle.path}: input.mean {mean.tolist()} / scale {scale} must lie in [0, 255]")
    input_zp = np.rint(level).astype(np.int64) - 128
    # Fold 1/std into the first layer: it then sees u = pixel * scale - mean_c ~= scale * (q - zp_c).
    first = part.extractor[0]
    if first.groups != 1 and c_in > 1:
        raise Int8ModelError("a depthwise first layer with several input channels is not supported")
    first.w = first.w / std.reshape(1, 1, 1, -1)
    if len(set(input_zp.tolist())) > 1:
        # u = scale * (q - zp_c) - scale * r_c exactly: the constant term of every inside tap goes into
        # the bias; padding taps (which carry no term) then stand for the rounded mean, not the mean.
        resid = level - (input_zp + 128)
        first.b = first.b - scale * np.einsum("ohwc,c->o", first.w, resid)

    x = np.asarray(calibration_images)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8 or x.shape[1:] != (h, w, c_in):
        raise Int8ModelError(f"calibration images must be uint8 [N, {h}, {w}, {c_in}], got {x.dtype} {list(x.shape)}")
    # What the quantized input represents: the rounded means, i.e. the integer grid the C code sees.
    t = scale * (x.astype(np.float64) - 128 - input_zp)  # input_zp broadcasts over the channel axis

    s_in, zp_in = scale, input_zp
    extractor = []
    for i, f in enumerate(part.extractor):
        y = f.run(t)
        last = i == len(part.extractor) - 1
        if not last:
            lo, hi = _act_range(y, f.act)
            s_out, zp_out = _scale_zp(lo, hi)
            extractor.append(_quantize_layer(f, s_in, zp_in, np.full(f.w.shape[0], s_out), zp_out))
            s_in, zp_in = s_out, zp_out
        else:
            if f.act not in ("relu6", "relu"):
                raise Int8ModelError("the extractor's last layer must end in ReLU/ReLU6 (features >= 0)")
            k = part.k
            _, hi_local = _act_range(y[..., :k], f.act)
            _, hi_remote = _act_range(y[..., k:], f.act)
            centroids = np.asarray(bundle.manifest["quantizer"]["centroids"], np.float64)
            mids = (centroids[:-1] + centroids[1:]) / 2
            # every remote value above the top midpoint codes as the top index: stop the range just past it
            hi_remote = min(hi_remote, mids[-1] * 256.0 / 254.0) if hi_remote > mids[-1] else hi_remote
            s_local, s_remote = hi_local / 255.0, hi_remote / 255.0
            s_out = np.where(np.arange(f.w.shape[0]) < k, s_local, s_remote)
            layer = _quantize_layer(f, s_in, zp_in, s_out, -128)
            layer.act_max = 127  # ReLU6 above 6 never matters for these ranges (both end below 6)
            extractor.append(layer)
            # floor first, then the integer offset: floor(a - 128) in float64 loses a's last bits
            # when a sits within an ulp of an integer (hypothesis found one)
            thresholds = np.floor(mids / s_remote).astype(np.int64) - 128
            thresholds = np.clip(thresholds, -129, 127)  # -129: everything is above; 127: nothing is
        t = y
    feat = t
    s_in, zp_in = s_local, -128
    t = feat[..., :k]
    local = []
    for i, f in enumerate(part.local):
        y = f.run(t)
        if f.op == "dense":
            amax = max(float(np.abs(y).max()), 1e-6) * 1.5  # headroom: logits of unseen images run larger
            s_logit = amax / 32767.0
            local.append(_quantize_layer(f, s_in, zp_in, np.full(f.w.shape[0], s_logit), 0, out_bits=16))
        else:
            lo, hi = _act_range(y, f.act)
            s_out, zp_out = _scale_zp(lo, hi)
            local.append(_quantize_layer(f, s_in, zp_in, np.full(f.w.shape[0], s_out), zp_out))
            s_in, zp_in = s_out, zp_out
        t = y
    if local[-1].op != "dense":
        raise Int8ModelError("the local predictor must end in a dense layer")
    return Int8DeviceModel(
        input_hwc=(h, w, c_in), input_zp=tuple(int(z) for z in input_zp), input_scale=scale, extractor=extractor, k=k,
        local_scale=s_local, remote_scale=s_remote, thresholds=thresholds, local=local, logit_scale=s_logit,
        calibration={"images": int(x.shape[0]), "dataset": dataset, "method": "min/max per tensor",
                     "source": "device.onnx"},
    )
