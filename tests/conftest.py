"""Shared by every test folder: where the examples live, and a private secret store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before any test module imports Ray: Ray reads this when it is imported, and without it a
# cluster advertises the machine's external address instead of 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session", autouse=True)
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests (and the clusters and CLIs they start) never touch ~/.rayweb/store."""
    path = tmp_path_factory.mktemp("rayweb-store")
    old = os.environ.get("RAYWEB_STORE_DIR")
    os.environ["RAYWEB_STORE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RAYWEB_STORE_DIR", None)
    else:
        os.environ["RAYWEB_STORE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def volume_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Volumes of tests (and of the clusters and CLIs they start) live under tmp, never in
    ~/.rayweb/volumes; replicas get the driver's root in their payload."""
    path = tmp_path_factory.mktemp("rayweb-volumes")
    old = os.environ.get("RAYWEB_VOLUME_ROOT")
    os.environ["RAYWEB_VOLUME_ROOT"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RAYWEB_VOLUME_ROOT", None)
    else:
        os.environ["RAYWEB_VOLUME_ROOT"] = old


@pytest.fixture(scope="session", autouse=True)
def example_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Examples mount their volumes at ``/data`` (as Modal's do) unless ``EXAMPLE_MOUNT`` says
    where: under tmp in tests. Set before any Ray starts, so replicas see it too."""
    path = tmp_path_factory.mktemp("example-mounts")
    old = os.environ.get("EXAMPLE_MOUNT")
    os.environ["EXAMPLE_MOUNT"] = str(path / "data")
    yield path
    if old is None:
        os.environ.pop("EXAMPLE_MOUNT", None)
    else:
        os.environ["EXAMPLE_MOUNT"] = old
