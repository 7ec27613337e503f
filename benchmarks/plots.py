"""Plots of a latency run (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(results: dict, out: Path, base: str) -> list[Path]:
    plt = _pyplot()
    rows = results["rows"]
    top = max(r["mcu_mhz"] for r in rows)
    links = [link["name"] for link in results["links"]]
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(schemes)}
    written = []

    # 1. Latency CDF per link, at the highest clock (local-only has no link: it is in the tables).
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4), squeeze=False)
    for ax, link in zip(axes[0], links):
        for s in schemes:
            sample = results["samples"].get(f"{s}|{link}")
            if sample is None:
                continue
            if "latency_ms" in sample:
                x = np.sort(np.asarray(sample["latency_ms"][str(top)]))
            else:  # results from before 2026-11-27: host part and device term apart, nothing overlapped
                x = np.sort(np.asarray(sample["host_ms"]) + sample["device_ms"][str(top)])
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=s, color=colors[s])
        ax.set_title(f"{link}, device at {top} MHz")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("fraction of images")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    written.append(_save(fig, out / f"{base}-cdf.png"))

    # 2. Accuracy vs bytes per inference (bytes do not depend on the link: the first link's rows).
    fig, ax = plt.subplots(figsize=(6, 4.5))
    points = {}
    for r in rows:
        if r["mcu_mhz"] == top and r["link"] in (links[0], "none"):
            points[r["scheme"]] = (max(r["payload_bytes_mean"], 1.0), r["accuracy"] * 100)
    # a legend, not labels at the points: schemes close in bytes and accuracy would print over each other
    for s, (x, y) in points.items():
        ax.scatter([x], [y], color=colors[s], s=40, label=s)
    front, best = [], -1.0
    for x, y in sorted(points.values()):
        if y > best:
            front.append((x, y))
            best = y
    if len(front) > 1:
        ax.plot(*zip(*front), color="grey", linestyle="--", linewidth=1, label="Pareto front")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("payload bytes per inference (mean; local-only plotted at 1)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs bytes sent")
    ax.grid(True, which="both", alpha=0.3)
    written.append(_save(fig, out / f"{base}-pareto.png"))

    # 3. p50 latency vs MCU clock, per link.
    clocks = sorted({r["mcu_mhz"] for r in rows})
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4), squeeze=False)
    for ax, link in zip(axes[0], links):
        for s in schemes:
            ys = [next((r["latency_ms_p50"] for r in rows if r["scheme"] == s and r["mcu_mhz"] == c
                        and r["link"] in (link, "none")), None) for c in clocks]
            if None in ys:
                continue
            ax.plot(clocks, ys, marker="o", label=s, color=colors[s])
        ax.set_title(link)
        ax.set_xlabel("MCU clock (MHz)")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    written.append(_save(fig, out / f"{base}-clock.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
