"""agilenn-firmware build: the firmware ELF for a board, around the generated device library.

    agilenn-firmware build --board mps2-an500 --bundle DIR [--out build/fw]

    out/
      lib/            the generated device library (agilenn-firmware generate)
      fw.elf, fw.map  the firmware: board support (firmware/board/<board>/) + lib + firmware/app/main.c
      firmware.json   flash and static RAM of the ELF, section by section (arm-none-eabi-size -A)

Flash is what an MCU keeps in flash: .vectors + .text + .rodata + .ARM.exidx + the .data image.
Static RAM is .data + .bss; the stack is reserved by the linker script and its high-water mark is
measured at run time (stack painting), since only a run shows how deep it goes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
APP = HERE / "app"


@dataclass(frozen=True)
class Board:
    name: str
    directory: Path
    linker_script: str
    sources: tuple
    cflags: tuple
    qemu_machine: str
    cpu: str  # for reports


BOARDS = {
    "mps2-an500": Board(
        name="mps2-an500",
        directory=HERE / "board" / "mps2-an500",
        linker_script="mps2_an500.ld",
        sources=("startup.c", "board.c"),
        # Cortex-M7 with its double-precision FPU (fpv5-d16), hard-float calling convention.
        cflags=("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        qemu_machine="mps2-an500",
        cpu="Cortex-M7",
    ),
}

# -O3, not -O2: the inference is the firmware's hot path, and on the CIFAR-10 bundle -O3 runs it in
# 3.1 % fewer instructions (1,259 K against 1,300 K; mostly loop unswitching and inlining in the
# depthwise kernel and the coder) for about 3 KB more flash (docs/firmware.md). -Os: about 30 %
# more instructions for 2.4 KB less. The library's own size in device_cost stays an -O2 build
# (generate.ARM_FLAGS): what a project that compiles it with its usual flags gets.
OPT_FLAGS = ("-O3", "-std=c99", "-Wall", "-Wextra", "-ffunction-sections", "-fdata-sections", "-g")
FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.exidx", ".data")
RAM_SECTIONS = (".data", ".bss")


class BuildError(RuntimeError):
    pass


@dataclass
class BuildResult:
    elf: Path
    board: str
    flash_bytes: int
    static_ram_bytes: int  # .data + .bss
    stack_reserved_bytes: int
    sections: dict = field(default_factory=dict)
    device_cost: dict = field(default_factory=dict)  # the generator's device_cost.json
    model: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["elf"] = str(self.elf)
        return d


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"{name} is not installed (Debian: apt-get install --no-install-recommends "
                         f"gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    return path


def section_sizes(elf: Path) -> dict:
    """{section: bytes} from `arm-none-eabi-size -A` (System V format)."""
    out = subprocess.run([_tool("arm-none-eabi-size"), "-A", str(elf)], check=True, capture_output=True,
                         text=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def build(bundle_dir, out_dir, board: str = "mps2-an500", extra_cflags=()) -> BuildResult:
    """Generate the bundle's library and build the firmware; extra_cflags go to every compile (e.g.
    -DAGN_USE_DSP=0, the portable kernels, which tests/firmware runs in QEMU too)."""
    from .generate import generate

    if board not in BOARDS:
        raise BuildError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    b = BOARDS[board]
    gcc = _tool("arm-none-eabi-gcc")
    out = Path(out_dir)
    lib = out / "lib"
    if lib.exists():
        shutil.rmtree(lib)
    gen = generate(bundle_dir, lib)
    if not (lib / "agn_frame.c").is_file():
        raise BuildError("the generated library has no serial framing (agn_frame.c): the firmware needs it")
    sources = [b.directory / s for s in b.sources] + [APP / "main.c"] + [lib / s for s in gen.sources]
    elf = out / "fw.elf"
    cmd = [gcc, *b.cflags, *OPT_FLAGS, *extra_cflags, f"-I{b.directory}", f"-I{lib}", f"-I{APP}", *map(str, sources),
           "-T", str(b.directory / b.linker_script), "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
           "-Wl,--gc-sections", f"-Wl,-Map={out / 'fw.map'}", "-o", str(elf)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise BuildError(f"firmware build failed:\n{' '.join(cmd)}\n{res.stderr}")
    sections = section_sizes(elf)
    result = BuildResult(
        elf=elf,
        board=board,
        flash_bytes=sum(sections.get(s, 0) for s in FLASH_SECTIONS),
        static_ram_bytes=sum(sections.get(s, 0) for s in RAM_SECTIONS),
        stack_reserved_bytes=sections.get(".stack", 0),
        sections={k: v for k, v in sections.items() if not k.startswith((".debug", ".comment", ".ARM.attributes"))},
        device_cost=gen.cost,
        model=f"{gen.cost['model']['name']}:{gen.cost['model']['version']}",
    )
    (out / "firmware.json").write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    return result
