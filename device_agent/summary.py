"""The closing summary of a run: accuracy, degradation, bytes and latency over every answer."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .agent import InferenceResult


class Summary:
    def __init__(self, **context):
        self.context = context  # model, server, mcu, ...: copied into the summary as they are
        self.n = 0
        self.labelled = 0
        self.correct = 0
        self.local_correct = 0
        self.degraded = 0
        self.reasons: Counter = Counter()
        self.payloads: list[int] = []
        self.channels: list[int] = []
        self.latencies: list[float] = []
        self.device_ms: list[float] = []
        self.errors = 0

    def add(self, result: InferenceResult, label: int | None = None) -> None:
        self.n += 1
        if label is not None and label >= 0:
            self.labelled += 1
            self.correct += int(result.prediction == label)
            self.local_correct += int(result.local_prediction == label)
        if result.degraded:
            self.degraded += 1
            self.reasons[result.reason] += 1
        if result.payload_bytes:
            self.payloads.append(result.payload_bytes)
            self.channels.append(result.channels_sent)
        self.latencies.append(result.timings.latency_ms)
        self.device_ms.append(result.timings.device_compute_ms)

    def add_error(self) -> None:
        """An input answered with an error instead of a prediction (e.g. an unreadable file)."""
        self.errors += 1

    def as_dict(self) -> dict:
        def pct(values, q):
            return round(float(np.percentile(values, q)), 3) if values else None

        def mean(values):
            return round(float(np.mean(values)), 3) if values else None

        acc = round(self.correct / self.labelled, 6) if self.labelled else None
        local_acc = round(self.local_correct / self.labelled, 6) if self.labelled else None
        return {
            "summary": True,
            **self.context,
            "n": self.n,
            "errors": self.errors,
            "accuracy": acc,
            "local_only_accuracy": local_acc,
            "degraded": self.degraded,
            "degraded_reasons": dict(self.reasons),
            # over requests that went on the wire (degraded answers for an unreachable server send nothing)
            "payload_bytes_mean": mean(self.payloads),
            "channels_sent_mean": mean(self.channels),
            "latency_ms_p50": pct(self.latencies, 50),
            "latency_ms_p99": pct(self.latencies, 99),
            "latency_ms_mean": mean(self.latencies),
            "device_compute_ms_mean": mean(self.device_ms),
        }

    def text(self) -> str:
        d = self.as_dict()

        def fmt(v, spec):
            return "n/a" if v is None else format(v, spec)

        where = f"{d['model']}: " if d.get("model") else ""
        return (
            f"{where}{d['n']} inferences"
            + (f", {d['errors']} errors" if d["errors"] else "")
            + f": accuracy {fmt(d['accuracy'], '.4f')} (local-only {fmt(d['local_only_accuracy'], '.4f')}), "
            f"{d['degraded']} degraded, payload {fmt(d['payload_bytes_mean'], '.1f')} B mean, "
            f"latency p50 {fmt(d['latency_ms_p50'], '.2f')} ms / p99 {fmt(d['latency_ms_p99'], '.2f')} ms"
        )
