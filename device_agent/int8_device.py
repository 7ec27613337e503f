"""The bundle's integer device part, when it has one (agilenn.firmware.int8; the file device_int8.json).

One place that finds it, so the serial bridge (which checks a FEATURES frame's logit scale against it)
and the MCU simulator (which plays a firmware running it) agree on what "the integer device part" is.
"""

from __future__ import annotations

from pathlib import Path

INT8_FILE = "device_int8.json"


def load_int8_device(bundle):
    """The Int8DeviceModel of ``bundle``, or None when the bundle carries no integer device part."""
    path = Path(bundle.path) / INT8_FILE
    if not path.is_file():
        return None
    from agilenn.firmware.int8 import Int8DeviceModel

    return Int8DeviceModel.load(path)
