"""agilenn-firmware build / run: the firmware ELF for a board, and that firmware in QEMU serving an agent.

    agilenn-firmware build --board mps2-an500 --bundle DIR --out build/fw
    agilenn-firmware run --bundle DIR --limit 100 --server 127.0.0.1:50051

`run` builds the ELF (or takes --elf), starts qemu-system-arm with it, feeds Fashion-MNIST test
images to the firmware's camera UART, starts `agilenn-agent --port <QEMU's pty>` (unless --no-agent:
then it prints the pty for an agent you start yourself), prints one line per image as the firmware
logged it, and a summary with the measured device cost. The agilenn-firmware CLI dispatches here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from agilenn.device_agent.messages import Reason

REASONS = {-1: "no_answer", **Reason.NAMES}  # PREDICTION reasons (budget included), -1: the firmware got none


def add_commands(sub) -> None:
    """Register `build` and `run` on the agilenn-firmware subparsers."""
    from .build import BOARDS

    b = sub.add_parser("build", help="build the firmware ELF for a board around the generated device library")
    b.add_argument("--board", default="mps2-an500", choices=sorted(BOARDS))
    b.add_argument("--bundle", required=True, type=Path, help="bundle directory with an integer device part")
    b.add_argument("--out", type=Path, default=Path("build/fw"), help="output folder (default %(default)s)")
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("run", help="run the firmware in QEMU against agilenn-agent and a server")
    r.add_argument("--board", default="mps2-an500", choices=sorted(BOARDS))
    r.add_argument("--bundle", required=True, type=Path, help="bundle directory (the agent uses it too)")
    r.add_argument("--elf", type=Path, help="a firmware built before (default: build one now)")
    r.add_argument("--build-dir", type=Path, help="where to build (default: a temporary folder)")
    r.add_argument("--dataset", help="images for the camera (default: the bundle's dataset, e.g. "
                                     "imagefolder:PATH for a bundle trained on a folder)")
    r.add_argument("--split", default="test")
    r.add_argument("--data-dir")
    r.add_argument("--limit", type=int, default=20, help="images to feed the camera (default %(default)s)")
    r.add_argument("--server", default="127.0.0.1:50051", help="agilenn-server HOST:PORT for the agent")
    r.add_argument("--local-only", action="store_true", help="run the agent without a server")
    r.add_argument("--deadline-ms", type=float, default=1000.0, help="the agent's --deadline-ms")
    r.add_argument("--no-agent", action="store_true", help="start no agent: print the pty and wait for yours")
    r.add_argument("--json", action="store_true", help="end with one JSON summary line")
    r.add_argument("--quiet", action="store_true", help="no per-image lines")
    r.add_argument("--record", action="store_true",
                   help="write the measured device cost to <bundle>/device_measured.json (the MCU cost model reads it)")
    r.set_defaults(func=cmd_run)


def cmd_build(args) -> int:
    from .build import build

    result = build(args.bundle, args.out, args.board)
    s = result.sections
    print(f"{result.elf}: {result.board}, {result.model}")
    print(f"  flash {result.flash_bytes} B (text {s.get('.text', 0) + s.get('.vectors', 0)}, rodata "
          f"{s.get('.rodata', 0)}, data {s.get('.data', 0)}), static RAM {result.static_ram_bytes} B "
          f"(data + bss), stack reserved {result.stack_reserved_bytes} B")
    return 0


def _agent_command(args, port: str) -> list[str]:
    cmd = [sys.executable, "-m", "agilenn.device_agent.cli", "--port", port, "--bundle", str(args.bundle),
           "--deadline-ms", str(args.deadline_ms), "--quiet", "--json", "--connect-wait-s", "10"]
    return cmd + (["--local-only"] if args.local_only else ["--server", args.server])


def cmd_run(args) -> int:
    from agilenn.models import load_bundle
    from agilenn.training.datasets import load_dataset

    from .build import build
    from .qemu import EmulatedBoard

    bundle = load_bundle(args.bundle)
    data = load_dataset(args.dataset or bundle.manifest.get("dataset", "fashion-mnist"), args.split, args.data_dir)
    images, labels = data.images[: args.limit], data.labels[: args.limit]
    build_info = None
    tmp = None
    if args.elf is None:
        out = args.build_dir or Path(tmp := tempfile.mkdtemp(prefix="agilenn-fw-"))
        result = build(args.bundle, out, args.board)
        elf, build_info = result.elf, result
    else:
        elf = args.elf
        info = elf.parent / "firmware.json"
        build_info = json.loads(info.read_text()) if info.is_file() else None
    agent = None
    results = []
    with EmulatedBoard(elf, images) as board:
        print(f"agilenn-firmware: {' '.join(board.command)}", file=sys.stderr)
        print(f"agilenn-firmware: the firmware's UART0 is {board.agent_port}", file=sys.stderr, flush=True)
        if args.no_agent:
            print(f"agilenn-firmware: run  agilenn-agent --port {board.agent_port} --bundle {args.bundle}",
                  file=sys.stderr, flush=True)
        else:
            agent = subprocess.Popen(_agent_command(args, board.agent_port), stdout=subprocess.PIPE, text=True)
        try:
            for r in board.results(len(images), timeout_s=300.0):
                i = r["image"]
                r["label"] = int(labels[i])
                r["reason_name"] = REASONS.get(r["reason"], f"error {r['reason'] - 100}")
                results.append(r)
                if not args.quiet:
                    name = bundle.classes[r["class"]]
                    print(f"image {i:4d}  class {r['class']} {name:<12} label {r['label']}  "
                          f"{'degraded (' + r['reason_name'] + ')' if r['degraded'] else 'merged':<28}"
                          f"payload {r['payload']:4d} B  instructions {r['instructions']:,}", flush=True)
        finally:
            agent_summary = None
            if agent is not None:
                agent.send_signal(signal.SIGTERM)
                out, _ = agent.communicate(timeout=30)
                lines = [line for line in out.splitlines() if line.startswith("{")]
                agent_summary = json.loads(lines[-1]) if lines else None
    summary = summarize(results, build_info)
    summary["agent"] = agent_summary and {k: agent_summary.get(k) for k in ("n", "degraded", "degraded_reasons")}
    if args.record and len(results) == len(images):
        from .build import BOARDS
        from .measured import record

        version = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        path = record(bundle, summary, args.board, BOARDS[args.board].cpu, version,
                      " ".join(["agilenn-firmware", *sys.argv[1:]]))
        print(f"agilenn-firmware: recorded the measured device cost in {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary), file=sys.stderr)
    return 0 if len(results) == len(images) else 1


def summarize(results: list[dict], build_info=None) -> dict:
    instr = np.array([r["instructions"] for r in results], dtype=np.int64)
    to_payload = np.array([r["to_payload"] for r in results], dtype=np.int64)
    s = {
        "images": len(results),
        "accuracy": float(np.mean([r["class"] == r["label"] for r in results])) if results else None,
        "degraded": int(sum(r["degraded"] for r in results)),
        "instructions_per_inference": {"mean": float(instr.mean()), "min": int(instr.min()), "max": int(instr.max())}
        if results else None,
        # agn_device_features alone: what stands between the image and the payload on the link (the
        # local predictor, the rest, runs while the request is out; docs/serial-protocol.md, version 3)
        "instructions_to_payload": {"mean": float(to_payload.mean()), "min": int(to_payload.min()),
                                    "max": int(to_payload.max())} if results else None,
        "stack_high_water_bytes": max((r["stack"] for r in results), default=None),
        "payload_bytes_mean": float(np.mean([r["payload"] for r in results])) if results else None,
    }
    if build_info is not None:
        info = build_info if isinstance(build_info, dict) else build_info.as_dict()
        s["flash_bytes"] = info["flash_bytes"]
        s["static_ram_bytes"] = info["static_ram_bytes"]
        if s["stack_high_water_bytes"] is not None:
            s["ram_bytes"] = info["static_ram_bytes"] + s["stack_high_water_bytes"]
        macs = info.get("device_cost", {}).get("macs")
        if macs and results:
            s["device_macs"] = macs
            s["instructions_per_mac"] = float(instr.mean()) / macs
    return s


def format_summary(s: dict) -> str:
    lines = [f"{s['images']} images, accuracy {s['accuracy']:.4f}, {s['degraded']} degraded"]
    if s.get("instructions_per_inference"):
        i = s["instructions_per_inference"]
        line = f"device part: {i['mean']:,.0f} instructions/inference (min {i['min']:,}, max {i['max']:,})"
        if s.get("instructions_per_mac"):
            line += f", {s['instructions_per_mac']:.2f} instructions/MAC over {s['device_macs']:,} MACs"
        lines.append(line)
    if s.get("instructions_to_payload"):
        lines.append(f"  of which up to the payload: {s['instructions_to_payload']['mean']:,.0f} (the local predictor "
                     "runs while the request is out)")
    if "flash_bytes" in s:
        lines.append(f"flash {s['flash_bytes']:,} B, RAM {s.get('ram_bytes', 0):,} B (static "
                     f"{s['static_ram_bytes']:,} + stack high-water {s['stack_high_water_bytes']:,})")
    return "\n".join(lines)
