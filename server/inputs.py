"""Turning a request's input into one model-ready sample (no batch dimension).

Feature payloads go through the bundle's codec (which zero-fills the channels the sender
truncated); images go through the bundle's preprocessing for the reference model. Every failure
is a PayloadError with a message the client can act on.
"""

from __future__ import annotations

import io

import numpy as np

from agilenn.codec import PayloadError
from agilenn.models.bundle import Bundle


def decode_image(fmt: str, data: bytes, bundle: Bundle) -> np.ndarray:
    """EncodedImage -> float32 [C, H, W], normalized as the bundle's models expect."""
    c, h, w = bundle.input_shape
    fmt = (fmt or "").lower()
    if fmt == "raw":
        if len(data) != h * w * c:
            raise PayloadError(f"raw image has {len(data)} bytes, the model takes {h}x{w}x{c} = {h * w * c} (HWC uint8)")
        pixels = np.frombuffer(data, dtype=np.uint8).reshape(h, w, c)
    elif fmt in ("png", "jpeg", "jpg"):
        pixels = _decode_compressed(fmt, data, c, h, w)
    else:
        raise PayloadError(f"unknown image format {fmt!r} (use png, jpeg or raw)")
    return bundle.preprocess(pixels[None])[0]


def _decode_compressed(fmt: str, data: bytes, c: int, h: int, w: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a runtime dependency
        raise PayloadError(f"{fmt} images need Pillow, which this server lacks; send format 'raw'") from None
    try:
        # Image.open reads only the header: check the size before any pixel is decoded, so a
        # small file that claims a huge image (a decompression bomb) costs nothing.
        image = Image.open(io.BytesIO(data))
        if image.size != (w, h):
            raise PayloadError(f"image is {image.size[0]}x{image.size[1]}, the model takes {w}x{h}")
        expected = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}[fmt]
        if image.format != expected:
            raise PayloadError(f"image data is {image.format or 'unknown'}, the request says {fmt}")
        image = image.convert("L" if c == 1 else "RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    except PayloadError:
        raise
    except Exception as exc:  # Pillow raises many types for damaged data
        raise PayloadError(f"cannot decode {fmt} image: {exc.__class__.__name__}: {exc}") from None
    if c == 1:
        pixels = pixels[..., None]
    if pixels.shape != (h, w, c):
        raise PayloadError(f"image decodes to {list(pixels.shape)}, the model takes {[h, w, c]}")
    return pixels
