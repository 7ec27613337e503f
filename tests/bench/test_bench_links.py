"""Link profiles: built-ins, user-defined specs, and the errors a user sees for bad ones."""

import pytest

from agilenn.benchmarks.links import PROFILES, LinkProfile, parse_link, parse_links


def test_builtin_profiles_match_the_issue_rates():
    assert {name: p.rate_kbps for name, p in PROFILES.items()} == {"wifi": 6000, "ble2m": 2000, "ble270k": 270}
    assert parse_link("ble270k") is PROFILES["ble270k"]


def test_user_defined_link_with_all_fields():
    link = parse_link("lora:5.5:120:10:2.5")
    assert link == LinkProfile("lora", 5.5, 120.0, 10.0, 2.5)
    assert link.spec() == "lora:5.5:120:10:2.5"
    assert link.rtt_ms == 240
    assert link.transmit_ms(687.5) == pytest.approx(1000.0)  # 5.5 kbps = 687.5 bytes/s


def test_optional_fields_default_to_zero():
    assert parse_link("x:100:5") == LinkProfile("x", 100, 5, 0, 0)


def test_comma_separated_and_repeated_specs():
    links = parse_links(["wifi,ble2m", "slow:10:50"])
    assert [link.name for link in links] == ["wifi", "ble2m", "slow"]


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown link"),
    ("x:1", "expected name:rate"),
    ("x:fast:1", "must be numbers"),
    ("x:0:1", "rate_kbps must be > 0"),
    ("x:10:-1", "delay_ms must be >= 0"),
    ("x:10:1:0:100", "loss_pct must be in"),
    (":10:1", "must be non-empty"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_link(spec)


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="repeated: wifi"):
        parse_links(["wifi", "wifi:1:1"])
