"""Writing a latency run's results: JSON (rows + context), per-sample JSON, a Markdown report, plots.

    <out>/latency<suffix>.json          the document from latency.run() without per-sample data
    <out>/latency<suffix>-samples.json  per (scheme, link): latency of every image, less the device term
    <out>/latency<suffix>.md            the tables
    <out>/latency<suffix>-*.png         plots (see plots.py)
"""

from __future__ import annotations

import json
from pathlib import Path

# The fields every row has; runs are compared by script on these.
ROW_FIELDS = (
    "scheme", "link", "mcu", "mcu_mhz", "n", "accuracy", "degraded", "payload_bytes_mean", "payload_bytes_p50",
    "channels_sent_mean", "wire_bytes_up_mean", "wire_bytes_down_mean", "latency_ms_p50", "latency_ms_p99",
    "latency_ms_mean", "device_ms", "device_macs", "device_energy_mj", "device_cost_basis", "device_params", "device_int8_flash_bytes",
    "device_peak_sram_bytes", "host_device_ms_mean", "encode_ms_mean", "encode_charged",
    "network_ms_mean", "transmit_ms_mean", "server_queue_ms_mean", "server_compute_ms_mean", "server_total_ms_mean",
    "merge_ms_mean",
)


def write_results(results: dict, out_dir, suffix: str = "", plots: bool = True) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = f"latency{suffix}"
    doc = {k: v for k, v in results.items() if k != "samples"}
    written = [out / f"{base}.json", out / f"{base}-samples.json", out / f"{base}.md"]
    written[0].write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    written[1].write_text(json.dumps(results.get("samples", {})) + "\n", encoding="utf-8")
    written[2].write_text(markdown(doc, base), encoding="utf-8")
    if plots:
        from .plots import write_plots

        written += write_plots(results, out, base)
    return written


def _fmt(v, spec=".1f") -> str:
    if v is None:
        return "–"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def markdown(doc: dict, base: str = "latency") -> str:
    rows = doc["rows"]
    top = max(r["mcu_mhz"] for r in rows)
    shaper = doc["shaper"]
    lines = [
        f"# AgileNN latency run, {doc['created']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"{doc['images']} images ({doc['dataset']}), {doc['duration_s']} s, host {doc['host']['machine']} with "
        f"{doc['host']['cpus']} CPUs (1-min load average {doc['host']['loadavg_1m_start']} at the start, "
        f"{doc['host']['loadavg_1m_end']} at the end), MCU model {doc['mcu']['chip']} at "
        f"{', '.join(str(m) for m in doc['mcu']['mhz'])} MHz; device time from "
        f"{', '.join(sorted({r['device_cost_basis'] for r in rows if r.get('device_cost_basis')})) or 'none'} "
        "(measured instructions: the firmware on QEMU's Cortex-M7 x cycles/instruction; MAC model: MACs x "
        "cycles/MAC; agilenn.device_agent.mcu).  ",
        f"Shaper: **{shaper['shaper']}**"
        + (f" (namespace {shaper['namespace']}, veth MTU {shaper['mtu']}, tbf burst {shaper['tbf_burst_bytes']} B; "
           f"relay {'adds serialization, delay, jitter, loss' if shaper['relay']['shapes_rate'] else 'adds delay, jitter, loss'})"
           if "namespace" in shaper else " (userspace relay: serialization, delay, jitter, loss)"),
        "",
        "## Links and achieved goodput",
        "",
    ]
    lines += _table(
        ["link", "rate kbps", "one-way delay ms", "jitter ms", "loss %", "goodput kbps", "goodput / rate"],
        [[link["name"], _fmt(link["rate_kbps"], "g"), _fmt(link["delay_ms"], "g"), _fmt(link["jitter_ms"], "g"),
          _fmt(link["loss_pct"], "g"), _fmt(doc["goodput"][link["name"]]["goodput_kbps"], ".0f"),
          _fmt(doc["goodput"][link["name"]]["ratio"], ".3f")] for link in doc["links"]],
    )
    lines += ["Goodput: a bulk TCP transfer through the shaped path (uplink), less one round trip. TCP/IP framing "
              "is charged to the link, so about 1448/1514 = 0.956 of the rate is the most a full-size segment "
              "stream can carry.", "", f"## Per scheme and link, device at {top} MHz", ""]
    lines += _table(
        ["scheme", "link", "accuracy", "payload B", "wire B up / down", "p50 ms", "p99 ms", "device",
         "local (overlapped)", "encode", "transmit", "server queue", "server compute", "merge", "overhead % (p50)"],
        [[r["scheme"], r["link"], _fmt(r["accuracy"] * 100, ".2f") + " %", _fmt(r["payload_bytes_mean"], ".1f"),
          f"{_fmt(r['wire_bytes_up_mean'], '.0f')} / {_fmt(r['wire_bytes_down_mean'], '.0f')}",
          _fmt(r["latency_ms_p50"], ".2f"), _fmt(r["latency_ms_p99"], ".2f"), _fmt(r["device_ms"], ".2f"),
          _fmt(r.get("device_local_ms", 0.0), ".2f"), _fmt(r["encode_ms_mean"], ".2f") + ("" if r.get("encode_charged", True) else " (in device)"),
          _fmt(r["transmit_ms_mean"], ".2f"), _fmt(r["server_queue_ms_mean"], ".2f"),
          _fmt(r["server_compute_ms_mean"], ".2f"), _fmt(r["merge_ms_mean"], ".3f"), _fmt(r.get("overhead_pct_p50"))]
         for r in rows if r["mcu_mhz"] == top],
    )
    lines += ["Breakdown columns are means in ms. transmit = the client's send->reply time less the server's own "
              "time (both directions' serialization and propagation, framing, relay). device = the MCU cost model at "
              "this clock, up to the payload; local (overlapped) = the local predictor, which the firmware runs "
              "after sending the payload (serial protocol version 3): it counts only where it outlasts the "
              "request's network time; encode and merge are measured on this host. encode \"(in device)\": not added to the latency, "
              "because the device term is the firmware's measured run, which computes the indices and codes the "
              "payload on the MCU. wire bytes: TCP payload through the relay "
              "(gRPC and HTTP/2 framing included, TCP/IP headers not). overhead = latency / (device + payload/rate + "
              "RTT + server decode+compute) - 1, median over images.", ""]
    split = [r for r in rows if r["mcu_mhz"] == top and "wire_framing_up_mean" in r]
    if split:
        lines += ["## Wire bytes per inference: payload / gRPC+HTTP2+protobuf framing / TCP/IP", ""]
        lines += _table(
            ["scheme", "link", "up: payload", "framing", "TCP/IP", "down: payload", "framing", "TCP/IP", "packets up / down",
             "counted by"],
            [[r["scheme"], r["link"], _fmt(r["wire_payload_up_mean"]), _fmt(r["wire_framing_up_mean"]),
              _fmt(r["wire_tcpip_up_mean"]), _fmt(r["wire_payload_down_mean"]), _fmt(r["wire_framing_down_mean"]),
              _fmt(r["wire_tcpip_down_mean"]),
              f"{_fmt(r.get('wire_packets_up_mean'), '.2f')} / {_fmt(r.get('wire_packets_down_mean'), '.2f')}",
              r["wire_source"]] for r in split])
        lines += ["Payload up: the codec payload or image; payload down: the logits' value bytes. Framing: every "
                  "other TCP payload byte (HTTP/2 frame headers, WINDOW_UPDATE and PING frames, gRPC message "
                  "prefix, protobuf fields), from the relay's counters. TCP/IP: with the tc shaper, the tbf "
                  "qdiscs' own byte counters (whole frames, ACKs included) less the TCP payload; with the userspace "
                  "shaper, the 66 B per segment the relay charges (no ACKs).", ""]
    lines += ["## Latency p50 / p99 (ms) vs MCU clock", ""]
    clocks = sorted({r["mcu_mhz"] for r in rows})
    keyed = {(r["scheme"], r["link"], r["mcu_mhz"]): r for r in rows}
    pairs = list(dict.fromkeys((r["scheme"], r["link"]) for r in rows))
    lines += _table(["scheme", "link", *[f"{c} MHz" for c in clocks]],
                    [[s, link, *[f"{_fmt(keyed[(s, link, c)]['latency_ms_p50'], '.2f')} / "
                                 f"{_fmt(keyed[(s, link, c)]['latency_ms_p99'], '.2f')}" for c in clocks]]
                     for s, link in pairs])
    lines += ["## Device part on the MCU (cost model)", ""]
    for name, model in doc["models"].items():
        c = model["cost"]
        lines += [f"**{name}** v{model['version']}: {c['macs']:,} MACs, {c['params']:,} parameters, "
                  f"{c['int8_flash_bytes']:,} B int8 flash, {c['peak_sram_bytes']:,} B peak activation SRAM.  "]
        lines += [", ".join(f"{m['mcu']}: {m['compute_ms']:.3f} ms, {m['energy_mj']:.4f} mJ" for m in c["per_mcu"]),
                  ""]
    if doc["models"]:
        c = next(iter(doc["models"].values()))["cost"]
        lines += [f"Assumptions: {c['cycles_per_mac']} cycles/MAC ({c['cycles_per_mac_source']}); "
                  f"{c['energy_per_cycle_nj']} nJ/cycle ({c['energy_source']}); int8 weights, int32 biases, int8 "
                  "activations, batch-norm folded; docs/latency.md has the derivations.", ""]
    lines += ["## Goals", ""]
    g = doc.get("goals", {})
    scheme = g.get("scheme", "agilenn-ans")
    if "targets" in g:
        lines += [f"Targets: {g['targets']['source']}.", ""]
    for key, label in (("latency_vs_edge_png", "edge-only PNG"), ("latency_vs_edge_jpeg75", "edge-only JPEG q75")):
        e = g.get(key)
        if not e:
            continue
        target = f"target <= {e['target_ratio']}" if e.get("target_ratio") is not None else "no target"
        without = f"without the link's round trip **{e['ratio_without_rtt']}**"
        if e.get("target_ratio_without_rtt") is not None:
            without += f" (target <= {e['target_ratio_without_rtt']})"
        verdict = "" if e.get("met") is None else (" Met." if e["met"] else " Not met.")
        baseline_ms = e.get("baseline_p50_ms", e.get("edge_png_p50_ms"))
        lines += [f"- AgileNN ({scheme}) vs {label} at {e['link']}, {g['mcu_mhz']} MHz: p50 {e['agilenn_p50_ms']} ms "
                  f"vs {baseline_ms} ms, ratio **{e['ratio']}** ({target}); {without}; "
                  f"accuracy gap {e['accuracy_gap_pp']:+.2f} pp ({'within' if e['accuracy_matched'] else 'NOT within'} "
                  f"the target: at most {g['targets']['accuracy_pp']:g} pp below).{verdict}"]
    if "bytes_above_payload" in g:
        b = g["bytes_above_payload"]
        lines += [f"- Bytes above the payload per inference, TCP/IP excluded (worst link): up {b['up']} B (target <= "
                  f"{b['target_up']:g}), down {b['down']} B (target <= {b['target_down']:g}). "
                  f"{'Met' if b['met'] else 'Not met'}."]
    if "agilenn_overhead_pct_p50" in g:
        lines += ["- AgileNN overhead beyond device + payload/rate + RTT + server compute (target <= 10 %): "
                  + ", ".join(f"{k} {v:.1f} % ({'met' if g['overhead_met'][k] else 'not met'})"
                              for k, v in g["agilenn_overhead_pct_p50"].items())]
    parts = [r for r in rows if r["mcu_mhz"] == top and r["scheme"] == scheme and "overhead_ms_mean" in r]
    if parts:
        lines += ["", "Where AgileNN's overhead goes (means, ms): airtime of the request's framing (gRPC/HTTP2/"
                  "protobuf + TCP/IP per segment), airtime of the reply, and the rest (software, timers):", ""]
        lines += _table(["link", "overhead", "request framing", "reply", "rest"],
                        [[r["link"], _fmt(r["overhead_ms_mean"], ".2f"), _fmt(r["overhead_request_framing_ms"], ".2f"),
                          _fmt(r["overhead_reply_ms"], ".2f"), _fmt(r["overhead_rest_ms"], ".2f")] for r in parts])
    lines += ["", f"Plots: `{base}-cdf.png` (latency CDF per link), `{base}-pareto.png` (accuracy vs bytes), "
              f"`{base}-clock.png` (latency vs MCU clock).", ""]
    return "\n".join(lines)
