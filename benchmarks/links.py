"""Link profiles: the radio links the latency runs emulate.

A profile is a rate plus a one-way delay, optionally jitter and loss. The built-in three follow the
AgileNN paper's links (WiFi on an ESP8266-class module, Bluetooth LE 2M PHY, and BLE at the
~270 kbps application goodput a 1M PHY connection sustains); the delays are our assumptions, stated
in docs/latency.md, and any profile can be replaced on the command line:

    --link name:rate_kbps:delay_ms[:jitter_ms[:loss_pct]]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LinkProfile:
    name: str
    rate_kbps: float  # bits per second / 1000, each direction
    delay_ms: float  # one way
    jitter_ms: float = 0.0  # std-dev of the extra one-way delay per segment
    loss_pct: float = 0.0  # per-segment loss probability, in percent

    def __post_init__(self):
        if not self.name or ":" in self.name or "," in self.name:
            raise ValueError(f"link name {self.name!r} must be non-empty without ':' or ','")
        if not self.rate_kbps > 0:
            raise ValueError(f"link {self.name}: rate_kbps must be > 0, got {self.rate_kbps}")
        for field_name in ("delay_ms", "jitter_ms"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"link {self.name}: {field_name} must be >= 0")
        if not 0 <= self.loss_pct < 100:
            raise ValueError(f"link {self.name}: loss_pct must be in [0, 100), got {self.loss_pct}")

    @property
    def bytes_per_s(self) -> float:
        return self.rate_kbps * 1000 / 8

    @property
    def rtt_ms(self) -> float:
        return 2 * self.delay_ms

    def transmit_ms(self, nbytes: float) -> float:
        """Serialization time of nbytes at this rate."""
        return nbytes / self.bytes_per_s * 1000

    def spec(self) -> str:
        return f"{self.name}:{self.rate_kbps:g}:{self.delay_ms:g}:{self.jitter_ms:g}:{self.loss_pct:g}"

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "wifi": LinkProfile("wifi", 6000, 2.0),
    "ble2m": LinkProfile("ble2m", 2000, 8.0),
    "ble270k": LinkProfile("ble270k", 270, 8.0),
}


def parse_link(text: str) -> LinkProfile:
    """A built-in name, or name:rate_kbps:delay_ms[:jitter_ms[:loss_pct]]."""
    text = text.strip()
    if ":" not in text:
        if text not in PROFILES:
            raise ValueError(f"unknown link {text!r}; built-in: {', '.join(PROFILES)}, "
                             "or define one as name:rate_kbps:delay_ms[:jitter_ms[:loss_pct]]")
        return PROFILES[text]
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise ValueError(f"link {text!r}: expected name:rate_kbps:delay_ms[:jitter_ms[:loss_pct]]")
    try:
        numbers = [float(p) for p in parts[1:]]
    except ValueError:
        raise ValueError(f"link {text!r}: rate, delay, jitter and loss must be numbers") from None
    return LinkProfile(parts[0], *numbers)


def parse_links(specs) -> list[LinkProfile]:
    """Several links (each item may itself be comma-separated); names must be unique."""
    links = []
    for spec in specs:
        links += [parse_link(s) for s in spec.split(",") if s.strip()]
    names = [link.name for link in links]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"link names must be unique, repeated: {', '.join(duplicates)}")
    return links
