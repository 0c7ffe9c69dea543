"""MONAI dictionary-transform chains for the five datasets (training with the published augmentation, evaluation).

The published recipe: images scaled to [0, 1] (``/255``), resized to 256x256, and during training each of
rotate (+-35 degrees), horizontal flip, vertical flip and coarse dropout (10 holes up to 32x32 px at 256x256) with
probability 0.3. CT volumes (Hounsfield units) are windowed to [0, 1]; for training one axial slice per sample
is drawn from the volume on the fly, no slices are extracted to disk.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCoarseDropoutd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotated,
    RandSpatialCropd,
    Resized,
    ScaleIntensityRanged,
    SpatialPadd,
    SqueezeDimd,
)
from monai.utils import ImageMetaKey

from monai_medspike.data.io import read_decoded
from monai_medspike.data.readers import READERS, get_reader

__all__ = ["DEFAULT_HU_WINDOW", "BinarizeLabeld", "EnsureChannelsd", "LoadDecodedd", "array_size", "get_transforms"]

DEFAULT_HU_WINDOW = (-1350.0, 150.0)
"""Lung window (level -600, width 1500 HU) mapped to [0, 1]."""

MODES = ("train", "eval", "infer")


def array_size(image_size: Sequence[int]) -> tuple[int, int]:
    """MONAI's array axes of an image size ``(height, width)``: ``(width, height)``, the order of the arrays of
    MONAI's Pillow reader (and ``(X, Y)`` of a RAS CT slice). Every size a user gives (``--image_size``) is
    ``(height, width)``; the transforms and inferers convert it here, in one place."""
    height, width = (int(s) for s in image_size)
    return width, height


class EnsureChannelsd(MapTransform):
    """Give an image exactly ``channels`` channels: drop alpha, repeat grey to RGB, or average RGB to grey.

    Raises:
        ValueError: a channel count that cannot be converted (naming the key and the counts).
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            c = img.shape[0]
            if c in (2, 4):  # grey + alpha, RGB + alpha
                img = img[: c - 1]
                c -= 1
            if c == self.channels:
                pass
            elif c == 1:
                img = img.repeat(self.channels, *([1] * (img.ndim - 1)))
            elif c == 3:
                img = img.mean(dim=0, keepdim=True)
            else:
                raise ValueError(f"{key}: cannot turn an image with {c} channels into {self.channels} channels.")
            d[key] = img
        return d


class LoadDecodedd(MapTransform):
    """MONAI's ``LoadImaged`` for 2D files, decoded by kind as ``prepare`` reads them
    (:func:`monai_medspike.data.io.read_decoded`): palette and CMYK images as RGB, 1-bit as 0/255, EXIF orientation
    applied, alpha dropped, 16-bit refused; masks as 0/1 labels (or class indices) by
    :data:`~monai_medspike.data.io.MASK_RULES`. Unlike ``LoadImaged``, a file that fails is not handed to another
    reader: the :class:`~monai_medspike.data.DataError` naming it is raised.

    The result is a ``MetaTensor`` in MONAI's axes (``(W, H[, C])``, as ``PILReader`` gives) with its metadata
    (``filename_or_obj``, ``spatial_shape``), so inference writes masks in the orientation a viewer shows.

    Args:
        keys: the keys holding file paths.
        role: ``"image"`` or ``"mask"``.
        classes, num_classes: the label rule of masks.
    """

    def __init__(
        self,
        keys: KeysCollection,
        role: str = "image",
        classes: str = "binary",
        num_classes: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if role not in ("image", "mask"):
            raise ValueError(f"role must be 'image' or 'mask', got {role!r}.")
        self.role, self.classes, self.num_classes = role, classes, int(num_classes)
        self.reader = PILReader()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            array, meta = read_decoded(d[key], self.role, self.classes, self.num_classes, self.reader.get_data)
            meta[ImageMetaKey.FILENAME_OR_OBJ] = str(d[key])
            d[key] = MetaTensor.ensure_torch_and_prune_meta(array.astype(np.float32), meta)
        return d


class BinarizeLabeld(MapTransform):
    """``label -> (max over channels > threshold)`` as a one-channel float {0, 1} label.

    2D masks arrive as 0/1 already (decoded by kind, :data:`monai_medspike.data.io.MASK_RULES`); CT mask volumes are
    cut at ``threshold``. A label whose values all lie in [0, 1] is cut at 0.5 when ``threshold`` is higher.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key].amax(dim=0, keepdim=True)
            threshold = self.threshold if self.threshold <= 0.5 or label.max() > 1 else 0.5
            d[key] = (label > threshold).to(torch.float32)
        return d


def get_transforms(
    dataset: str,
    mode: str = "train",
    spatial_size: Sequence[int] = (256, 256),
    classes: str = "binary",
    augment_prob: float = 0.3,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    reader: str | None = None,
    slices_per_volume: int = 4,
    pos: float = 1.0,
    neg: float = 1.0,
    one_hot: int | None = None,
    resize: bool = True,
    reader_options: Mapping[str, Any] | None = None,
) -> Compose:
    """The transform chain of ``dataset`` for datalist entries ``{"image": path, "label": path}``.

    Args:
        dataset: one of ``isic2018, kvasir, busi, monuseg, covid, covid_ct``.
        mode: ``"train"`` (random slices / augmentation), ``"eval"`` (image and label, deterministic) or
            ``"infer"`` (image only).
        spatial_size: the training size ``(height, width)``, as the bundles' ``image_size`` (for CT volumes the
            in-plane size of an axial slice as a viewer shows it: ``(Y, X)``; the slices are kept). MONAI's arrays
            put the width first (Pillow's ``(W, H)``, RAS ``(X, Y)``): the transforms resize to
            :func:`array_size` of it.
        classes: ``"binary"`` (label binarised to {0, 1}) or ``"multiclass"`` (label values are class indices).
        augment_prob: probability of each augmentation in ``"train"`` mode (0 disables augmentation).
        hu_window: ``(min, max)`` Hounsfield window mapped to [0, 1] for CT volumes.
        reader: image reader for CT volumes, ``"NibabelReader"`` (default) or ``"ITKReader"``.
        slices_per_volume: training slices drawn from each volume per visit.
        pos, neg: slice sampling rule for volumes: a drawn slice is centred on an infection voxel with
            probability ``pos / (pos + neg)``, else on any other voxel (so empty slices are kept, at a known rate).
        resize: True resizes 2D images to ``spatial_size``. False keeps the native resolution: training takes
            random ``spatial_size`` crops (padded where an image is smaller), evaluation and inference keep whole
            images for a sliding-window inferer (e.g. MoNuSeg's 1000 x 1000 tiles at 256 x 256).
        one_hot: with ``classes="multiclass"``, the number of classes to one-hot encode the label into
            (``(K, H, W)``); None keeps one channel of class indices (for losses with ``to_onehot_y=True``).
        reader_options: options of the dataset's reader (e.g. ``{"channels": 1}`` for ``"folder"``), which set
            the image channels and the label classes.

    Returns:
        a MONAI ``Compose``. Images come out in MONAI's array axes, ``(C, W, H)`` float in [0, 1] (volumes
        ``(1, X, Y, Z)`` in eval/infer mode); labels ``(1, W, H)`` float {0, 1} (binary) or class indices
        (multiclass).

    Raises:
        ValueError: unknown dataset, mode, classes or reader; bad sizes.
    """
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names are: {', '.join(READERS)}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if classes not in ("binary", "multiclass"):
        raise ValueError(f"classes must be 'binary' or 'multiclass', got {classes!r}.")
    if len(tuple(spatial_size)) != 2 or min(int(s) for s in spatial_size) < 1:
        raise ValueError(f"spatial_size must be (height, width), got {tuple(spatial_size)}.")
    spatial_size = array_size(spatial_size)  # from here on in MONAI's array axes
    if not 0.0 <= augment_prob <= 1.0:
        raise ValueError(f"augment_prob must be in [0, 1], got {augment_prob}.")
    if one_hot is not None and (classes != "multiclass" or one_hot < 2):
        raise ValueError(f"one_hot needs classes='multiclass' and at least 2 classes, got {one_hot} ({classes}).")
    info = get_reader(dataset, **dict(reader_options or {}))
    volume = info.kind == "volume"
    if reader is not None and reader not in ("NibabelReader", "ITKReader"):
        raise ValueError(f"reader must be 'NibabelReader' or 'ITKReader', got {reader!r}.")
    if reader is not None and not volume:
        raise ValueError("reader applies to CT volumes (covid_ct) only; 2D images are read with Pillow.")
    if len(hu_window) != 2 or hu_window[0] >= hu_window[1]:
        raise ValueError(f"hu_window must be (min, max) with min < max, got {hu_window}.")

    keys = ["image"] if mode == "infer" else ["image", "label"]
    interp = ("bilinear", "nearest")[: len(keys)]
    if volume:
        chain: list = [LoadImaged(keys, reader=reader or "NibabelReader", image_only=True)]
    else:  # every image and mask decoded by kind, as prepare checked it (monai_medspike.data.io)
        chain = [LoadDecodedd("image")]
        if mode != "infer":
            num_classes = len(info.label_names) if info.classes == classes else (one_hot or 256)
            chain.append(LoadDecodedd("label", "mask", classes, num_classes))
    chain.append(EnsureChannelFirstd(keys))
    if volume:
        chain += [
            Orientationd(keys, axcodes="RAS", labels=None),  # axial slices along the last axis
            ScaleIntensityRanged("image", hu_window[0], hu_window[1], 0.0, 1.0, clip=True),
        ]
    else:
        chain += [
            EnsureChannelsd("image", info.channels),
            ScaleIntensityRanged("image", 0.0, 255.0, 0.0, 1.0, clip=True),
        ]
    if mode != "infer":
        if classes == "binary":
            chain.append(BinarizeLabeld("label"))
        elif one_hot is not None:
            chain.append(AsDiscreted("label", to_onehot=one_hot))
        else:
            chain.append(EnsureTyped("label", dtype=torch.float32))
    if volume and mode == "train":
        if slices_per_volume < 1 or pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(
                f"need slices_per_volume >= 1 and pos, neg >= 0 with pos + neg > 0, got {slices_per_volume}, "
                f"{pos}, {neg}."
            )
        chain += [
            RandCropByPosNegLabeld(
                keys, "label", spatial_size=(-1, -1, 1), pos=pos, neg=neg, num_samples=slices_per_volume
            ),
            SqueezeDimd(keys, dim=-1),
        ]
    if volume and mode != "train":
        chain.append(Resized(keys, (*spatial_size, -1), mode=("trilinear", "nearest")[: len(keys)]))
    elif resize or volume:
        chain.append(Resized(keys, spatial_size, mode=interp))
    elif mode == "train":
        chain += [SpatialPadd(keys, spatial_size), RandSpatialCropd(keys, spatial_size, random_size=False)]
    if mode == "train" and augment_prob > 0:
        hole = max(1, round(32 * min(spatial_size) / 256))
        chain += [
            RandRotated(keys, range_x=math.radians(35), prob=augment_prob, mode=interp, padding_mode="zeros"),
            RandFlipd(keys, prob=augment_prob, spatial_axis=0),
            RandFlipd(keys, prob=augment_prob, spatial_axis=1),
            RandCoarseDropoutd(
                "image",
                holes=10,
                spatial_size=max(1, hole // 4),
                max_spatial_size=hole,
                fill_value=0.0,
                prob=augment_prob,
            ),
        ]
    chain.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(chain)
