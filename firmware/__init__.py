"""The device part as portable integer C: int8 post-training quantization of a bundle's device part,
its exact numpy reference executor, and the generator of the C99 device library (agilenn-firmware).

    agilenn.firmware.int8       the integer model (device_int8.json) and its reference executor
    agilenn.firmware.quantize   post-training quantization of device.onnx
    agilenn.firmware.generate   the C library generator
"""

GENERATOR_VERSION = "1.0.0"
