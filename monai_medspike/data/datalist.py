"""``prepare``: check a dataset release, split it without leaks and write a MONAI datalist atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_medspike.data.checks import remember_checked
from monai_medspike.data.errors import DataError
from monai_medspike.data.readers import DatasetReader, Loaded, Sample, get_reader
from monai_medspike.data.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SPLITS, split_groups
from monai_medspike.utils import Progress

__all__ = ["PROTOCOLS", "prepare"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("default", "original")


@dataclass
class _Checked:
    sample: Sample
    loaded: Loaded
    coverage: float


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    if array.dtype == np.uint8:
        Image.fromarray(array * 255 if array.max() <= 1 else array, mode="L").save(path)
    else:
        Image.fromarray(array.astype(np.uint16)).save(path)


def _check_all(
    reader: DatasetReader, samples: list[Sample], skip_bad: bool, bad: list[str]
) -> tuple[list[_Checked], list[str]]:
    checked: list[_Checked] = []
    progress = Progress("checked", "samples", len(samples), log=logger)
    for i, sample in enumerate(samples):
        if i:
            progress.step(i)
        try:
            loaded = reader.load(sample)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
            continue
        checked.append(_Checked(sample, loaded, float(np.mean(loaded.label > 0))))
    if samples:
        progress.step(len(samples))
    return checked, bad


def _summary(reader: DatasetReader, checked: list[_Checked], assignment: dict[str, str], bad: list[str]) -> dict:
    splits: dict[str, Any] = {}
    for split in SPLITS:
        members = [c for c in checked if assignment[c.sample.group] == split]
        entry: dict[str, Any] = {"count": len(members), "groups": len({c.sample.group for c in members})}
        classes = Counter(c.sample.label_class for c in members if c.sample.label_class)
        if classes:
            entry["classes"] = dict(sorted(classes.items()))
        splits[split] = entry
    sizes = np.array([c.loaded.size for c in checked])
    coverage = np.array([c.coverage for c in checked])
    summary: dict[str, Any] = {
        "dataset": reader.name,
        "total": len(checked),
        "splits": splits,
        "sizes": {
            "min": sizes.min(axis=0).tolist(),
            "max": sizes.max(axis=0).tolist(),
            "distinct": len({tuple(s) for s in sizes.tolist()}),
        },
        "mask_coverage": {
            "mean": round(float(coverage.mean()), 4),
            "min": round(float(coverage.min()), 4),
            "max": round(float(coverage.max()), 4),
            "empty": int((coverage == 0).sum()),
        },
        "skipped": bad,
    }
    if reader.classes == "multiclass":
        values = Counter()
        for c in checked:
            values.update(dict(zip(*np.unique(c.loaded.label, return_counts=True), strict=True)))
        total = sum(values.values())
        summary["class_fraction"] = {int(k): round(v / total, 4) for k, v in sorted(values.items())}
    if reader.kind == "volume":
        slices = [int(np.any(c.loaded.label > 0, axis=(0, 1)).sum()) for c in checked]
        summary["slices"] = {"total": int(sum(s[2] for s in sizes.tolist())), "with_mask": int(sum(slices))}
    return summary


def prepare(
    dataset: str,
    root: str | Path,
    out: str | Path,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    protocol: str = "default",
    skip_bad: bool = False,
    overwrite: bool = False,
    **reader_options: Any,
) -> dict[str, Any]:
    """Check the release folder of ``dataset``, split it and write a MONAI datalist JSON.

    The datalist has ``training``, ``validation`` and ``test`` lists of ``{"image", "label", "id", "group"}``
    entries (BUSI adds ``"class"``, MoNuSeg ``"instance"``) with paths relative to the JSON's folder, so
    ``monai.data.load_decathlon_datalist(out, data_list_key="training")`` loads it. Labels that do not exist as
    one file in the release (BUSI's OR-merged multi-masks, MoNuSeg's rasterised XML) are written as PNG to
    ``<out stem>_labels/`` beside the JSON.

    Splits are by ``Sample.group`` (patient, CT case, else image) with :func:`split_groups`; nothing is shared
    between splits. ``protocol="original"`` sets the test share to the original paper's (e.g. Kvasir 120 of
    1000, exactly those sizes on the full release) and still draws a validation split (``val_fraction``, taken
    from what the original used for training; 0 gives the original sizes) — disjoint, unlike the original code.

    Nothing is half-written: labels go to a temporary folder and the JSON to a temporary file, both renamed into
    place only when everything succeeded.

    Args:
        dataset: one of :data:`monai_medspike.data.readers.READERS`.
        root: the release folder.
        out: the datalist JSON to write.
        seed: split seed.
        val_fraction: validation share of the samples.
        test_fraction: test share (ignored with ``protocol="original"``).
        protocol: ``"default"`` or ``"original"``.
        skip_bad: leave out (and list) unpaired, unreadable or inconsistent samples instead of stopping.
        overwrite: replace an existing datalist (and its labels folder).
        reader_options: options of the dataset's reader (e.g. ``include_normal=False`` for BUSI).

    Returns:
        the summary (counts per split and class, sizes, mask coverage, skipped samples), also stored in the JSON.

    Raises:
        DataError: a bad release (naming the file and the problem) unless ``skip_bad``; an existing ``out``
            without ``overwrite``.
        ValueError: bad arguments.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    reader = get_reader(dataset, **reader_options)
    root, out = Path(root), Path(out)
    if out.is_dir():
        raise DataError(f"--out {out}: a folder; give the datalist's file name, e.g. {out / (dataset + '.json')}.")
    if out.suffix != ".json":
        raise ValueError(f"out must be a .json file, got {out}.")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: the output folder does not exist; create it first.")
    labels_dir = out.parent / f"{out.stem}_labels"
    if not overwrite and (out.exists() or labels_dir.exists()):
        existing = out if out.exists() else labels_dir
        raise DataError(f"{existing} already exists: choose another --out, or pass --overwrite to replace it.")
    if protocol == "original":
        if reader.original_protocol is None:
            raise ValueError(f"dataset {dataset!r} has no original protocol; use protocol='default'.")
        train, test = reader.original_protocol
        test_fraction = test / (train + test)

    samples, bad = reader.find(root)
    if bad and not skip_bad:
        shown = "\n  ".join(bad[:20])
        raise DataError(
            f"{root}: {len(bad)} unpaired file(s):\n  {shown}{chr(10) + '  ...' if len(bad) > 20 else ''}\n"
            "Fix the release, or run prepare with --skip_bad to leave them out."
        )
    if not samples:
        raise DataError(f"{root}: no {dataset} image/mask pairs found.")
    checked, bad = _check_all(reader, samples, skip_bad, list(bad))
    if not checked:
        raise DataError(f"{root}: every sample was bad; nothing to write.")
    assignment = split_groups([c.sample.group for c in checked], val_fraction, test_fraction, seed)
    summary = _summary(reader, checked, assignment, bad)

    tmp_labels = out.parent / f".{out.stem}_labels.tmp-{os.getpid()}"
    tmp_json = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        datalist: dict[str, Any] = {
            "name": dataset,
            "description": f"{dataset} datalist written by monai_medspike.data.prepare",
            "root": _relative(root, out.parent),
            "protocol": protocol,
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "reader": {"kind": reader.kind, "classes": reader.classes, "channels": reader.channels},
            "summary": summary,
        }
        datalist.update({split: [] for split in SPLITS})
        derived = False
        for c in checked:
            s = c.sample
            entry: dict[str, Any] = {"image": _relative(s.image, out.parent), "id": s.id, "group": s.group}
            if c.loaded.write_label:
                if not derived:
                    tmp_labels.mkdir()
                    derived = True
                _write_png(c.loaded.label, tmp_labels / f"{s.id}.png")
                entry["label"] = f"{labels_dir.name}/{s.id}.png"
                for key, array in c.loaded.extra.items():
                    _write_png(array, tmp_labels / f"{s.id}_{key}.png")
                    entry[key] = f"{labels_dir.name}/{s.id}_{key}.png"
            else:
                entry["label"] = _relative(s.masks[0], out.parent)
            if s.label_class:
                entry["class"] = s.label_class
            datalist[assignment[s.group]].append(entry)
        datalist["numTraining"] = len(datalist["training"])
        tmp_json.write_text(json.dumps(datalist, indent=2) + "\n")
        if labels_dir.exists():
            shutil.rmtree(labels_dir)
        if derived:
            tmp_labels.rename(labels_dir)
        os.replace(tmp_json, out)
        remember_checked(out, dataset, reader_options)  # every pair was decoded and checked above
    finally:
        if tmp_labels.exists():
            shutil.rmtree(tmp_labels)
        tmp_json.unlink(missing_ok=True)
    return summary
