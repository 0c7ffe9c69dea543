"""Checked reading of 2D images and NIfTI volumes: every failure becomes a :class:`DataError` naming the file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from monai_medspike.data.errors import DataError

__all__ = ["available_memory", "check_exists", "read_image", "read_volume", "volume_header"]

# Pillow modes of images deeper than 8 bits per channel: the 2D pipelines map 0-255 to [0, 1]
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# float32 copies of a volume that reading, orienting and scaling it for inference hold at once
_VOLUME_COPIES = 4


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


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """Read a JPEG/PNG/TIF file fully (so truncated files fail here, not during training).

    Args:
        path: the file.
        mode: a Pillow mode to convert to (``"L"``, ``"RGB"``); None keeps the stored mode (palette indices stay
            indices, 1-bit masks become bool).

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array.

    Raises:
        DataError: missing, unreadable or corrupt file.
    """
    from PIL import Image, UnidentifiedImageError

    check_exists(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                stored = img.mode
                if mode is not None and img.mode != mode:
                    img = img.convert(mode)
                array = np.asarray(img)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, Warning) as e:
        raise DataError(
            f"{path}: cannot be read as an image ({type(e).__name__}: {e}). The file is corrupt or truncated: "
            "download it again, remove the pair, or run prepare with --skip-bad."
        ) from e
    if mode is None and stored in _DEEP_MODES:
        depth = "32-bit" if stored in ("I", "F") else "16-bit"
        raise DataError(
            f"{path}: a {depth} image (Pillow mode {stored}); the 2D datasets are read as 8 bits per channel "
            "(0-255). Convert it to 8-bit (scale its range to 0-255) first."
        )
    return array


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
            "case, or run prepare with --skip-bad."
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
            "case, or run prepare with --skip-bad."
        ) from e
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int(data.size - np.isfinite(data).sum())
        raise DataError(
            f"{path}: {bad} voxel(s) are NaN or infinite; a CT volume must hold finite values (Hounsfield units). "
            "Fix or replace the volume, or run prepare with --skip-bad to leave the case out."
        )
    return data, np.asarray(img.affine, dtype=np.float64), shape
