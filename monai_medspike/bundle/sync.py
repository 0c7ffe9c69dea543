"""The configs the five bundles share, written once: ``monai_medspike/bundle/shared/<config>.json``.

Each bundle's ``train.json`` and ``inference.json`` are the shared config with the bundle's own dataset keys (a
line ``"<key>": "{bundle}"`` of the shared config takes the bundle's line for that key; ``"{bundle, optional}"``
drops the line where the bundle has no such key). ``evaluate.json`` and ``multi_gpu_train.json`` are the shared
files as they are. A setting added to the workflow or the network is added once, to the shared config, then
written into every bundle with::

    python -m monai_medspike.bundle sync          # rewrite the bundles' configs from the shared ones
    python -m monai_medspike.bundle sync --check  # exit 1, naming the files, where a bundle differs

The bundle files stay complete and standalone (MONAI's ``monai.bundle run`` and MONAI Label read them as they are).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["DATASET_KEYS", "SHARED", "SHARED_CONFIGS", "render", "sync_bundles"]

SHARED = Path(__file__).resolve().parent / "shared"
SHARED_CONFIGS = ("train.json", "inference.json", "evaluate.json", "multi_gpu_train.json")
DATASET_KEYS = frozenset(
    {"bundle_root", "dataset", "label_names", "in_channels", "out_channels", "resize", "demo_count", "batch_size",
     "data_options", "transform_options", "slices_per_volume"}
)  # fmt: skip
"""The keys a bundle sets for its dataset; every other key is the same in all bundles."""

_SLOT = re.compile(r'^(?P<indent>\s*)"(?P<key>\w+)": "\{bundle(?P<optional>, optional)?\}"(?P<comma>,?)$')


def _own_lines(text: str, source: Path) -> dict[str, str]:
    """``{key: its one line, without a trailing comma}`` for the dataset keys of a bundle config.

    Raises:
        ValueError: a dataset key whose value is not one complete JSON value on its line.
    """
    lines = {}
    for line in text.splitlines():
        match = re.match(r'^    "(\w+)": (.*?),?$', line)
        if match and match.group(1) in DATASET_KEYS:
            try:
                json.loads(match.group(2))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{source}: the value of {match.group(1)!r} must be on one line for sync to carry it ({e})."
                ) from None
            lines[match.group(1)] = line.rstrip(",")
    return lines


def render(config: str, bundle_text: str | None, source: Path) -> str:
    """The text of ``config`` for a bundle whose current text is ``bundle_text``.

    Raises:
        ValueError: the bundle lacks a dataset key the shared config requires.
    """
    shared = (SHARED / config).read_text()
    if bundle_text is None:
        if any(_SLOT.match(line) for line in shared.splitlines()):
            raise ValueError(f"{source} does not exist; it needs the dataset keys of {SHARED / config}.")
        return shared
    own = _own_lines(bundle_text, source)
    slots = {m["key"] for m in map(_SLOT.match, shared.splitlines()) if m}
    unplaced = sorted(set(own) - slots)
    if unplaced:
        raise ValueError(f"{source} sets {unplaced}, which {SHARED / config} has no line for; add one there.")
    out = []
    for line in shared.splitlines():
        slot = _SLOT.match(line)
        if not slot:
            out.append(line)
        elif slot["key"] in own:
            out.append(own[slot["key"]] + slot["comma"])
        elif not slot["optional"]:
            raise ValueError(f"{source} has no {slot['key']!r}: every bundle sets it (see {SHARED / config}).")
    return "\n".join(out) + "\n"


def sync_bundles(folders: list[str | Path], write: bool = True) -> list[Path]:
    """Bring the bundles' shared configs in line with ``monai_medspike/bundle/shared``; returns the files that
    differed (rewritten when ``write``). Every file is rendered before any is written, so an error leaves all as
    they were.

    Raises:
        ValueError: a bundle lacks a dataset key the shared configs require (naming the file and the key).
    """
    texts: dict[Path, str] = {}
    for folder in folders:
        for config in SHARED_CONFIGS:
            path = Path(folder) / "configs" / config
            current = path.read_text() if path.is_file() else None
            text = render(config, current, path)
            if text != current:
                texts[path] = text
    if write:
        for path, text in texts.items():
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(text)
            tmp.replace(path)
    return list(texts)
