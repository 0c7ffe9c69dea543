"""Small synthetic datasets laid out exactly like the releases of public medical segmentation datasets.

Every reader and training bundle of the package can run on these folders instead of the real downloads. The content
is synthetic but not random noise: each lesion differs from its background in colour or intensity and in texture, so
a segmentation network can learn something from a few epochs on them.

=================  =======================================================================  ==============
name               layout under ``out_dir`` (the folder a user passes as ``--root``)        default count
=================  =======================================================================  ==============
``isic2018``       ``ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg`` (RGB) and            24 images
                   ``ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png``
                   (mode ``L``, values {0, 255})
``kvasir``         ``Kvasir-SEG/images/<id>.jpg`` and ``Kvasir-SEG/masks/<id>.jpg`` (the     24 images
                   mask is an RGB JPEG with R=G=B, near-binary: threshold it at 127);
                   ``<id>`` is 25 random lowercase letters and digits
``busi``           ``Dataset_BUSI_with_GT/<class>/<class> (N).png`` (RGB, grey content) with  24 images
                   ``<class> (N)_mask.png`` (mode ``1``) and, for about one lesion image in
                   six, ``<class> (N)_mask_1.png`` marking a second lesion; ``normal``
                   images have an all-zero RGB mask; classes ~55 % benign, 25 % malignant,
                   20 % normal
``monuseg``        ``MoNuSeg 2018 Training Data/Tissue Images/<id>.tif`` (RGB, LZW, 256x256)  4 images
                   and ``MoNuSeg 2018 Training Data/Annotations/<id>.xml`` (Aperio
                   ImageScope XML, one ``Region`` per nucleus, ``X`` = column, ``Y`` = row);
                   ``<id>`` like ``TCGA-A1-B2C3-01Z-00-DX1``, the first two share a patient
``covid``          ``TrainingSet/LungInfection-Train/Doctor-label/{Imgs/<n>.jpg,GT/<n>.png}``  20 slices
                   (mode ``L``; GT values {0, 255}) and
                   ``TrainingSet/MultiClassInfection-Train/{Imgs/<n>.jpg,GT/<n>.png}``
                   (same JPEG bytes; GT is a palette PNG with indices 0 background,
                   1 ground-glass opacity, 2 consolidation)
``covid_ct``       ``ct/demo_case_NNN.nii.gz`` (int16, HU), ``infection_mask/...`` (uint8     4 volumes
                   {0, 1}) and ``infection_mask_multiclass/...`` (uint8, 0 background,
                   1 ground-glass, 2 consolidation); shape (X, Y, Z) = (96, 96, 16), axial
                   slices along the last axis, spacing (0.75, 0.75, 5.0) mm
=================  =======================================================================  ==============

The output is deterministic: the same ``seed`` gives byte-identical files (the JPEG, PNG, TIFF and gzip encoders used
here are deterministic and no time stamps are written).

Example::

    from monai_medspike.data.demo import make_demo_dataset

    root = make_demo_dataset("isic2018", "/tmp/isic_demo", count=8, seed=0)
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import string
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "COVID_CT_ORIGIN",
    "COVID_CT_SHAPE",
    "COVID_CT_SPACING",
    "DEFAULT_COUNTS",
    "DEMO_DATASETS",
    "make_all_demo_datasets",
    "make_demo_dataset",
]

logger = logging.getLogger(__name__)

DEMO_DATASETS: tuple[str, ...] = ("isic2018", "kvasir", "busi", "monuseg", "covid", "covid_ct")
"""Names accepted by :func:`make_demo_dataset`."""

DEFAULT_COUNTS: dict[str, int] = {"isic2018": 24, "kvasir": 24, "busi": 24, "monuseg": 4, "covid": 20, "covid_ct": 4}
"""Number of images (slices for ``covid``, volumes for ``covid_ct``) written when ``count`` is None."""

COVID_CT_SHAPE: tuple[int, int, int] = (96, 96, 16)
"""Shape (X, Y, Z) of the ``covid_ct`` volumes; axial slices run along the last axis."""

COVID_CT_SPACING: tuple[float, float, float] = (0.75, 0.75, 5.0)
"""Voxel spacing in mm of the ``covid_ct`` volumes (the diagonal of their affine)."""

COVID_CT_ORIGIN: tuple[float, float, float] = (-35.625, -35.625, -37.5)
"""World position in mm of voxel (0, 0, 0) of the ``covid_ct`` volumes (the translation of their affine)."""

# per-dataset offsets mixed into the seed so that the datasets of one seed do not share their random streams
_SEED_OFFSETS: dict[str, int] = {
    "isic2018": 101,
    "kvasir": 202,
    "busi": 303,
    "monuseg": 404,
    "covid": 505,
    "covid_ct": 606,
}

_SIZE_RANGE = (96, 160)  # inclusive range of the heights and widths of the 2D datasets (except monuseg, covid)
_MONUSEG_SIZE = 256
_ID_ALPHABET = np.array(list(string.ascii_lowercase + string.digits))
_TCGA_ALPHABET = np.array(list(string.ascii_uppercase + string.digits))

# --------------------------------------------------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------------------------------------------------


def _upsample_linear(coarse: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resizes ``coarse`` to ``shape`` by separable linear interpolation (corners aligned).

    Args:
        coarse: array with at least two samples along every axis.
        shape: output shape, same number of dimensions as ``coarse``.

    Returns:
        The interpolated float array of shape ``shape``.
    """
    out = coarse.astype(np.float64)
    for axis, size in enumerate(shape):
        n_in = out.shape[axis]
        pos = np.linspace(0.0, n_in - 1.0, int(size))
        lo = np.minimum(np.floor(pos).astype(np.intp), n_in - 2)
        frac = (pos - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        first = np.take(out, lo, axis=axis)
        second = np.take(out, lo + 1, axis=axis)
        out = first + (second - first) * frac
    return out


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cell: float | Sequence[float]) -> np.ndarray:
    """Low-frequency noise with zero mean and unit standard deviation.

    Args:
        rng: random generator.
        shape: output shape (any number of dimensions).
        cell: approximate feature size in pixels, one value or one per axis.

    Returns:
        Float array of shape ``shape``.
    """
    cells = [float(cell)] * len(shape) if np.isscalar(cell) else [float(c) for c in cell]  # type: ignore[arg-type]
    coarse_shape = [max(2, math.ceil(n / c) + 1) for n, c in zip(shape, cells, strict=True)]
    field = _upsample_linear(rng.standard_normal(coarse_shape), shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def _normal(rng: np.random.Generator, shape: Sequence[int], limit: float = 3.5) -> np.ndarray:
    """Standard normal noise clipped to ``[-limit, limit]`` (keeps intensity classes from crossing thresholds)."""
    return np.clip(rng.standard_normal(tuple(shape)), -limit, limit)


def _harmonics(rng: np.random.Generator, roughness: float, orders: Sequence[int]) -> list[tuple[int, float, float]]:
    """Draws the angular harmonics ``(order, amplitude, phase)`` of an irregular star-shaped outline."""
    return [(int(k), roughness * float(rng.uniform(0.3, 1.0)) / k, float(rng.uniform(0, 2 * np.pi))) for k in orders]


def _star_rho(
    rows: np.ndarray,
    cols: np.ndarray,
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    harmonics: Sequence[tuple[int, float, float]],
) -> np.ndarray:
    """Normalised radial coordinate of an irregular ellipse: ``<= 1`` inside, ``0`` at its centre.

    The outline is an ellipse (``radii`` along its own axes, rotated by ``angle``) whose radius is modulated by a sum of
    angular harmonics, so the shape is star-shaped and therefore connected.

    Args:
        rows: row coordinates (any shape, broadcast with ``cols``).
        cols: column coordinates.
        center: (row, column) of the centre.
        radii: semi-axes along the rotated (column, row) directions.
        angle: rotation in radians.
        harmonics: ``(order, amplitude, phase)`` triples, see :func:`_harmonics`.

    Returns:
        Array of the broadcast shape of ``rows`` and ``cols``.
    """
    dy = rows - center[0]
    dx = cols - center[1]
    cos, sin = math.cos(angle), math.sin(angle)
    u = (dx * cos + dy * sin) / radii[0]
    v = (-dx * sin + dy * cos) / radii[1]
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for order, amplitude, phase in harmonics:
        outline = outline + amplitude * np.cos(order * theta + phase)
    return np.hypot(u, v) / outline


def _soft(rho: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of ``rho <= 1``: 0.5 on the outline, ``width`` sets the transition length."""
    return 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) / width, -50.0, 50.0)))


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary erosion over the first two axes with the 4-neighbourhood (pixels outside count as background)."""
    out = mask.astype(bool)
    for _ in range(iterations):
        padded = np.pad(out, [(1, 1), (1, 1)] + [(0, 0)] * (out.ndim - 2), constant_values=False)
        out = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return out


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinate grids (float) of an image of the given size."""
    rows, cols = np.mgrid[0:height, 0:width]
    return rows.astype(np.float64), cols.astype(np.float64)


def _random_size(rng: np.random.Generator, low: int = _SIZE_RANGE[0], high: int = _SIZE_RANGE[1]) -> tuple[int, int]:
    """Draws (height, width), each uniform in ``low..high`` inclusive."""
    height, width = rng.integers(low, high + 1, size=2)
    return int(height), int(width)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Rounds and clips to uint8."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path``, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Encodes a Pillow image in memory (``fmt`` is a Pillow format name)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _jpeg(array: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a uint8 array (H, W) or (H, W, 3)."""
    return _encode(Image.fromarray(array), "JPEG", quality=quality)


def _png(image: Image.Image) -> bytes:
    """PNG bytes of a Pillow image."""
    return _encode(image, "PNG")


def _gray_png(mask: np.ndarray) -> bytes:
    """PNG (mode ``L``) with values {0, 255} of a boolean mask."""
    return _png(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)))


# --------------------------------------------------------------------------------------------------------------------
# ISIC 2018 (dermoscopy)
# --------------------------------------------------------------------------------------------------------------------


def _isic_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One dermoscopy-like RGB image and its lesion mask."""
    height, width = _random_size(rng)
    rows, cols = _grid(height, width)
    short = min(height, width)

    skin = np.array([228.0, 186.0, 160.0]) * rng.uniform(0.85, 1.05) + rng.normal(0.0, 6.0, 3)
    shading = 1.0 + 0.05 * _smooth_noise(rng, (height, width), 40) + 0.025 * _smooth_noise(rng, (height, width), 9)
    image = skin * shading[..., None] + 3.0 * _normal(rng, (height, width, 1)) + 2.0 * _normal(rng, (height, width, 3))

    # dark corners of the dermatoscope's field of view on some images
    if rng.random() < 0.3:
        radius = np.hypot((rows - height / 2) / (height / 2), (cols - width / 2) / (width / 2))
        image *= (1.0 - 0.75 * _soft(-radius + 2.25, 0.05))[..., None]

    center = (height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6))
    radii = (short * rng.uniform(0.17, 0.32), short * rng.uniform(0.17, 0.32))
    harmonics = _harmonics(rng, rng.uniform(0.12, 0.35), (2, 3, 4, 5, 7))
    rho = _star_rho(rows, cols, center, radii, rng.uniform(0, np.pi), harmonics)
    mask = rho <= 1.0

    brown = np.array([150.0, 95.0, 65.0]) * rng.uniform(0.55, 0.95)
    mottling = 1.0 + 0.12 * _smooth_noise(rng, (height, width), 6) + 0.06 * _normal(rng, (height, width))
    core = 0.8 + 0.2 * np.clip(rho, 0.0, 1.0)  # darker centre
    lesion = brown * (mottling * core)[..., None]
    alpha = _soft(rho, 0.05)[..., None]
    image = image * (1.0 - alpha) + lesion * alpha
    return _to_uint8(image), mask


def _make_isic(root: Path, count: int, rng: np.random.Generator) -> None:
    for index in range(count):
        image, mask = _isic_sample(rng)
        name = f"ISIC_{index:07d}"
        _write_bytes(root / "ISIC2018_Task1-2_Training_Input" / f"{name}.jpg", _jpeg(image, quality=92))
        _write_bytes(root / "ISIC2018_Task1_Training_GroundTruth" / f"{name}_segmentation.png", _gray_png(mask))


# --------------------------------------------------------------------------------------------------------------------
# Kvasir-SEG (colonoscopy)
# --------------------------------------------------------------------------------------------------------------------


def _kvasir_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One colonoscopy-like RGB image and its polyp mask."""
    height, width = _random_size(rng)
    rows, cols = _grid(height, width)
    short = min(height, width)

    mucosa = np.array([185.0, 88.0, 78.0]) * rng.uniform(0.85, 1.05) + rng.normal(0.0, 5.0, 3)
    shading = 1.0 + 0.12 * _smooth_noise(rng, (height, width), 35)
    vessels = np.abs(_smooth_noise(rng, (height, width), 10)) < 0.09  # thin dark-red ridges
    image = mucosa * shading[..., None]
    image[vessels] *= np.array([0.78, 0.62, 0.65])
    image += 3.0 * _normal(rng, (height, width, 3))

    center = (height * rng.uniform(0.35, 0.65), width * rng.uniform(0.35, 0.65))
    radii = (short * rng.uniform(0.14, 0.28), short * rng.uniform(0.14, 0.28))
    harmonics = _harmonics(rng, rng.uniform(0.05, 0.18), (2, 3, 4))
    rho = _star_rho(rows, cols, center, radii, rng.uniform(0, np.pi), harmonics)
    mask = rho <= 1.0

    polyp = np.array([232.0, 128.0, 108.0]) * rng.uniform(0.92, 1.05)
    dome = 1.08 - 0.22 * np.clip(rho, 0.0, 1.0) ** 2
    texture = 1.0 + 0.07 * _smooth_noise(rng, (height, width), 4)
    lesion = polyp * (dome * texture)[..., None]
    alpha = _soft(rho, 0.04)[..., None]
    image = image * (1.0 - alpha) + lesion * alpha
    # specular reflection on the dome
    glint = _star_rho(rows, cols, (center[0] - 0.35 * radii[1], center[1] - 0.2 * radii[0]), (2.5, 1.8), 0.3, [])
    image = image + (255.0 - image) * (0.9 * _soft(glint, 0.15))[..., None]

    # dark corners of the endoscope's round field of view
    radius = np.hypot((rows - height / 2) / (height / 2), (cols - width / 2) / (width / 2))
    image *= (1.0 - 0.35 * np.clip(radius - 0.75, 0.0, None) - 0.6 * _soft(-radius + 2.3, 0.04))[..., None]
    return _to_uint8(image), mask


def _kvasir_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct random 25-character lowercase alphanumeric ids."""
    ids: list[str] = []
    while len(ids) < count:
        candidate = "".join(rng.choice(_ID_ALPHABET, size=25))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _make_kvasir(root: Path, count: int, rng: np.random.Generator) -> None:
    for name in _kvasir_ids(rng, count):
        image, mask = _kvasir_sample(rng)
        mask_rgb = np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
        _write_bytes(root / "Kvasir-SEG" / "images" / f"{name}.jpg", _jpeg(image, quality=90))
        _write_bytes(root / "Kvasir-SEG" / "masks" / f"{name}.jpg", _jpeg(mask_rgb, quality=90))


# --------------------------------------------------------------------------------------------------------------------
# BUSI (breast ultrasound)
# --------------------------------------------------------------------------------------------------------------------


def _busi_class_counts(count: int) -> dict[str, int]:
    """Splits ``count`` over the classes (~55 % benign, 25 % malignant, 20 % normal; one of each when count >= 3)."""
    if count < 3:
        return {"benign": count - count // 2, "malignant": count // 2, "normal": 0}
    normal = max(1, round(0.2 * count))
    malignant = max(1, round(0.25 * count))
    return {"benign": count - normal - malignant, "malignant": malignant, "normal": normal}


def _busi_lesion(
    rng: np.random.Generator,
    rows: np.ndarray,
    cols: np.ndarray,
    center: tuple[float, float],
    size: float,
    malignant: bool,
) -> np.ndarray:
    """Normalised radial coordinate of one lesion (benign: smooth, wider than tall; malignant: spiculated)."""
    if malignant:
        radii = (size * rng.uniform(0.7, 1.0), size * rng.uniform(0.8, 1.1))
        harmonics = _harmonics(rng, rng.uniform(0.25, 0.4), (2, 3, 5, 7, 9, 11))
        angle = rng.uniform(-0.4, 0.4)
    else:
        radii = (size * rng.uniform(0.9, 1.2), size * rng.uniform(0.55, 0.8))
        harmonics = _harmonics(rng, rng.uniform(0.05, 0.15), (2, 3, 4))
        angle = rng.uniform(-0.25, 0.25)
    return _star_rho(rows, cols, center, radii, angle, harmonics)


def _busi_sample(rng: np.random.Generator, label: str, two_lesions: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """One ultrasound-like grey image and one mask per lesion (none for ``normal``)."""
    height, width = _random_size(rng)
    rows, cols = _grid(height, width)
    short = min(height, width)
    depth = rows / height

    # layered tissue: horizontal streaks, bright skin line on top, attenuation with depth
    echo = 0.5 + 0.16 * _smooth_noise(rng, (height, width), (5, 40)) + 0.08 * _smooth_noise(rng, (height, width), 18)
    echo += 0.35 * np.exp(-(((depth - 0.04) / 0.03) ** 2))
    echo *= 1.0 - 0.4 * depth

    lesions: list[np.ndarray] = []
    if label != "normal":
        malignant = label == "malignant"
        if two_lesions:
            for _ in range(50):
                size = short * rng.uniform(0.1, 0.16)
                first = _busi_lesion(
                    rng, rows, cols, (height * rng.uniform(0.4, 0.6), width * rng.uniform(0.22, 0.32)), size, malignant
                )
                second = _busi_lesion(
                    rng, rows, cols, (height * rng.uniform(0.4, 0.6), width * rng.uniform(0.68, 0.78)), size, malignant
                )
                if not np.any((first <= 1.3) & (second <= 1.3)):
                    break
            else:  # pragma: no cover - practically unreachable; two small discs far apart as a fallback
                first = _star_rho(rows, cols, (height / 2, width * 0.25), (short * 0.08,) * 2, 0.0, [])
                second = _star_rho(rows, cols, (height / 2, width * 0.75), (short * 0.08,) * 2, 0.0, [])
            rhos = [first, second]
        else:
            center = (height * rng.uniform(0.35, 0.6), width * rng.uniform(0.35, 0.65))
            rhos = [_busi_lesion(rng, rows, cols, center, short * rng.uniform(0.13, 0.24), malignant)]
        for rho in rhos:
            mask = rho <= 1.0
            lesion_cols = np.flatnonzero(mask.any(axis=0))
            bottom = np.flatnonzero(mask.any(axis=1)).max()
            # posterior acoustic shadowing (malignant) or enhancement (benign) below the lesion
            below = (rows > bottom) & (cols >= lesion_cols.min()) & (cols <= lesion_cols.max())
            echo = np.where(below, echo * (0.6 if malignant else 1.25), echo)
            inner = rng.uniform(0.06, 0.14) * (1.0 + 0.3 * _smooth_noise(rng, (height, width), 5))
            alpha = _soft(rho, 0.06)
            echo = echo * (1.0 - alpha) + inner * alpha
            lesions.append(mask)

    # speckle: magnitude of a laterally blurred complex Gaussian field (Rayleigh-distributed, unit mean)
    real, imag = rng.standard_normal((2, height, width))
    kernel = np.array([0.25, 0.5, 0.25])
    field = real + 1j * imag
    for axis in (0, 1, 1):  # correlated over ~2 pixels axially and ~3 laterally
        field = kernel[0] * np.roll(field, 1, axis=axis) + kernel[1] * field + kernel[2] * np.roll(field, -1, axis=axis)
    speckle = np.abs(field)
    speckle = 0.35 + 0.65 * speckle / speckle.mean()
    gray = _to_uint8(255.0 * np.clip(echo, 0.0, 1.2) * speckle * 0.75)
    return np.repeat(gray[..., None], 3, axis=2), lesions


def _make_busi(root: Path, count: int, rng: np.random.Generator) -> None:
    base = root / "Dataset_BUSI_with_GT"
    lesion_index = 0
    for label, n_images in _busi_class_counts(count).items():
        (base / label).mkdir(parents=True, exist_ok=True)  # the release always has the three class folders
        for number in range(1, n_images + 1):
            stem = f"{label} ({number})"
            two_lesions = label != "normal" and lesion_index % 6 == 2
            image, lesions = _busi_sample(rng, label, two_lesions)
            _write_bytes(base / label / f"{stem}.png", _png(Image.fromarray(image)))
            if label == "normal":
                _write_bytes(base / label / f"{stem}_mask.png", _png(Image.fromarray(np.zeros_like(image))))
                continue
            lesion_index += 1
            for k, mask in enumerate(lesions):
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                _write_bytes(base / label / f"{stem}{suffix}.png", _png(Image.fromarray(mask.astype(bool))))


# --------------------------------------------------------------------------------------------------------------------
# MoNuSeg 2018 (H&E nuclei)
# --------------------------------------------------------------------------------------------------------------------


def _tcga_ids(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct TCGA-style slide ids; the first two share the patient part ``TCGA-XX-XXXX``."""

    def token(length: int) -> str:
        return "".join(rng.choice(_TCGA_ALPHABET, size=length))

    ids: list[str] = []
    patient = ""
    while len(ids) < count:
        if len(ids) == 1:
            candidate = f"{patient}-01Z-00-DX2"
        else:
            patient = f"TCGA-{token(2)}-{token(4)}"
            candidate = f"{patient}-01Z-00-DX1"
        if candidate not in ids and (len(ids) < 2 or candidate[:12] not in {i[:12] for i in ids}):
            ids.append(candidate)
    return ids


def _nucleus_vertices(rng: np.random.Generator, center: tuple[float, float]) -> tuple[list[str], list[str]]:
    """Vertex coordinates (as written to XML, 3 decimals) of one slightly irregular elliptical nucleus."""
    n_vertices = int(rng.integers(10, 17))
    radius = rng.uniform(3.0, 7.0)
    radii = (radius, radius * rng.uniform(0.6, 1.0))
    angle = rng.uniform(0, np.pi)
    theta = 2 * np.pi * (np.arange(n_vertices) + rng.uniform(-0.2, 0.2, n_vertices)) / n_vertices
    scale = 1.0 + 0.1 * _normal(rng, (n_vertices,), 2.0)
    u = radii[0] * scale * np.cos(theta)
    v = radii[1] * scale * np.sin(theta)
    xs = center[1] + u * math.cos(angle) - v * math.sin(angle)
    ys = center[0] + u * math.sin(angle) + v * math.cos(angle)
    return [f"{x:.3f}" for x in xs], [f"{y:.3f}" for y in ys]


def _monuseg_sample(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[list[str], list[str]]]]:
    """One H&E-like 256x256 RGB tile and its nuclei polygons (X = column, Y = row, as strings)."""
    from skimage.draw import polygon

    size = _MONUSEG_SIZE
    shape = (size, size)
    stroma = np.array([232.0, 160.0, 200.0]) + rng.normal(0.0, 6.0, 3)
    fibres = 1.0 + 0.06 * _smooth_noise(rng, shape, (3, 14)) + 0.05 * _smooth_noise(rng, shape, 24)
    image = stroma * fibres[..., None]
    lumen = _soft(-_smooth_noise(rng, shape, 30) + 2.6, 0.1)  # a few pale holes
    image = image * (1.0 - lumen[..., None]) + np.array([246.0, 236.0, 242.0]) * lumen[..., None]

    occupied = np.zeros(shape, dtype=bool)
    polygons: list[tuple[list[str], list[str]]] = []
    target = int(rng.integers(30, 81))
    chromatin = _smooth_noise(rng, shape, 2)
    for _ in range(target * 40):
        if len(polygons) == target:
            break
        center = (rng.uniform(-1.0, size), rng.uniform(-1.0, size))
        xs_text, ys_text = _nucleus_vertices(rng, center)
        xs = np.array([float(x) for x in xs_text])
        ys = np.array([float(y) for y in ys_text])
        if xs.min() < -2.0 or ys.min() < -2.0 or xs.max() > size + 1.0 or ys.max() > size + 1.0:
            continue
        rr, cc = polygon(ys, xs, shape=shape)
        if rr.size < 6 or occupied[rr, cc].any():
            continue
        occupied[rr, cc] = True
        hematoxylin = np.array([85.0, 45.0, 125.0]) * rng.uniform(0.7, 1.15)
        image[rr, cc] = hematoxylin * (1.0 + 0.12 * chromatin[rr, cc])[:, None]
        polygons.append((xs_text, ys_text))
    image += 3.0 * _normal(rng, (size, size, 3))
    return _to_uint8(image), polygons


def _imagescope_xml(polygons: Sequence[tuple[Sequence[str], Sequence[str]]]) -> bytes:
    """Aperio ImageScope XML with one ``Region`` per polygon."""
    root = ET.Element("Annotations", {"MicronsPerPixel": "0.252100"})
    annotation = ET.SubElement(root, "Annotation", {"Id": "1"})
    regions = ET.SubElement(annotation, "Regions")
    for k, (xs, ys) in enumerate(polygons, start=1):
        region = ET.SubElement(regions, "Region", {"Id": str(k)})
        vertices = ET.SubElement(region, "Vertices")
        for x, y in zip(xs, ys, strict=True):
            ET.SubElement(vertices, "Vertex", {"X": x, "Y": y, "Z": "0"})
    ET.indent(root)
    buffer = io.BytesIO()
    ET.ElementTree(root).write(buffer, encoding="utf-8", xml_declaration=True)
    return buffer.getvalue()


def _make_monuseg(root: Path, count: int, rng: np.random.Generator) -> None:
    base = root / "MoNuSeg 2018 Training Data"
    for name in _tcga_ids(rng, count):
        image, polygons = _monuseg_sample(rng)
        tiff = _encode(Image.fromarray(image), "TIFF", compression="tiff_lzw")
        _write_bytes(base / "Tissue Images" / f"{name}.tif", tiff)
        _write_bytes(base / "Annotations" / f"{name}.xml", _imagescope_xml(polygons))


# --------------------------------------------------------------------------------------------------------------------
# COVID-19 CT, 2D slices (Inf-Net release) and 3D volumes (COVID-19-CT-Seg)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chest:
    """Body and lung outlines of one axial chest slice or volume (pixel units, (row, column) order)."""

    body_center: tuple[float, float]
    body_radii: tuple[float, float]
    body_harmonics: list[tuple[int, float, float]]
    lung_offset: float
    lung_row: float
    lung_radii: tuple[float, float]
    lung_harmonics: list[list[tuple[int, float, float]]]
    rib_phase: float

    @classmethod
    def random(cls, rng: np.random.Generator, height: int, width: int) -> _Chest:
        """Draws a chest whose lungs lie well inside the body (at least a few pixels of tissue around them)."""
        return cls(
            body_center=(height * rng.uniform(0.48, 0.52), width * rng.uniform(0.48, 0.52)),
            body_radii=(width * rng.uniform(0.43, 0.46), height * rng.uniform(0.36, 0.39)),
            body_harmonics=_harmonics(rng, 0.03, (2, 3)),
            lung_offset=width * rng.uniform(0.17, 0.2),
            lung_row=height * rng.uniform(0.5, 0.52),
            lung_radii=(width * rng.uniform(0.11, 0.135), height * rng.uniform(0.19, 0.225)),
            lung_harmonics=[_harmonics(rng, 0.05, (2, 3)) for _ in range(2)],
            rib_phase=float(rng.uniform(0, 2 * np.pi)),
        )

    def rib_pattern(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Angular sectors of the body where its rib ring is drawn (rib cross-sections, not a closed ring)."""
        theta = np.arctan2(rows - self.body_center[0], cols - self.body_center[1])
        return np.sin(14.0 * theta + self.rib_phase) > 0.2

    def rhos(self, rows: np.ndarray, cols: np.ndarray, lung_scale: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
        """Radial coordinates of the body and of the two lungs (the lungs scaled by ``lung_scale``)."""
        body = _star_rho(rows, cols, self.body_center, self.body_radii, 0.0, self.body_harmonics)
        radii = (self.lung_radii[0] * lung_scale, self.lung_radii[1] * lung_scale)
        lungs = [
            _star_rho(rows, cols, (self.lung_row, self.body_center[1] + side * self.lung_offset), radii, 0.0, harmonics)
            for side, harmonics in zip((-1.0, 1.0), self.lung_harmonics, strict=True)
        ]
        return body, lungs


def _covid_slice(rng: np.random.Generator, infected: bool) -> tuple[np.ndarray, np.ndarray]:
    """One 2D CT-like grey slice and its label map (0 background, 1 ground-glass, 2 consolidation)."""
    height = int(rng.integers(140, 201))
    width = int(rng.integers(120, 181))
    rows, cols = _grid(height, width)
    chest = _Chest.random(rng, height, width)
    body_rho, lung_rhos = chest.rhos(rows, cols)
    body = body_rho <= 1.0
    lung = (lung_rhos[0] <= 1.0) | (lung_rhos[1] <= 1.0)

    image = np.full((height, width), 8.0)
    image[body] = 150.0
    image[body & (body_rho > 0.93)] = 115.0  # subcutaneous fat
    image[body & (body_rho > 0.86) & (body_rho <= 0.89) & chest.rib_pattern(rows, cols)] = 225.0  # ribs
    image[lung] = 28.0 + 8.0 * _smooth_noise(rng, (height, width), 12)[lung]

    label = np.zeros((height, width), dtype=np.uint8)
    if infected:
        inner = _erode(lung, 2)
        candidates = np.argwhere(inner)
        for _ in range(int(rng.integers(1, 4))):
            row, col = candidates[rng.integers(len(candidates))]
            side_lung = lung_rhos[int(np.argmin([lung_rhos[0][row, col], lung_rhos[1][row, col]]))] <= 1.0
            radii = (chest.lung_radii[0] * rng.uniform(0.3, 0.65), chest.lung_radii[1] * rng.uniform(0.2, 0.45))
            rho = _star_rho(rows, cols, (row, col), radii, rng.uniform(0, np.pi), _harmonics(rng, 0.3, (2, 3, 4)))
            label[(rho <= 1.0) & side_lung & (label == 0)] = 1
            if rng.random() < 0.6:
                label[(rho <= rng.uniform(0.35, 0.6)) & inner & side_lung] = 2
        haze = 8.0 * _smooth_noise(rng, (height, width), 4)
        image = np.where(label == 1, 105.0 + haze, image)
        image = np.where(label == 2, 175.0 + 0.5 * haze, image)
    image += 4.0 * _normal(rng, (height, width))
    return _to_uint8(image), label


def _make_covid(root: Path, count: int, rng: np.random.Generator) -> None:
    doctor = root / "TrainingSet" / "LungInfection-Train" / "Doctor-label"
    multi = root / "TrainingSet" / "MultiClassInfection-Train"
    palette = [0, 0, 0, 255, 255, 0, 255, 0, 0]  # 0 background, 1 ground-glass, 2 consolidation
    for number in range(1, count + 1):
        image, label = _covid_slice(rng, infected=number % 5 != 0)
        jpeg = _jpeg(image, quality=95)
        multiclass = Image.fromarray(label)
        multiclass.putpalette(palette)
        _write_bytes(doctor / "Imgs" / f"{number}.jpg", jpeg)
        _write_bytes(doctor / "GT" / f"{number}.png", _gray_png(label > 0))
        _write_bytes(multi / "Imgs" / f"{number}.jpg", jpeg)
        _write_bytes(multi / "GT" / f"{number}.png", _png(multiclass))


def _covid_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like volume (X, Y, Z) in HU and its label volume (0 background, 1 ground-glass, 2 consolidation)."""
    nx, ny, nz = COVID_CT_SHAPE
    # built in (Y, X, Z) order, i.e. rows = Y (anterior-posterior), columns = X (left-right), transposed at the end
    rows, cols = _grid(ny, nx)
    chest = _Chest.random(rng, ny, nx)
    # the lungs grow from the apex and shrink towards the diaphragm
    profile = 0.35 + 0.65 * np.sin(np.pi * (np.arange(nz) + 0.5) / nz) ** 0.7

    mean = np.full((ny, nx, nz), -1000.0)
    sigma = np.full((ny, nx, nz), 5.0)
    lung_side = np.full((ny, nx, nz), -1, dtype=np.int8)  # -1 outside the lungs, else 0 or 1
    ribs = chest.rib_pattern(rows, cols)
    for z in range(nz):
        body_rho, lung_rhos = chest.rhos(rows, cols, float(profile[z]))
        body = body_rho <= 1.0
        mean[..., z][body] = 40.0
        mean[..., z][body & (body_rho > 0.93)] = -100.0  # subcutaneous fat
        mean[..., z][body & (body_rho > 0.86) & (body_rho <= 0.89) & ribs] = 700.0  # ribs
        sigma[..., z][body] = 20.0
        for side, lung_rho in enumerate(lung_rhos):
            lung_side[..., z][lung_rho <= 1.0] = side
    lung = lung_side >= 0
    mean[lung] = -850.0
    sigma[lung] = 25.0

    label = np.zeros((ny, nx, nz), dtype=np.uint8)
    inner = _erode(lung, 2)
    inner[..., :3] = False
    inner[..., nz - 3 :] = False
    candidates = np.argwhere(inner)
    grid_r, grid_c, grid_z = np.meshgrid(np.arange(ny), np.arange(nx), np.arange(nz), indexing="ij")
    # large enough to be learnt in the bundles' short CPU demo runs (a few percent of a lung slice or more)
    for _ in range(int(rng.integers(3, 7))):
        center = candidates[rng.integers(len(candidates))]
        radii = (rng.uniform(7.0, 16.0), rng.uniform(7.0, 16.0), rng.uniform(2.5, 5.0))
        wobble = 1.0 + 0.25 * _smooth_noise(rng, (ny, nx, nz), (8, 8, 3))
        distance = np.sqrt(
            ((grid_r - center[0]) / radii[0]) ** 2
            + ((grid_c - center[1]) / radii[1]) ** 2
            + ((grid_z - center[2]) / radii[2]) ** 2
        )
        rho = distance / wobble
        same_side = lung_side == lung_side[tuple(center)]
        label[(rho <= 1.0) & same_side & (label == 0)] = 1
        if rng.random() < 0.6:
            label[(rho <= rng.uniform(0.35, 0.6)) & inner & same_side] = 2
    label[..., :2] = 0
    label[..., nz - 2 :] = 0
    mean[label == 1] = -400.0  # ground-glass opacity
    sigma[label == 1] = 30.0
    mean[label == 2] = 0.0  # consolidation
    sigma[label == 2] = 20.0

    hu = mean + sigma * _normal(rng, mean.shape)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return np.ascontiguousarray(hu.transpose(1, 0, 2)), np.ascontiguousarray(label.transpose(1, 0, 2))


def _covid_affine() -> np.ndarray:
    """The affine shared by all ``covid_ct`` volumes and masks."""
    affine = np.diag([*COVID_CT_SPACING, 1.0])
    affine[:3, 3] = COVID_CT_ORIGIN
    return affine


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 bytes (deterministic: no time stamp or file name in the gzip header)."""
    import gzip

    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _make_covid_ct(root: Path, count: int, rng: np.random.Generator) -> None:
    affine = _covid_affine()
    for number in range(1, count + 1):
        hu, label = _covid_volume(rng)
        name = f"demo_case_{number:03d}.nii.gz"
        _write_bytes(root / "ct" / name, _nifti_bytes(hu, affine))
        _write_bytes(root / "infection_mask" / name, _nifti_bytes((label > 0).astype(np.uint8), affine))
        _write_bytes(root / "infection_mask_multiclass" / name, _nifti_bytes(label, affine))


# --------------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------------

_MAKERS: dict[str, Callable[[Path, int, np.random.Generator], None]] = {
    "isic2018": _make_isic,
    "kvasir": _make_kvasir,
    "busi": _make_busi,
    "monuseg": _make_monuseg,
    "covid": _make_covid,
    "covid_ct": _make_covid_ct,
}


def _check_free(out_dir: Path) -> None:
    """Raises FileExistsError when ``out_dir`` exists and is not an empty folder."""
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} already exists and is not empty; choose a new or empty folder.")
    elif out_dir.exists() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} already exists and is not a folder.")


def make_demo_dataset(name: str, out_dir: str | Path, count: int | None = None, seed: int = 0) -> Path:
    """Writes a small synthetic dataset with the on-disk layout of a public release (see the module docstring).

    The files are generated in a temporary sibling folder of ``out_dir`` which is renamed to ``out_dir`` at the end,
    so an interrupted run leaves nothing under ``out_dir``.

    Args:
        name: one of :data:`DEMO_DATASETS`.
        out_dir: the folder that plays the role of the dataset's release root (what a user passes as ``--root``).
            Created if missing; it may exist only as an empty folder.
        count: number of images (``covid``: slices, ``covid_ct``: volumes); None uses :data:`DEFAULT_COUNTS`.
        seed: non-negative random seed; the same seed gives byte-identical files.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: unknown ``name``, ``count < 1`` or a negative ``seed``.
        FileExistsError: ``out_dir`` exists and is not an empty folder.
    """
    if name not in _MAKERS:
        raise ValueError(f"Unknown demo dataset {name!r}; valid names: {', '.join(DEMO_DATASETS)}.")
    if count is None:
        count = DEFAULT_COUNTS[name]
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    out_dir = Path(out_dir)
    _check_free(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    start = time.perf_counter()
    try:
        _MAKERS[name](staging, int(count), np.random.default_rng([int(seed), _SEED_OFFSETS[name]]))
        _check_free(out_dir)
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); fails rather than mixing if something appeared meanwhile
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Wrote demo dataset %r (%d items, seed %d) to %s in %.2fs",
        name,
        count,
        seed,
        out_dir,
        time.perf_counter() - start,
    )
    return out_dir


def make_all_demo_datasets(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Writes every demo dataset with its default count into ``out_dir/<name>``.

    Args:
        out_dir: parent folder; created if missing. Each ``out_dir/<name>`` must be missing or empty.
        seed: non-negative random seed passed to :func:`make_demo_dataset`.

    Returns:
        The dataset roots, keyed by name in the order of :data:`DEMO_DATASETS`.
    """
    out_dir = Path(out_dir)
    return {name: make_demo_dataset(name, out_dir / name, seed=seed) for name in DEMO_DATASETS}
