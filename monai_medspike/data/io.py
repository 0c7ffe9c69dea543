"""Checked reading of 2D images and NIfTI volumes: every failure becomes a :class:`DataError` naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from monai_medspike.data.errors import DataError

__all__ = ["read_image", "read_volume"]


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

    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if mode is not None and img.mode != mode:
                    img = img.convert(mode)
                return np.asarray(img)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, Warning) as e:
        raise DataError(
            f"{path}: cannot be read as an image ({type(e).__name__}: {e}). The file is corrupt or truncated: "
            "download it again, remove the pair, or run prepare with --skip-bad."
        ) from e


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Read a NIfTI volume with nibabel.

    Returns:
        ``(data, affine (4, 4), shape)``.

    Raises:
        DataError: missing, unreadable or empty (a zero-length axis) volume.
    """
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise DataError(
            f"{path}: cannot be read as a NIfTI volume ({type(e).__name__}: {e}). Download it again, remove the "
            "case, or run prepare with --skip-bad."
        ) from e
    if len(shape) < 3 or min(shape[:3]) == 0:
        raise DataError(f"{path}: not a 3D volume with data (shape {shape}); CT volumes must be (X, Y, Z).")
    return data, np.asarray(img.affine, dtype=np.float64), shape
