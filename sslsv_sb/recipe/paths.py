"""Where the recipe folders and command-line scripts of the checkout are.

The package is installed from the repository (``pip install -e .``), so the recipe
folders sit next to it: ``recipes/VoxCeleb/SSL`` holds the training yamls and the
scripts that the multi-stage recipes (label-efficient, language) run as
subprocesses, each stage in its own process as a user would run it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VOXCELEB_SSL = REPO / "recipes" / "VoxCeleb" / "SSL"
VOXLINGUA_SSL = REPO / "recipes" / "VoxLingua" / "SSL"
TOOLS = REPO / "tools"


def voxceleb_script(name):
    """Path (str) of a script of ``recipes/VoxCeleb/SSL``, e.g. ``"train.py"``."""
    return str(VOXCELEB_SSL / name)
