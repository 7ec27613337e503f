"""The bundle's integer device part, when it has one (agilenn.firmware.int8; manifest files.int8_device).

One place that finds it, so the serial bridge (which checks a FEATURES frame's logit scale against it)
and the MCU simulator (which plays a firmware running it) agree on what "the integer device part" is.
"""

from __future__ import annotations


def load_int8_device(bundle):
    """The Int8DeviceModel of ``bundle``, or None when the bundle carries no integer device part."""
    return bundle.int8_device() if bundle.has_int8_device else None
