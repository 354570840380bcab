"""``rayweb app list/stop/logs``: the endpoints (Serve applications) running on a cluster."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from ..driver.output import wide_console
from .common import ClusterOption, stop_event, user_errors

app_cli = typer.Typer(help="The endpoints (Serve applications) running on a cluster.")


@app_cli.command("list")
def app_list(address: ClusterOption = "default") -> None:
    """What is deployed: each endpoint's status, route, replica counts and its last minute
    of requests through the gateway (rate, p50, p99)."""
    from rich.table import Table

    from ..driver import cluster
    from ..driver.status import list_endpoints

    with user_errors(Console(stderr=True), "listing apps"):
        cluster.ensure_ray(address)
        rows = list_endpoints()
    table = Table("endpoint", "status", "URL", "replicas", "last minute", "message")
    for row in rows:
        table.add_row(row.name, row.status, row.url, row.replicas, row.traffic, row.message[:80])
    wide_console().print(table)


@app_cli.command("stop")
def app_stop(
    name: Annotated[str, typer.Argument(help="The endpoint (Serve application) to stop.")],
    address: ClusterOption = "default",
) -> None:
    """Delete a deployed endpoint and its replicas."""
    from ..driver.status import stop_endpoint

    err = Console(stderr=True)
    with user_errors(err, "stopping the app"):
        stop_endpoint(name, address)
    err.print(f"Stopped {name!r}.")


@app_cli.command("logs")
def app_logs(
    name: Annotated[str, typer.Argument(help="The endpoint (Serve application).")],
    address: ClusterOption = "default",
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option(help="Lines per log to start from (-1: all).")] = 1000,
) -> None:
    """Print what an endpoint's replicas (and web_server processes) wrote to stdout/stderr."""
    from ..driver.logs import show_logs
    from ..driver.status import require_endpoint

    err = Console(stderr=True)
    stop = stop_event()
    with user_errors(err, "reading the logs"):
        app = require_endpoint(name, address)  # a pooled web method: its class's pool
        found = show_logs(
            app,
            follow=follow,
            tail=tail,
            write=lambda line: print(line, flush=True),
            stop=stop,
        )
    if not found:
        err.print(f"{name!r} has no running replicas (scaled to zero?).")
