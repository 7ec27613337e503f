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

from .wire import clip

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_exact_length(fmt: str, data: bytes) -> None:
    """The file must end where the image ends: Pillow stops at the end of the image and would
    ignore whatever follows (a second image, junk), which a strict decoder must reject."""
    end = _png_end(data) if fmt == "png" else _jpeg_end(data)
    if end is not None and end != len(data):
        raise PayloadError(f"{fmt} image ends at byte {end} but the data has {len(data)} bytes")


def _png_end(data: bytes) -> int | None:
    """Offset just past the IEND chunk (PNG spec, section 5: length, type, data, CRC), or None
    when the chunk structure is broken (Pillow then names the problem)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        at += 12 + length
        if kind == b"IEND":
            return at
    return None


def _jpeg_end(data: bytes) -> int | None:
    """Offset just past the EOI marker (ITU T.81, annex B: marker segments carry their length;
    entropy-coded data after SOS runs to the next marker that is not a stuffed 0xFF00 or RSTn),
    or None when the structure is broken."""
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 1 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:  # EOI
            return at + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            at += 2
            continue
        if at + 4 > len(data):
            return None
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
        while marker == 0xDA:  # SOS: skip the entropy-coded data up to the next real marker
            at = data.find(b"\xff", at)
            if at < 0 or at + 1 >= len(data):
                return None
            if data[at + 1] != 0x00 and not 0xD0 <= data[at + 1] <= 0xD7:
                break
            at += 2
    return None


def decode_image(fmt: str, data: bytes, bundle: Bundle) -> np.ndarray:
    """EncodedImage -> float32 [C, H, W], normalized as the bundle's models expect."""
    c, h, w = bundle.input_shape
    if fmt == "raw":
        if len(data) != h * w * c:
            raise PayloadError(f"raw image has {len(data)} bytes, the model takes {h}x{w}x{c} = {h * w * c} (HWC uint8)")
        pixels = np.frombuffer(data, dtype=np.uint8).reshape(h, w, c)
    elif fmt in ("png", "jpeg"):
        _check_exact_length(fmt, data)
        pixels = _decode_compressed(fmt, data, c, h, w)
    else:  # the names are exact, as docs/protocol.md gives them: "PNG" or "jpg" are not accepted
        raise PayloadError(f"unknown image format {clip(fmt)!r} (use png, jpeg or raw, in lower case)")
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
        expected = {"png": "PNG", "jpeg": "JPEG"}[fmt]
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
