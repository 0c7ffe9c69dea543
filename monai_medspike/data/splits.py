"""Seeded, disjoint train/validation/test splits that keep groups (patients, CT cases) together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monai_medspike.data.errors import DataError

__all__ = ["DEFAULT_TEST_FRACTION", "DEFAULT_VAL_FRACTION", "SPLITS", "split_groups"]

SPLITS = ("training", "validation", "test")
DEFAULT_VAL_FRACTION = 0.2
"""Validation share of a dataset when none is given: by ``prepare``, its command and every bundle alike."""
DEFAULT_TEST_FRACTION = 0.2
"""Test share of a dataset when none is given (``prepare``, its command, the bundles)."""


def _fraction(value: float, argument: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{argument} must be in [0, 1), got {value}.")
    return value


def split_groups(groups: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Assign every group to one split.

    The distinct groups are sorted, shuffled with ``numpy.random.default_rng(seed)`` and taken in that order:
    groups go to ``test`` until it holds ``round(test_fraction * N)`` of the ``N`` samples, then to ``validation``
    until it holds ``round(val_fraction * N)``, and the rest to ``training``. A split with a non-zero fraction gets
    at least one group. The same groups, fractions and seed always give the same split; no group is ever in two
    splits.

    ``test_fraction=1`` with ``val_fraction=0`` puts every group in ``test``: a test-only datalist for an external
    test set.

    Args:
        groups: the group of every sample (repeats allowed: a patient with three images appears three times).
        val_fraction: share of samples for validation, in [0, 1).
        test_fraction: share of samples for test, in [0, 1), or 1 (with ``val_fraction`` 0).
        seed: the shuffling seed.

    Returns:
        group -> split name (one of :data:`SPLITS`).

    Raises:
        ValueError: fractions out of range or summing to 1 or more.
        DataError: too few groups to fill every requested split and keep a training group.
    """
    if float(test_fraction) == 1.0:
        if float(val_fraction) != 0.0:
            raise ValueError(f"test_fraction 1 makes a test-only datalist; set val_fraction to 0 (got {val_fraction}).")
        if not groups:
            raise DataError("no samples to put in the test split.")
        return {g: "test" for g in groups}
    val_fraction = _fraction(val_fraction, "val_fraction")
    test_fraction = _fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}.")
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    order = sorted(sizes)
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    if len(order) < needed:
        raise DataError(
            f"{len(order)} group(s) cannot fill training{', validation' if val_fraction else ''}"
            f"{', test' if test_fraction else ''}: add data or set the fractions of the missing splits to 0."
        )
    rng = np.random.default_rng(seed)
    order = [order[i] for i in rng.permutation(len(order))]
    total = sum(sizes.values())
    assignment: dict[str, str] = {}
    position = 0
    for split, fraction in (("test", test_fraction), ("validation", val_fraction)):
        if fraction == 0:
            continue
        target, taken = round(fraction * total), 0
        # keep at least one group for every split still to be filled, and one for training
        reserve = 1 + (split == "test" and val_fraction > 0)
        while position < len(order) - reserve and (taken == 0 or taken < target):
            if taken and taken + sizes[order[position]] - target > target - taken:
                break  # the next group would overshoot the target more than it stays short
            assignment[order[position]] = split
            taken += sizes[order[position]]
            position += 1
    for g in order[position:]:
        assignment[g] = "training"
    return assignment
