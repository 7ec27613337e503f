"""The model bundle: the directory training writes and the agent and server read (no torch needed).

    <bundle>/manifest.json   what the model is and how to feed it (docs/bundle.md)
    <bundle>/device.onnx     image -> local_logits, remote_features   (extractor + local predictor)
    <bundle>/remote.onnx     remote_features -> remote_logits         (remote NN)
    <bundle>/reference.onnx  image -> logits                           (optional; edge-only baseline)
    <bundle>/extractor.onnx  image -> features; evaluator.onnx features -> logits  (optional; XAI audit)
    <bundle>/device_int8.json  the integer device part (optional, format_version 2; agilenn.firmware.int8)

load_bundle() validates everything it can without running a model, so a bad bundle fails at start-up
with a message naming the file and field, not at the first request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agilenn.codec import VERSION as PAYLOAD_VERSION
from agilenn.codec import FeatureCodec, validate_centroids
from agilenn.codec.coders import CODER_NAMES

FORMAT = "agilenn-bundle"
FORMAT_VERSION = 2  # 2 adds the optional integer device part ("int8_device", files.int8_device)
SUPPORTED_FORMAT_VERSIONS = (1, 2)
MANIFEST = "manifest.json"

# ONNX tensor names, part of the contract.
DEVICE_INPUT, DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES = "image", "local_logits", "remote_features"
REMOTE_INPUT, REMOTE_LOGITS = "remote_features", "remote_logits"
REFERENCE_INPUT, REFERENCE_LOGITS = "image", "logits"
EXTRACTOR_FEATURES = "features"  # extractor.onnx output = evaluator.onnx input (all C channels)


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle, the file and the field."""


@dataclass
class Bundle:
    path: Path
    manifest: dict
    manifest_text: str
    files: dict = field(default_factory=dict)  # role -> Path
    _int8: object = field(default=None, repr=False, compare=False)

    # --- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def version(self) -> str:
        return self.manifest["model"]["version"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    # --- shapes -----------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def channels(self) -> int:
        return int(self.manifest["features"]["channels"])

    @property
    def k(self) -> int:
        return int(self.manifest["features"]["k"])

    @property
    def remote_channels(self) -> int:
        return self.channels - self.k

    @property
    def feature_hw(self) -> tuple[int, int]:
        f = self.manifest["features"]
        return int(f["height"]), int(f["width"])

    @property
    def remote_feature_shape(self) -> tuple[int, int, int]:
        return (self.remote_channels, *self.feature_hw)

    @property
    def alpha(self) -> float:
        """Training's alpha: the merge weight of the full payload in bundles without ``merge``."""
        return float(self.manifest["alpha"])

    def alpha_for(self, channels_sent: int | None = None) -> float:
        """The merge weight for a payload carrying ``channels_sent`` remote channels (None: all of them):
        ``merge.alpha_by_channels[channels_sent]`` when the bundle is calibrated, else the single alpha."""
        r = self.remote_channels
        m = r if channels_sent is None else int(channels_sent)
        if not 0 <= m <= r:
            raise ValueError(f"channels_sent must be in 0..{r}, got {channels_sent}")
        by_count = self.manifest.get("merge", {}).get("alpha_by_channels")
        return self.alpha if by_count is None else float(by_count[m])

    @property
    def min_channels(self) -> int:
        """Break-even: fewer remote channels than this are worth less than local-only, so the agent sends
        nothing (``merge.min_channels``; 0, i.e. always send, for bundles without ``merge``)."""
        return int(self.manifest.get("merge", {}).get("min_channels", 0))

    def has(self, role: str) -> bool:
        return role in self.files

    @property
    def has_int8_device(self) -> bool:
        return "int8_device" in self.files

    def int8_device(self):
        """The integer device part (agilenn.firmware.int8.Int8DeviceModel); BundleError if absent."""
        if not self.has_int8_device:
            raise BundleError(f"bundle {self.path} has no integer device part (run agilenn-firmware quantize)")
        if self._int8 is None:
            from agilenn.firmware.int8 import Int8DeviceModel, Int8ModelError

            try:
                self._int8 = Int8DeviceModel.load(self.files["int8_device"])
            except Int8ModelError as exc:
                raise BundleError(str(exc)) from None
        return self._int8

    def onnx_path(self, role: str) -> Path:
        if role not in self.files:
            raise BundleError(f"bundle {self.path} has no {role} model")
        return self.files[role]

    # --- behaviour shared by both ends ------------------------------------------------------
    def codec(self, payload_version: int = PAYLOAD_VERSION) -> FeatureCodec:
        return FeatureCodec.from_manifest(self.manifest, payload_version)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [N, H, W, C] (or [N, H, W] for one channel) -> normalized float32 [N, C, H, W]."""
        x = np.asarray(images)
        c, h, w = self.input_shape
        if x.ndim == 3 and c == 1:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != (h, w, c):
            raise ValueError(f"images must be [N, {h}, {w}, {c}] (NHWC uint8), got {list(x.shape)}")
        spec = self.manifest["input"]
        mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, c, 1, 1)
        std = np.asarray(spec["std"], dtype=np.float32).reshape(1, c, 1, 1)
        nchw = x.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(spec["scale"])
        return ((nchw - mean) / std).astype(np.float32)

    def merge(self, local_logits: np.ndarray, remote_logits: np.ndarray,
              channels_sent: int | None = None) -> np.ndarray:
        """alpha * local + (1 - alpha) * remote in float32, with the alpha for ``channels_sent`` (alpha_for)."""
        a = np.float32(self.alpha_for(channels_sent))
        return a * np.asarray(local_logits, np.float32) + (np.float32(1) - a) * np.asarray(remote_logits, np.float32)


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise BundleError(f"{where}: {message}")


def validate_manifest(manifest: dict, where: str = MANIFEST) -> None:
    """Check every field the runtime relies on; raise BundleError naming the first bad one."""
    _require(isinstance(manifest, dict), where, "must be a JSON object")
    _require(manifest.get("format") == FORMAT, where, f"'format' must be {FORMAT!r}, got {manifest.get('format')!r}")
    version = manifest.get("format_version")
    _require(
        version in SUPPORTED_FORMAT_VERSIONS,
        where,
        f"unknown format_version {version!r} (this build reads {list(SUPPORTED_FORMAT_VERSIONS)})",
    )
    model = manifest.get("model")
    _require(isinstance(model, dict) and isinstance(model.get("name"), str) and model.get("name"), where,
             "'model.name' must be a non-empty string")
    _require(isinstance(model.get("version"), str) and model.get("version"), where,
             "'model.version' must be a non-empty string")

    spec = manifest.get("input")
    _require(isinstance(spec, dict), where, "'input' is missing")
    shape = spec.get("shape")
    _require(isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape),
             where, f"'input.shape' must be [C, H, W] of positive ints, got {shape!r}")
    c_in = shape[0]
    for key in ("mean", "std"):
        v = spec.get(key)
        _require(isinstance(v, list) and len(v) == c_in and all(isinstance(x, (int, float)) for x in v), where,
                 f"'input.{key}' must list {c_in} numbers, got {v!r}")
    _require(all(x > 0 for x in spec["std"]), where, "'input.std' must be positive")
    _require(isinstance(spec.get("scale"), (int, float)) and spec["scale"] > 0, where, "'input.scale' must be > 0")

    classes = manifest.get("classes")
    _require(isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes), where,
             "'classes' must list at least two class names")

    feats = manifest.get("features")
    _require(isinstance(feats, dict), where, "'features' is missing")
    for key in ("channels", "k", "height", "width"):
        _require(isinstance(feats.get(key), int) and feats[key] >= 0, where, f"'features.{key}' must be an int >= 0")
    _require(0 < feats["k"] < feats["channels"], where,
             f"'features.k' must be in 1..channels-1, got k={feats['k']} of {feats['channels']}")
    _require(feats["height"] > 0 and feats["width"] > 0, where, "'features.height/width' must be positive")

    try:
        validate_centroids(manifest.get("quantizer", {}).get("centroids"))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{where}: 'quantizer.centroids': {exc}") from None

    alpha = manifest.get("alpha")
    _require(isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0 and math.isfinite(alpha), where,
             f"'alpha' must be a number in [0, 1], got {alpha!r}")

    _validate_merge(manifest.get("merge"), feats["channels"] - feats["k"], where)
    _validate_pruned(manifest.get("pruned"), feats["channels"], feats["k"], where)

    coder = manifest.get("coder", {})
    _require(isinstance(coder, dict), where, "'coder' must be an object")
    _require(coder.get("default", "ans") in CODER_NAMES, where,
             f"'coder.default' must be one of {list(CODER_NAMES)}, got {coder.get('default')!r}")
    try:
        FeatureCodec.from_manifest(manifest)
    except (ValueError, TypeError, KeyError) as exc:
        field = ("'coder.context'" if "coder.context" in str(exc) else
                 "'coder.frequencies'" if "frequenc" in str(exc) else "'coder.symbol_probabilities'")
        raise BundleError(f"{where}: {field}: {exc}") from None
    if coder.get("default", "ans") == "ans":
        _require(coder.get("symbol_probabilities") is not None, where,
                 "'coder.symbol_probabilities' is required when the default coder is ans")
    if coder.get("default") == "rans":
        _require(coder.get("frequencies") is not None, where,
                 "'coder.frequencies' and 'coder.frequency_bits' are required when the default coder is rans")
    if coder.get("default") == "rans-ctx":
        _require(coder.get("context") is not None, where, "'coder.context' is required when the default coder is rans-ctx")

    files = manifest.get("files")
    _require(isinstance(files, dict) and "device" in files and "remote" in files, where,
             "'files' must name at least 'device' and 'remote' ONNX files")

    int8 = manifest.get("int8_device")
    _require(int8 is None or version >= 2, where, "'int8_device' needs format_version 2")
    _require((int8 is None) == ("int8_device" not in files), where,
             "'int8_device' and 'files.int8_device' come together (both or neither)")
    if int8 is not None:
        _require(isinstance(int8, dict) and int8.get("file") == files["int8_device"], where,
                 "'int8_device.file' must name the same file as 'files.int8_device'")
        logits = int8.get("logits")
        _require(isinstance(logits, dict) and isinstance(logits.get("scale"), (int, float)) and logits["scale"] > 0,
                 where, "'int8_device.logits.scale' must be a positive number")


def _validate_merge(merge, remote: int, where: str) -> None:
    """The optional budget-aware merge (training/merge_calibration.py): one alpha per count 0..R."""
    if merge is None:
        return
    _require(isinstance(merge, dict), where, f"'merge' must be an object, got {type(merge).__name__}")
    alphas = merge.get("alpha_by_channels")
    _require(isinstance(alphas, list) and len(alphas) == remote + 1, where,
             f"'merge.alpha_by_channels' must list {remote + 1} numbers (one per count of remote channels sent, "
             f"0..{remote}), got {alphas!r:.80}")
    for m, a in enumerate(alphas):
        _require(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and 0.0 <= a <= 1.0,
                 where, f"'merge.alpha_by_channels[{m}]' must be a number in [0, 1], got {a!r}")
    mc = merge.get("min_channels")
    _require(isinstance(mc, int) and not isinstance(mc, bool) and 0 <= mc <= remote + 1, where,
             f"'merge.min_channels' must be an int in 0..{remote + 1} ({remote + 1}: never send), got {mc!r}")


def _validate_pruned(pruned, channels: int, k: int, where: str) -> None:
    """The optional record of dropped dead remote channels (training/prune_channels.py)."""
    if pruned is None:
        return
    _require(isinstance(pruned, dict), where, f"'pruned' must be an object, got {type(pruned).__name__}")
    trained = pruned.get("trained_channels")
    _require(isinstance(trained, int) and not isinstance(trained, bool) and trained > channels, where,
             f"'pruned.trained_channels' must be an int above features.channels={channels}, got {trained!r}")
    dropped = pruned.get("dropped")
    _require(isinstance(dropped, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in dropped)
             and dropped == sorted(set(dropped)) and len(dropped) == trained - channels, where,
             f"'pruned.dropped' must list {trained - channels} distinct ascending channel numbers, got {dropped!r:.80}")
    _require(all(k <= c < trained for c in dropped), where,
             f"'pruned.dropped' may only name remote channels, {k}..{trained - 1}, got {dropped!r:.80}")


def _onnx_dims(value_info) -> list:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else None)
    return dims


def _check_tensor(where: str, kind: str, infos: dict, name: str, expected: list) -> None:
    """expected dims: int to match exactly, None for any (the batch dimension)."""
    _require(name in infos, where, f"no {kind} named {name!r} (has {sorted(infos)})")
    dims = _onnx_dims(infos[name])
    _require(len(dims) == len(expected), where, f"{kind} {name!r} has rank {len(dims)}, the manifest implies {len(expected)}")
    for i, (got, want) in enumerate(zip(dims, expected)):
        _require(want is None or got is None or got == want, where,
                 f"{kind} {name!r} dim {i} is {got}, the manifest implies {want} (full shape {dims}, expected {expected})")


def _check_onnx(path: Path, inputs: dict, outputs: dict) -> None:
    import onnx  # deferred: only bundle validation needs the graph parser

    where = str(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for a damaged file
        raise BundleError(f"{where}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from None
    graph_inputs = {vi.name: vi for vi in model.graph.input}
    graph_outputs = {vi.name: vi for vi in model.graph.output}
    for name, dims in inputs.items():
        _check_tensor(where, "input", graph_inputs, name, dims)
    for name, dims in outputs.items():
        _check_tensor(where, "output", graph_outputs, name, dims)


def load_bundle(path, check_onnx: bool = True) -> Bundle:
    """Load and validate a bundle directory (or its manifest.json)."""
    path = Path(path)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise BundleError(f"bundle directory {path} does not exist")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: missing {MANIFEST}")
    text = manifest_path.read_text(encoding="utf-8")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from None
    validate_manifest(manifest, str(manifest_path))

    files = {}
    for role, name in manifest["files"].items():
        _require(isinstance(name, str) and name and "/" not in name and name not in (".", ".."), str(manifest_path),
                 f"'files.{role}' must be a plain file name, got {name!r}")
        f = path / name
        _require(f.is_file(), str(path), f"missing {role} model file {name}")
        files[role] = f
    bundle = Bundle(path=path, manifest=manifest, manifest_text=text, files=files)

    if check_onnx:
        c_in, h, w = bundle.input_shape
        n_cls = bundle.num_classes
        remote_shape = [None, *bundle.remote_feature_shape]
        _check_onnx(files["device"], {DEVICE_INPUT: [None, c_in, h, w]},
                    {DEVICE_LOCAL_LOGITS: [None, n_cls], DEVICE_REMOTE_FEATURES: remote_shape})
        _check_onnx(files["remote"], {REMOTE_INPUT: remote_shape}, {REMOTE_LOGITS: [None, n_cls]})
        if "reference" in files:
            _check_onnx(files["reference"], {REFERENCE_INPUT: [None, c_in, h, w]}, {REFERENCE_LOGITS: [None, n_cls]})
        # optional, for re-measuring attributions (training/attribution.py); the runtime never loads them
        # they keep the channels training made when dead ones were dropped (manifest 'pruned')
        trained = bundle.manifest.get("pruned", {}).get("trained_channels", bundle.channels)
        features = [None, trained, *bundle.feature_hw]
        if "extractor" in files:
            _check_onnx(files["extractor"], {DEVICE_INPUT: [None, c_in, h, w]}, {EXTRACTOR_FEATURES: features})
        if "evaluator" in files:
            _check_onnx(files["evaluator"], {EXTRACTOR_FEATURES: features}, {REFERENCE_LOGITS: [None, n_cls]})
    if bundle.has_int8_device:
        _check_int8(bundle, str(files["int8_device"]))
    return bundle


def _check_int8(bundle: Bundle, where: str) -> None:
    """The integer device part must be readable and agree with the manifest's shapes."""
    model = bundle.int8_device()
    c_in, h, w = bundle.input_shape
    _require(tuple(model.input_hwc) == (h, w, c_in), where,
             f"input is {list(model.input_hwc)} (HWC), the manifest implies {[h, w, c_in]}")
    fh, fw, fc = model.feature_hwc
    _require((fc, model.k, fh, fw) == (bundle.channels, bundle.k, *bundle.feature_hw), where,
             f"features are C={fc} k={model.k} {fh}x{fw}, the manifest says C={bundle.channels} k={bundle.k} "
             f"{bundle.feature_hw[0]}x{bundle.feature_hw[1]}")
    _require(model.num_classes == bundle.num_classes, where,
             f"{model.num_classes} logits, the manifest has {bundle.num_classes} classes")
    _require(model.levels == len(bundle.manifest["quantizer"]["centroids"]), where,
             f"{model.levels} quantizer levels, the manifest has {len(bundle.manifest['quantizer']['centroids'])} centroids")
    scale = float(bundle.manifest["int8_device"]["logits"]["scale"])
    _require(abs(scale - model.logit_scale) <= 1e-9 * max(1.0, scale), where,
             f"logit scale {model.logit_scale!r} disagrees with the manifest's int8_device.logits.scale {scale!r}")


def write_manifest(bundle_dir, manifest: dict) -> Path:
    """Validate, then write manifest.json (sorted keys are avoided: the order is the reading order)."""
    validate_manifest(manifest)
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    out = bundle_dir / MANIFEST
    out.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return out
