"""``python -m rayweb.cli.forkserver TEMP_DIR``: the driver kept imported beside a local
cluster (``rayweb/driver/forkserver.py``); each ``rayweb serve`` handed over runs as this
command line in a fork of it."""

from __future__ import annotations

import sys


def _import_cli() -> None:
    from . import main  # noqa: F401


def _run() -> None:
    from . import main

    main()


if __name__ == "__main__":
    from ..driver.forkserver import preload_driver, serve_forever

    serve_forever(sys.argv[1], _run, preload=[preload_driver, _import_cli])
