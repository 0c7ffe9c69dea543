"""The MONAI Label app's pieces that need no MONAI Label: models to local bundles, input checks, processing, datalists.

MONAI Label's stock bundle app resolves model names against the online model zoo. This app maps the names
``isic2018, kvasir, busi, monuseg, covid`` to the bundle folders on disk (``bundles/<name>`` of the source tree,
or the folder given with ``--conf bundles``) and never downloads anything.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.transforms import CastToTyped, EnsureChannelFirstd, MapTransform, SaveImaged, SqueezeDimd

from monai_medspike.bundle import bundle_root
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
    "find_model",
    "infer_post_transforms",
    "insert_input_check",
    "load_bundle_config",
    "model_output_root",
    "reset_spiking_state",
    "resolve_models",
    "write_training_datalist",
]

logger = logging.getLogger(__name__)

#: the model names the app serves, one per bundle folder
MODELS = ("isic2018", "kvasir", "busi", "monuseg", "covid")
_VOLUME_SUFFIXES = (".nii.gz", ".nii")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_REQUIRED_CONFIGS = ("train.json", "inference.json", "metadata.json")


def app_dir() -> Path:
    """The MONAI Label app folder (its ``main.py``) to pass to ``monailabel start_server --app``."""
    return Path(__file__).resolve().parent / "server"


def default_bundles_dir() -> Path:
    """``bundles/`` of the source tree this package is installed from.

    Raises:
        FileNotFoundError: the package is not installed from a source tree holding ``bundles/``.
    """
    return Path(bundle_root("covid")).parent


def resolve_models(
    models: str | Sequence[str] | None = "all", bundles_dir: str | Path | None = None
) -> dict[str, Path]:
    """Map model names to local bundle folders.

    Args:
        models: ``"all"`` (or None or empty), a comma-separated string (MONAI Label's ``--conf models``) or a
            sequence of names from :data:`MODELS`.
        bundles_dir: the folder holding one folder per bundle (default: :func:`default_bundles_dir`).

    Returns:
        ``{name: bundle folder}`` in the order asked for.

    Raises:
        ValueError: an unknown model name (the valid ones are listed).
        FileNotFoundError: a bundle folder, or one of its configs, is missing.
    """
    if models is None or (isinstance(models, str) and models.strip().lower() in ("", "all")):
        names = list(MODELS)
    else:
        raw = models.split(",") if isinstance(models, str) else list(models)
        names = [str(m).strip() for m in raw if str(m).strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(
            f"unknown model(s) {', '.join(map(repr, unknown))} in 'models'; this app serves the local bundles "
            f"{', '.join(MODELS)} (or 'all'). Nothing is fetched from the MONAI model zoo."
        )
    root = Path(bundles_dir) if bundles_dir else default_bundles_dir()
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


def model_output_root(bundle: str | Path, name: str, output_root: str | Path | None = None) -> Path:
    """Where a model's runs (checkpoints, logs) live: ``<output_root>/<name>``, or the bundle's own ``outputs/``.

    The default is the folder ``python -m monai.bundle run training`` writes to, so a model trained from the
    command line is served as it is, and a model trained from MONAI Label is found by the command line.
    """
    return Path(output_root) / name if output_root else Path(bundle) / "outputs"


def load_bundle_config(
    bundle: str | Path,
    output_root: str | Path | None = None,
    configs: Sequence[str] = ("train.json", "inference.json"),
    overrides: Mapping[str, Any] | None = None,
) -> ConfigParser:
    """The bundle's configs merged in order (inference is an overlay on training), with its root set.

    Args:
        bundle: the bundle folder (holding ``configs/``).
        output_root: ``output_root`` of the config (default: the bundle's ``outputs/``).
        configs: config files in ``configs/``, later ones overriding earlier ones.
        overrides: further ``{id: value}`` pairs.
    """
    bundle = Path(bundle)
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser["bundle_root"] = str(bundle)
    parser["output_root"] = str(output_root) if output_root else str(bundle / "outputs")
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


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
        if not dot or model not in MODELS:
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


def find_model(output_root: str | Path, bundle: str | Path) -> str | None:
    """The checkpoint the infer task loads: the latest written ``student-*/model.pt`` under ``output_root``, else the
    bundle's ``models/model.pt`` (model-zoo layout), else None."""
    root = Path(output_root)
    runs = [p for p in root.glob("student-*/model.pt") if p.is_file()] if root.is_dir() else []
    if runs:
        return str(max(runs, key=lambda p: (p.stat().st_mtime_ns, p.parent.name)))
    zoo = Path(bundle) / "models" / "model.pt"
    return str(zoo) if zoo.is_file() else None


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
    raise ValueError(f"the {info.name} bundle's infer_transforms have no EnsureChannelFirstd to check inputs after.")


def infer_post_transforms(parser: ConfigParser, key: str = "pred") -> list[Any]:
    """The bundle's ``infer_postprocessing`` (activation, threshold or argmax, inversion to the input's geometry)
    without its file writer, then the channel dropped and the label cast to ``uint8``: a label image of the
    input's size (and affine, for volumes) holding class indices.
    """
    chain = parser.get_parsed_content("infer_postprocessing")
    transforms = [t for t in getattr(chain, "transforms", chain) if not isinstance(t, SaveImaged)]
    return [*transforms, SqueezeDimd(key, dim=0), CastToTyped(key, dtype=np.uint8)]


def reset_spiking_state(network: torch.nn.Module) -> None:
    """Clear every neuron's membrane (MedSpikeFormer does this in ``forward``; this also covers wrapped nets)."""
    from spikingjelly.activation_based import functional

    functional.reset_net(network)


def write_training_datalist(
    pairs: Sequence[Mapping[str, str]],
    out_dir: str | Path,
    info: BundleInfo,
    val_split: float = 0.2,
    seed: int = 0,
) -> Path:
    """Write a Decathlon-style datalist of labelled studies for the bundle's training.

    Only files this model reads are kept (NIfTI volumes for covid, 2D images otherwise). Labels of 2D binary
    bundles are rewritten as {0, 255} PNG files under ``out_dir/labels`` (MONAI Label stores 0/1 label maps,
    while some bundle readers binarise at 127, as Kvasir's JPEG masks need). At least one study goes to
    validation when there are two or more; a single study is used for both.

    Args:
        pairs: ``[{"image": path, "label": path}, ...]`` (MONAI Label's ``datastore.datalist()``).
        out_dir: folder for the datalist and converted labels (created).
        info: the bundle.
        val_split: fraction of studies for validation.
        seed: shuffling seed of the split.

    Returns:
        The datalist path (``out_dir/datalist.json``).

    Raises:
        ValueError: no labelled study this model can read, or ``val_split`` outside [0, 1).
    """
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}.")
    usable = [dict(p) for p in pairs if p.get("label") and info.accepts(p["image"])]
    skipped = len(pairs) - len(usable)
    if not usable:
        kind = "NIfTI CT volumes" if info.volume else "2D images (" + ", ".join(_IMAGE_SUFFIXES) + ")"
        raise ValueError(
            f"no labelled {kind} in the studies folder for model {info.name} ({len(pairs)} labelled studies of "
            "other kinds); save labels for such images first."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not info.volume and info.out_channels == 1:
        from PIL import Image

        label_dir = out_dir / "labels"
        label_dir.mkdir(exist_ok=True)
        for i, p in enumerate(usable):
            mask = np.asarray(Image.open(p["label"]))
            if mask.ndim == 3:
                mask = mask.max(axis=-1)
            target = label_dir / f"{i:04d}_{Path(p['label']).name.split('.')[0]}.png"
            Image.fromarray(((mask > 0) * 255).astype(np.uint8)).save(target)
            p["label"] = str(target)
    entries = [{"image": str(Path(p["image"]).resolve()), "label": str(Path(p["label"]).resolve())} for p in usable]
    random.Random(seed).shuffle(entries)
    n_val = max(1, round(len(entries) * val_split)) if len(entries) > 1 and val_split > 0 else 0
    validation, training = entries[:n_val], entries[n_val:]
    if not validation:
        validation = list(training)
        logger.warning("model %s: one labelled study; it is used for both training and validation", info.name)
    datalist = {
        "name": f"{info.name} studies labelled in MONAI Label",
        "training": training,
        "validation": validation,
        "test": [],
        "numTraining": len(training),
        "skipped": skipped,
    }
    path = out_dir / "datalist.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(datalist, indent=2) + "\n")
    tmp.replace(path)
    return path
