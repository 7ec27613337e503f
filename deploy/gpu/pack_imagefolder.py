"""Carry an image tree to a machine that cannot reach it (a rented GPU with no network), and back.

    python deploy/gpu/pack_imagefolder.py pack   DIR  FILE.npz   # every file under DIR, bytes as they are
    python deploy/gpu/pack_imagefolder.py unpack FILE.npz DIR   # the same tree, byte for byte

One uncompressed .npz: the files' bytes end to end, their offsets, their relative paths and a
SHA-256 of each file. 60,000 CIFAR-10 JPEGs are 55 MB of bytes but 92 MB as a tar (a 512-byte
header and padding per file) and 62 MB as a zip, and the device tool carries at most 64 MiB.
JPEG/PNG bytes do not compress, so nothing here tries to. Unpacking checks every file's hash.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np


def pack(src: Path, dst: Path) -> int:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise SystemExit(f"pack: no files under {src}")
    blobs = [p.read_bytes() for p in files]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez(dst, data=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             paths=np.array([str(p.relative_to(src)).encode() for p in files]),  # bytes: 4x smaller than str
             sha256=np.array([list(hashlib.sha256(b).digest()) for b in blobs], dtype=np.uint8))
    return len(files)


def unpack(src: Path, dst: Path) -> int:
    with np.load(src) as z:
        data, offsets, paths, sums = z["data"], z["offsets"], z["paths"], z["sha256"]
    for i, (rel, digest) in enumerate(zip(paths, sums)):
        rel = rel.decode()
        blob = data[offsets[i]:offsets[i + 1]].tobytes()
        if hashlib.sha256(blob).digest() != digest.tobytes():
            raise SystemExit(f"unpack: {rel}: bytes differ from the packed file's SHA-256 (damaged {src}?)")
        out = dst / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise SystemExit(f"unpack: {rel}: path leaves {dst}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
    return len(paths)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("pack", "unpack"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, a, b = argv[0], Path(argv[1]), Path(argv[2])
    n = pack(a, b) if verb == "pack" else unpack(a, b)
    print(f"{verb}: {n} files, {a} -> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
