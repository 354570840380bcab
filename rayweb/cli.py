"""The ``rayweb`` command line (Typer).

``rayweb serve app.py`` runs the app in the foreground on an embedded local Ray (or on
``--address``), with ``-dev`` URLs, until Ctrl-C, SIGTERM or ``--timeout``.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from . import __version__
from .exception import DeploymentError, Error

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


@cli.command()
def serve(
    app_ref: Annotated[str, typer.Argument(help="file.py, file.py::app or (with -m) pkg.module")],
    module: Annotated[bool, typer.Option("-m", help="APP_REF is a Python module path.")] = False,
    host: Annotated[str, typer.Option(help="Address Serve's HTTP proxy binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of Serve's HTTP proxy.")] = 8000,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster instead of starting one.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (like MODAL_SERVE_TIMEOUT).")
    ] = None,
    deploy_timeout: Annotated[
        float | None, typer.Option(help="Give up a deploy after this many seconds.")
    ] = None,
) -> None:
    """Serve an app's web endpoints in the foreground, with -dev URLs, until Ctrl-C."""
    from .import_refs import load_app
    from .serving import print_urls
    from .serving import serve as serve_app

    err = Console(stderr=True, soft_wrap=True)
    with _user_errors(err, "loading the app"):
        app = load_app(app_ref, is_module=module)
    # SIGTERM while deploying unwinds like Ctrl-C, so serve() deletes what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    with _user_errors(err, "serving the app"), err.status("Starting") as status:
        handle = serve_app(
            app,
            host=host,
            port=port,
            address=address,
            dev=True,
            deploy_timeout=deploy_timeout,
            quiet=True,
            progress=lambda msg: status.update(msg),
        )
    stop = _stop_event()
    try:
        print_urls(handle, console=Console())
        err.print("[green]Serving.[/green] Press Ctrl-C to stop.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                err.print(f"Timeout of {timeout:g}s reached.")
                break
            stop.wait(0.5 if left is None else min(0.5, left))
    except KeyboardInterrupt:
        pass
    finally:
        with err.status("Stopping"):
            handle.stop()
        err.print("Stopped.")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_event() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so Ctrl-C and `kill` both stop cleanly."""
    event = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return event


@contextmanager
def _user_errors(console: Console, phase: str) -> Iterator[None]:
    """Turn rayweb errors into one readable message, user errors into their traceback."""
    try:
        yield
    except DeploymentError as exc:
        console.print(f"[red]Error:[/red] {exc.args[0]}", highlight=False)
        if exc.user_traceback:
            console.print(exc.user_traceback, markup=False, highlight=False)
        raise typer.Exit(1) from None
    except Error as exc:
        console.print(f"[red]Error:[/red] {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:
        console.print(f"[red]Error while {phase}:[/red]", highlight=False)
        console.print(
            "".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False
        )
        raise typer.Exit(1) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
