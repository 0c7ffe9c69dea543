"""``python -m monai_medspike.apps.monailabel``: print the app folder to pass to ``monailabel start_server --app``."""

from __future__ import annotations

from monai_medspike.apps.monailabel.bundles import app_dir

if __name__ == "__main__":
    print(app_dir())
