"""Applications built on monai_medspike: the MONAI Label app (``monai_medspike.apps.monailabel``)."""
