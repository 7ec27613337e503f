"""agilenn-firmware: the device part as portable integer C.

    agilenn-firmware quantize --bundle DIR     add the int8 device part to a bundle (device_int8.json,
                                               manifest format_version 2, int8 vs float in the report)
    agilenn-firmware generate --bundle DIR --out DIR   emit the C99 device library for the bundle
    agilenn-firmware cost --bundle DIR         print the device cost (MACs, params, flash, arena) as JSON
    agilenn-firmware build --board mps2-an500 --bundle DIR   the firmware ELF (firmware/run.py)
    agilenn-firmware run --bundle DIR --limit 100            that firmware in QEMU against agilenn-agent
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import GENERATOR_VERSION


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn-firmware", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"agilenn-firmware {GENERATOR_VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="add the int8 device part to an existing bundle")
    q.add_argument("--bundle", required=True, help="bundle directory (its manifest.json is rewritten)")
    q.add_argument("--calibration-images", type=int, default=2000,
                   help="training images used to calibrate activation ranges (default 2000)")
    g = sub.add_parser("generate", help="emit the C99 device library of a bundle")
    g.add_argument("--bundle", required=True, help="bundle directory with an int8 device part")
    g.add_argument("--out", required=True, help="output directory for the C sources")
    g.add_argument("--test-vectors", type=int, default=0, metavar="N",
                   help="also write OUT/test/agn_selftest.c: N dataset test images with the Python reference's "
                        "payloads and logits, and a memcmp self-test (default 0: none)")
    c = sub.add_parser("cost", help="device cost of a bundle's integer device part as JSON")
    c.add_argument("--bundle", required=True)
    from .run import add_commands

    add_commands(sub)  # build, run
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from agilenn.models import BundleError

    from .int8 import Int8ModelError

    from .build import BuildError
    from .qemu import QemuError

    try:
        if getattr(args, "func", None) is not None:
            return args.func(args)
        if args.command == "quantize":
            from .bundle_int8 import add_int8_device

            section = add_int8_device(args.bundle, calibration_count=args.calibration_images)
            a = section["accuracy"]
            print(f"wrote {section['file']}: local {100 * a['int8_local']:.2f} % (float {100 * a['float_local']:.2f} %), "
                  f"combined {100 * a['int8_combined']:.2f} % (float {100 * a['float_combined']:.2f} %) "
                  f"on {a['test_samples']} test images")
        elif args.command == "generate":
            from .generate import generate

            out = generate(args.bundle, args.out)
            if args.test_vectors:
                from agilenn.models import load_bundle

                from .selftest import write_test_vectors

                write_test_vectors(load_bundle(args.bundle), out.model, out.out / "test", args.test_vectors)
            c = out.cost
            flash = f"{c['flash_bytes']:,} B flash" if c.get("flash_bytes") is not None else "flash not measured"
            print(f"wrote {len(list(out.out.iterdir()))} files to {out.out}: {c['macs']:,} MACs, {flash}, "
                  f"arena {c['arena_bytes']:,} B")
        else:
            from agilenn.models import load_bundle

            from .cost import bundle_device_cost

            print(json.dumps(bundle_device_cost(load_bundle(args.bundle)), indent=1))
    except (BundleError, Int8ModelError, FileNotFoundError, BuildError, QemuError) as exc:
        print(f"agilenn-firmware: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
