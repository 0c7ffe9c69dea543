"""The bad-input corpus (docs/reliability.md): each case gets a clear error naming the file, or a correct result,
and nothing half-written is left behind. Data preparation runs the public command (``python -m monai_medspike.data
prepare``, in process); inference checks its inputs before any is segmented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.data import DataError, input_files
from monai_medspike.data.__main__ import main
from monai_medspike.networks.nets import MedSpikeFormer
from tests.data import writers

REPO = Path(__file__).resolve().parents[2]


def prepare_fails(capsys, dataset: str, root: Path, out: Path, *options: str) -> str:
    """Run the prepare command; assert it refuses (status 2) and writes nothing; return its error output."""
    before = sorted(out.parent.iterdir()) if out.parent.is_dir() else []
    assert main(["prepare", dataset, "--root", str(root), "--out", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert sorted(out.parent.iterdir()) == before  # no datalist, no labels folder, no temporary file
    return err


def write_16bit(path: Path, shape=(40, 48)) -> None:
    Image.fromarray(np.full(shape, 40000, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")


def header_only_nifti(path: Path, shape: tuple[int, ...]) -> None:
    """A NIfTI header announcing ``shape`` without the voxels (the size check must not read them)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    with open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4)


def test_a_16_bit_png_image_is_refused_not_scaled_to_a_constant(tmp_path, capsys):
    root = writers.write_isic(tmp_path / "isic", n=3)
    images = root / "ISIC2018_Task1-2_Training_Input"
    (images / "ISIC_0000001.jpg").unlink()
    write_16bit(images / "ISIC_0000001.png")
    err = prepare_fails(capsys, "isic2018", root, tmp_path / "d.json")
    assert f"{images / 'ISIC_0000001.png'}: a 16-bit image (Pillow mode I;16" in err and "Convert it to 8-bit" in err


def test_two_images_of_one_name_are_refused_naming_both(tmp_path, capsys):
    root = writers.write_kvasir(tmp_path / "k", n=4)
    images = root / "Kvasir-SEG" / "images"
    Image.open(images / "case1.jpg").save(images / "case1.png")
    err = prepare_fails(capsys, "kvasir", root, tmp_path / "d.json")
    assert f"{images / 'case1.jpg'} and {images / 'case1.png'} have the same name 'case1'" in err


def test_a_looping_link_in_place_of_an_image_is_blamed_on_the_image(tmp_path, capsys):
    root = writers.write_kvasir(tmp_path / "k", n=4)
    image = root / "Kvasir-SEG" / "images" / "case2.jpg"
    image.unlink()
    image.symlink_to(image.name)  # points at itself
    err = prepare_fails(capsys, "kvasir", root, tmp_path / "d.json")
    assert f"{image}: a broken or looping symbolic link" in err and "mask" not in err.split(str(image))[1][:40]


@pytest.mark.parametrize("problem", ["4d", "nan", "class outside", "too large"])
def test_bad_ct_volumes_are_refused_naming_the_file(problem, tmp_path, capsys):
    root = writers.write_covid_ct(tmp_path / "ct", cases=("a", "b", "c"))
    image, mask = root / "ct" / "b.nii.gz", root / "infection_mask" / "b.nii.gz"
    options: tuple[str, ...] = ()
    vol, labels = writers.ct_volume()
    if problem == "4d":
        nib.save(nib.Nifti1Image(np.stack([vol, vol], -1), writers.AFFINE), image)
        expected = f"{image}: a 4D volume (shape (32, 24, 6, 2)); give one 3D CT volume"
    elif problem == "nan":
        vol = vol.astype(np.float32)
        vol[3, 3, 3], vol[4, 4, 4] = np.nan, np.inf
        nib.save(nib.Nifti1Image(vol, writers.AFFINE), image)
        expected = f"{image}: 2 voxel(s) are NaN or infinite"
    elif problem == "class outside":
        labels[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(labels, writers.AFFINE), mask)
        options = ("--classes", "multiclass", "--mask_dir", "infection_mask")
        expected = f"{mask}: a multi-class mask must hold the class indices 0..2"
    else:
        image.unlink()
        header_only_nifti(root / "ct" / "b.nii", (8192, 8192, 30000))
        image = root / "ct" / "b.nii"
        expected = f"{image}: a volume of (8192, 8192, 30000) (2013266 M voxels) needs about"
    err = prepare_fails(capsys, "covid_ct", root, tmp_path / "d.json", *options)
    assert expected in err
    # with --skip_bad the case is left out and the rest is written
    assert main(["prepare", "covid_ct", "--root", str(root), "--out", str(tmp_path / "d.json"), "--skip_bad",
                 "--val_fraction", "0", "--test_fraction", "0", *options]) == 0  # fmt: skip
    assert "skipped 1" in capsys.readouterr().out


def test_out_pointing_to_a_folder_is_refused(tmp_path, capsys):
    root = writers.write_kvasir(tmp_path / "k", n=3)
    folder = tmp_path / "lists.json"
    folder.mkdir()
    err = prepare_fails(capsys, "kvasir", root, folder, "--overwrite")
    assert f"--out {folder}: a folder; give the datalist's file name, e.g. {folder / 'kvasir.json'}" in err


# ---------------------------------------------------------------------------------------------- inference inputs
@pytest.fixture
def ct_inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    vol, _ = writers.ct_volume()
    nib.save(nib.Nifti1Image(vol, writers.AFFINE), folder / "good.nii.gz")
    return folder


@pytest.mark.parametrize("problem", ["png", "4d", "nan", "too large", "same name", "empty folder", "missing"])
def test_bad_ct_inference_inputs_are_refused_before_any_output(problem, ct_inputs, tmp_path):
    vol, _ = writers.ct_volume()
    source = ct_inputs
    if problem == "png":
        source = ct_inputs / "slice.png"
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(source)
        expected = f"--input {source}: not a NIfTI volume (.nii, .nii.gz); the covid_ct network reads those. For 2D"
    elif problem == "4d":
        nib.save(nib.Nifti1Image(np.stack([vol, vol], -1), writers.AFFINE), ct_inputs / "series.nii.gz")
        expected = f"{ct_inputs / 'series.nii.gz'}: a 4D volume"
    elif problem == "nan":
        bad = vol.astype(np.float32)
        bad[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(bad, writers.AFFINE), ct_inputs / "nan.nii.gz")
        expected = f"{ct_inputs / 'nan.nii.gz'}: 1 voxel(s) are NaN or infinite"
    elif problem == "too large":
        header_only_nifti(ct_inputs / "huge.nii", (8192, 8192, 30000))
        expected = f"{ct_inputs / 'huge.nii'}: a volume of (8192, 8192, 30000)"
    elif problem == "same name":
        nib.save(nib.Nifti1Image(vol, writers.AFFINE), ct_inputs / "good.nii")
        expected = "have the same name 'good'"
    elif problem == "empty folder":
        source = tmp_path / "pngs"
        source.mkdir()
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(source / "a.png")
        expected = f"--input {source}: holds no NIfTI volume (.nii, .nii.gz); it holds ['a.png']"
    else:
        source = tmp_path / "nowhere.nii.gz"
        expected = f"--input {source}: no such file or folder"
    with pytest.raises(DataError) as error:
        input_files(str(source), "unused.json", dataset="covid_ct")
    assert expected in str(error.value)


@pytest.mark.parametrize("problem", ["16-bit", "same name", "loop", "corrupt"])
def test_bad_image_inference_inputs_are_refused(problem, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    writers.rgb(40, 48).save(folder / "x.jpg")
    if problem == "16-bit":
        write_16bit(folder / "deep.png")
        expected = f"{folder / 'deep.png'}: a 16-bit image"
    elif problem == "same name":
        writers.rgb(40, 48).save(folder / "x.png")
        expected = f"{folder / 'x.jpg'} and {folder / 'x.png'} have the same name 'x'"  # one x_seg.png for two
    elif problem == "loop":
        (folder / "loop.png").symlink_to("loop.png")
        expected = f"{folder / 'loop.png'}: a broken or looping symbolic link"
    else:
        (folder / "cut.jpg").write_bytes((folder / "x.jpg").read_bytes()[:80])
        expected = f"{folder / 'cut.jpg'}: cannot be read as an image"
    with pytest.raises(DataError) as error:
        input_files(str(folder), "unused.json", dataset="kvasir")
    assert expected in str(error.value)


def test_good_inputs_pass_the_check(ct_inputs, tmp_path):
    assert input_files(str(ct_inputs), "unused.json", dataset="covid_ct") == [{"image": str(ct_inputs / "good.nii.gz")}]
    writers.rgb(40, 48).save(tmp_path / "a.png")
    assert input_files(str(tmp_path / "a.png"), "unused.json", dataset="kvasir") == [{"image": str(tmp_path / "a.png")}]


@pytest.mark.slow
@pytest.mark.parametrize("bundle, name", [("covid", "slice.png"), ("kvasir", "deep.png")])
def test_the_inference_command_stops_with_one_line_and_writes_nothing(bundle, name, tmp_path):
    channels = 1 if bundle == "covid" else 3
    ckpt = tmp_path / "model.pt"
    torch.save({"model": MedSpikeFormer(in_channels=channels).state_dict()}, ckpt)
    source = tmp_path / name
    if bundle == "covid":
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(source)
    else:
        write_16bit(source)
    configs = REPO / "bundles" / bundle / "configs"
    out = tmp_path / "out"
    args = [
        sys.executable, "-m", "monai.bundle", "run", "inferring",
        "--config_file", f"['{configs / 'train.json'}','{configs / 'inference.json'}']",
        "--input", str(source), "--ckpt_path", str(ckpt), "--output_root", str(out), "--infer_name", "pred",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and str(source) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "pred").exists()
