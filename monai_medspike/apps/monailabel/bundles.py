"""The MONAI Label app's pieces that need no MONAI Label: models to local bundles, input checks, studies per model.

MONAI Label's stock bundle app resolves model names against the online model zoo. This app maps model names to
the bundle folders on disk (the bundles shipped with the package, or every bundle in the folder given with
``--conf bundles``, a new dataset's included) and never downloads anything. Each folder is a model-zoo bundle that
MONAI Label's stock ``BundleInferTask`` and ``BundleTrainTask`` run as it is: ``configs/inference.json`` stands
alone, ``models/model.pt`` holds the served weights and its record (the network and transforms are built from
it), and ``configs/train.json`` has the ids those tasks override.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.transforms import EnsureChannelFirstd, MapTransform

from monai_medspike.bundle import find_bundles, shipped_bundles
from monai_medspike.data.readers import get_reader

__all__ = [
    "MODELS",
    "BundleInfo",
    "CheckInputd",
    "app_dir",
    "bundle_info",
    "bundle_overrides",
    "check_input",
    "default_bundles_dir",
    "insert_input_check",
    "model_studies",
    "resolve_models",
    "served_model",
]

logger = logging.getLogger(__name__)

#: the models of the bundles shipped with the package (those in ``--conf bundles`` are discovered the same way)
MODELS = tuple(shipped_bundles())
_VOLUME_SUFFIXES = (".nii.gz", ".nii")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_REQUIRED_CONFIGS = ("train.json", "inference.json", "metadata.json")


def app_dir() -> Path:
    """The MONAI Label app folder (its ``main.py``) to pass to ``monailabel start_server --app``."""
    return Path(__file__).resolve().parent / "server"


def default_bundles_dir() -> Path:
    """The folder holding the bundles shipped with this installation (``bundles/`` of a source checkout).

    Raises:
        FileNotFoundError: this installation ships no bundles.
    """
    shipped = shipped_bundles()
    if not shipped:
        raise FileNotFoundError(
            "this installation of monai_medspike ships no bundles; pass --conf bundles <folder holding "
            "isic2018/, kvasir/, busi/, monuseg/, covid/> (python -m monai_medspike.bundle export <name> <folder>)."
        )
    return next(iter(shipped.values())).parent


def served_model(bundle: str | Path) -> Path:
    """The weights a bundle serves: ``<bundle>/models/model.pt``, where MONAI Label's ``BundleInferTask`` loads
    from and every training (``python -m monai.bundle run training`` or MONAI Label) publishes its best student."""
    return Path(bundle) / "models" / "model.pt"


def resolve_models(
    models: str | Sequence[str] | None = "all", bundles_dir: str | Path | None = None
) -> dict[str, Path]:
    """Map model names to local bundle folders.

    Args:
        models: ``"all"`` (or None or empty), a comma-separated string (MONAI Label's ``--conf models``) or a
            sequence of bundle names.
        bundles_dir: the folder holding one folder per bundle (default: :func:`default_bundles_dir`); its bundles
            are the models.

    Returns:
        ``{name: bundle folder}`` in the order asked for.

    Raises:
        ValueError: an unknown model name (the valid ones are listed).
        FileNotFoundError: a bundle folder, or one of its configs, is missing.
    """
    root = Path(bundles_dir) if bundles_dir else default_bundles_dir()
    served = _bundle_names(root) or list(MODELS)
    if models is None or (isinstance(models, str) and models.strip().lower() in ("", "all")):
        names = served
    else:
        raw = models.split(",") if isinstance(models, str) else list(models)
        names = [str(m).strip() for m in raw if str(m).strip()]
    unknown = [n for n in names if n not in served and n not in MODELS]
    if unknown:
        raise ValueError(
            f"unknown model(s) {', '.join(map(repr, unknown))} in 'models'; this app serves the local bundles "
            f"{', '.join(served)} (or 'all'). Nothing is fetched from the MONAI model zoo."
        )
    found: dict[str, Path] = {}
    for name in dict.fromkeys(names):
        folder = (root / name).resolve()
        missing = [c for c in _REQUIRED_CONFIGS if not (folder / "configs" / c).is_file()]
        if missing:
            raise FileNotFoundError(
                f"bundle folder {folder} for model {name!r} lacks configs/{', configs/'.join(missing)}; pass "
                "--conf bundles <folder holding isic2018/, kvasir/, busi/, monuseg/, covid/>."
            )
        found[name] = folder
    return found


def _bundle_names(root: Path) -> list[str]:
    """The bundles in ``root`` (:func:`monai_medspike.bundle.find_bundles`), the shipped ones first in their order."""
    found = list(find_bundles(root))
    return [n for n in MODELS if n in found] + [n for n in found if n not in MODELS]


def bundle_overrides(conf: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Config overrides for model ``name`` from the app's ``--conf <name>.<id> <value>`` options.

    Values are read as JSON where they parse (``[128, 128]``, ``4``, ``true``) and kept as strings otherwise, so
    ``--conf covid.classes multiclass`` serves and trains the three-class COVID-19 model.

    Raises:
        ValueError: an option names a model that is not served, or has no config id after the dot.
    """
    out: dict[str, Any] = {}
    for key, value in conf.items():
        model, dot, config_id = str(key).partition(".")
        if not dot:
            continue
        if not config_id:
            raise ValueError(f"--conf {key}: name a config id after the model, e.g. --conf covid.classes multiclass")
        if model != name:
            continue
        try:
            out[config_id] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            out[config_id] = value
    return out


@dataclass(frozen=True)
class BundleInfo:
    """What the app needs to know of one bundle."""

    name: str
    path: Path
    dataset: str
    volume: bool
    in_channels: int
    out_channels: int
    label_names: tuple[str, ...]
    description: str = ""
    version: str = ""

    @property
    def labels(self) -> dict[str, int]:
        """MONAI Label's ``labels``: ``{name: value in the label image}``, background left out."""
        return {name: i for i, name in enumerate(self.label_names) if i > 0}

    @property
    def suffixes(self) -> tuple[str, ...]:
        """File suffixes of the images this model reads."""
        return _VOLUME_SUFFIXES if self.volume else _IMAGE_SUFFIXES

    def accepts(self, path: str | Path) -> bool:
        return str(path).lower().endswith(self.suffixes)


def bundle_info(name: str, parser: ConfigParser) -> BundleInfo:
    """Read :class:`BundleInfo` from a bundle's parsed config (nothing is instantiated but plain values)."""
    dataset = parser.get_parsed_content("dataset")
    label_names = tuple(parser.get_parsed_content("label_names"))
    out_channels = int(parser.get_parsed_content("out_channels"))
    if len(label_names) != max(2, out_channels):
        raise ValueError(
            f"bundle {name}: label_names {list(label_names)} do not fit out_channels={out_channels} "
            "(binary: background and one foreground name; multi-class: one name per channel)."
        )
    meta = Path(parser.get_parsed_content("bundle_root")) / "configs" / "metadata.json"
    metadata = json.loads(meta.read_text()) if meta.is_file() else {}
    return BundleInfo(
        name=name,
        path=Path(parser.get_parsed_content("bundle_root")),
        dataset=dataset,
        volume=get_reader(dataset).kind == "volume",
        in_channels=int(parser.get_parsed_content("in_channels")),
        out_channels=out_channels,
        label_names=label_names,
        description=metadata.get("description", ""),
        version=metadata.get("version", ""),
    )


def check_input(image: Any, info: BundleInfo, source: str = "input") -> None:
    """Check a loaded, channel-first image against what the model takes.

    Raises:
        ValueError: NaN or infinite values; wrong number of spatial dimensions or channels, naming ``source``, the
            shape and the fix.
    """
    channels, spatial = int(image.shape[0]), tuple(int(s) for s in image.shape[1:])
    values = torch.as_tensor(image)
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{source}: {bad} value(s) are NaN or infinite; send an image or volume with finite values.")
    if info.volume:
        if len(spatial) != 3:
            raise ValueError(
                f"{source}: the {info.name} model takes a 3D CT volume (X, Y, Z) in Hounsfield units, got an image "
                f"with {len(spatial)} spatial dimensions {spatial}; send a NIfTI volume."
            )
        if channels != 1:
            raise ValueError(
                f"{source}: the {info.name} model takes a single-channel CT volume, got {channels} channels "
                f"(shape {(channels, *spatial)}); send one channel per request."
            )
        return
    if len(spatial) != 2:
        raise ValueError(
            f"{source}: the {info.name} model takes a 2D image, got {len(spatial)} spatial dimensions {spatial}; "
            "send a PNG, JPEG or TIFF image."
        )
    if channels not in (1, 2, 3, 4):
        raise ValueError(
            f"{source}: the {info.name} model takes grey or RGB(A) images, got {channels} channels; "
            "send a grey, RGB or RGBA image."
        )


class CheckInputd(MapTransform):
    """:func:`check_input` as a dictionary transform (placed right after ``EnsureChannelFirstd``)."""

    def __init__(self, keys: KeysCollection, info: BundleInfo, path_key: str = "image_path") -> None:
        super().__init__(keys)
        self.info = info
        self.path_key = path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            check_input(d[key], self.info, str(d.get(self.path_key, key)))
        return d


def insert_input_check(transforms: Sequence[Any], info: BundleInfo, key: str = "image") -> list[Any]:
    """``transforms`` with a :class:`CheckInputd` after the first ``EnsureChannelFirstd``.

    Raises:
        ValueError: the chain has no ``EnsureChannelFirstd`` (the check needs channel-first data).
    """
    out = list(transforms)
    for i, t in enumerate(out):
        if isinstance(t, EnsureChannelFirstd):
            out.insert(i + 1, CheckInputd(key, info))
            return out
    raise ValueError(
        f"the {info.name} bundle's preprocessing (configs/inference.json) has no EnsureChannelFirstd to check "
        "inputs after; the input check needs channel-first images."
    )


def model_studies(pairs: Sequence[Mapping[str, Any]], info: BundleInfo) -> list[dict[str, Any]]:
    """The labelled studies model ``info`` can train on: NIfTI volumes for a CT model, 2D images otherwise.

    Args:
        pairs: ``[{"image": path, "label": path}, ...]`` (MONAI Label's ``datastore.datalist()``); labels are MONAI
            Label's class-index maps, which every bundle reads as they are.

    Raises:
        ValueError: no labelled study of this model's kind, saying how many of other kinds there are.
    """
    usable = [dict(p) for p in pairs if p.get("label") and info.accepts(p["image"])]
    if not usable:
        kind = "NIfTI CT volumes" if info.volume else "2D images (" + ", ".join(_IMAGE_SUFFIXES) + ")"
        raise ValueError(
            f"no labelled {kind} in the studies folder for model {info.name} ({len(pairs)} labelled studies of "
            "other kinds); save labels for such images first."
        )
    if len(usable) < len(pairs):
        logger.info("model %s: %d of %d labelled studies are not %s", info.name, len(pairs) - len(usable),
                    len(pairs), "volumes" if info.volume else "2D images")  # fmt: skip
    return usable
