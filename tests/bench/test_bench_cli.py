"""agilenn-bench's command line: subcommand routing and the errors a user sees before anything runs."""

import pytest

from agilenn.benchmarks.cli import main


def test_codec_subcommand_is_routed_to_its_own_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["codec", "--help"])
    assert exc.value.code == 0
    assert "coder" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("argv, message", [
    (["latency", "--link", "x:0:1"], "rate_kbps must be > 0"),
    (["latency", "--link", "nope"], "unknown link"),
    (["latency", "--mhz", "fast"], "invalid literal"),
])
def test_bad_latency_arguments_fail_with_a_message(argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert message in str(exc.value.code)


def test_unknown_latency_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["latency", "--bogus"])
    assert exc.value.code == 2
    assert "--bogus" in capsys.readouterr().err
