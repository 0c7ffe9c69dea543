from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

import pytest

import monai_medspike

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monai_medspike"
FORBIDDEN = {"torchvision", "torchaudio"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_nothing_imports_torchvision_or_torchaudio():
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(ROOT)): imported_roots(f) & FORBIDDEN for f in files}
    assert {f: r for f, r in offenders.items() if r} == {}
    # nor through a string-based import
    assert not [f for f in files if 'import_module("torchvision' in f.read_text()]


def test_constraints_keep_cpu_torch_and_match_pyproject():
    pins = dict(
        line.split("==") for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines() if "==" in line
    )
    assert set(pins) == {"torch", "torchvision", "torchaudio"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "monai-medspike"
    assert project["requires-python"] == ">=3.11"
    assert monai_medspike.__version__ == project["version"]
    deps = " ".join(project["dependencies"])
    for name in ("torch", "monai", "spikingjelly", "nibabel", "itk", "pytorch-ignite", "tensorboard"):
        assert name in deps, name
    assert not any(name in deps for name in FORBIDDEN)


def readme_command(marker: str) -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(f"<!-- ci:{marker} -->")
    assert lines[start + 1] == "```bash"
    return lines[start + 2]


def test_readme_commands_install_with_the_constraints_and_ci_runs_them():
    for marker in ("main", "test"):
        command = readme_command(marker)
        assert "pip install -c constraints/cpu.txt -e " in command
    assert readme_command("main").endswith("python -m monai.bundle run training --config_file bundles/covid/train.json")
    assert readme_command("test").endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command test" in ci and "readme_command main" in ci and "ruff check" in ci


def test_the_bundles_ship_with_the_package_and_export_writes_one(tmp_path, capsys):
    from monai_medspike.bundle import export_bundle, shipped_bundles
    from monai_medspike.bundle.__main__ import main
    from tests.bundles.helpers import BUNDLES

    assert sorted(shipped_bundles()) == sorted(BUNDLES)  # every bundle of the checkout, discovered
    assert main(["export", "busi", str(tmp_path / "busi")]) == 0
    folder = tmp_path / "busi"
    assert (folder / "configs" / "train.json").read_text() == (ROOT / "bundles/busi/configs/train.json").read_text()
    assert (folder / "train.json").is_symlink() and (folder / "LICENSE").is_file() and not (folder / "outputs").exists()
    assert main(["export", "busi", str(folder)]) == 2  # not over a bundle already there
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", "nope", str(tmp_path / "x")]) == 2
    assert f"the shipped bundles are: {', '.join(sorted(BUNDLES))}" in capsys.readouterr().err
    export_bundle("busi", folder, overwrite=True)
    (tmp_path / "a-file").write_text("")
    for extra in ([], ["--overwrite"]):  # a file is no bundle folder: --overwrite is not advised, and does not help
        assert main(["export", "busi", str(tmp_path / "a-file"), *extra]) == 2
        assert "is a file; a bundle is written as a folder" in capsys.readouterr().err


def test_export_leaves_out_weights_a_local_training_published(tmp_path, monkeypatch):
    import monai_medspike.bundle as bundle_module

    trained = bundle_module.export_bundle("kvasir", tmp_path / "trained")
    (trained / "models" / "model.pt").write_bytes(b"weights")
    (trained / "outputs").mkdir()
    monkeypatch.setattr(bundle_module, "shipped_bundle", lambda name: trained)
    copy = bundle_module.export_bundle("kvasir", tmp_path / "copy")
    assert (copy / "models").is_dir() and not list((copy / "models").glob("*.pt")) and not (copy / "outputs").exists()


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_exports_and_trains_a_bundle(tmp_path):
    """Build the wheel, install it (without dependencies: those of this environment are put on its path) into a
    fresh venv, then export the kvasir bundle and train it for one epoch, all outside the checkout."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "outputs", "__pycache__", ".*cache")
    shutil.copytree(ROOT, source, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)} | {"PYTHONWARNINGS": "ignore"}

    def call(*args: str, python: str = sys.executable, cwd: Path = tmp_path) -> str:
        proc = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout

    call("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source))
    (wheel,) = (tmp_path / "dist").glob("monai_medspike-*.whl")
    call("-m", "venv", "--without-pip", str(tmp_path / "venv"))
    python = str(tmp_path / "venv" / "bin" / "python")
    call("-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel))
    site = call("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", python=python).strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, monai, ... of this env
    where = call("-c", "import monai_medspike; print(monai_medspike.__file__)", python=python)
    assert where.startswith(site)  # the wheel's copy, not the checkout

    call("-m", "monai_medspike.bundle", "export", "kvasir", "kv", python=python)
    assert (tmp_path / "kv" / "train.json").is_symlink()  # the root links, which a wheel holds as copies
    args = ["--epochs", "1", "--image_size", "[32, 32]", "--demo_count", "6"]
    call("-m", "monai.bundle", "run", "training", "--config_file", "kv/configs/train.json", *args, python=python)
    # the exported folder is the bundle root (MONAI puts it on sys.path), whatever the current directory
    out = tmp_path / "kv" / "outputs"
    assert list(out.glob("student-*/model.pt")) and list(out.glob("teacher-*/last.pt"))
    assert (tmp_path / "kv" / "models" / "model.pt").is_file()  # the published student, model-zoo layout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (image,) = sorted((out / "demo_data").rglob("*.jpg"))[:1]
    infer = ["--config_file", "../kv/configs/inference.json", "--input", str(image)]  # its size: the checkpoint's
    call("-m", "monai.bundle", "run", "inferring", *infer, "--infer_name", "one", python=python, cwd=elsewhere)
    assert [p.name for p in (out / "one").iterdir()] == [image.stem + "_seg.png"]
    # monai.bundle.load finds the network and its published weights in the exported folder
    load = "from monai.bundle import load; print(type(load('kv', bundle_dir='.', device='cpu')).__name__)"
    assert call("-c", load, python=python).strip().endswith("MedSpikeFormer")
    # the model as its record says, with its weights, without any config
    load = "from monai_medspike.checkpoints import load_model; print(load_model('kv/models/model.pt').in_channels)"
    assert call("-c", load, python=python).strip().endswith("3")
