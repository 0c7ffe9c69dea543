"""Images and masks decoded by kind, the same way in prepare (read_image/read_mask) and in the MONAI transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.data import DataError, get_transforms
from monai_medspike.data.io import read_image, read_mask


def _colour_image(h: int = 20, w: int = 30) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 60)], axis=-1).astype(np.uint8)


def _through_transforms(image, label=None, dataset: str = "kvasir", size=(20, 30), **kwargs) -> dict:
    """The eval chain at the stored size (height, width), so nothing is resized away; out in MONAI's (W, H)."""
    chain = get_transforms(dataset, "eval" if label else "infer", spatial_size=size, **kwargs)
    return chain({"image": str(image), **({"label": str(label)} if label else {})})


def test_palette_image_is_read_as_its_colours(tmp_path):
    rgb = _colour_image()
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).quantize(64).save(path)
    assert Image.open(path).mode == "P"
    decoded = read_image(path)
    assert decoded.shape == (20, 30, 3)
    assert np.abs(decoded.astype(int) - rgb).mean() < 8  # the palette's colours, not its indices (0..63)
    image = _through_transforms(path)["image"]  # (C, W, H) in [0, 1]
    assert torch.allclose(image.permute(2, 1, 0), torch.from_numpy(decoded / 255.0).float(), atol=1e-6)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    rgb = _colour_image()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    decoded = read_image(path)
    assert decoded.shape == (20, 30, 3)
    assert np.abs(decoded.astype(int) - rgb).mean() < 10  # not C, M, Y fed as R, G, B
    image = _through_transforms(path)["image"]
    assert torch.allclose(image.permute(2, 1, 0), torch.from_numpy(decoded / 255.0).float(), atol=1e-6)


def test_one_bit_rgba_and_grey_alpha_images(tmp_path):
    bits = np.zeros((20, 30), bool)
    bits[5:15, 10:20] = True
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert set(np.unique(read_image(tmp_path / "bits.png")).tolist()) == {0, 255}  # not a near-black 0/1 image
    rgba = np.dstack([_colour_image(), np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), _colour_image())  # alpha dropped
    Image.fromarray(np.dstack([bits * 200, bits * 0 + 9]).astype(np.uint8), "LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (20, 30)


def test_exif_orientation_is_applied(tmp_path):
    rgb = _colour_image()  # stored 30 wide, 20 high
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    decoded = read_image(path)
    assert decoded.shape == (30, 20, 3)  # as a viewer shows it: 20 wide, 30 high
    assert np.abs(decoded.astype(int) - np.rot90(rgb, -1)).mean() < 6
    image = _through_transforms(path, size=(30, 20))["image"]
    assert image.shape == (3, 20, 30)  # MONAI axes (W, H) of the turned image


def test_deep_images_are_refused(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 30), 4000, np.uint16)).save(path)
    with pytest.raises(DataError, match=r"deep\.png: a 16-bit image"):
        read_image(path)
    with pytest.raises(Exception) as info:
        _through_transforms(path)
    assert "deep.png: a 16-bit image" in str(_cause(info.value))


def _cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


@pytest.mark.parametrize(
    ("values", "fmt", "expected"),
    [
        ((0, 255), "png", (0, 1)),
        ((0, 1), "png", (0, 1)),
        ((0, 255), "jpg", (0, 1)),
        ((0, 1, 255), "png", "must hold 0 and 255 .*found 0, 1, 255"),
        ((0, 128), "png", "found 0, 128"),
        ((0, 1), "jpg", "values stay below 64"),
        ((0, 128), "jpg", "mid-grey"),
    ],
)
def test_binary_mask_rules(tmp_path, values, fmt, expected):
    mask = np.full((20, 30), values[0], np.uint8)
    mask[:, 10:] = values[1]
    if len(values) > 2:
        mask[:, 20:] = values[2]
    path = tmp_path / f"mask.{fmt}"
    Image.fromarray(mask).save(path, **({"quality": 95} if fmt == "jpg" else {}))
    if isinstance(expected, str):
        with pytest.raises(DataError, match=rf"mask\.{fmt}: .*{expected}"):
            read_mask(path)
        with pytest.raises(Exception) as info:  # the same rule when a training or evaluation loads it
            _through_transforms(_image(tmp_path), path)
        assert f"mask.{fmt}" in str(_cause(info.value))
        return
    label = read_mask(path)
    assert np.array_equal(label, (mask > 127 if fmt == "jpg" else mask > 0).astype(np.uint8))
    loaded = _through_transforms(_image(tmp_path), path)["label"]
    assert torch.equal(loaded[0].T, torch.from_numpy(np.array(label)).float())


def _image(tmp_path) -> object:
    path = tmp_path / "image.png"
    Image.fromarray(_colour_image()).save(path)
    return path


def test_palette_one_bit_and_colour_masks(tmp_path):
    indices = np.zeros((20, 30), np.uint8)
    indices[:, 10:] = 1
    palette = Image.fromarray(indices, "P")
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_mask(tmp_path / "palette.png"), indices)  # its indices, not its grey levels
    Image.fromarray(indices.astype(bool)).save(tmp_path / "bits.png")
    assert np.array_equal(read_mask(tmp_path / "bits.png"), indices)
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[:, 10:, 0] = 255  # red foreground
    Image.fromarray(colour).save(tmp_path / "red.png")
    assert np.array_equal(read_mask(tmp_path / "red.png"), indices)


def test_multiclass_masks(tmp_path):
    classes = np.zeros((20, 30), np.uint8)
    classes[:, 10:20], classes[:, 20:] = 1, 2
    Image.fromarray(classes).save(tmp_path / "classes.png")
    assert np.array_equal(read_mask(tmp_path / "classes.png", "multiclass", 3), classes)
    with pytest.raises(DataError, match=r"classes\.png: a multi-class mask must hold the class indices 0\.\.1"):
        read_mask(tmp_path / "classes.png", "multiclass", 2)
    Image.fromarray(classes).save(tmp_path / "classes.jpg")
    with pytest.raises(DataError, match=r"classes\.jpg: a class-index mask stored as JPEG"):
        read_mask(tmp_path / "classes.jpg", "multiclass", 3)
