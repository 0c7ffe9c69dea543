"""Dataset readers, leak-free splits, MONAI datalists, transforms and built-in demo data.

``python -m monai_medspike.data prepare <dataset> --root <release folder> --out <datalist.json>`` checks a release
and writes its datalist; ``python -m monai_medspike.data demo <dataset> --out <folder>`` writes synthetic data in
the same layout.
"""

from __future__ import annotations

from .datalist import PROTOCOLS, prepare
from .demo import DEMO_DATASETS, make_all_demo_datasets, make_demo_dataset
from .errors import DataError
from .readers import READERS, DatasetReader, Loaded, Sample, get_reader
from .sources import input_files, prepare_data
from .splits import SPLITS, split_groups
from .transforms import DEFAULT_HU_WINDOW, BinarizeLabeld, EnsureChannelsd, array_size, get_transforms

__all__ = [
    "DEFAULT_HU_WINDOW",
    "DEMO_DATASETS",
    "PROTOCOLS",
    "READERS",
    "SPLITS",
    "BinarizeLabeld",
    "DataError",
    "DatasetReader",
    "EnsureChannelsd",
    "Loaded",
    "Sample",
    "array_size",
    "get_reader",
    "get_transforms",
    "input_files",
    "make_all_demo_datasets",
    "make_demo_dataset",
    "prepare",
    "prepare_data",
    "split_groups",
]
