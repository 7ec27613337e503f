"""Data sets in their standard on-disk formats, plus a user's own image folders (numpy + Pillow,
no torch): the trainer, the device agent and the benchmarks all read data through here.

    from agilenn.datasets import load_dataset
    load_dataset("fashion-mnist", "test")                      # Debian's dataset-fashion-mnist
    load_dataset("imagefolder:photos", "train")                # photos/train/<class>/*.jpg
"""
from .base import SPLITS, Dataset, DatasetNotFoundError
from .imagefolder import IMAGEFOLDER_PREFIX, load_imagefolder
from .loaders import DATASETS, check_dataset_name, default_data_dir, load_dataset, load_for_model, read_idx, write_idx

__all__ = ["DATASETS", "SPLITS", "IMAGEFOLDER_PREFIX", "Dataset", "DatasetNotFoundError", "check_dataset_name",
           "default_data_dir", "load_dataset", "load_for_model", "load_imagefolder", "read_idx", "write_idx"]
