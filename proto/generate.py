"""Regenerate the committed Python stubs from proto/agilenn/v1/*.proto.

Usage: python proto/generate.py [--out DIR]

The stubs are committed (so `pip install .` needs no grpcio-tools); tests/test_proto_stubs.py
regenerates them into a temporary folder and fails when they differ from the committed ones.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

PROTO_ROOT = pathlib.Path(__file__).resolve().parent


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # dev dependency only

    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted((PROTO_ROOT / "agilenn" / "v1").glob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(s.relative_to(PROTO_ROOT)) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    return sorted((out_dir / "agilenn" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=PROTO_ROOT, help="output root (default: in place)")
    files = generate(parser.parse_args().out)
    for f in files:
        print(f)


if __name__ == "__main__":
    sys.exit(main())
