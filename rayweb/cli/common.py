"""What every command shares: argument types, turning errors into readable output, signals."""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..exception import DeploymentError, Error

AppRefArgument = Annotated[
    str, typer.Argument(help="file.py, file.py::app or (with -m) pkg.module")
]
ModuleOption = Annotated[bool, typer.Option("-m", help="APP_REF is a Python module path.")]
ClusterOption = Annotated[
    str,
    typer.Option("--address", help="A rayweb cluster name (see `rayweb cluster up`) or host:port."),
]
DomainOption = Annotated[
    str | None,
    typer.Option(
        help="Each endpoint also at the root of http://<label>.<domain>:<port>/ (default "
        "localhost; '' for the path form only). One per cluster: it changes a running gateway's."
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(help="The cluster to use (default: this machine's store, used by its clusters)."),
]


def use_domain(domain: str | None) -> None:
    """``--domain``: checked here, then read where the gateway starts (``RAYWEB_DOMAIN``)."""
    from ..urls import DOMAIN_ENV, check_domain

    if domain is not None:
        check_domain(domain)
        os.environ[DOMAIN_ENV] = domain


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def interrupt(signum: int, frame: Any) -> None:
    """A signal handler that unwinds like Ctrl-C."""
    raise KeyboardInterrupt


class Stopper:
    """Ctrl-C and SIGTERM for a command that starts, serves, then stops.

    While busy (starting, redeploying), a signal unwinds at once (``KeyboardInterrupt``, so
    whatever was started is stopped by the code it unwinds through); while idle (serving) it
    sets ``event`` for the loop to notice; while stopping, a second signal ends the process
    at once after ``hard_stop`` (which must leave nothing behind, quickly).
    """

    def __init__(self, hard_stop: Callable[[], None]) -> None:
        self.event = threading.Event()
        self.phase = "busy"
        self.hard_stop = hard_stop
        self.install()

    def install(self) -> None:
        """(Again:) ``ray.init`` replaces the SIGTERM handler with its own ``sys.exit``."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def idle(self) -> None:
        """From now on a signal only sets ``event`` (the caller's loop checks it)."""
        self.install()
        self.phase = "idle"

    def busy(self) -> None:
        """From now on a signal unwinds (``KeyboardInterrupt``)."""
        self.install()
        self.phase = "busy"
        if self.event.is_set():
            self.phase = "stopping"
            raise KeyboardInterrupt

    def stopping(self) -> None:
        self.phase = "stopping"

    def _handle(self, signum: int, frame: Any) -> None:
        phase = self.phase
        self.event.set()
        if phase == "stopping":
            try:
                self.hard_stop()
            finally:
                os._exit(128 + signum)
        if phase == "busy":
            self.phase = "stopping"  # a second signal while this unwinds: stop hard
            raise KeyboardInterrupt


def stop_event() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so Ctrl-C and `kill` both stop cleanly."""
    event = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return event


def when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


@contextmanager
def user_errors(console: Console, phase: str) -> Iterator[None]:
    """Turn rayweb errors into one readable message, user errors into their traceback."""
    try:
        yield
    except DeploymentError as exc:
        console.print(f"[red]Error:[/red] {escape(exc.args[0])}", highlight=False)
        if exc.user_traceback:
            console.print(exc.user_traceback, markup=False, highlight=False)
        raise typer.Exit(1) from None
    except Error as exc:
        console.print(f"[red]Error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:
        console.print(f"[red]Error while {phase}:[/red]", highlight=False)
        console.print(
            "".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False
        )
        raise typer.Exit(1) from None
