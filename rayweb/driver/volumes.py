"""The driver's side of volumes: before deploying, every volume the app mounts must exist
(named ones created now when ``create_if_missing=True``), as secrets are checked first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App


def prepare_volumes(app: App) -> None:
    """Look up each mounted volume on this machine's volume root: a missing one without
    ``create_if_missing`` fails before anything is deployed, naming `rayweb volume create`."""
    owners: list[Any] = app.owners
    seen: set[str] = set()
    for owner in owners:
        for _path, volume in owner.options.volumes:
            if volume.dir_name not in seen:
                seen.add(volume.dir_name)
                volume.hydrate()
