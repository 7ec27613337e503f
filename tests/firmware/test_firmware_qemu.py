"""The firmware on an emulated Cortex-M7, end to end (issue 11).

qemu-system-arm -M mps2-an500 runs the ELF of `agilenn-firmware build`; the firmware runs the
generated integer device part on Fashion-MNIST test images from its camera UART and sends FEATURES
frames over UART0 (a pty) to a real `agilenn-agent --port`, which forwards the payloads to a real
agilenn-server. Then the server is killed (the firmware keeps answering from its local predictor,
flagged degraded) and started again (full answers come back).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from agilenn.models import DEFAULT_MODEL, DEFAULT_REPOSITORY, ModelRepository, load_bundle

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc (.ci/setup installs both)")

N_FULL = 100  # images answered with the server up
N_DOWN = 8  # images answered while it is down
N_BACK = 60  # at most this many more while the agent reconnects (one per 0.5 s while degraded)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """The shipped default bundle when it carries the integer device part, else a quantized copy of it."""
    bundle = ModelRepository([DEFAULT_REPOSITORY]).resolve(DEFAULT_MODEL)
    if bundle.has_int8_device:
        return bundle.path
    from agilenn.firmware.bundle_int8 import add_int8_device

    copy = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(bundle.path, copy)
    add_int8_device(copy, calibration_count=500)
    return copy


@pytest.fixture(scope="module")
def firmware(int8_bundle, tmp_path_factory):
    from agilenn.firmware.build import build

    return build(int8_bundle, tmp_path_factory.mktemp("fw"), "mps2-an500")


def test_firmware_build_fits_the_paper_mcu(firmware):
    # STM32F746: 1 MB flash, 320 KB SRAM; the linker script claims no more, and the ELF says what it uses
    assert 0 < firmware.flash_bytes < 64 * 1024
    assert firmware.static_ram_bytes + firmware.stack_reserved_bytes < 320 * 1024
    assert firmware.sections[".bss"] >= firmware.device_cost["arena_bytes"]


def test_cortex_m7_features_are_bit_exact_with_python(int8_bundle, firmware, fashion_test):
    """Every FEATURES frame the Cortex-M7 build sends (int16 logits, scale, coded payload) equals
    the Python integer device part's byte for byte (the host tests check the same for gcc on x86)."""
    assert_firmware_frames_equal_python(int8_bundle, firmware, fashion_test.images[:200])


def test_portable_kernels_on_the_cortex_m7_are_bit_exact_too(int8_bundle, fashion_test, tmp_path):
    """The firmware built with -DAGN_USE_DSP=0 (portable C kernels instead of SMLAD/SXTB16/SSAT)
    sends the same frames: both code paths run on the M7, not only the one its compiler picks."""
    from agilenn.firmware.build import build

    portable = build(int8_bundle, tmp_path / "fw", "mps2-an500", extra_cflags=("-DAGN_USE_DSP=0",))
    assert_firmware_frames_equal_python(int8_bundle, portable, fashion_test.images[:40])


def serve_firmware(bundle_dir, elf, images, link_class=None):
    """Run the firmware in QEMU on `images` against a local-only agent's serial bridge in this
    process (so a test can watch or alter what arrives: `link_class`, a SerialLink subclass).
    Returns (the firmware's per-image results, the bridge)."""
    import threading

    from agilenn.device_agent.agent import Agent
    from agilenn.device_agent.serial_bridge import SerialBridge
    from agilenn.device_agent.serial_link import SerialLink, open_serial
    from agilenn.firmware.qemu import EmulatedBoard

    with Agent(bundle_dir, None) as agent, EmulatedBoard(elf, images) as board:
        bridge = SerialBridge((link_class or SerialLink)(open_serial(board.agent_port, 115200)), agent)
        stop = threading.Event()
        thread = threading.Thread(target=bridge.serve, args=(stop,), daemon=True)
        thread.start()
        try:
            results = list(board.results(len(images), timeout_s=120))
        finally:
            stop.set()
            thread.join(10)
            bridge.link.close()
    return results, bridge


def assert_firmware_frames_equal_python(bundle_dir, firmware, images):
    """Run the firmware in QEMU on `images` against a local-only agent and compare every FEATURES
    frame (the payload) and LOCAL frame (the logits; serial protocol version 3) with what the Python
    integer device part makes (test_firmware_rgb uses it too)."""
    from agilenn.device_agent.framing import Frame, MsgType
    from agilenn.device_agent.mcu_sim import FeaturesMaker
    from agilenn.device_agent.messages import Features, Local
    from agilenn.device_agent.serial_link import SerialLink

    class RecordingLink(SerialLink):
        def receive(self, timeout):
            event = super().receive(timeout)
            if isinstance(event, Frame) and event.type in (MsgType.FEATURES, MsgType.LOCAL):
                sent.append((event.type, event.version, bytes(event.payload)))
            return event

    n = len(images)
    sent: list[tuple[int, int, bytes]] = []
    results, _ = serve_firmware(bundle_dir, firmware.elf, images, RecordingLink)
    assert [r["tries"] for r in results] == [1] * n
    # per image a FEATURES whose logits follow, then its LOCAL, in version-3 frames
    assert [(t, v) for t, v, _ in sent] == [(MsgType.FEATURES, 3), (MsgType.LOCAL, 3)] * n
    maker = FeaturesMaker(load_bundle(bundle_dir))  # the bundle's default coder, which the generated library writes
    for i, image in enumerate(images):
        opening, local = Features.parse(sent[2 * i][2], 3), Local.parse(sent[2 * i + 1][2])
        assert opening.logits_follow and opening.classes == local.logits_q.size
        # the measured instruction counts: the one thing Python cannot know
        assert opening.device_cycles == results[i]["to_payload"]
        assert opening.device_cycles + local.device_cycles == results[i]["instructions"]
        assert 0 < local.device_cycles < opening.device_cycles
        expected = bytearray(maker(image).pack())
        got = bytearray(Features(local.logits_q, opening.scale, opening.payload).pack())
        expected[8:12] = b"\0\0\0\0"
        first = next((k for k in range(max(len(got), len(expected))) if got[k:k + 1] != expected[k:k + 1]), None)
        assert first is None, f"image {i}: {len(got)} vs {len(expected)} bytes, first difference at byte {first}"


def test_firmware_falls_back_to_version_2_with_an_older_agent(int8_bundle, firmware, fashion_test, monkeypatch):
    """An agent from before serial protocol version 3 answers the HELLO with BAD_VERSION: the firmware
    says HELLO again in version 2 and sends one FEATURES with its logits inside, bit-exact as before."""
    from agilenn.device_agent import framing, serial_bridge
    from agilenn.device_agent.framing import Frame, MsgType
    from agilenn.device_agent.mcu_sim import FeaturesMaker
    from agilenn.device_agent.messages import Features
    from agilenn.device_agent.serial_link import SerialLink

    for module in (framing, serial_bridge):  # the agent of 2026-11-26
        monkeypatch.setattr(module, "SUPPORTED_VERSIONS", (1, 2))
    seen: list[Frame] = []

    class RecordingLink(SerialLink):
        def receive(self, timeout):
            event = super().receive(timeout)
            if isinstance(event, Frame):
                seen.append(event)
            return event

    images = fashion_test.images[:4]
    results, bridge = serve_firmware(int8_bundle, firmware.elf, images, RecordingLink)
    assert bridge.counts["errors"] == 1 and bridge.counts["features"] == len(images)  # the one BAD_VERSION
    features = [f for f in seen if f.type == MsgType.FEATURES]
    assert all(f.version == 2 for f in features) and not any(f.type == MsgType.LOCAL for f in seen)
    maker = FeaturesMaker(load_bundle(int8_bundle))
    for image, frame, r in zip(images, features, results):
        got, expected = Features.parse(frame.payload, 2), maker(image)
        assert got.logits_q.tolist() == expected.logits_q.tolist() and got.payload == expected.payload
        assert got.device_cycles == r["instructions"] and r["tries"] == 1


def test_firmware_resends_the_pair_when_its_features_was_lost(int8_bundle, firmware, fashion_test):
    """A FEATURES lost on the line (here: dropped by the agent's link) makes its LOCAL an ERROR
    MISSING_FEATURES; the firmware sends both again and gets its answer on the second try."""
    from agilenn.device_agent.framing import Frame, MsgType
    from agilenn.device_agent.serial_link import SerialLink

    seqs, dropped = [], []

    class LossyLink(SerialLink):
        def receive(self, timeout):
            event = super().receive(timeout)
            if isinstance(event, Frame) and event.type == MsgType.FEATURES and event.seq not in seqs:
                seqs.append(event.seq)
                if len(seqs) in (1, 3):  # the first FEATURES of the first and third image never arrives
                    dropped.append(event.seq)
                    return None
            return event

    images = fashion_test.images[:4]
    results, bridge = serve_firmware(int8_bundle, firmware.elf, images, LossyLink)
    assert dropped == [seqs[0], seqs[2]] and len(seqs) == len(images)
    assert [r["tries"] for r in results] == [2, 1, 2, 1]
    assert all(r["reason"] == 6 and r["degraded"] == 1 for r in results)  # the agent runs local-only: answered
    assert bridge.counts["features"] == len(images) and bridge.counts["errors"] == 2  # the two MISSING_FEATURES


def _agent(bundle, port, server_address, out_dir):
    """The agent CLI with its output in files: a pipe nobody reads until the end would fill up with
    its JSON lines (about 600 B per image) and stop the agent mid-run."""
    cmd = [sys.executable, "-m", "agilenn.device_agent.cli", "--port", port, "--bundle", str(bundle),
           "--server", server_address, "--deadline-ms", "2000", "--json", "--connect-wait-s", "30"]
    return subprocess.Popen(cmd, stdout=open(out_dir / "agent.out", "w"), stderr=open(out_dir / "agent.err", "w"),
                            text=True)


def test_firmware_in_qemu_serves_the_agent_and_survives_the_server(int8_bundle, firmware, fashion_test, tmp_path):
    from agilenn.device_agent.agent import Agent
    from agilenn.firmware.qemu import EmulatedBoard
    from agilenn.server.testing import running_server

    bundle = load_bundle(int8_bundle)
    n_total = N_FULL + N_DOWN + N_BACK
    images, labels = fashion_test.images[:n_total], fashion_test.labels[:n_total]
    int8 = bundle.int8_device()

    with running_server(int8_bundle) as server, EmulatedBoard(firmware.elf, images) as board:
        board.release(0)
        agent = _agent(int8_bundle, board.agent_port, server.address, tmp_path)
        try:
            # 1. server up: every image merged, exactly as the Python agent does it
            board.release(N_FULL)
            full = list(board.results(N_FULL, timeout_s=120))
            with Agent(bundle, server.address, deadline_ms=30_000) as py_agent:  # default coder, as the C library
                assert py_agent.wait_connected(30)
                reference = [py_agent.infer(image) for image in images[:N_FULL]]
            # 2. server killed: the firmware keeps answering, from its own local predictor
            server.kill()
            board.release(N_FULL + N_DOWN)
            down = list(board.results(N_DOWN, timeout_s=120))
            # 3. server back: answers are full again once the agent has reconnected
            server.start()
            back = []
            for count in range(N_FULL + N_DOWN + 1, n_total + 1):
                board.release(count)
                back += list(board.results(1, timeout_s=120))
                if len(back) >= 5 and not any(r["degraded"] for r in back[-5:]):
                    break
                if back[-1]["degraded"]:
                    time.sleep(0.5)  # give the agent's reconnect (backoff up to 2 s) time, not images
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
    out, err = (tmp_path / "agent.out").read_text(), (tmp_path / "agent.err").read_text()
    summary = json.loads(out.strip().splitlines()[-1])

    # every frame answered exactly once: one inference per image in the agent, one send per frame here
    results = full + down + back
    assert [r["image"] for r in results] == list(range(len(results)))
    assert summary["n"] == len(results), err[-2000:]
    assert all(r["tries"] == 1 for r in results), [r for r in results if r["tries"] != 1]

    # phase 1: identical to the Python agent with the same integer device part, on the same server
    local_ref = int8.run(images[:N_FULL]).logits.argmax(1)
    assert [r["degraded"] for r in full] == [0] * N_FULL
    assert [r["class"] for r in full] == [ref.prediction for ref in reference]
    assert [r["local"] for r in full] == local_ref.tolist()
    assert [r["payload"] for r in full] == [ref.payload_bytes for ref in reference]
    accuracy = np.mean([r["class"] == labels[i] for i, r in enumerate(full)])
    assert accuracy > 0.85

    # phase 2: degraded, with a reason, and the class is the firmware's own local prediction
    assert all(r["degraded"] == 1 and r["reason"] in (1, 2, 3) for r in down), down
    assert all(r["class"] == r["local"] for r in down)
    assert [r["local"] for r in down] == int8.run(images[N_FULL:N_FULL + N_DOWN]).logits.argmax(1).tolist()

    # phase 3: recovered
    assert len(back) >= 5 and not any(r["degraded"] for r in back[-5:]), back

    # the measured device cost rides along in every result
    instructions = {r["instructions"] for r in results}
    assert min(instructions) > 0
    assert 0 < max(r["stack"] for r in results) < firmware.stack_reserved_bytes


def test_log_lines_parse_and_garbage_does_not():
    from agilenn.firmware.qemu import parse_log_line, qemu_command

    line = ("image 12 class 4 local 4 degraded 0 reason 0 tries 1 payload 131 channels 19 instructions 608040 "
            "to_payload 508040 stack 1748")
    assert parse_log_line(line) == {"image": 12, "class": 4, "local": 4, "degraded": 0, "reason": 0, "tries": 1,
                                    "payload": 131, "channels": 19, "instructions": 608040, "to_payload": 508040,
                                    "stack": 1748}
    for junk in ["", "agilenn firmware x:1 on mps2-an500", "image 1 class", "image x class 1", line[:40],
                 "hello: agent serves m:1"]:
        assert parse_log_line(junk) is None
    cmd = qemu_command("fw.elf", "mps2-an500", 1111, 2222)
    assert cmd[cmd.index("-icount") + 1] == "shift=0"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "-serial"] == ["pty", "tcp:127.0.0.1:1111",
                                                                       "tcp:127.0.0.1:2222"]
