"""One real Ray + Serve for the whole session (loopback only); each test deletes its apps.

Modelled on Ray's own ``_shared_serve_instance`` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rayweb
from rayweb.driver.import_refs import load_app
from tests.conftest import EXAMPLES

TEST_PORT = int(os.environ.get("RAYWEB_TEST_PORT", "18321"))


@pytest.fixture(scope="session")
def ray_cluster(store_dir: Path) -> Iterator[None]:
    from rayweb.driver import cluster

    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    held = cluster.hold()  # the session's own hold: handles stopping never stop the cluster
    cluster.ensure_serve("127.0.0.1", TEST_PORT)
    yield
    if held:
        cluster.release()


@pytest.fixture
def served(ray_cluster: None) -> Iterator[Callable[..., rayweb.driver.serve.ServeHandle]]:
    """``served(app, **kw)`` serves on the shared cluster; everything is deleted afterwards."""
    from rayweb.driver.serve import ServeHandle

    handles: list[ServeHandle] = []

    def _serve(app: rayweb.App, **kwargs: Any) -> ServeHandle:
        kwargs.setdefault("quiet", True)
        handle = rayweb.serve(app, port=TEST_PORT, **kwargs)
        handles.append(handle)
        return handle

    yield _serve
    for handle in handles:
        handle.stop()


def example_app(file: str, variable: str | None = None) -> rayweb.App:
    """Load an example the way the CLI does (so replicas import it by module)."""
    ref = str(EXAMPLES / file) + (f"::{variable}" if variable else "")
    return load_app(ref)
