"""The error raised for bad input data."""

from __future__ import annotations

from monai_medspike.errors import UserError

__all__ = ["DataError"]


class DataError(UserError, ValueError):
    """Bad input data. The message names the file (or folder) and says what is wrong and how to fix it."""
