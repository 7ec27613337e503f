"""What the device part costs on an MCU: MACs, parameters, flash, peak SRAM, time and energy.

MACs, parameters, flash and SRAM come from one place, the generated C device library
(agilenn.firmware.cost.bundle_device_cost -> agilenn.firmware.plan): the tables the generator
emits, the code measured with arm-none-eabi-size on a Cortex-M7 -O2 build when the bundle was
quantized, and the static arena the generator computed (every live int8 tensor, the int16 im2col
scratch and the logits). Where no Cortex-M build was measured (a bundle without an integer part,
or no ARM compiler), flash is the tables alone.

Time: when the firmware was measured on the emulated Cortex-M7 (the bundle's device_measured.json,
`agilenn-firmware run --record`), cycles = measured instructions x cycles/instruction; otherwise
cycles = MACs x cycles/MAC (CMSIS-NN's CIFAR-10 CNN on an STM32F746, Lai et al. 2018,
arXiv:1801.06601). Both figures and their sources are in agilenn.device_agent.mcu; `basis` in every
result says which one was used.

- energy: cycles x energy per cycle. STM32F746 at 216 MHz draws about 102 mA typical in Run mode
  with peripherals off (datasheet DS10916, Run-mode current table; ~472 uA/MHz), at VDD = 3.3 V:
  3.3 V x 0.472 mA/MHz = 1.56 nJ/cycle. Assumption: current scales linearly with the clock, so
  energy per inference is the same at every clock (static current ignored). The radio's energy is
  not modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from agilenn.device_agent.mcu import BASIS_MACS, BASIS_MEASURED, Mcu, measured_instructions, parse_mcu

VDD = 3.3
RUN_CURRENT_A_PER_HZ = 0.472e-3 / 1e6  # STM32F746, DS10916 Run mode typical, peripherals disabled
ENERGY_PER_CYCLE_J = VDD * RUN_CURRENT_A_PER_HZ  # ~1.56 nJ
ENERGY_SOURCE = ("STM32F746 datasheet DS10916, Run-mode typical current, peripherals disabled: ~102 mA at 216 MHz "
                 "(472 uA/MHz) at VDD 3.3 V")

@dataclass(frozen=True)
class DeviceCost:
    macs: int
    params: int
    int8_flash_bytes: int  # code + tables when measured, else the tables alone
    peak_sram_bytes: int  # the generated library's arena
    flash_measured: bool
    instructions: float | None = None  # per inference, measured in the firmware on QEMU's Cortex-M7
    # of those, the ones before the payload goes out (agn_device_features): the firmware runs the
    # local predictor, the rest, while the request is out (serial protocol version 3)
    instructions_to_payload: float | None = None

    @property
    def basis(self) -> str:
        return BASIS_MACS if self.instructions is None else BASIS_MEASURED


def device_cost(bundle) -> DeviceCost:
    from agilenn.firmware.cost import bundle_device_cost

    c = bundle_device_cost(bundle)
    measured = c.get("flash_bytes") is not None
    return DeviceCost(int(c["macs"]), int(c["params"]), int(c["flash_bytes"] if measured else c["weight_bytes"]),
                      int(c["arena_bytes"]), measured, measured_instructions(bundle),
                      measured_instructions(bundle, to_payload=True))


@dataclass(frozen=True)
class McuEstimate:
    mcu: str
    mhz: float
    cycles_per_mac: float
    compute_ms: float
    energy_mj: float
    basis: str = BASIS_MACS  # BASIS_MEASURED: measured instructions x cycles/instruction
    cycles_per_instruction: float | None = None


def estimate(macs: int, mcu: Mcu | str, instructions: float | None = None) -> McuEstimate:
    mcu = parse_mcu(mcu) if isinstance(mcu, str) else mcu
    cycles = mcu.cycles(macs, instructions)
    return McuEstimate(mcu.spec, mcu.clock_hz / 1e6, round(mcu.core.cycles_per_mac, 4),
                       mcu.compute_ms(macs, instructions), cycles * ENERGY_PER_CYCLE_J * 1e3,
                       BASIS_MACS if instructions is None else BASIS_MEASURED,
                       None if instructions is None else mcu.core.cycles_per_instruction)


def device_report(bundle, mcus, cost: DeviceCost | None = None) -> dict:
    """The cost block of the results: graph figures plus time and energy per MCU clock (``cost``:
    the bundle's device_cost, read earlier by the caller, or read now)."""
    cost = device_cost(bundle) if cost is None else cost
    first = parse_mcu(mcus[0])
    return {
        **asdict(cost),
        "basis": cost.basis,
        "cycles_per_mac": round(first.core.cycles_per_mac, 4),
        "cycles_per_mac_source": first.core.source,
        "cycles_per_instruction": first.core.cycles_per_instruction,
        "cycles_per_instruction_source": first.core.cpi_source,
        "energy_per_cycle_nj": round(ENERGY_PER_CYCLE_J * 1e9, 4),
        "energy_source": ENERGY_SOURCE,
        "per_mcu": [asdict(estimate(cost.macs, m, cost.instructions)) for m in mcus],
    }
