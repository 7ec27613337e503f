"""The device part as portable integer C: int8 post-training quantization of a bundle's device part,
its exact numpy reference executor, and the generator of the C99 device library (agilenn-firmware).

    agilenn.firmware.int8         the integer model (device_int8.json) and its reference executor
    agilenn.firmware.quantize     post-training quantization of device.onnx
    agilenn.firmware.bundle_int8  add the integer part to a bundle (agilenn-firmware quantize)
    agilenn.firmware.plan         the C library's arena plan and device cost
    agilenn.firmware.cost         a bundle's device cost (the one source for agent, benchmarks, report)
    agilenn.firmware.generate     the C library generator (agilenn-firmware generate)
"""

GENERATOR_VERSION = "1.2.0"
