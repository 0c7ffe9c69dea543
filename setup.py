"""Build hook: ships the MONAI bundles of ``bundles/`` inside the package (``monai_medspike/bundles/``), so that a
wheel or sdist install can train and serve them (``python -m monai_medspike.bundle export <name> <folder>``).
Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithBundles(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "bundles"
        if not source.is_dir():  # building from an sdist whose bundles were already copied into the package
            return
        target = Path(self.build_lib) / "monai_medspike" / "bundles"
        shutil.rmtree(target, ignore_errors=True)
        # links are copied as files: a wheel holds no links (``export`` puts the bundle's root links back)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("outputs", "__pycache__", "*.pt", "*.ts"))


setup(cmdclass={"build_py": BuildWithBundles})
