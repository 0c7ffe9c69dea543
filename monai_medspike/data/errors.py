"""The error raised for bad input data."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data. The message names the file (or folder) and says what is wrong and how to fix it."""
