from __future__ import annotations

import ast
import tomllib
from pathlib import Path

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
