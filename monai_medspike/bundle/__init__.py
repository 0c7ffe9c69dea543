"""The bundles as a whole: where a bundle's folder is (:func:`bundle_root`, which every bundle config calls), the
bundles shipped with the package, and writing one to a folder. The configs are generated from the settings
declarations and each bundle's dataset record by :mod:`monai_medspike.bundle.sync`.

This is the top layer: nothing else in the package imports it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

__all__ = ["META_SCHEMA", "bundle_root", "export_bundle", "find_bundles", "shipped_bundle", "shipped_bundles"]

logger = logging.getLogger(__name__)

#: the bundle metadata schema shipped with the package (the mandatory keys and tensor format specifiers of the MONAI
#: Bundle specification), so that ``python -m monai.bundle verify_metadata --filepath <it>`` runs offline
META_SCHEMA = Path(__file__).resolve().with_name("meta_schema.json")


def _is_bundle(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds a bundle whose ``train.json`` calls itself ``name`` (its ``bundle_name``)."""
    train = folder / "configs" / "train.json"
    if not (train.is_file() and (folder / "configs" / "metadata.json").is_file()):
        return False
    try:
        return json.loads(train.read_text(errors="replace")).get("bundle_name") == name
    except (json.JSONDecodeError, AttributeError):
        return False


def bundle_root(name: str) -> str:
    """The folder of bundle ``name`` (the one holding ``configs/``), whatever the current directory.

    ``python -m monai.bundle run`` (MONAI's ``ConfigWorkflow.run``) puts the bundle folder of its first config file
    on ``sys.path`` before it runs the workflow: the file's folder, or its parent when that folder is ``configs``.
    The first folder on ``sys.path`` after its first entry (the current directory, which MONAI leaves in front)
    that holds a bundle whose ``train.json`` has ``bundle_name`` ``name`` is therefore the bundle being run, from any
    working directory and for any copy of the bundle (``python -m monai_medspike.bundle export``); the latest run
    comes first when one process runs several. Elsewhere (a ``ConfigParser`` read by hand, ``monai.bundle load``,
    ``verify_net_in_out``) it is the bundle shipped with the package (:func:`shipped_bundle`). A ``bundle_root``
    override (``--bundle_root <folder>``, or ``parser["bundle_root"] = ...`` as MONAI Label does) replaces this
    lookup entirely.

    Raises:
        FileNotFoundError: the bundle cannot be located.
    """
    entries = sys.path[1:] + sys.path[:1]
    for entry in entries:
        folder = Path(entry or ".")
        if _is_bundle(folder, name):
            return str(folder.resolve())
    shipped = shipped_bundle(name)
    if shipped is not None:
        return str(shipped)
    raise FileNotFoundError(
        f"cannot locate the bundle folder of {name!r}; pass it on the command line: --bundle_root <path to {name}>."
    )


def find_bundles(root: str | Path) -> dict[str, Path]:
    """The bundles in the folder ``root``, by folder name, sorted: each sub-folder holding ``configs/train.json``."""
    return {p.parents[1].name: p.parents[1] for p in sorted(Path(root).glob("*/configs/train.json"))}


def shipped_bundles() -> dict[str, Path]:
    """The bundles that come with this installation, by name: ``monai_medspike/bundles/<name>`` in a wheel or
    sdist install, else ``bundles/<name>`` of the source checkout (an editable install)."""
    here = Path(__file__).resolve().parents[1]
    for root in (here / "bundles", here.parent / "bundles"):
        found = find_bundles(root)
        if found:
            return found
    return {}


def shipped_bundle(name: str) -> Path | None:
    """The folder of the shipped bundle ``name`` (see :func:`shipped_bundles`), or None."""
    return shipped_bundles().get(name)


def export_bundle(name: str, destination: str | Path, overwrite: bool = False) -> Path:
    """Write the shipped bundle ``name`` as a bundle folder at ``destination`` (``configs/``, ``docs/``, ``LICENSE``,
    an empty ``models/``, the root links), without any ``outputs/`` or trained weights; returns the folder.

    Raises:
        ValueError: unknown bundle name, listing the shipped ones.
        FileExistsError: ``destination`` exists and is not empty (unless ``overwrite``), or is a file (even with
            ``overwrite``: a bundle is a folder).
    """
    import shutil

    source = shipped_bundle(name)
    if source is None:
        raise ValueError(f"no bundle named {name!r}; the shipped bundles are: {', '.join(shipped_bundles())}.")
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"{destination} is a file; a bundle is written as a folder: give a folder's path.")
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise FileExistsError(f"{destination} exists and is not empty; choose another folder or pass --overwrite.")
    # the bundle as shipped: no runs, and no weights a local training published into models/
    ignore = shutil.ignore_patterns("outputs", "__pycache__", "*.pt", "*.ts", ".*.tmp")
    # links inside the bundle (train.json -> configs/train.json) stay links; those pointing out of it are copied
    shutil.copytree(source, destination, symlinks=False, ignore=ignore, dirs_exist_ok=True)
    for link in ("train.json", "metadata.json", "logging.conf"):  # a wheel holds them as copies: link again
        target = destination / link
        if (destination / "configs" / link).is_file():
            target.unlink(missing_ok=True)
            target.symlink_to(Path("configs") / link)
    return destination
