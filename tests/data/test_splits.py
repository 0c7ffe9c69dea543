from __future__ import annotations

from collections import Counter

import pytest

from monai_medspike.data.errors import DataError
from monai_medspike.data.readers import READERS
from monai_medspike.data.splits import split_groups


def test_every_group_in_exactly_one_split_and_shares_are_met():
    groups = [f"g{i}" for i in range(200)]
    split = split_groups(groups, 0.1, 0.2, seed=0)
    assert set(split) == set(groups)
    assert Counter(split.values()) == {"training": 140, "validation": 20, "test": 40}


def test_reproducible_and_seed_dependent():
    groups = [f"g{i}" for i in range(50)]
    assert split_groups(groups, 0.2, 0.2, 7) == split_groups(list(reversed(groups)), 0.2, 0.2, 7)
    assert split_groups(groups, 0.2, 0.2, 7) != split_groups(groups, 0.2, 0.2, 8)


def test_patients_with_several_images_stay_together_and_shares_count_images():
    # 10 patients with 1..10 images each: 55 images
    groups = [f"p{p}" for p in range(1, 11) for _ in range(p)]
    for seed in range(10):
        split = split_groups(groups, 0.2, 0.2, seed)
        images = Counter(split[g] for g in groups)
        assert sum(images.values()) == 55
        assert all(images[s] > 0 for s in ("training", "validation", "test"))
        assert abs(images["test"] - 11) <= 5  # the closest a whole patient allows


@pytest.mark.parametrize("dataset", [name for name, r in READERS.items() if r.original_protocol])
def test_original_protocol_sizes_are_exact_on_full_releases(dataset):
    train, test = READERS[dataset].original_protocol
    split = split_groups([str(i) for i in range(train + test)], 0.0, test / (train + test), seed=41)
    assert Counter(split.values()) == {"training": train, "test": test}


def test_too_few_groups_and_bad_fractions():
    with pytest.raises(DataError, match="2 group\\(s\\) cannot fill training, validation, test"):
        split_groups(["a", "a", "b"], 0.1, 0.1, 0)
    assert set(split_groups(["a", "b"], 0.0, 0.5, 0).values()) == {"training", "test"}
    with pytest.raises(ValueError, match="val_fraction"):
        split_groups(["a"], -0.1, 0.1, 0)
    with pytest.raises(ValueError, match="test_fraction"):
        split_groups(["a"], 0.1, 1.0, 0)
    with pytest.raises(ValueError, match="must be < 1"):
        split_groups(["a"], 0.5, 0.5, 0)
