"""MONAI Label app serving the five local MedSpikeFormer bundles.

The pieces that do not need MONAI Label (name-to-bundle mapping, input checks, the studies a model trains on) live
in :mod:`.bundles` and import without it. The app and its tasks (MONAI Label's stock ``BundleInferTask`` and
``BundleTrainTask``, thinly subclassed) are in :mod:`.app`, which needs ``pip install "monai-medspike[monailabel]"``
(its own environment: see ``docs/monailabel.md``). The folder MONAI Label starts is :func:`app_dir`::

    monailabel start_server --app "$(python -m monai_medspike.apps.monailabel)" --studies studies/ \\
        --conf models all
"""

from __future__ import annotations

from . import bundles as _bundles
from .bundles import *  # noqa: F403  (the pieces that need no MONAI Label)

__all__ = list(_bundles.__all__)
