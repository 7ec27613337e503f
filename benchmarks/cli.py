"""agilenn-bench: the benchmarks' command line.

    agilenn-bench latency [--quick]      end-to-end latency over emulated links (docs/latency.md)
    agilenn-bench codec ...              bytes per coder (benchmarks/codec_bench.py)
    agilenn-bench server-load ...        server throughput/latency under N devices (benchmarks/server_load.py)
    agilenn-bench soak ...               hostile traffic, backpressure and memory of the server (benchmarks/soak.py)
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

from .links import PROFILES, parse_links

QUICK_IMAGES = 40
FULL_IMAGES = 1000

# Subcommands whose module has its own argparse main(argv): everything after the name is theirs.
DELEGATES = {
    "codec": ("codec_bench", "bytes per coder against the entropy (benchmarks/codec_bench.py)"),
    "server-load": ("server_load", "server throughput and latency under many devices (benchmarks/server_load.py)"),
    "soak": ("soak", "hostile traffic, backpressure and memory of the server (benchmarks/soak.py)"),
}


def _latency_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("latency", help="end-to-end latency of AgileNN and baselines over emulated links",
                       description="Run every scheme on the same images over every link and write JSON, Markdown "
                                   "and plots to benchmarks/results/<date>/ (docs/latency.md).")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_IMAGES} images and a short goodput check (under 3 minutes on 2 cores); "
                        "files get a -quick suffix")
    p.add_argument("--images", type=int, help=f"test images per scheme and link (default {FULL_IMAGES})")
    p.add_argument("--link", action="append", default=[], metavar="SPEC",
                   help="a built-in link (" + ", ".join(f"{k}: {v.rate_kbps:g} kbps, {v.delay_ms:g} ms"
                                                     for k, v in PROFILES.items())
                        + ") or name:rate_kbps:delay_ms[:jitter_ms[:loss_pct]]; repeatable or comma-separated "
                          "(default: all built-in)")
    p.add_argument("--scheme", action="append", default=[], metavar="NAME",
                   help="run only these schemes (repeatable; default: all available)")
    p.add_argument("--mcu", default="stm32f746", help="MCU for the device cost model (default %(default)s)")
    p.add_argument("--mhz", default="64,128,216", help="MCU clocks in MHz, comma-separated (default %(default)s)")
    p.add_argument("--shaper", default="auto", choices=["auto", "tc", "tbf", "userspace"],
                   help="auto: tc when root, else userspace (see docs/latency.md)")
    p.add_argument("--bundle", type=Path, help="AgileNN bundle (default: the shipped agilenn-fashion-mnist)")
    p.add_argument("--plain-bundle", type=Path,
                   help="plain-split (lambda=1) bundle (default: the shipped plain-split-fashion-mnist, if any)")
    p.add_argument("--synthetic", action="store_true",
                   help="random-weight bundles instead of trained ones (plumbing checks; accuracy is chance)")
    p.add_argument("--budget-bytes", type=int,
                   help="byte budget of agilenn-budget (default: half its full payload's mean size)")
    p.add_argument("--dataset", help="test images: fashion-mnist, cifar10, ..., or imagefolder:PATH "
                                     "(default: the bundle's own data set)")
    p.add_argument("--goodput-seconds", type=float, help="length of each link's goodput check (default 2, quick 0.5)")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<YYYY-MM-DD>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _bundles(args, tmp: Path):
    from agilenn.models import load_bundle
    from agilenn.models.model_repository import DEFAULT_REPOSITORY, find_bundle_dirs

    if args.synthetic:
        from agilenn.models.synthetic import make_random_bundle

        agilenn = make_random_bundle(tmp / "agilenn", name="synthetic-agilenn")
        plain = make_random_bundle(tmp / "plain", name="synthetic-plain-split", seed=1, with_reference=False)
        return load_bundle(agilenn), load_bundle(plain)

    def shipped(name):
        candidates = [d for d in find_bundle_dirs(DEFAULT_REPOSITORY) if d.parent.name == name] \
            if any(DEFAULT_REPOSITORY.glob("*/*/manifest.json")) else []
        return max(candidates, key=lambda d: (d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
                   default=None)

    agilenn_dir = args.bundle or shipped("agilenn-fashion-mnist")
    if agilenn_dir is None:
        raise SystemExit("agilenn-bench: no trained bundle in models/repository/agilenn-fashion-mnist/; "
                         "pass --bundle DIR, or --synthetic for a plumbing check")
    plain_dir = args.plain_bundle or shipped("plain-split-fashion-mnist")
    return load_bundle(agilenn_dir), (load_bundle(plain_dir) if plain_dir else None)


def run_latency(args, argv) -> int:
    import numpy as np

    from agilenn.datasets import load_for_model

    from .latency import Config, run
    from .report import write_results
    from .schemes import build_schemes

    try:
        links = parse_links(args.link) if args.link else list(PROFILES.values())
        mhz = tuple(float(x) if "." in x else int(x) for x in args.mhz.split(",") if x.strip())
    except ValueError as exc:
        raise SystemExit(f"agilenn-bench latency: {exc}") from None
    n = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    out = args.out or Path("benchmarks") / "results" / time.strftime("%Y-%m-%d", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="agilenn-bench-") as tmp:
        agilenn, plain = _bundles(args, Path(tmp))
        if args.dataset is None:  # a synthetic bundle has Fashion-MNIST's input shape but no data set
            dataset = agilenn.manifest.get("dataset", "fashion-mnist")
            args.dataset = "fashion-mnist" if dataset == "synthetic" else dataset
        data = load_for_model(args.dataset, "test", agilenn.input_shape).subset(n, seed=0)
        if data.shape_chw != agilenn.input_shape:
            raise SystemExit(f"agilenn-bench: {args.dataset} images are {data.shape_chw}, the bundle takes "
                             f"{agilenn.input_shape}")
        schemes = build_schemes(agilenn, plain, args.budget_bytes, args.scheme or None)
        cfg = Config(
            bundle_dirs=[agilenn.path] + ([plain.path] if plain is not None else []),
            schemes=schemes, links=links, images=data.images, labels=np.asarray(data.labels),
            mcu=args.mcu, mcu_mhz=mhz, shaper=args.shaper,
            goodput_s=args.goodput_seconds or (0.5 if args.quick else 2.0),
            command="agilenn-bench " + shlex.join(argv), dataset=f"{args.dataset} test, {len(data)} images (seed 0)",
            progress=not args.quiet,
        )
        results = run(cfg)
    written = write_results(results, out, "-quick" if args.quick else "", plots=not args.no_plots)
    for path in written:
        print(path)
    for key in ("latency_vs_edge_png", "latency_vs_edge_jpeg75"):
        goal = results["goals"].get(key)
        if goal:
            print(f"{results['goals']['scheme']} / {goal['baseline']} p50 at {goal['link']}: {goal['ratio']} "
                  f"(accuracy gap {goal['accuracy_gap_pp']:+.2f} pp)", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so the shaper's namespace and the server are always removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(prog="agilenn-bench", description="AgileNN benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    _latency_parser(sub)
    for name, (_, help_text) in DELEGATES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if argv and argv[0] in DELEGATES:
        import importlib

        module = importlib.import_module(f".{DELEGATES[argv[0]][0]}", __package__)
        return module.main(argv[1:]) or 0
    args, rest = parser.parse_known_args(argv)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return run_latency(args, argv)


if __name__ == "__main__":
    sys.exit(main())
