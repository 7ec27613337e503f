"""Fixtures every test folder may use. (Helpers shared inside one folder live in a uniquely named
module instead, e.g. tests/server/server_test_helpers.py: see DEVELOPERS.md.)"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fashion_test():
    from agilenn.datasets import DatasetNotFoundError, load_dataset

    try:
        return load_dataset("fashion-mnist", "test")
    except DatasetNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
