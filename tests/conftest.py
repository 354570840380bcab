"""Shared by every test folder: where the examples live, and private stores and volumes."""

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


def _env_path(name: str, value: Path) -> Iterator[Path]:
    """Set ``name`` to ``value`` for the session (before any Ray starts, so the clusters,
    replicas and CLIs the tests start inherit it), then put back what was there."""
    old = os.environ.get(name)
    os.environ[name] = str(value)
    yield value
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


@pytest.fixture(scope="session", autouse=True)
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never touch ~/.rayweb/store (secrets, tokens, Dicts and Queues)."""
    yield from _env_path("RAYWEB_STORE_DIR", tmp_path_factory.mktemp("rayweb-store"))


@pytest.fixture(scope="session", autouse=True)
def clusters_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never see the local clusters in ~/.rayweb/clusters: a `rayweb serve` without
    --address would join a running `default` one."""
    yield from _env_path("RAYWEB_CLUSTERS_DIR", tmp_path_factory.mktemp("rayweb-clusters"))


@pytest.fixture(scope="session", autouse=True)
def volume_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Volumes of tests live under tmp, never in ~/.rayweb/volumes; replicas get the
    driver's root in their payload."""
    yield from _env_path("RAYWEB_VOLUME_ROOT", tmp_path_factory.mktemp("rayweb-volumes"))


@pytest.fixture(scope="session", autouse=True)
def example_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Examples mount their volumes at ``/data`` (as Modal's do) unless ``EXAMPLE_MOUNT`` says
    where: under tmp in tests."""
    yield from _env_path("EXAMPLE_MOUNT", tmp_path_factory.mktemp("example-mounts") / "data")
