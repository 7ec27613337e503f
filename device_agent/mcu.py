"""MCU cost model: how long the device part would take on a Cortex-M.

    time = instructions x cycles_per_instruction / clock     when the firmware was measured
    time = MACs x cycles_per_MAC / clock                      otherwise

Instructions are measured: the generated device library in the firmware on QEMU's Cortex-M7
(mps2-an500, -icount shift=0), recorded in the bundle's device_measured.json by
`agilenn-firmware run --record` (agilenn.firmware.measured; a record made with other C sources or
another integer device part is ignored). Every caller says which of the two it used.

The cycles-per-instruction figure (an assumption with its bracket, not a measurement):

- Cortex-M7, 1.0 cycle/instruction. The M7 issues up to two instructions per cycle (Arm Cortex-M7
  Technical Reference Manual, DDI 0489, "dual-issue" six-stage pipeline), so 0.5 is its floor.
  Measured pair timings on an STM32H730 (Quinapalus, "Cortex-M7 instruction cycle counts, timings,
  and dual-issue combinations", quinapalus.com/cm7cycles.html) show loads, multiplies and
  multiply-accumulates at one cycle each with only some pairs dual-issuing, and load-use
  dependencies stalling, which is the shape of int8 kernel code; with caches on (or code and data
  in TCM) and no flash wait states, 1.0 is the round figure between the floor and single issue. On
  an STM32F746 running from flash through the ART accelerator the real figure can be higher.
- Other cores: the M7 figure scaled by Arm's CoreMark/MHz ratio (M7 5.01, M33 4.02, M4 3.42), as for
  cycles/MAC below: the same instructions (ARMv7E-M/v8-M DSP) on a core with less issue width.

MACs come from the generated C device library's plan (agilenn.firmware.cost.bundle_device_cost).
Everything else (activations, pooling, slicing) is folded into the cycles-per-MAC figure, which is
measured end to end on a real network, not per kernel.

Where the cycles-per-MAC figure comes from (docs/agent.md, "MCU emulation"):

- Cortex-M7, 1.74 cycles/MAC. CMSIS-NN (Lai, Suda, Chandra: "CMSIS-NN: Efficient Neural Network
  Kernels for Arm Cortex-M CPUs", arXiv:1801.06601, 2018) runs its CIFAR-10 CNN (conv 5x5x32,
  conv 5x5x32, conv 5x5x64 on 32x32x3 input, plus pooling/ReLU/FC: about 12.3 M MACs by our count
  of those layer shapes) in 99.1 ms on an STM32F746 at 216 MHz with 8-bit (q7) kernels:
  99.1e-3 s x 216e6 Hz / 12.3e6 MACs = 1.74 cycles/MAC, end to end. Assumption: the device part
  is deployed int8 with CMSIS-NN-class kernels, as in the AgileNN paper's STM32F746 prototype.
- Other cores (assumption, not measured): scaled from the M7 figure by the ratio of Arm's
  published CoreMark/MHz (M7 5.01, M33 4.02, M4 3.42), i.e. the same kernels on a core with less
  issue width. Treat these as rough.
- A lower clock on the same chip scales time by 1/clock: flash wait states and memory stalls that
  change with the clock are ignored (they favour low clocks slightly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

M7_CYCLES_PER_MAC = 99.1e-3 * 216e6 / 12.3e6  # ~1.74, CMSIS-NN CIFAR-10 on STM32F746 (see above)
M7_CYCLES_PER_INSTRUCTION = 1.0  # dual-issue floor 0.5, single issue 1 (see above)
_COREMARK_PER_MHZ = {"cortex-m7": 5.01, "cortex-m33": 4.02, "cortex-m4": 3.42}
_CPI_SOURCE = ("assumed 1.0 for the dual-issue Cortex-M7 (floor 0.5; Arm DDI 0489; pair timings: "
               "quinapalus.com/cm7cycles.html)")


@dataclass(frozen=True)
class Core:
    name: str
    cycles_per_mac: float
    source: str
    cycles_per_instruction: float = M7_CYCLES_PER_INSTRUCTION
    cpi_source: str = _CPI_SOURCE


CORES = {
    "cortex-m7": Core("cortex-m7", M7_CYCLES_PER_MAC, "CMSIS-NN CIFAR-10 CNN on STM32F746 @216 MHz (arXiv:1801.06601)"),
    "cortex-m33": Core("cortex-m33", M7_CYCLES_PER_MAC * 5.01 / 4.02, "M7 figure x CoreMark/MHz ratio (assumption)",
                       M7_CYCLES_PER_INSTRUCTION * 5.01 / 4.02, "M7 figure x CoreMark/MHz ratio (assumption)"),
    "cortex-m4": Core("cortex-m4", M7_CYCLES_PER_MAC * 5.01 / 3.42, "M7 figure x CoreMark/MHz ratio (assumption)",
                      M7_CYCLES_PER_INSTRUCTION * 5.01 / 3.42, "M7 figure x CoreMark/MHz ratio (assumption)"),
}

BASIS_MEASURED = "measured instructions"  # instructions (QEMU Cortex-M7) x cycles/instruction
BASIS_MACS = "MAC model"  # MACs x cycles/MAC

# Chips -> (core, maximum clock in MHz). A chip name is accepted wherever a core name is.
CHIPS = {
    "stm32f746": ("cortex-m7", 216),  # the AgileNN paper's device
    "stm32h743": ("cortex-m7", 480),
    "stm32f446": ("cortex-m4", 180),
    "nrf52840": ("cortex-m4", 64),
    "stm32l552": ("cortex-m33", 110),
}

# The presets the README and benchmarks name; any NAME@<clock>MHz parses.
PRESETS = ("stm32f746@216MHz", "stm32f746@128MHz", "stm32f746@64MHz", "cortex-m4@64MHz", "cortex-m33@64MHz")


@dataclass(frozen=True)
class Mcu:
    name: str  # as given, e.g. "stm32f746"
    core: Core
    clock_hz: float

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.clock_hz / 1e6:g}MHz"

    def cycles(self, macs: int, instructions: float | None = None) -> float:
        """Cycles of one inference: from measured instructions when given, else from the MACs."""
        if instructions is not None:
            return instructions * self.core.cycles_per_instruction
        return macs * self.core.cycles_per_mac

    def compute_ms(self, macs: int, instructions: float | None = None) -> float:
        return self.cycles(macs, instructions) / self.clock_hz * 1e3


def measured_instructions(bundle, to_payload: bool = False) -> float | None:
    """Mean instructions per inference of the bundle's device part as measured in the firmware, or None.
    to_payload: only the part before the payload goes out (agn_device_features; the local predictor
    runs after it, while the request is out), None for a measurement that did not split them."""
    from agilenn.firmware.measured import measured_device_cost

    measured = measured_device_cost(bundle)
    if measured is None:
        return None
    part = measured.get("instructions_to_payload") if to_payload else measured["instructions_per_inference"]
    return None if part is None else float(part["mean"])


def parse_mcu(spec: str) -> Mcu:
    """'stm32f746@216MHz', 'cortex-m4@64MHz', 'stm32f746' (its maximum clock), '...@0.2GHz'."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\s*(?:@\s*([0-9.]+)\s*([kMG]?Hz)?)?\s*", spec or "")
    if not m:
        raise ValueError(f"MCU spec {spec!r} is not NAME@<clock>MHz (e.g. {PRESETS[0]})")
    name = m.group(1).lower()
    if name in CHIPS:
        core_name, max_mhz = CHIPS[name]
    elif name in CORES:
        core_name, max_mhz = name, None
    else:
        raise ValueError(f"unknown MCU {name!r}; known: {', '.join(sorted(CHIPS) + sorted(CORES))}")
    if m.group(2) is None:
        if max_mhz is None:
            raise ValueError(f"give a clock for a bare core, e.g. {name}@64MHz")
        clock_hz = max_mhz * 1e6
    else:
        unit = {"kHz": 1e3, "MHz": 1e6, "GHz": 1e9, "Hz": 1.0}[m.group(3) or "MHz"]
        clock_hz = float(m.group(2)) * unit
    if clock_hz <= 0:
        raise ValueError(f"MCU clock must be positive, got {spec!r}")
    if max_mhz is not None and clock_hz > max_mhz * 1e6 * 1.0001:
        raise ValueError(f"{name} runs at most at {max_mhz} MHz, not {clock_hz / 1e6:g} MHz")
    return Mcu(name, CORES[core_name], clock_hz)


# MACs are not counted here: they come with the rest of the device cost from the generated C
# library's plan (agilenn.firmware.cost.bundle_device_cost), the one source for every consumer.


def main() -> None:  # pragma: no cover - a convenience for humans: agilenn.device_agent.mcu BUNDLE [MCU...]
    import argparse
    import json

    from agilenn.models import load_bundle

    p = argparse.ArgumentParser(description="estimate the device part's compute time on MCUs")
    p.add_argument("bundle")
    p.add_argument("mcu", nargs="*", default=list(PRESETS))
    args = p.parse_args()
    bundle = load_bundle(args.bundle)
    from agilenn.firmware.cost import bundle_device_cost

    macs = bundle_device_cost(bundle)["macs"]
    print(json.dumps({"device_macs": macs, **{s: round(parse_mcu(s).compute_ms(macs), 3) for s in args.mcu}}))


if __name__ == "__main__":  # pragma: no cover
    main()
