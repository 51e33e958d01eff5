"""What pyproject.toml cannot say: launch/, config/ and models/ installed into share/instseg_ros/ as
colcon installs them, so that ament_index lookups (and the Fast DDS profile) work from a non-editable
pip install too. Everything else (metadata, packages, console scripts) is in pyproject.toml; the colcon
path builds with CMakeLists.txt + package.xml.
"""
from pathlib import Path

from setuptools import setup


def _share(folder: str) -> list[tuple[str, list[str]]]:
    files = sorted(str(p) for p in Path(folder).glob("*") if p.is_file())
    return [(f"share/instseg_ros/{folder}", files)] if files else []


setup(data_files=_share("launch") + _share("config") + _share("models"))
