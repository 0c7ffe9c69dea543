"""monai_medspike: MedSpikeFormer, a spiking transformer for medical image segmentation, as MONAI components."""

from __future__ import annotations

__version__ = "0.1.0.dev0"


def _install_boundary() -> None:
    """Under ``python -m monai.bundle`` (a bundle config imports the package), failures the user can fix end in one
    line (:mod:`monai_medspike.errors`)."""
    from monai_medspike.utils import running_bundle_cli

    if running_bundle_cli():
        from monai_medspike.errors import install_bundle_boundary

        install_bundle_boundary()


_install_boundary()
