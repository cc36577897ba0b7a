"""The bundled demo host: libvirt's test driver loaded from a fleet XML in the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_fleet_path() -> Path:
    """The shipped fleet XML (a dozen VMs in mixed states) as a real file path."""
    path = Path(str(resources.files("virtwatch.core.libvirt").joinpath("data/demo-fleet.xml")))
    if not path.is_file():  # pragma: no cover - only when installed from a zip
        raise FileNotFoundError(path)
    return path


def demo_uri() -> str:
    return f"test://{demo_fleet_path()}"
