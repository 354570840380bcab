"""The root ``rayweb`` Typer app; each command module adds its commands to it."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__

cli = typer.Typer(
    name="rayweb",
    help="Modal-style web endpoints on your own Ray cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rayweb {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Modal-style web endpoints on your own Ray cluster."""
