"""The targets a latency run is judged by: issue 12's on Fashion-MNIST, issue 14's on colour images
(ratios to edge-only PNG and JPEG q75 on the slowest link, accuracy within the issue's margin)."""
from agilenn.benchmarks.latency import COLOUR_TARGETS, FASHION_MNIST_TARGETS, goals, targets_for
from agilenn.benchmarks.links import LinkProfile

LINKS = [LinkProfile("fast", 10_000, 2.0), LinkProfile("slow", 270, 8.0)]


def _row(scheme, link, p50, accuracy):
    return {"scheme": scheme, "link": link, "mcu_mhz": 216, "latency_ms_p50": p50, "accuracy": accuracy,
            "overhead_pct_p50": 5.0}


def _rows(agilenn_p50, agilenn_acc=0.88):
    return [_row("agilenn-ctx", "slow", agilenn_p50, agilenn_acc), _row("edge-png", "slow", 100.0, 0.885),
            _row("edge-jpeg75", "slow", 50.0, 0.884), _row("agilenn-ctx", "fast", 5.0, agilenn_acc)]


def test_targets_follow_the_data_set():
    assert targets_for("fashion-mnist test, 2000 images (seed 0)") is FASHION_MNIST_TARGETS
    assert targets_for("imagefolder:../shared/data/cifar10-jpeg test, 2000 images (seed 0)") is COLOUR_TARGETS
    assert (COLOUR_TARGETS.vs_png, COLOUR_TARGETS.vs_jpeg75, COLOUR_TARGETS.accuracy_pp) == (0.40, 0.75, 1.0)


def test_colour_goals_compare_with_png_and_jpeg75_round_trip_included():
    g = goals(_rows(36.0), LINKS, COLOUR_TARGETS)
    png, jpeg = g["latency_vs_edge_png"], g["latency_vs_edge_jpeg75"]
    assert (png["ratio"], png["target_ratio"], png["met"]) == (0.36, 0.40, True)
    assert png["ratio_without_rtt"] == round((36 - 16) / (100 - 16), 3) and png["target_ratio_without_rtt"] is None
    assert (jpeg["ratio"], jpeg["target_ratio"], jpeg["met"]) == (0.72, 0.75, True)
    assert g["targets"]["source"].startswith("issue 14")
    # slower than 0.75 x JPEG: that goal fails, the PNG one still holds
    g = goals(_rows(39.0), LINKS, COLOUR_TARGETS)
    assert g["latency_vs_edge_png"]["met"] and not g["latency_vs_edge_jpeg75"]["met"]
    # 1.5 pp less accurate than the baselines: not matched, so not met however fast
    g = goals(_rows(20.0, agilenn_acc=0.87), LINKS, COLOUR_TARGETS)
    assert not g["latency_vs_edge_png"]["accuracy_matched"] and g["latency_vs_edge_png"]["met"] is False
    # more accurate than the baselines is no failure: the margin is one-sided
    g = goals(_rows(36.0, agilenn_acc=0.90), LINKS, COLOUR_TARGETS)
    assert g["latency_vs_edge_png"]["accuracy_gap_pp"] == 1.5 and g["latency_vs_edge_png"]["accuracy_matched"]
    assert g["latency_vs_edge_png"]["met"] is True


def test_fashion_mnist_goals_keep_issue_12s_targets():
    g = goals(_rows(60.0), LINKS)
    png = g["latency_vs_edge_png"]
    assert (png["target_ratio"], png["target_ratio_without_rtt"], png["edge_png_p50_ms"]) == (0.70, 0.50, 100.0)
    assert png["met"] is False  # 0.60 <= 0.70 but (60-16)/(100-16) = 0.52 > 0.50
    assert g["latency_vs_edge_jpeg75"]["target_ratio"] is None and g["latency_vs_edge_jpeg75"]["met"] is None


def test_a_gap_of_exactly_the_margin_is_within_it():
    """88.0 % against 89.0 % on 500 images is -1.00 pp, which floating point makes -1.0000000000000009."""
    rows = [_row("agilenn-ctx", "slow", 36.0, 440 / 500), _row("edge-png", "slow", 100.0, 445 / 500),
            _row("edge-jpeg75", "slow", 50.0, 445 / 500)]
    assert (440 / 500 - 445 / 500) * 100 < -1.0
    g = goals(rows, LINKS, COLOUR_TARGETS)
    assert g["latency_vs_edge_jpeg75"]["accuracy_gap_pp"] == -1.0
    assert g["latency_vs_edge_jpeg75"]["accuracy_matched"] and g["latency_vs_edge_jpeg75"]["met"]
    rows[0] = _row("agilenn-ctx", "slow", 36.0, 439 / 500)  # one image fewer: -1.2 pp, outside
    assert not goals(rows, LINKS, COLOUR_TARGETS)["latency_vs_edge_jpeg75"]["accuracy_matched"]
