"""agilenn-demo: start a server, replay Fashion-MNIST through the agent, print the summary, stop the server.

    agilenn-demo                       # the shipped default model, 1000 test images
    agilenn-demo --limit 200 --mcu stm32f746@216MHz --max-payload-bytes 64

Everything runs on this machine: the server is `python -m agilenn.server` in a subprocess on a free
port (agilenn.server.testing.running_server), the agent runs in this process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agilenn.models import DEFAULT_REPOSITORY, BundleError, ModelRepository

from .agent import Agent
from .mcu import PRESETS
from .sources import dataset_samples
from .summary import Summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agilenn-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=DEFAULT_REPOSITORY,
                   help="model repository or bundle directory (default: the shipped one)")
    p.add_argument("--model", default="", help="model name (default: the repository's default model)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", help="dataset folder (default: the dataset's standard place)")
    p.add_argument("--limit", type=int, default=1000, help="test images to replay (default %(default)s)")
    p.add_argument("--deadline-ms", type=float, default=1000.0)
    p.add_argument("--max-payload-bytes", type=int)
    p.add_argument("--mcu", help=f"emulate the device part's compute time on an MCU, e.g. {PRESETS[0]}")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return p


def run_demo(args) -> dict:
    from agilenn.server.testing import running_server

    bundle = ModelRepository([args.model_dir]).resolve(args.model)
    summary = Summary(model=f"{bundle.name}:{bundle.version}", mcu=args.mcu, max_payload_bytes=args.max_payload_bytes)
    print(f"agilenn-demo: serving {bundle.name}:{bundle.version} from {bundle.path}", file=sys.stderr)
    with running_server([args.model_dir]) as server:
        print(f"agilenn-demo: server at {server.address}; replaying {args.limit} {args.dataset} test images",
              file=sys.stderr)
        with Agent(bundle, server.address, deadline_ms=args.deadline_ms, max_payload_bytes=args.max_payload_bytes,
                   mcu=args.mcu) as agent:
            if not agent.wait_connected(30):
                raise RuntimeError(f"agent could not use the server: {agent.client.state_detail}")
            for sample in dataset_samples(args.dataset, "test", args.limit, args.data_dir):
                summary.add(agent.infer(sample.image), sample.label)
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run_demo(args)
    except (BundleError, LookupError, FileNotFoundError, RuntimeError) as exc:
        print(f"agilenn-demo: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        d = summary.as_dict()
        print(summary.text())
        if d["degraded"]:
            print(f"degraded answers by reason: {d['degraded_reasons']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
