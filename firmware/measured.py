"""The device part's cost as measured on the emulated Cortex-M7, stored next to the bundle.

`agilenn-firmware run --record` writes <bundle>/device_measured.json: instructions per inference
(QEMU -icount, counted by the firmware's SysTick), flash and static RAM from the ELF, and the stack
high-water mark (stack painting), for the integer device part whose file hash it names. The MCU
cost model (agilenn.device_agent.mcu) uses the instruction count instead of MACs x cycles/MAC when
the file is there and still matches the bundle's integer device part.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MEASURED_FILE = "device_measured.json"


FIRMWARE_DIR = Path(__file__).parent


def sources_sha256(board: str = "mps2-an500") -> str:
    """One hash over everything that decides the instruction count: the library's static sources
    (csrc/), the generator that writes the rest, the build (build.py: compiler flags such as -O2),
    the board support and the firmware app. A measurement made with other sources is stale."""
    h = hashlib.sha256()
    files = sorted([*(FIRMWARE_DIR / "csrc").glob("*.[ch]*"), FIRMWARE_DIR / "generate.py", FIRMWARE_DIR / "build.py",
                    *(FIRMWARE_DIR / "board" / board).glob("*"), *(FIRMWARE_DIR / "app").glob("*")])
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def int8_sha256(bundle) -> str | None:
    if not bundle.has_int8_device:
        return None
    return hashlib.sha256(Path(bundle.files["int8_device"]).read_bytes()).hexdigest()


def measured_device_cost(bundle) -> dict | None:
    """The recorded measurement, or None (no file, or one made for another integer device part or
    with other C sources: a stale count must not pass for a measurement)."""
    path = Path(bundle.path) / MEASURED_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("int8_sha256") != int8_sha256(bundle):
        return None
    if data.get("sources_sha256") != sources_sha256(data.get("board", "mps2-an500")):
        return None
    return data


def record(bundle, summary: dict, board: str, cpu: str, qemu_version: str, command: str) -> Path:
    """Write the measurement of `agilenn-firmware run` (its summary) into the bundle folder."""
    data = {
        "board": board,
        "cpu": cpu,
        "emulator": qemu_version,
        "method": "qemu-system-arm -icount shift=0: 1 instruction = 1 ns; SysTick (25 MHz) ticks x 40 around "
                  "agn_device_features() and agn_device_local(); flash/RAM from arm-none-eabi-size -A of the ELF; stack by painting",
        "command": command,
        "int8_sha256": int8_sha256(bundle),
        "sources_sha256": sources_sha256(board),
        "images": summary["images"],
        "instructions_per_inference": summary["instructions_per_inference"],
        "instructions_to_payload": summary.get("instructions_to_payload"),
        "device_macs": summary.get("device_macs"),
        "instructions_per_mac": summary.get("instructions_per_mac"),
        "flash_bytes": summary.get("flash_bytes"),
        "static_ram_bytes": summary.get("static_ram_bytes"),
        "stack_high_water_bytes": summary.get("stack_high_water_bytes"),
        "ram_bytes": summary.get("ram_bytes"),
    }
    path = Path(bundle.path) / MEASURED_FILE
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
