"""Only the optional C extension lives here; everything else is in pyproject.toml.

agilenn.codec._agn_rans is the firmware's own rANS coder (firmware/csrc), built for the host so
the server decodes payloads with the code the device encodes them with (codec/native.py loads it
with ctypes: no Python C API involved). It is optional: without a C compiler the install goes on
and the codec decodes in Python (codec/rans.py), bit for bit the same, only slower.
"""

from setuptools import Extension, setup

CSRC = "firmware/csrc"

setup(
    ext_modules=[
        Extension(
            "agilenn.codec._agn_rans",
            sources=[f"{CSRC}/agn_rans.c", f"{CSRC}/agn_rans_ctx.c", f"{CSRC}/agn_common.c"],
            include_dirs=[CSRC],
            extra_compile_args=["-std=c99", "-O2"],
            optional=True,
        )
    ]
)
