"""The ``rayweb`` command line (Typer). It parses arguments and prints; the work is done by
``rayweb.driver``.

``rayweb serve app.py`` runs the app in the foreground on an embedded local Ray (or on
``--address``), with ``-dev`` URLs, until Ctrl-C, SIGTERM or ``--timeout``.
"""

from __future__ import annotations

from . import run as _run_command  # noqa: F401 - registers `run`
from . import serve as _serve_commands  # noqa: F401 - registers `serve` and `deploy`
from .apps import app_cli
from .cluster import cluster_cli
from .root import cli
from .state import dict_cli, queue_cli
from .store import secret_cli, token_cli
from .volume import volume_cli

cli.add_typer(cluster_cli, name="cluster")
cli.add_typer(app_cli, name="app")
cli.add_typer(token_cli, name="token")
cli.add_typer(secret_cli, name="secret")
cli.add_typer(volume_cli, name="volume")
cli.add_typer(dict_cli, name="dict")
cli.add_typer(queue_cli, name="queue")


def main() -> None:
    cli()


__all__ = ["cli", "main"]
