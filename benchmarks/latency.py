"""The latency run: every scheme on the same images over every link, then one row per
(scheme, link, MCU clock).

Per sample, end-to-end latency is composed as the agent composes it:

    latency = device compute up to the payload + encode + max(network, local predictor) + merge

The firmware sends the payload before it runs the local predictor (serial protocol version 3), so
the local predictor overlaps the request's time on the link and at the server; where the firmware
was measured with that split (device_measured.json, instructions_to_payload) the device term is the
part before the payload, else the whole device part (and the local predictor term 0).

where network is the client's measured send->reply time through the shaped path (transmit both
ways, propagation, server queue and compute). The network pass is measured once per (scheme,
link); the device term is an exact per-clock constant, so percentiles stay per-sample.

Encode (the host's quantize + entropy-code) is charged only when the device term is the MAC model:
the firmware's measured instruction count is a run of agn_device_run, which computes the centroid
indices and codes the payload on the MCU, so adding the host's encode would count that step twice
(for a coder the firmware lacks, zstd or constriction's ans, its rANS stands in).

Overhead (the issue's goal 2) compares the latency with the physics:

    ideal = device compute + payload_bytes / rate + RTT + server decode + compute
    overhead = latency / ideal - 1

so framing (gRPC, HTTP/2, TCP/IP), the reply's bytes, the relay and all host software count as overhead.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from agilenn.device_agent.mcu import parse_mcu

from .links import LinkProfile
from .mcu_cost import DeviceCost, device_report, estimate
from .mcu_cost import device_cost as _read_device_cost
from .schemes import Measured, Scheme
from .testbed import Testbed

WARMUP = 3  # requests per (scheme, link) not measured: connection set-up, first HPACK tables, lazy init
# The measured pass runs as deployed: replies without ServerTimings. The server's queue/decode/compute
# times (for `ideal` and the transmit split) come from a second, short pass that asks for them; each
# measured sample gets that pass's median (server compute is ~0.1-0.3 ms and nearly constant).
CALIBRATION_IMAGES = 30
TARGET_ABOVE_PAYLOAD_UP, TARGET_ABOVE_PAYLOAD_DOWN = 30.0, 40.0  # issue 12, any data set


@dataclass(frozen=True)
class LatencyTargets:
    """What the issues ask of AgileNN's p50 on the slowest link, as ratios to edge-only baselines."""
    source: str
    vs_png: float
    vs_png_without_rtt: float | None  # both p50s less the link's round trip
    vs_jpeg75: float | None
    accuracy_pp: float  # AgileNN's accuracy at most this far below the baseline's (above is fine)

    def to_dict(self) -> dict:
        return asdict(self)


# Fashion-MNIST (issue 12): a 28x28 PNG is ~508 B, so fixed costs dominate and the bar is lower.
FASHION_MNIST_TARGETS = LatencyTargets("issue 12 (Fashion-MNIST)", 0.70, 0.50, None, 0.3)
# Colour images in the paper's regime (issue 14, CIFAR-10): PNG ~2,290 B, JPEG q75 ~920 B per image.
COLOUR_TARGETS = LatencyTargets("issue 14 (CIFAR-10, colour images)", 0.40, None, 0.75, 1.0)


def targets_for(dataset: str) -> LatencyTargets:
    """The targets that apply to a run on ``dataset`` (Config.dataset: "NAME test, N images ...")."""
    return FASHION_MNIST_TARGETS if dataset.startswith("fashion-mnist") else COLOUR_TARGETS


@dataclass
class Config:
    bundle_dirs: list  # what the server serves (the agilenn bundle and, if any, the plain-split one)
    schemes: list  # Scheme, in run order
    links: list  # LinkProfile
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray
    mcu: str = "stm32f746"
    mcu_mhz: tuple = (64, 128, 216)
    shaper: str = "auto"
    goodput_s: float = 2.0
    budget_fraction: float = 0.5  # automatic byte budget: this share of agilenn-ans's mean payload
    command: str = ""
    dataset: str = ""
    progress: bool = True


@dataclass
class Pass:
    """One scheme over one link (link None: local-only)."""

    scheme: Scheme
    link: LinkProfile | None
    samples: list[Measured] = field(default_factory=list)
    wire: dict = field(default_factory=dict)  # relay byte counters over the measured requests
    wall_s: float = 0.0


def _log(cfg: Config, msg: str) -> None:
    if cfg.progress:
        print(f"[latency] {msg}", file=sys.stderr, flush=True)


def _run_pass(scheme: Scheme, link: LinkProfile | None, address: str | None, images, stats=None) -> Pass:
    client = scheme.client(address)
    try:
        for image in images[:WARMUP]:
            client.infer(image)
        before = stats() if stats else None
        start = time.perf_counter()
        samples = [client.infer(image) for image in images]
        wall = time.perf_counter() - start
        after = stats() if stats else None
    finally:
        client.close()
    wire = {k: after[k] - before[k] for k in after} if stats else {}
    if address is not None:
        _fill_server_timings(samples, _calibrate(scheme, address, images))
    return Pass(scheme, link, samples, wire, wall)


def _calibrate(scheme: Scheme, address: str, images) -> dict:
    """Median server times over a short pass whose replies carry ServerTimings."""
    client = scheme.client(address, server_timings=True)
    try:
        for image in images[:WARMUP]:
            client.infer(image)
        got = [client.infer(image) for image in images[:CALIBRATION_IMAGES]]
    finally:
        client.close()
    fields = ("server_queue_ms", "server_decode_ms", "server_compute_ms", "server_total_ms")
    return {f: float(np.median([getattr(m, f) for m in got])) for f in fields}


def _fill_server_timings(samples: list, medians: dict) -> None:
    for m in samples:
        if not m.has_server_timings:
            for f, v in medians.items():
                setattr(m, f, v)


# Each bundle's device cost, read once when a run starts: the rows are composed after the passes, and
# a firmware source edited in between would make the recorded measurement stale (MAC model) for them.
_COSTS: dict[str, DeviceCost] = {}


def device_cost(bundle) -> DeviceCost:
    key = str(bundle.path)
    if key not in _COSTS:
        _COSTS[key] = _read_device_cost(bundle)
    return _COSTS[key]


def run(cfg: Config) -> dict:
    """Measure everything; returns the results document (see report.write_results)."""
    started = time.time()
    load_before = os.getloadavg()
    passes: list[Pass] = []
    schemes = [_with_budget(s, cfg) for s in cfg.schemes]
    _COSTS.clear()
    for s in schemes:
        if s.runs_device_part:
            device_cost(s.bundle)
    with Testbed(cfg.bundle_dirs, cfg.shaper) as bed:
        _log(cfg, f"shaper {bed.shaper}; server {bed.server.address}")
        goodput = {}
        for link in cfg.links:
            goodput[link.name] = bed.goodput(link, cfg.goodput_s)
            _log(cfg, f"goodput {link.name}: {goodput[link.name]['goodput_kbps']} kbps of {link.rate_kbps:g}")
        for link in cfg.links:
            with bed.link(link) as session:
                for scheme in schemes:
                    if not scheme.uses_link:
                        continue
                    p = _run_pass(scheme, link, session.address, cfg.images, session.stats)
                    passes.append(p)
                    _log(cfg, f"{link.name} {scheme.name}: {len(p.samples)} images in {p.wall_s:.1f} s")
        description = bed.describe()
    for scheme in schemes:
        if not scheme.uses_link:
            p = _run_pass(scheme, None, None, cfg.images)
            passes.append(p)
            _log(cfg, f"{scheme.name}: {len(p.samples)} images in {p.wall_s:.1f} s")

    rows = [row for p in passes for row in _rows(p, cfg)]
    bundles = {s.bundle.name: s.bundle for s in schemes if s.runs_device_part}
    mcus = [f"{cfg.mcu}@{mhz:g}MHz" for mhz in cfg.mcu_mhz]
    return {
        "schema": "agilenn-latency/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": cfg.command,
        "duration_s": round(time.time() - started, 1),
        # the machine may be shared: the load average says how much else ran
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpus(),
                 "loadavg_1m_start": round(load_before[0], 2), "loadavg_1m_end": round(os.getloadavg()[0], 2)},
        "dataset": cfg.dataset,
        "images": int(len(cfg.images)),
        "shaper": description,
        "links": [link.to_dict() for link in cfg.links],
        "goodput": goodput,
        "mcu": {"chip": cfg.mcu, "mhz": list(cfg.mcu_mhz)},
        "models": {name: {"path": str(b.path), "version": b.version, "cost": device_report(b, mcus, device_cost(b))}
                   for name, b in bundles.items()},
        "schemes": {s.name: _scheme_info(s) for s in schemes},
        "rows": rows,
        "goals": goals(rows, cfg.links, targets_for(cfg.dataset)),
        "samples": _samples(passes, cfg),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _with_budget(scheme: Scheme, cfg: Config) -> Scheme:
    """A budget scheme without a byte budget gets one: a share of its full ANS payload's mean size,
    measured on (up to 50 of) the run's images before any pass, so every link uses the same budget."""
    if scheme.name != "agilenn-budget" or scheme.budget_bytes is not None:
        return scheme
    from agilenn.codec import header_size
    from agilenn.device_agent.device_model import DevicePart

    device, codec = DevicePart(scheme.bundle), scheme.bundle.codec()
    sizes = [len(codec.encode_indices(device.run(image).indices(codec), scheme.coder)) for image in cfg.images[:50]]
    budget = max(header_size(0, codec.payload_version) + 1, int(round(float(np.mean(sizes)) * cfg.budget_fraction)))
    return dataclasses.replace(scheme, budget_bytes=budget)


def _scheme_info(s: Scheme) -> dict:
    info = {"kind": s.kind, "model": f"{s.bundle.name}:{s.bundle.version}"}
    if s.coder:
        info["coder"] = s.coder
    if s.image_format:
        info["image_format"] = s.image_format
    if s.jpeg_quality:
        info["jpeg_quality"] = s.jpeg_quality
    if s.budget_bytes is not None:
        info["budget_bytes"] = s.budget_bytes
    return info


def _device_ms(p: Pass, mcu: str) -> tuple[float, float, int]:
    """(device ms up to the payload, local predictor ms run while the request is out, MACs)."""
    if not p.scheme.runs_device_part:
        return 0.0, 0.0, 0
    cost = device_cost(p.scheme.bundle)  # measured instructions when the firmware was measured, else MACs
    m = parse_mcu(mcu)
    total = m.compute_ms(cost.macs, cost.instructions)
    if cost.instructions_to_payload is None:
        return total, 0.0, cost.macs
    to_payload = m.compute_ms(cost.macs, cost.instructions_to_payload)
    return to_payload, total - to_payload, cost.macs


def _latency_ms(p: Pass, device_ms: float, local_ms: float) -> np.ndarray:
    """Per sample: device up to the payload + encode (unless the device term already codes, see the
    module docstring) + max(network, local predictor) + merge. A sample that sent nothing (network
    0) waits for the local predictor in full."""
    charge_encode = _instructions(p) is None
    return np.array([device_ms + (m.encode_ms if charge_encode else 0.0) + max(m.network_ms, local_ms) + m.merge_ms
                     for m in p.samples], dtype=np.float64)


def _instructions(p: Pass) -> float | None:
    return device_cost(p.scheme.bundle).instructions if p.scheme.runs_device_part else None


def _footprint(bundle) -> dict:
    c = device_cost(bundle)
    return {"device_params": c.params, "device_int8_flash_bytes": c.int8_flash_bytes,
            "device_peak_sram_bytes": c.peak_sram_bytes}


def _pct(x, q) -> float:
    return round(float(np.percentile(x, q)), 3)


def _mean(x) -> float:
    return round(float(np.mean(x)), 3) if len(x) else 0.0


def _rows(p: Pass, cfg: Config) -> list[dict]:
    s = p.samples
    n = len(s)
    col = lambda attr: np.array([getattr(m, attr) for m in s], dtype=np.float64)  # noqa: E731
    correct = np.array([m.prediction for m in s]) == cfg.labels[:n]
    payload = col("payload_bytes")
    link = p.link
    rows = []
    for mhz in cfg.mcu_mhz:
        mcu = f"{cfg.mcu}@{mhz:g}MHz"
        device_ms, local_ms, macs = _device_ms(p, mcu)
        latency = _latency_ms(p, device_ms, local_ms)
        row = {
            "scheme": p.scheme.name,
            "link": link.name if link else "none",
            "mcu": mcu,
            "mcu_mhz": mhz,
            "n": n,
            "accuracy": round(float(correct.mean()), 4),
            "degraded": int(sum(m.degraded for m in s)),
            "payload_bytes_mean": _mean(payload),
            "payload_bytes_p50": _pct(payload, 50),
            "channels_sent_mean": _mean(col("channels_sent")),
            "wire_bytes_up_mean": round(p.wire["bytes_up"] / n, 1) if p.wire else 0.0,
            "wire_bytes_down_mean": round(p.wire["bytes_down"] / n, 1) if p.wire else 0.0,
            **_wire_split(p, float(payload.mean()) if n else 0.0),
            "latency_ms_p50": _pct(latency, 50),
            "latency_ms_p99": _pct(latency, 99),
            "latency_ms_mean": _mean(latency),
            "device_ms": round(device_ms, 4),
            "device_local_ms": round(local_ms, 4),  # the local predictor, overlapping the request
            "device_macs": macs,
            "device_energy_mj": round(estimate(macs, mcu, _instructions(p)).energy_mj, 5) if macs else 0.0,
            "device_cost_basis": device_cost(p.scheme.bundle).basis if p.scheme.runs_device_part else "",
            **(_footprint(p.scheme.bundle) if p.scheme.runs_device_part else
               {"device_params": 0, "device_int8_flash_bytes": 0, "device_peak_sram_bytes": 0}),
            "host_device_ms_mean": _mean(col("host_device_ms")),
            "encode_ms_mean": _mean(col("encode_ms")),
            "encode_charged": _instructions(p) is None,
            "network_ms_mean": _mean(col("network_ms")),
            "transmit_ms_mean": _mean(col("network_ms") - col("server_total_ms")) if link else 0.0,
            "server_queue_ms_mean": _mean(col("server_queue_ms")),
            "server_compute_ms_mean": _mean(col("server_decode_ms") + col("server_compute_ms")),
            "server_total_ms_mean": _mean(col("server_total_ms")),
            "merge_ms_mean": _mean(col("merge_ms")),
        }
        if link:
            ideal = (device_ms + payload / link.bytes_per_s * 1e3 + link.rtt_ms
                     + col("server_decode_ms") + col("server_compute_ms"))
            row["ideal_ms_p50"] = _pct(ideal, 50)
            row["overhead_pct_p50"] = round(float(np.median(latency / ideal - 1)) * 100, 2)
            row["transmit_ideal_ms_mean"] = round(link.transmit_ms(float(payload.mean())), 3)
            row.update(_overhead_parts(p, link, float(payload.mean()), float(np.mean(latency - ideal))))
        rows.append(row)
    return rows


def _reply_payload_bytes(p: Pass) -> float:
    """The reply's payload: the logits' value bytes (classes x 2 for the default int16 encoding),
    per inference that got logits back."""
    from agilenn.device_agent.client import DEFAULT_LOGITS_ENCODING

    width = {"float32": 4, "float16": 2, "int16": 2, "int8": 1}[DEFAULT_LOGITS_ENCODING]
    answered = sum(1 for m in p.samples if not m.degraded) / max(1, len(p.samples))
    return len(p.scheme.bundle.manifest["classes"]) * width * answered


def _wire_split(p: Pass, payload_up: float) -> dict:
    """Per inference and direction: payload, gRPC+HTTP2+protobuf framing (all TCP payload bytes
    beyond the payload, from the relay's counters) and TCP/IP (whole frames less TCP payload, from
    the tc qdiscs' own counters; with the userspace shaper, the 66 B per segment the relay charges)."""
    if not p.wire:
        return {}
    n = len(p.samples)
    payload_down = _reply_payload_bytes(p)
    out = {"wire_source": "tc qdisc + relay" if "qdisc_bytes_up" in p.wire else "relay"}
    for d, payload in (("up", payload_up), ("down", payload_down)):
        tcp_payload = p.wire[f"bytes_{d}"] / n
        if f"qdisc_bytes_{d}" in p.wire:
            tcpip = (p.wire[f"qdisc_bytes_{d}"] - p.wire[f"bytes_{d}"]) / n
            out[f"wire_packets_{d}_mean"] = round(p.wire[f"qdisc_packets_{d}"] / n, 2)
        else:
            from .relay import SEGMENT_OVERHEAD

            tcpip = SEGMENT_OVERHEAD * p.wire[f"segments_{d}"] / n
        out[f"wire_payload_{d}_mean"] = round(payload, 1)
        out[f"wire_framing_{d}_mean"] = round(tcp_payload - payload, 1)
        out[f"wire_tcpip_{d}_mean"] = round(tcpip, 1)
    return out


def _overhead_parts(p: Pass, link: LinkProfile, payload_mean: float, overhead_mean: float) -> dict:
    """Where the mean overhead goes: airtime of the request's framing (gRPC/HTTP2/protobuf and the
    per-segment TCP/IP framing the link charges), airtime of the reply, and the rest (software,
    relay timers, scheduling)."""
    from .relay import SEGMENT_OVERHEAD

    n = len(p.samples)
    up = p.wire["bytes_up"] / n - payload_mean + SEGMENT_OVERHEAD * p.wire["segments_up"] / n
    down = p.wire["bytes_down"] / n + SEGMENT_OVERHEAD * p.wire["segments_down"] / n
    up_ms, down_ms = link.transmit_ms(up), link.transmit_ms(down)
    return {"wire_segments_up_mean": round(p.wire["segments_up"] / n, 2),
            "wire_segments_down_mean": round(p.wire["segments_down"] / n, 2),
            "overhead_ms_mean": round(overhead_mean, 3), "overhead_request_framing_ms": round(up_ms, 3),
            "overhead_reply_ms": round(down_ms, 3), "overhead_rest_ms": round(overhead_mean - up_ms - down_ms, 3)}


def _samples(passes, cfg: Config) -> dict:
    """Per (scheme, link): each image's latency per clock, and the device term (up to the payload) per clock."""
    out = {}
    for p in passes:
        key = f"{p.scheme.name}|{p.link.name if p.link else 'none'}"
        latency, device = {}, {}
        for mhz in cfg.mcu_mhz:
            device_ms, local_ms, _ = _device_ms(p, f"{cfg.mcu}@{mhz:g}MHz")
            latency[str(mhz)] = [round(float(v), 3) for v in _latency_ms(p, device_ms, local_ms)]
            device[str(mhz)] = round(device_ms, 4)
        out[key] = {"latency_ms": latency, "device_ms": device}
    return out


def goals(rows: list[dict], links, targets: LatencyTargets = FASHION_MNIST_TARGETS) -> dict:
    """The issues' targets (5, 12 and 14), evaluated on this run's rows at the highest clock."""
    if not rows:
        return {}
    top = max(r["mcu_mhz"] for r in rows)
    at = {(r["scheme"], r["link"]): r for r in rows if r["mcu_mhz"] == top}
    slowest = min(links, key=lambda link: link.rate_kbps).name if links else None
    # AgileNN as shipped: the bundle's default coder (rans-ctx) when the run has it, else ans
    agilenn = "agilenn-ctx" if any(r["scheme"] == "agilenn-ctx" for r in rows) else "agilenn-ans"
    out = {"mcu_mhz": top, "scheme": agilenn, "targets": targets.to_dict()}
    a = at.get((agilenn, slowest))
    rtt = next((link.rtt_ms for link in links if link.name == slowest), 0.0)
    for baseline, key, target, target_without in (
            ("edge-png", "latency_vs_edge_png", targets.vs_png, targets.vs_png_without_rtt),
            ("edge-jpeg75", "latency_vs_edge_jpeg75", targets.vs_jpeg75, None)):
        e = at.get((baseline, slowest))
        if not (a and e):
            continue
        ratio = a["latency_ms_p50"] / e["latency_ms_p50"]
        gap_pp = (a["accuracy"] - e["accuracy"]) * 100
        # the share AgileNN can change: both latencies less the link's round trip
        without = (a["latency_ms_p50"] - rtt) / (e["latency_ms_p50"] - rtt)
        # one-sided: the targets ask that offloading loses no more than this; being more accurate than
        # the baseline (Fashion-MNIST run4: +1.4 pp) is no reason to fail a latency goal
        # rounded first: 440/500 - 445/500 is -1.0000000000000009 pp in floating point, and a gap of
        # exactly the margin is within it (CIFAR-10 v4's run was judged "NOT within" at -1.00 pp)
        matched = round(gap_pp, 6) >= -targets.accuracy_pp
        met = None if target is None else bool(
            ratio <= target and (target_without is None or without <= target_without) and matched)
        out[key] = {
            "link": slowest, "baseline": baseline, "agilenn_p50_ms": a["latency_ms_p50"],
            "baseline_p50_ms": e["latency_ms_p50"], "ratio": round(ratio, 3), "target_ratio": target,
            "ratio_without_rtt": round(without, 3), "target_ratio_without_rtt": target_without,
            "accuracy_gap_pp": round(gap_pp, 2), "accuracy_matched": matched, "met": met,
        }
        if baseline == "edge-png":
            out[key]["edge_png_p50_ms"] = e["latency_ms_p50"]  # the name older results/readers use
    framed = [r for (s, _), r in at.items() if s == agilenn and "wire_framing_up_mean" in r]
    if framed:
        up = max(r["wire_framing_up_mean"] for r in framed)
        down = max(r["wire_framing_down_mean"] for r in framed)
        out["bytes_above_payload"] = {"up": up, "down": down, "target_up": TARGET_ABOVE_PAYLOAD_UP,
                                      "target_down": TARGET_ABOVE_PAYLOAD_DOWN,
                                      "met": bool(up <= TARGET_ABOVE_PAYLOAD_UP and down <= TARGET_ABOVE_PAYLOAD_DOWN)}
    overhead = {link.name: at[(agilenn, link.name)]["overhead_pct_p50"]
                for link in links if (agilenn, link.name) in at}
    if overhead:
        out["agilenn_overhead_pct_p50"] = overhead
        out["overhead_target_pct"] = 10.0
        out["overhead_met"] = {k: v <= 10.0 for k, v in overhead.items()}
    return out
