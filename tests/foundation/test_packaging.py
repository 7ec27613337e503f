"""Everything installs under the agilenn.* namespace: no bare `server` or `codec` in site-packages."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_wheel_holds_only_the_agilenn_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("agilenn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"agilenn", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top
    for module in ("agilenn/codec/payload.py", "agilenn/models/bundle.py", "agilenn/v1/inference_pb2_grpc.py",
                   "agilenn/v1/inference.proto", "agilenn/server/__init__.py", "agilenn/device_agent/__init__.py"):
        assert module in names, module
    assert not any(n.startswith("agilenn/__init__") for n in names), "agilenn is a namespace package"
    # Every shipped bundle file travels in the wheel, so agent and server find it with no arguments.
    shipped = [p.relative_to(ROOT / "models") for p in (ROOT / "models" / "repository").glob("*/*/*") if p.is_file()]
    for rel in shipped:
        assert f"agilenn/models/{rel.as_posix()}" in names, f"{rel} is not packaged"


def test_installed_import_names():
    import agilenn.codec
    import agilenn.models
    import agilenn.v1.inference_pb2

    assert pathlib.Path(agilenn.codec.__file__).parent == ROOT / "codec" or "site-packages" in agilenn.codec.__file__
    for bare in ("codec", "device_agent"):
        assert subprocess.run([sys.executable, "-c", f"import {bare}"], cwd="/", capture_output=True).returncode != 0
