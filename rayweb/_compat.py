"""``import modal`` inside a script served by rayweb resolves to rayweb.

Installed only by rayweb's own loaders (the CLI and replicas), and only when the real
``modal`` package is not what the user has imported already.
"""

from __future__ import annotations

import sys

from . import exception, volume


def install_modal_alias() -> None:
    """Make ``import modal`` and ``import modal.exception`` give rayweb's modules."""
    existing = sys.modules.get("modal")
    if existing is not None and not getattr(existing, "__rayweb_alias__", False):
        return  # the real Modal client is loaded: leave it alone
    # The package itself is always imported before any of its modules.
    sys.modules["modal"] = sys.modules[__name__.rpartition(".")[0]]
    sys.modules["modal.exception"] = exception
    sys.modules["modal.volume"] = volume  # modal.volume.FileEntry, FileEntryType
