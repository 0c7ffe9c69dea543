"""MONAI Label app folder of monai_medspike: serves the local bundles isic2018, kvasir, busi, monuseg and covid.

    monailabel start_server --app "$(python -m monai_medspike.apps.monailabel)" --studies <folder> --conf models all

The app itself is ``monai_medspike.apps.monailabel.app.MedSpikeApp``; MONAI Label finds it among this module's names.
"""

from monai_medspike.apps.monailabel.app import MedSpikeApp

__all__ = ["MedSpikeApp"]
