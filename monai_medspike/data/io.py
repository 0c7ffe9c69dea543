"""Checked reading of 2D images and NIfTI volumes: every failure becomes a :class:`DataError` naming the file."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from monai_medspike.data.errors import DataError

__all__ = [
    "DEEP_MODES",
    "MASK_RULES",
    "available_memory",
    "check_exists",
    "decode_image",
    "decode_mask",
    "mask_label",
    "read_decoded",
    "read_image",
    "read_json",
    "read_mask",
    "refuse_deep",
    "read_volume",
    "volume_header",
]

# Pillow modes of images deeper than 8 bits per channel: the 2D pipelines map 0-255 to [0, 1]
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# float32 copies of a volume that reading, orienting and scaling it for inference hold at once
_VOLUME_COPIES = 4


def read_json(path: Path, fix: str) -> Any:
    """The JSON content of ``path``; a missing, unreadable or damaged file raises a :class:`DataError` naming it and
    saying ``fix`` (what to do)."""
    path = Path(path)
    check_exists(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot be read as JSON ({e}); {fix}") from e


def check_exists(path: Path) -> None:
    """Raise a :class:`DataError` naming ``path`` if it is missing, a broken or looping link, or not a file."""
    if path.is_symlink() and not path.exists():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise DataError(
            f"{path}: a broken or looping symbolic link (-> {target}); point it at the real file or remove it."
        )
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a file.")
    if not path.is_file():
        raise DataError(f"{path}: file not found.")


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux), or 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


MASK_RULES = """How a 2D mask file becomes a label, by its kind (the same for every dataset and for ``folder``):

- binary labels, lossless file (PNG, BMP, TIFF, GIF): the values must be 0 and 255, or 0 and 1; a pixel > 0 is
  foreground. Any other mix (0, 1 and 255 together; grey levels) is refused, naming the file and the values.
- binary labels, JPEG: compression leaves values near 0 and 255; a pixel > 127 is foreground. A JPEG mask with more
  than 5 % mid-grey pixels (64-192), or whose values stay faint (a 0/1 mask saved as JPEG), is refused.
- class-index labels (multi-class): the values are the classes 0 .. K-1 and must be stored losslessly (PNG); a
  palette PNG is read as its indices.
- any mask: a 1-bit file is 0/255, a palette file its indices, alpha is dropped, a colour mask is foreground where
  any channel is, and the EXIF orientation is applied (as for its image)."""

# file formats whose decoded values are not the stored ones exactly
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP", "JPEG2000")
_LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp", ".jp2")
_MID_GREY_SHARE = 0.05


def _oriented(img: Any, path: Path) -> Any:
    """``img`` loaded and turned as its EXIF orientation says (the way a viewer shows it)."""
    from PIL import ImageOps

    img.load()
    return ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img


def refuse_deep(mode: str, path: str | Path) -> None:
    """Refuse an image of Pillow ``mode`` deeper than 8 bits per channel (:data:`DEEP_MODES`), naming ``path``: the
    2D pipelines map 0-255 to [0, 1], so a 16-bit image would become a constant one.

    Raises:
        DataError: a 16- or 32-bit image.
    """
    if mode in DEEP_MODES:
        depth = "32-bit" if mode in ("I", "F") else "16-bit"
        raise DataError(
            f"{path}: a {depth} image (Pillow mode {mode}); the 2D datasets are read as 8 bits per channel "
            "(0-255). Convert it to 8-bit (scale its range to 0-255) first."
        )


def decode_image(img: Any, path: Path) -> Any:
    """An opened Pillow image as the networks read it: 8-bit grey (``L``) or ``RGB``, in the orientation a viewer
    shows (EXIF applied).

    Palette images become RGB (their colours, not their indices), CMYK and other colour spaces RGB, 1-bit images
    0/255 grey, alpha is dropped. 16- and 32-bit images are refused (the 2D pipelines map 0-255 to [0, 1]).

    Raises:
        DataError: a deep image, naming ``path``.
    """
    mode = img.mode
    refuse_deep(mode, path)
    img = _oriented(img, path)
    if mode in ("L", "RGB"):
        return img
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")  # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV


def decode_mask(img: Any, path: Path, classes: str = "binary", num_classes: int = 2) -> Any:
    """An opened Pillow mask as a label image (mode ``L``): 0/1 for ``classes="binary"``, the class indices for
    ``"multiclass"``, by the rules of :data:`MASK_RULES`.

    Raises:
        DataError: values that do not fit the rule, naming ``path`` and the values.
    """
    from PIL import Image

    lossy = img.format in LOSSY_FORMATS or (img.format is None and path.suffix.lower() in _LOSSY_SUFFIXES)
    mode = img.mode
    img = _oriented(img, path)
    if mode == "P":
        values = np.asarray(img)
    elif mode == "PA":
        values = np.asarray(img.getchannel(0))
    elif mode in DEEP_MODES:
        values = np.asarray(img)
    elif mode == "L":
        values = np.asarray(img)
    elif mode in ("1", "LA", "La"):
        values = np.asarray(img.convert("L"))
    else:
        values = np.asarray(img.convert("RGB")).max(axis=2)
    return Image.fromarray(mask_label(values, path, lossy, classes, num_classes))


def mask_label(
    values: np.ndarray, path: Path, lossy: bool, classes: str = "binary", num_classes: int = 2
) -> np.ndarray:
    """The ``uint8`` label of a decoded mask's ``values`` (0/1, or class indices), by :data:`MASK_RULES`.

    Raises:
        DataError: values that do not fit the rule, naming ``path`` and the values.
    """
    found = np.unique(values)
    shown = ", ".join(str(v) for v in found[:8].tolist()) + (", ..." if found.size > 8 else "")
    if classes == "multiclass":
        if lossy:
            raise DataError(
                f"{path}: a class-index mask stored as JPEG; lossy compression changes the indices. Save it as PNG."
            )
        if found.min() < 0 or found.max() >= num_classes or np.any(found != np.round(found)):
            raise DataError(
                f"{path}: a multi-class mask must hold the class indices 0..{num_classes - 1}, found {shown}. Fix the "
                "mask (a palette PNG is read as its indices), or run prepare with --skip_bad to leave it out."
            )
        return values.astype(np.uint8)
    if lossy:
        mid = float(np.mean((values > 64) & (values < 192)))
        if mid > _MID_GREY_SHARE:
            raise DataError(
                f"{path}: {mid:.0%} of the pixels are mid-grey (64..192); a JPEG mask must be black and white "
                "(JPEG noise aside, foreground > 127). Is this an image saved in the masks folder?"
            )
        if 0 < found.max() < 64 and np.mean(values > 0) > 0.01:
            raise DataError(
                f"{path}: a JPEG mask whose values stay below 64 (found {shown}): a 0/1 mask saved as JPEG, which "
                "reads as empty at the JPEG rule (> 127). Save masks as PNG, or as JPEG with 0 and 255."
            )
        return (values > 127).astype(np.uint8)
    if not (set(found.tolist()) <= {0, 1} or set(found.tolist()) <= {0, 255}):
        raise DataError(
            f"{path}: a binary mask must hold 0 and 255 (or 0 and 1), found {shown}. Fix the mask (one foreground "
            "value), or run prepare with --skip_bad to leave it out."
        )
    return (values > 0).astype(np.uint8)


def read_decoded(
    path: Path, role: str = "image", classes: str = "binary", num_classes: int = 2, finish: Any = np.asarray
) -> Any:
    """Open ``path`` with Pillow, decode it fully as an image (:func:`decode_image`) or a mask (:func:`decode_mask`),
    so truncated files fail here and not during training, and return ``finish(decoded Pillow image)``.

    Raises:
        DataError: missing, unreadable or corrupt file; a 16-bit image; mask values that do not fit the rule.
    """
    from PIL import Image, UnidentifiedImageError

    if role not in ("image", "mask"):
        raise ValueError(f"role must be 'image' or 'mask', got {role!r}.")
    path = Path(path)
    check_exists(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                decoded = decode_image(img, path) if role == "image" else decode_mask(img, path, classes, num_classes)
                return finish(decoded)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, Warning) as e:
        if path.name.lower().endswith((".nii", ".nii.gz", ".mha", ".nrrd", ".dcm")):
            raise DataError(
                f"{path}: a volume, not a 2D image; the 2D networks take PNG, JPEG, TIFF or BMP images (CT volumes go "
                "to the covid bundle's covid_ct model)."
            ) from e
        raise DataError(
            f"{path}: cannot be read as an image ({type(e).__name__}: {e}). The file is corrupt or truncated: "
            "download it again, remove the pair, or run prepare with --skip_bad."
        ) from e


def read_image(path: Path) -> np.ndarray:
    """Read a JPEG/PNG/TIF/BMP image fully, decoded by :func:`decode_image`.

    Returns:
        ``(H, W)`` grey or ``(H, W, 3)`` RGB ``uint8`` array.

    Raises:
        DataError: missing, unreadable, corrupt or 16-bit file.
    """
    return read_decoded(path, "image")


def read_mask(path: Path, classes: str = "binary", num_classes: int = 2) -> np.ndarray:
    """Read a 2D mask fully as a ``(H, W)`` ``uint8`` label (0/1, or class indices) by :data:`MASK_RULES`.

    Raises:
        DataError: missing, unreadable or corrupt file, or values that do not fit the rule.
    """
    return read_decoded(path, "mask", classes, num_classes)


def volume_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and data type of a NIfTI volume from its header, without reading the voxels.

    Raises:
        DataError: missing or unreadable file; not one 3D volume (2D, or 4D with more than one frame); a volume that
            would not fit in the available memory (its size and the memory it needs are named).
    """
    import nibabel as nib

    check_exists(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise DataError(
            f"{path}: cannot be read as a NIfTI volume ({type(e).__name__}: {e}). Download it again, remove the "
            "case, or run prepare with --skip_bad."
        ) from e
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or min(shape[:3]) == 0:
        raise DataError(f"{path}: not a 3D volume with data (shape {shape}); CT volumes must be (X, Y, Z).")
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        raise DataError(
            f"{path}: a {len(shape)}D volume (shape {shape}); give one 3D CT volume (X, Y, Z) per file "
            "(split the series, e.g. with nibabel's four_to_three)."
        )
    voxels = int(np.prod(shape))
    need = voxels * 4 * _VOLUME_COPIES
    available = available_memory()
    if available and need > available:
        raise DataError(
            f"{path}: a volume of {shape} ({voxels / 1e6:.0f} M voxels) needs about {need / 2**30:.1f} GiB of memory "
            f"to read and segment, but {available / 2**30:.1f} GiB are available. Crop or split the volume, or use "
            "a machine with more memory."
        )
    return shape[:3], img.get_data_dtype()


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Read a NIfTI volume with nibabel.

    Returns:
        ``(data, affine (4, 4), shape)``.

    Raises:
        DataError: missing, unreadable or empty (a zero-length axis) volume.
    """
    import nibabel as nib

    shape, _ = volume_header(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise DataError(
            f"{path}: cannot be read as a NIfTI volume ({type(e).__name__}: {e}). Download it again, remove the "
            "case, or run prepare with --skip_bad."
        ) from e
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int(data.size - np.isfinite(data).sum())
        raise DataError(
            f"{path}: {bad} voxel(s) are NaN or infinite; a CT volume must hold finite values (Hounsfield units). "
            "Fix or replace the volume, or run prepare with --skip_bad to leave the case out."
        )
    return data, np.asarray(img.affine, dtype=np.float64), shape
