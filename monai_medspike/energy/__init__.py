"""Energy report of a bundle's network: ``python -m monai_medspike.energy --bundle bundles/<name>``.

The counting itself is :func:`monai_medspike.metrics.count_operations`.
"""

from __future__ import annotations

from .report import (
    bundle_config,
    bundle_images,
    compare_networks,
    comparison_rows,
    load_or_calibrate,
    markdown_table,
    spike_input_rate,
)

__all__ = [
    "bundle_config",
    "bundle_images",
    "compare_networks",
    "comparison_rows",
    "load_or_calibrate",
    "markdown_table",
    "spike_input_rate",
]
