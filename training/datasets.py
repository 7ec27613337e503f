"""Moved to :mod:`agilenn.datasets` (the agent reads data too and must not depend on training/).

Kept so that ``agilenn.training.datasets`` imports keep working; new code imports agilenn.datasets.
"""
from agilenn.datasets import *  # noqa: F401,F403
from agilenn.datasets import DATASETS, Dataset, DatasetNotFoundError, load_dataset, read_idx, write_idx  # noqa: F401
