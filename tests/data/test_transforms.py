from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import load_decathlon_datalist
from monai.utils import set_determinism

from monai_medspike.data.datalist import prepare
from monai_medspike.data.transforms import DEFAULT_HU_WINDOW, BinarizeLabeld, EnsureChannelsd, get_transforms
from tests.data import writers


def first_entry(tmp_path, dataset, write, **options):
    root = write(tmp_path / "release")
    out = tmp_path / "d.json"
    prepare(dataset, root, out, val_fraction=0, test_fraction=0, **options)
    return load_decathlon_datalist(str(out), data_list_key="training")


@pytest.mark.parametrize(
    "dataset, write, channels",
    [
        ("isic2018", writers.write_isic, 3),
        ("kvasir", writers.write_kvasir, 3),
        ("busi", writers.write_busi, 3),
        ("monuseg", writers.write_monuseg, 3),
        ("covid", writers.write_covid_infnet, 1),
    ],
)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_2d_chains_give_scaled_images_and_binary_labels(tmp_path, dataset, write, channels, mode):
    entries = first_entry(tmp_path, dataset, write)
    out = get_transforms(dataset, mode, spatial_size=(32, 48))(entries[0])  # (height, width)
    assert out["image"].shape == (channels, 48, 32) and out["image"].dtype == torch.float32  # MONAI's (W, H)
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert out["label"].shape == (1, 48, 32)
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}


def test_eval_chain_keeps_the_mask_where_it_was(tmp_path):
    entries = first_entry(tmp_path, "isic2018", writers.write_isic)
    entry = next(e for e in entries if e["id"] == "ISIC_0000000")
    # the stored size, height first (MONAI's Pillow reader puts the width first), so nothing is resampled
    out = get_transforms("isic2018", "eval", spatial_size=(40, 48))(entry)
    label = out["label"][0].numpy().T
    assert np.array_equal(label, writers.disk(40, 48, 20, 24, 6))
    # the lesion was drawn dark (40 / 255) on a background of 100..200 (JPEG blurs the edge a little)
    image = out["image"].numpy().transpose(0, 2, 1)
    assert image[:, label > 0].mean() < 0.25 < 0.4 < image[:, label == 0].mean()


def test_multiclass_labels_keep_class_indices(tmp_path):
    entries = first_entry(tmp_path, "covid", writers.write_covid_infnet, classes="multiclass")
    out = get_transforms("covid", "eval", spatial_size=(44, 36), classes="multiclass")(entries[0])
    assert set(out["label"].unique().tolist()) == {0.0, 1.0, 2.0}
    onehot = get_transforms("covid", "eval", spatial_size=(44, 36), classes="multiclass", one_hot=3)(entries[0])
    assert onehot["label"].shape == (3, 36, 44)
    assert torch.equal(onehot["label"].argmax(0, keepdim=True).float(), out["label"])
    assert torch.equal(onehot["label"].sum(0), torch.ones(36, 44))


def test_training_augmentation_is_seeded_and_changes_the_image(tmp_path):
    entries = first_entry(tmp_path, "kvasir", writers.write_kvasir)
    plain = get_transforms("kvasir", "eval", spatial_size=(32, 32))(entries[0])
    results = []
    for _ in range(2):
        t = get_transforms("kvasir", "train", spatial_size=(32, 32), augment_prob=1.0)
        t.set_random_state(seed=7)
        results.append(t(entries[0]))
    assert torch.equal(results[0]["image"], results[1]["image"])
    assert not torch.equal(results[0]["image"], plain["image"])
    # geometric augmentations move image and label together: label stays binary and non-empty
    assert set(results[0]["label"].unique().tolist()) == {0.0, 1.0}
    none = get_transforms("kvasir", "train", spatial_size=(32, 32), augment_prob=0.0)(entries[0])
    assert torch.equal(none["image"], plain["image"])


def windowed(vol: np.ndarray) -> np.ndarray:
    lo, hi = DEFAULT_HU_WINDOW
    return np.clip((vol.astype(np.float64) - lo) / (hi - lo), 0, 1)


@pytest.mark.parametrize("reader", ["NibabelReader", "ITKReader"])
def test_ct_training_samples_are_slices_of_the_volume(tmp_path, reader):
    root = writers.write_covid_ct(tmp_path / "ct", cases=("only",))
    vol = np.asarray(nib.load(root / "ct" / "only.nii.gz").dataobj)
    mask = np.asarray(nib.load(root / "infection_mask" / "only.nii.gz").dataobj)
    entry = {"image": str(root / "ct" / "only.nii.gz"), "label": str(root / "infection_mask" / "only.nii.gz")}
    set_determinism(seed=0)
    t = get_transforms("covid_ct", "train", spatial_size=vol.shape[1::-1], reader=reader, augment_prob=0.0,
                       slices_per_volume=6, pos=1.0, neg=0.0)  # fmt: skip
    samples = t(entry)
    assert len(samples) == 6
    # the affine flips x and y (RAS orientation), so compare with the re-oriented volume
    ras, ras_mask = windowed(vol)[::-1, ::-1], mask[::-1, ::-1]
    for s in samples:
        assert s["image"].shape == (1, *vol.shape[:2])
        z = int(np.argmin([np.abs(s["image"][0].numpy() - ras[..., k]).max() for k in range(vol.shape[2])]))
        np.testing.assert_allclose(s["image"][0].numpy(), ras[..., z], atol=1e-5)
        assert np.array_equal(s["label"][0].numpy(), ras_mask[..., z])
        assert s["label"].sum() > 0  # pos=1, neg=0: every slice holds infection
    set_determinism(seed=None)


def test_ct_eval_volume_same_with_nibabel_and_itk(tmp_path):
    root = writers.write_covid_ct(tmp_path / "ct", cases=("only",))
    entry = {"image": str(root / "ct" / "only.nii.gz"), "label": str(root / "infection_mask" / "only.nii.gz")}
    a = get_transforms("covid_ct", "eval", spatial_size=(24, 32), reader="NibabelReader")(entry)  # (Y, X)
    b = get_transforms("covid_ct", "eval", spatial_size=(24, 32), reader="ITKReader")(entry)
    assert a["image"].shape == (1, 32, 24, 6)
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["label"], b["label"])
    np.testing.assert_allclose(a["image"].affine.numpy(), b["image"].affine.numpy(), atol=1e-4)


def test_ensure_channels_and_binarize():
    d = EnsureChannelsd("x", 3)({"x": torch.rand(1, 4, 4)})
    assert d["x"].shape == (3, 4, 4) and torch.equal(d["x"][0], d["x"][2])
    assert EnsureChannelsd("x", 3)({"x": torch.rand(4, 4, 4)})["x"].shape == (3, 4, 4)  # RGBA
    grey = EnsureChannelsd("x", 1)({"x": torch.stack([torch.zeros(2, 2), torch.ones(2, 2), 2 * torch.ones(2, 2)])})
    assert torch.equal(grey["x"], torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="x: cannot turn an image with 5 channels into 3"):
        EnsureChannelsd("x", 3)({"x": torch.rand(5, 2, 2)})
    label = torch.tensor([[[0.0, 130.0]], [[120.0, 0.0]], [[0.0, 0.0]]])
    assert BinarizeLabeld("y", 127)({"y": label})["y"].tolist() == [[[0.0, 1.0]]]
    # a 0/1 label map (as MONAI Label saves) is not erased by the 127 threshold of 0/255 JPEG masks
    assert BinarizeLabeld("y", 127)({"y": torch.tensor([[[0.0, 1.0, 1.0]]])})["y"].tolist() == [[[0.0, 1.0, 1.0]]]
    # JPEG noise in an empty 0/255 mask stays background
    assert BinarizeLabeld("y", 127)({"y": torch.tensor([[[0.0, 3.0, 2.0]]])})["y"].tolist() == [[[0.0, 0.0, 0.0]]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset": "lits"}, "unknown dataset"),
        ({"dataset": "kvasir", "mode": "test"}, "mode"),
        ({"dataset": "kvasir", "classes": "three"}, "classes"),
        ({"dataset": "kvasir", "spatial_size": (256,)}, "spatial_size"),
        ({"dataset": "kvasir", "reader": "ITKReader"}, "reader applies to CT volumes"),
        ({"dataset": "covid_ct", "reader": "PILReader"}, "reader must be"),
        ({"dataset": "covid_ct", "hu_window": (100, -100)}, "hu_window"),
        ({"dataset": "covid_ct", "pos": 0, "neg": 0}, "pos \\+ neg > 0"),
        ({"dataset": "kvasir", "augment_prob": 2.0}, "augment_prob"),
        ({"dataset": "covid", "one_hot": 3}, "one_hot needs classes='multiclass'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_transforms(**kwargs)


def test_native_resolution_crops_for_training_and_whole_images_for_evaluation(tmp_path):
    entries = first_entry(tmp_path, "monuseg", writers.write_monuseg)
    train = get_transforms("monuseg", "train", spatial_size=(16, 16), resize=False, augment_prob=0.0)(entries[0])
    assert train["image"].shape == (3, 16, 16) and train["label"].shape == (1, 16, 16)
    whole = get_transforms("monuseg", "eval", spatial_size=(16, 16), resize=False)(entries[0])
    assert whole["image"].shape == (3, 32, 32)  # the written tile, not resampled
    infer = get_transforms("monuseg", "infer", spatial_size=(16, 16), resize=False)({"image": entries[0]["image"]})
    torch.testing.assert_close(infer["image"], whole["image"])
    # a crop is a piece of the whole image
    big = get_transforms("monuseg", "train", spatial_size=(64, 64), resize=False, augment_prob=0.0)(entries[0])
    assert big["image"].shape == (3, 64, 64)  # smaller images are padded up to the crop size


def test_every_image_size_is_height_width(tmp_path):
    """--image_size [H, W] trains, validates, slides and slices at H x W: MONAI's arrays hold (W, H)."""
    from monai.bundle import ConfigParser
    from PIL import Image

    from tests.bundles.helpers import REPO

    Image.fromarray(np.full((50, 70, 3), 90, np.uint8)).save(tmp_path / "wide.png")  # 70 wide, 50 high
    mask = np.zeros((50, 70), np.uint8)
    mask[10:20, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "wide_mask.png")
    entry = {"image": str(tmp_path / "wide.png"), "label": str(tmp_path / "wide_mask.png")}
    for name in ("kvasir", "monuseg", "covid"):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
        parser.update({"image_size": [32, 48], "dataset": "covid_ct" if name == "covid" else name})
        if name == "kvasir":
            for key in ("train_transforms", "val_transforms"):
                assert parser.get_parsed_content(key)(dict(entry))["image"].shape[1:] == (48, 32)
        inferer = parser.get_parsed_content("inferer")  # monuseg slides windows, covid slices volumes
        assert name == "kvasir" or tuple(inferer.roi_size)[:2] == (48, 32)
