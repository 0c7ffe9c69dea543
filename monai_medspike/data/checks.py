"""Every datalist checked like a prepared one, once, before any work.

:func:`load_datalist` is the one way the workflows read a datalist (training, evaluation, inference of a split), so a
hand-written ``--datalist`` gets the checks ``prepare`` makes:

- the file is JSON with the split's list, every entry a ``{"image": path, "label": path}`` object (``label`` in
  ``training`` and ``validation``, and wherever labels are scored);
- every file exists (relative paths are read from the datalist's folder, as MONAI's ``load_decathlon_datalist``
  does; the datalist is named in the error);
- no image is listed twice, and none is in two splits (a test image the model trained on);
- an image and its label have the same size (read from the headers);
- label values fit the rules of their kind (:data:`monai_medspike.data.io.MASK_RULES`; 2D masks, decoded once and
  remembered per file state under ``~/.cache/monai_medspike/checked``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_medspike.data.errors import DataError
from monai_medspike.data.io import check_exists, read_mask, refuse_deep, volume_header
from monai_medspike.distributed import main_process_first
from monai_medspike.utils import Progress, cache_dir

__all__ = ["LABELLED_SPLITS", "check_datalist", "load_datalist", "remember_checked"]

LABELLED_SPLITS = ("training", "validation")
"""Splits whose entries must have a label."""

_VOLUME_SUFFIXES = (".nii", ".nii.gz")
_SHOWN = 3
_checked: set[str] = set()  # datalists fully checked by this process (by file state)


def load_datalist(
    file: str | Path,
    split: str,
    dataset: str | None = None,
    options: Mapping[str, Any] | None = None,
    labels: bool = True,
) -> list[dict[str, Any]]:
    """The ``split`` list of datalist ``file``, every path resolved, after :func:`check_datalist`.

    Args:
        file: the datalist JSON.
        split: the list to return (``training``, ``validation``, ``test``, ...).
        dataset, options: the dataset reader (and its options) whose label rules apply; None checks the binary rule.
        labels: the entries of ``split`` must have a label (evaluation); inference passes False.

    Raises:
        DataError: naming the datalist, the split, the entry and the fix.
    """
    path = Path(file)
    content = main_process_first(lambda: check_datalist(path, dataset, options))  # rank 0 decodes, the others reuse
    if split not in content:
        lists = [k for k, v in content.items() if isinstance(v, list)]
        raise DataError(f"datalist {path}: no {split!r} list (it has {lists}); add one, or choose another split.")
    entries = content[split]
    if not entries:
        raise DataError(f"datalist {path}: the {split!r} list is empty; add entries, or choose another split.")
    if labels:
        missing = [i for i, e in enumerate(entries) if isinstance(e, str) or not e.get("label")]
        if missing:
            raise DataError(
                f"datalist {path}: {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} of {split!r} without a "
                f"'label' (entry {', '.join(map(str, missing[:_SHOWN]))}); scoring needs each image's label: add "
                "them, or run inference (which needs none)."
            )
    return [_resolved(e, path.parent) for e in entries]


def check_datalist(
    file: str | Path, dataset: str | None = None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check a whole datalist (every split) as ``prepare`` checks a release, and return its content.

    Structure, existence, duplicates and cross-split entries are checked on every call; image/label sizes and label
    values once per state of the files (remembered in this process and under the cache folder).

    Raises:
        DataError: the first problems found (up to three, with their count), naming the datalist and the entries.
    """
    path = Path(file)
    check_exists(path)
    try:
        content = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"datalist {path}: not valid JSON ({e}); fix it, or write one with prepare.") from e
    if not isinstance(content, dict):
        raise DataError(f"datalist {path}: a JSON object with 'training', 'validation' and 'test' lists is needed.")
    problems, pairs = _check_entries(content, path.parent)
    _stop(path, problems)
    key = _state_key(path, pairs, dataset, options)
    if key not in _checked and not (cache_dir() / "checked" / key).is_file():
        _check_pixels(path, pairs, dataset, options)
        _remember(key)
    return content


def remember_checked(file: str | Path, dataset: str, options: Mapping[str, Any] | None = None) -> None:
    """Record that datalist ``file``, just written by ``prepare`` (which decoded and checked every pair), needs no
    pixel check when a run first loads it with the same reader options."""
    path = Path(file)
    problems, pairs = _check_entries(json.loads(path.read_text()), path.parent)
    if not problems:
        _remember(_state_key(path, pairs, dataset, options))


def _check_entries(content: dict[str, Any], base: Path) -> tuple[list[str], list[tuple[Path, Path | None]]]:
    """The problems of a datalist's entries (structure, missing files, duplicates) and its (image, label) files."""
    problems: list[str] = []
    seen: dict[str, dict[Path, str]] = {"image": {}, "label": {}}
    pairs: list[tuple[Path, Path | None]] = []
    for split, entries in content.items():
        if not isinstance(entries, list) or split not in (*LABELLED_SPLITS, "test") and not _entry_list(entries):
            continue
        for i, entry in enumerate(entries):
            where = f"entry {i} of {split!r}"
            entry = {"image": entry} if isinstance(entry, str) else entry  # MONAI's test lists may hold paths
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
                problems.append(f"{where} is not an object with an 'image' path: {json.dumps(entry)[:80]}")
                continue
            label = entry.get("label")
            if split in LABELLED_SPLITS and not label:
                problems.append(f"{where} has no 'label' ({entry['image']}); training and validation need one")
            if label is not None and not isinstance(label, str):
                problems.append(f"{where}: 'label' must be a path, got {json.dumps(label)[:80]}")
                label = None
            files = {"image": _resolve(entry["image"], base), "label": _resolve(label, base) if label else None}
            duplicate = False
            for key, resolved in files.items():
                if resolved is None:
                    continue
                if not resolved.is_file():
                    relative = not Path(entry[key]).is_absolute()
                    moved = " (relative paths are read from the datalist's folder: was it moved?)" if relative else ""
                    problems.append(f"{where}: {key} {entry[key]} -> {resolved} does not exist{moved}")
                    files[key] = None
                    continue
                earlier = seen[key].get(resolved.resolve())
                if earlier is not None and not duplicate:  # one problem per entry
                    what = "listed twice" if earlier.endswith(repr(split)) else "in two splits (a leak)"
                    problems.append(f"{where}: {key} {entry[key]} is also {earlier}: {what}")
                    duplicate = True
                seen[key][resolved.resolve()] = where
            if files["image"] is not None and (label is None or files["label"] is not None):
                pairs.append((files["image"], files["label"]))
    return problems, pairs


def _entry_list(entries: list) -> bool:
    """Whether a list under another key than the splits holds datalist entries (objects with an ``image``)."""
    return bool(entries) and all(isinstance(e, dict) and "image" in e for e in entries)


def _resolve(value: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _resolved(entry: dict[str, Any] | str, base: Path) -> dict[str, Any]:
    out = {"image": entry} if isinstance(entry, str) else dict(entry)
    for key in ("image", "label"):
        if isinstance(out.get(key), str) and out[key]:
            out[key] = str(_resolve(out[key], base))
    return out


def _stop(path: Path, problems: list[str], stopped: bool = False) -> None:
    """Raise the problems found (``stopped``: the search ended after the first ones)."""
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        count = f"{len(problems)} or more problems" if stopped else f"{len(problems)} problem(s)"
        raise DataError(
            f"datalist {path}: {count}: {'; '.join(problems[:_SHOWN])}{more}. Fix the datalist, or write one with "
            "python -m monai_medspike.data prepare."
        )


def _state_key(path: Path, pairs: list, dataset: str | None, options: Mapping[str, Any] | None) -> str:
    state = [str(path.resolve()), dataset, dict(options or {}), 1]
    for files in pairs:
        for f in files:
            if f is not None:
                st = f.stat()
                state.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return hashlib.sha1(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def _remember(key: str) -> None:
    _checked.add(key)
    folder = cache_dir() / "checked"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / key).touch()
    except OSError:
        pass  # an unwritable cache only means checking again next time


def _check_pixels(path: Path, pairs: list, dataset: str | None, options: Mapping[str, Any] | None) -> None:
    """Image/label sizes from the headers; 2D label values by the mask rules."""
    classes, num_classes = "binary", 2
    if dataset is not None:
        from monai_medspike.data.readers import get_reader

        reader = get_reader(dataset, **dict(options or {}))
        classes, num_classes = reader.classes, len(reader.label_names)
    problems: list[str] = []
    stopped = False
    progress = Progress(f"checked the files of {path.name}:", "pairs", len(pairs), log=logging.getLogger(__name__))
    for done, (image, label) in enumerate(pairs):
        if done:
            progress.step(done)
        if len(problems) >= _SHOWN:
            stopped = True
            break
        try:
            size = _size(image, image=True)
            if label is None:
                continue
            label_size = _size(label)
            if size != label_size:
                shown = ["x".join(map(str, s)) for s in (label_size, size)]
                turned = label_size == _size(image, oriented=False)
                why = (
                    "; the image's EXIF orientation turns it, but its label was drawn on the stored pixels: turn the "
                    "label as a viewer shows the image, or remove the image's orientation tag"
                    if turned
                    else ": not its label"
                )
                problems.append(f"{label}: size {shown[0]} differs from its image {image} ({shown[1]}){why}")
            elif not label.name.lower().endswith(_VOLUME_SUFFIXES):
                read_mask(label, classes, num_classes)
        except DataError as e:
            problems.append(str(e).rstrip("."))
    if pairs and not stopped:
        progress.step(len(pairs))
    _stop(path, problems, stopped)


def _size(path: Path, image: bool = False, oriented: bool = True) -> tuple[int, ...]:
    """The size ``(W, H)`` of an image as a viewer shows it (EXIF orientation applied unless not ``oriented``) or a
    volume's shape, from the header; an ``image`` deeper than 8 bits is refused here (no pixel is read)."""
    if path.name.lower().endswith(_VOLUME_SUFFIXES):
        return volume_header(path)[0]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            turned = oriented and img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            mode = img.mode
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e
    if image:
        refuse_deep(mode, path)
    return (height, width) if turned else (width, height)
