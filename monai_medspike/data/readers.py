"""Readers for the five datasets in their release layouts.

A reader finds the image/ground-truth pairs of a release folder (:meth:`DatasetReader.find`, no pixel is read)
and then checks and loads one pair (:meth:`DatasetReader.load`). :func:`monai_medspike.data.prepare` turns the
result into a MONAI datalist. Layouts (paths relative to the folder the user passes as ``--root``):

- ``isic2018``: ``ISIC2018_Task1-2_Training_Input/ISIC_*.jpg`` + ``ISIC2018_Task1_Training_GroundTruth/
  ISIC_*_segmentation.png`` ({0, 255}).
- ``kvasir``: ``Kvasir-SEG/{images,masks}/<id>.jpg`` (JPEG masks, thresholded at 127).
- ``busi``: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png`` + ``<class> (N)_mask*.png``
  (all masks of an image OR-merged).
- ``monuseg``: ``MoNuSeg 2018 Training Data/{Tissue Images,Annotations}/<TCGA id>.{tif,xml}`` and/or
  ``MoNuSegTestData/<TCGA id>.{tif,xml}`` (Aperio XML polygons, rasterised).
- ``covid``: 2D CT slices, Inf-Net layout ``TrainingSet/LungInfection-Train/Doctor-label/{Imgs,GT}`` (binary) and
  ``TrainingSet/MultiClassInfection-Train/{Imgs,GT}`` (palette indices 0 background, 1 ground-glass opacity,
  2 consolidation), or the M2SNet layout ``COVID-19_Lung_Infection_train/{images,masks}``.
- ``covid_ct``: NIfTI volumes in Hounsfield units, ``ct/<case>.nii.gz`` + ``infection_mask/<case>.nii.gz``
  (COVID-19-CT-Seg layout; another mask folder with ``mask_dir``); 3-class masks (0 background, 1 ground-glass
  opacity, 2 consolidation) in ``infection_mask_multiclass/`` by default.

Each layout may also be given one level deeper (e.g. ``--root .../Kvasir-SEG``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_medspike.data.errors import DataError
from monai_medspike.data.io import read_image, read_mask, read_volume

__all__ = [
    "READERS",
    "BusiReader",
    "Covid2DReader",
    "FolderReader",
    "CovidCTReader",
    "DatasetReader",
    "Isic2018Reader",
    "KvasirReader",
    "Loaded",
    "MonusegReader",
    "Sample",
    "get_reader",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

READERS: dict[str, type[DatasetReader]] = {}
"""The readers by name: the seven of this module, and every subclass of :class:`DatasetReader` with a ``name``
imported since (each registers itself)."""


@dataclass(frozen=True)
class Sample:
    """One image (or CT volume) and the files its ground truth comes from.

    Attributes:
        id: unique name within the dataset (the file stem, or the case name of a volume).
        image: the image or volume file.
        masks: the ground-truth files (several BUSI masks are OR-merged; MoNuSeg has one XML).
        group: the unit a split keeps together: the patient where the dataset names it, the case of a
            volume, else the image itself.
        label_class: the image-level class where the dataset has one (BUSI), else ``""``.
    """

    id: str
    image: Path
    masks: tuple[Path, ...]
    group: str
    label_class: str = ""


@dataclass
class Loaded:
    """A checked sample: the label array that goes into the datalist and what the summary needs."""

    label: np.ndarray  # (H, W) uint8 values, or (X, Y, Z) for volumes
    size: tuple[int, ...]  # (H, W) or the volume shape
    write_label: bool = False  # True when the label is derived (merged / rasterised) and must be written
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # more derived arrays (e.g. "instance")


def _pair_by_stem(
    images: dict[str, Path], masks: dict[str, Path], what: str
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    problems = [
        f"{p}: image without {what} (expected a {what} named like it)" for s, p in images.items() if s not in masks
    ]
    problems += [f"{p}: {what} without image" for s, p in masks.items() if s not in images]
    pairs = [(s, images[s], masks[s]) for s in sorted(images) if s in masks]
    return pairs, problems


def _files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    # links are kept even when broken or looping, so that reading them names them (not their mask)
    return sorted(p for p in folder.iterdir() if (p.is_file() or p.is_symlink()) and p.suffix.lower() in suffixes)


def by_name(files: list[Path], name: Callable[[Path], str | None] = lambda p: p.stem) -> dict[str, Path]:
    """``{name(p): p}`` for the files whose name is not None.

    Raises:
        DataError: two files share a name (``x.jpg`` and ``x.png``): one would be paired with the other's mask and
            their outputs would overwrite each other.
    """
    named: dict[str, Path] = {}
    for path in files:
        key = name(path)
        if key is None:
            continue
        if key in named:
            raise DataError(
                f"{named[key]} and {path} have the same name {key!r} (different extensions): samples are paired "
                "and outputs named by it. Rename or remove one of them."
            )
        named[key] = path
    return named


def _locate(root: Path, candidates: list[tuple[str, ...]], dataset: str) -> tuple[Path, tuple[str, ...]]:
    """Find the first candidate layout (tuple of sub-folder paths) that exists under ``root`` or one level in."""
    if not root.is_dir():
        raise DataError(f"{root}: the {dataset} release folder does not exist.")
    bases = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for base in bases:
        for layout in candidates:
            if all((base / sub).is_dir() for sub in layout):
                return base, layout
    expected = " or ".join("{" + ", ".join(layout) + "}" for layout in candidates)
    raise DataError(f"{root}: not a {dataset} release folder: expected the sub-folders {expected} in it.")


def _check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image {image_path} "
            f"({image.shape[1]}x{image.shape[0]}). The pair does not belong together or one was resized."
        )


def _read_pair(sample: Sample, classes: str = "binary", num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The image and the label of ``sample``'s (single) mask, checked to be readable, of the same size and with
    values that fit :data:`~monai_medspike.data.io.MASK_RULES`."""
    image = read_image(sample.image)
    mask = read_mask(sample.masks[0], classes, num_classes)
    _check_same_size(image, mask, sample.image, sample.masks[0])
    return image, mask


class DatasetReader(ABC):
    """Finds and checks the samples of one dataset release.

    A subclass with a ``name`` registers itself in :data:`READERS` when its module is imported, so that
    ``get_reader(name)`` and the bundles find it: a new dataset is a reader (and, for a bundle, its record
    ``bundles/<name>/dataset.json``, which names the module to import; docs/bundles.md).
    """

    name: str = ""
    kind: str = "2d"  # "2d" or "volume"
    #: the original protocol's (train, test) sizes, see :func:`monai_medspike.data.splits.split_samples`
    original_protocol: tuple[int, int] | None = None
    #: label values of the datalist labels: "binary" (0/1, read by the mask rules of the file's kind) or "multiclass"
    classes: str = "binary"
    #: image channels as stored (1 grey, 3 RGB)
    channels: int = 3
    #: the class names of the labels, background first
    label_names: tuple[str, ...] = ("background", "foreground")

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            READERS[cls.name] = cls

    @abstractmethod
    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        """The samples under ``root`` and the pairing problems (an image without mask and the reverse).

        Raises:
            DataError: ``root`` is missing or not this dataset's layout.
        """

    @abstractmethod
    def load(self, sample: Sample) -> Loaded:
        """Read and check one sample (readable, sizes match, mask values as expected).

        Raises:
            DataError: naming the file and what is wrong.
        """


class Isic2018Reader(DatasetReader):
    """ISIC 2018 Task 1: dermoscopy JPEGs, {0, 255} PNG masks ``<id>_segmentation.png``."""

    name = "isic2018"
    original_protocol = (2075, 519)
    label_names = ("background", "lesion")
    _layout = ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth")

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        base, (img_dir, gt_dir) = _locate(root, [self._layout], self.name)
        images = by_name(_files(base / img_dir, (".jpg", ".jpeg", ".png")))
        masks = {}
        for p in _files(base / gt_dir, (".png",)):
            if p.stem.endswith("_segmentation"):
                masks[p.stem[: -len("_segmentation")]] = p
        pairs, problems = _pair_by_stem(images, masks, "mask")
        return [Sample(s, i, (m,), s) for s, i, m in pairs], problems

    def load(self, sample: Sample) -> Loaded:
        image, mask = _read_pair(sample)
        return Loaded(mask, image.shape[:2])


class KvasirReader(DatasetReader):
    """Kvasir-SEG: polyp JPEGs with JPEG masks (near-binary after compression: thresholded at 127)."""

    name = "kvasir"
    original_protocol = (880, 120)
    label_names = ("background", "polyp")

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        base, _ = _locate(root, [("Kvasir-SEG/images", "Kvasir-SEG/masks"), ("images", "masks")], self.name)
        if (base / "Kvasir-SEG").is_dir():
            base = base / "Kvasir-SEG"
        images = by_name(_files(base / "images"))
        masks = by_name(_files(base / "masks"))
        pairs, problems = _pair_by_stem(images, masks, "mask")
        return [Sample(s, i, (m,), s) for s, i, m in pairs], problems

    def load(self, sample: Sample) -> Loaded:
        image, mask = _read_pair(sample)  # JPEG masks: > 127, mostly black and white (MASK_RULES)
        return Loaded(mask, image.shape[:2])


class BusiReader(DatasetReader):
    """BUSI: ultrasound PNGs in ``benign``/``malignant``/``normal``; all ``<name>_mask*.png`` are OR-merged.

    Args:
        include_normal: keep the ``normal`` images (empty masks). The original protocol used all 780 images.
    """

    name = "busi"
    original_protocol = (624, 156)
    label_names = ("background", "tumor")
    CLASSES = ("benign", "malignant", "normal")
    _mask = re.compile(r"^(?P<stem>.+)_mask(_\d+)?$")

    def __init__(self, include_normal: bool = True) -> None:
        self.include_normal = include_normal

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        candidates = [tuple(f"Dataset_BUSI_with_GT/{c}" for c in self.CLASSES), self.CLASSES]
        base, _ = _locate(root, candidates, self.name)
        if (base / "Dataset_BUSI_with_GT").is_dir():
            base = base / "Dataset_BUSI_with_GT"
        samples: list[Sample] = []
        problems: list[str] = []
        for cls in self.CLASSES:
            if cls == "normal" and not self.include_normal:
                continue
            images: dict[str, Path] = {}
            masks: dict[str, list[Path]] = {}
            files = _files(base / cls, (".png",))
            images = by_name([p for p in files if not self._mask.match(p.stem)])
            for p in files:
                m = self._mask.match(p.stem)
                if m:
                    masks.setdefault(m["stem"], []).append(p)
            problems += [
                f"{p}: image without mask (expected {s}_mask.png)" for s, p in images.items() if s not in masks
            ]
            problems += [f"{ms[0]}: mask without image" for s, ms in masks.items() if s not in images]
            # ids carry the class: "benign (1)" and "malignant (1)" are different images
            samples += [Sample(s, images[s], tuple(sorted(masks[s])), s, cls) for s in sorted(images) if s in masks]
        return samples, problems

    def load(self, sample: Sample) -> Loaded:
        image = read_image(sample.image)
        merged = np.zeros(image.shape[:2], np.uint8)
        for path in sample.masks:
            mask = read_mask(path)
            _check_same_size(image, mask, sample.image, path)
            merged |= mask
        return Loaded(merged, image.shape[:2], write_label=len(sample.masks) > 1)


class MonusegReader(DatasetReader):
    """MoNuSeg 2018: 1000x1000 H&E TIFs with Aperio XML nucleus outlines, rasterised to binary and instance masks.

    The split group is the patient (``TCGA-XX-XXXX`` of the TCGA id), so two tiles of one patient never land in
    different splits.

    Args:
        outline: count the polygon outline as nucleus (see :func:`monai_medspike.data.aperio.rasterize_polygons`).
        overlap: ``"last"`` (a later nucleus wins) or ``"zero"`` (overlaps become background).
    """

    name = "monuseg"
    original_protocol = (59, 15)
    label_names = ("background", "nucleus")
    _train = ("MoNuSeg 2018 Training Data/Tissue Images", "MoNuSeg 2018 Training Data/Annotations")

    def __init__(self, outline: bool = True, overlap: str = "last") -> None:
        self.outline = outline
        self.overlap = overlap

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        if not root.is_dir():
            raise DataError(f"{root}: the {self.name} release folder does not exist.")
        folders: list[tuple[Path, Path]] = []
        for base in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
            if all((base / sub).is_dir() for sub in self._train):
                folders.append((base / self._train[0], base / self._train[1]))
            if (base / "MoNuSegTestData").is_dir():
                folders.append((base / "MoNuSegTestData", base / "MoNuSegTestData"))
            if (base / "Tissue Images").is_dir() and (base / "Annotations").is_dir():
                folders.append((base / "Tissue Images", base / "Annotations"))
            if folders:
                break
        if not folders:
            raise DataError(
                f"{root}: not a MoNuSeg release folder: expected 'MoNuSeg 2018 Training Data/{{Tissue Images,"
                "Annotations}' and/or 'MoNuSegTestData/' in it."
            )
        samples: list[Sample] = []
        problems: list[str] = []
        for img_dir, xml_dir in folders:
            images = by_name(_files(img_dir, (".tif", ".tiff", ".png")))
            xmls = by_name(_files(xml_dir, (".xml",)))
            pairs, found = _pair_by_stem(images, xmls, "XML annotation")
            problems += found
            samples += [Sample(s, i, (x,), self.patient(s)) for s, i, x in pairs]
        return samples, problems

    @staticmethod
    def patient(tcga_id: str) -> str:
        """``TCGA-B0-5698-01Z-00-DX1`` -> ``TCGA-B0-5698`` (the patient); other names are their own group."""
        parts = tcga_id.split("-")
        return "-".join(parts[:3]) if len(parts) >= 3 and parts[0].upper() == "TCGA" else tcga_id

    def load(self, sample: Sample) -> Loaded:
        from monai_medspike.data.aperio import read_aperio_mask

        image = read_image(sample.image)
        shape = image.shape[:2]
        instance = read_aperio_mask(sample.masks[0], shape, mode="instance", outline=self.outline, overlap=self.overlap)
        return Loaded((instance > 0).astype(np.uint8), shape, write_label=True, extra={"instance": instance})


class Covid2DReader(DatasetReader):
    """COVID-19 CT infection, 2D slices (8-bit windowed JPEG + PNG mask).

    Args:
        classes: ``"binary"`` (infection) or ``"multiclass"`` (0 background, 1 ground-glass opacity,
            2 consolidation; needs the Inf-Net ``MultiClassInfection-Train`` folder).
    """

    name = "covid"
    original_protocol = (716, 178)
    channels = 1
    LABEL_NAMES = {"binary": ("background", "infection"), "multiclass": ("background", "ground-glass", "consolidation")}
    _binary_layouts = [
        ("TrainingSet/LungInfection-Train/Doctor-label/Imgs", "TrainingSet/LungInfection-Train/Doctor-label/GT"),
        ("Doctor-label/Imgs", "Doctor-label/GT"),
        ("COVID-19_Lung_Infection_train/images", "COVID-19_Lung_Infection_train/masks"),
        ("Imgs", "GT"),
        ("images", "masks"),
    ]
    _multiclass_layouts = [
        ("TrainingSet/MultiClassInfection-Train/Imgs", "TrainingSet/MultiClassInfection-Train/GT"),
        ("MultiClassInfection-Train/Imgs", "MultiClassInfection-Train/GT"),
    ]

    def __init__(self, classes: str = "binary") -> None:
        if classes not in self.LABEL_NAMES:
            raise ValueError(f"classes must be 'binary' or 'multiclass', got {classes!r}.")
        self.classes = classes
        self.label_names = self.LABEL_NAMES[classes]

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        layouts = self._binary_layouts if self.classes == "binary" else self._multiclass_layouts
        base, (img_dir, gt_dir) = _locate(root, layouts, f"COVID-19 2D ({self.classes})")
        images = by_name(_files(base / img_dir))
        masks = by_name(_files(base / gt_dir, (".png",)))
        pairs, problems = _pair_by_stem(images, masks, "mask")
        return [Sample(s, i, (m,), s) for s, i, m in pairs], problems

    def load(self, sample: Sample) -> Loaded:
        image, mask = _read_pair(sample, self.classes, len(self.label_names))  # palette PNG: its indices
        return Loaded(mask, image.shape[:2])


class CovidCTReader(DatasetReader):
    """COVID-19 CT volumes (NIfTI, Hounsfield units), one image and one mask per case; splits are by case.

    Args:
        image_dir: folder of the CT volumes.
        mask_dir: folder of the masks, same file names; None takes ``infection_mask`` (binary) or
            ``infection_mask_multiclass`` (multiclass, the layout of the demo data).
        classes: ``"binary"`` (mask > 0 is infection) or ``"multiclass"`` (mask values are class indices).
    """

    name = "covid_ct"
    kind = "volume"
    channels = 1
    LABEL_NAMES = ("background", "ground-glass", "consolidation")
    _suffixes = (".nii.gz", ".nii")

    def __init__(self, image_dir: str = "ct", mask_dir: str | None = None, classes: str = "binary") -> None:
        if classes not in ("binary", "multiclass"):
            raise ValueError(f"classes must be 'binary' or 'multiclass', got {classes!r}.")
        if mask_dir is None:
            mask_dir = "infection_mask" if classes == "binary" else "infection_mask_multiclass"
        self.image_dir, self.mask_dir, self.classes = image_dir, mask_dir, classes
        self.label_names = ("background", "infection") if classes == "binary" else self.LABEL_NAMES

    @classmethod
    def _case(cls, path: Path) -> str | None:
        for suffix in cls._suffixes:
            if path.name.endswith(suffix):
                return path.name[: -len(suffix)]
        return None

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        base, _ = _locate(root, [(self.image_dir, self.mask_dir)], "COVID-19 CT (NIfTI)")

        def cases(folder: Path) -> dict[str, Path]:
            files = sorted(p for p in folder.iterdir() if p.is_file() or p.is_symlink())
            return by_name(files, self._case)

        pairs, problems = _pair_by_stem(cases(base / self.image_dir), cases(base / self.mask_dir), "mask volume")
        return [Sample(c, i, (m,), c) for c, i, m in pairs], problems

    def load(self, sample: Sample) -> Loaded:
        image, image_affine, image_shape = read_volume(sample.image)
        mask, mask_affine, mask_shape = read_volume(sample.masks[0])
        if image_shape[:3] != mask_shape[:3]:
            raise DataError(
                f"{sample.masks[0]}: mask shape {mask_shape} differs from its volume {sample.image} {image_shape}."
            )
        if not np.allclose(image_affine, mask_affine, atol=1e-3):
            raise DataError(
                f"{sample.masks[0]}: mask affine differs from its volume {sample.image} (voxel-to-world matrices "
                f"{mask_affine.round(3).tolist()} vs {image_affine.round(3).tolist()}); the mask is not aligned."
            )
        if float(np.ptp(image)) == 0.0:
            raise DataError(f"{sample.image}: the volume is empty (every voxel is {float(image.flat[0])}).")
        values = np.unique(mask)
        if np.any(values != np.round(values)) or values.min() < 0:
            raise DataError(f"{sample.masks[0]}: mask values must be non-negative integers, found {values[:8]}.")
        if self.classes == "multiclass" and not set(values.tolist()) <= set(range(len(self.LABEL_NAMES))):
            raise DataError(
                f"{sample.masks[0]}: a multi-class mask must hold the class indices 0..{len(self.LABEL_NAMES) - 1} "
                f"({', '.join(self.LABEL_NAMES)}), found {sorted(values.tolist())[:8]}. Fix the mask, use --classes "
                "binary (any value > 0 is infection), or run prepare with --skip_bad."
            )
        label = (mask > 0).astype(np.uint8) if self.classes == "binary" else mask.astype(np.uint8)
        return Loaded(label, image_shape[:3])


class FolderReader(DatasetReader):
    """Your own 2D dataset: ``images/<id>.<ext>`` with binary masks ``masks/<id>.<ext>`` (any image format; masks
    read by the rules of their kind, :data:`~monai_medspike.data.io.MASK_RULES`: PNG 0/255 or 0/1, JPEG > 127), or a
    datalist of such pairs.

    Args:
        channels: image channels the network takes (1: grey, 3: RGB); images are converted to it.
    """

    name = "folder"

    def __init__(self, channels: int = 3) -> None:
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}.")
        self.channels = channels

    def find(self, root: Path) -> tuple[list[Sample], list[str]]:
        base, _ = _locate(root, [("images", "masks")], "image folder (images/ + masks/)")
        pairs, problems = _pair_by_stem(by_name(_files(base / "images")), by_name(_files(base / "masks")), "mask")
        return [Sample(s, i, (m,), s) for s, i, m in pairs], problems

    def load(self, sample: Sample) -> Loaded:
        image, mask = _read_pair(sample)
        return Loaded(mask, image.shape[:2])


def get_reader(name: str, **options: object) -> DatasetReader:
    """The reader of dataset ``name`` (one of :data:`READERS`), built with its options.

    Raises:
        ValueError: unknown name (listing the valid ones) or an option the reader does not take.
    """
    if name not in READERS:
        raise DataError(f"unknown dataset {name!r}; valid names are: {', '.join(READERS)}.")
    try:
        return READERS[name](**options)
    except TypeError as e:
        raise DataError(
            f"dataset {name!r} does not take the options {sorted(options)} (--data_options): {e}. Masks are read by "
            "the rule of their file kind (docs/data.md), so there is no label_threshold."
        ) from e
