"""Where the firmware's instructions go: per-function instruction counts, from QEMU's execution log.

    python -m agilenn.firmware.profile --bundle DIR --elf build/fw/fw.elf [--images 1]

QEMU 7.2 as Debian ships it has no TCG plugins, so this runs the firmware with `-d exec,nochain
-singlestep` (one log line per executed instruction) against a local-only agent, and maps every
logged PC to its function with the ELF's symbol table (arm-none-eabi-nm). The totals cover all the
CPU ran (boot, HELLO, waiting for UART bytes too); the device part's functions are the ones to read.
Slow (seconds per million instructions) and for looking, not for CI; the per-inference total is
measured without any of this by the firmware itself (SysTick under -icount shift=0).

With the log on, the CPU runs far slower than the UARTs deliver, so a 3,072-byte camera image
overruns the board's 1,024-byte receive ring; the board then leaves bytes in the UART, which holds
the rest back (board.c, uart_drain), instead of dropping them (until 2026-11-27 a CIFAR-10 run
stalled here, waiting for bytes that had been dropped).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

TRACE = re.compile(rb"Trace \d+: [0-9a-fx]+ \[[0-9a-f]+/([0-9a-f]+)/")


def symbols(elf) -> tuple[list[int], list[str]]:
    out = subprocess.run([shutil.which("arm-none-eabi-nm"), "-n", "--defined-only", str(elf)], check=True,
                         capture_output=True, text=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lower() in ("t", "w"):
            addrs.append(int(parts[0], 16) & ~1)
            names.append(parts[2])
    return addrs, names


def profile(bundle_dir, elf, images, per_pc: bool = False,
            timeout_s: float = 600) -> tuple[collections.Counter, list[dict]]:
    """Instructions per function (per_pc: per instruction address) while the firmware handles images."""
    from agilenn.device_agent.agent import Agent
    from agilenn.device_agent.serial_bridge import SerialBridge
    from agilenn.device_agent.serial_link import SerialLink, open_serial

    from .qemu import EmulatedBoard

    addrs, names = symbols(elf)
    counts: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "exec.log"
        extra = ("-d", "exec,nochain", "-singlestep", "-D", str(log))
        with Agent(bundle_dir, None) as agent, EmulatedBoard(elf, images, extra_args=extra) as board:
            bridge = SerialBridge(SerialLink(open_serial(board.agent_port, 115200)), agent)
            stop = threading.Event()
            thread = threading.Thread(target=bridge.serve, args=(stop,), daemon=True)
            thread.start()
            try:
                results = list(board.results(len(images), timeout_s=timeout_s))
            finally:
                stop.set()
                thread.join(5)
                bridge.link.close()
        with open(log, "rb") as fh:
            for line in fh:
                m = TRACE.match(line)
                if m:
                    pc = int(m.group(1), 16)
                    if per_pc:
                        counts[pc] += 1
                        continue
                    i = bisect.bisect_right(addrs, pc) - 1
                    counts[names[i] if i >= 0 else "?"] += 1
    return counts, results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--elf", required=True)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--dataset", help="test images from this data set (default: the bundle's, as `agilenn-firmware run`)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--function", help="show this function's disassembly with a count per instruction")
    args = p.parse_args(argv)
    from agilenn.models import load_bundle
    from agilenn.training.datasets import load_dataset

    # the bundle's own images: a firmware built for 32x32x3 waits forever for the rest of a 28x28 one
    dataset = args.dataset or load_bundle(args.bundle).manifest.get("dataset", "fashion-mnist")
    images = load_dataset(dataset, "test").images[: args.images]
    counts, results = profile(args.bundle, args.elf, images, per_pc=bool(args.function))
    if args.function:
        dump = subprocess.run([shutil.which("arm-none-eabi-objdump"), "-d", "--no-show-raw-insn",
                               f"--disassemble={args.function}", str(args.elf)], check=True, capture_output=True,
                              text=True).stdout
        for line in dump.splitlines():
            m = re.match(r"\s*([0-9a-f]+):\t(.*)", line)
            if m:
                print(f"{counts.get(int(m.group(1), 16), 0):>9,}  {m.group(1)}  {m.group(2)}")
        return 0
    total = sum(counts.values())
    measured = sum(r["instructions"] for r in results)
    print(f"{total:,} instructions logged; the firmware measured {measured:,} in its device part "
          f"over {len(results)} image(s)")
    for name, n in counts.most_common(args.top):
        print(f"{n:>12,}  {100 * n / total:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
