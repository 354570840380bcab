"""``rayweb cluster up/down/status``: a persistent local Ray head (``driver/local_cluster.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .common import user_errors

cluster_cli = typer.Typer(help="A persistent local Ray head (loopback only, token auth handled).")
NameOption = Annotated[str, typer.Option("--name", help="The cluster's name.")]


@cluster_cli.command("up")
def cluster_up(
    name: NameOption = "default",
    num_cpus: Annotated[int | None, typer.Option(help="CPUs Ray may use.")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs Ray may use.")] = None,
    port: Annotated[int | None, typer.Option(help="The head's GCS port.")] = None,
    autoscaling_config: Annotated[
        Path | None,
        typer.Option(
            help="Ray cluster YAML for the head's autoscaler (e.g. "
            "cluster/fake-gpu-autoscaling.yaml: fake GPU nodes on this machine)."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="More Ray nodes on this machine (each with --num-cpus), joined to it."),
    ] = 0,
) -> None:
    """Start a local Ray head (and --workers more nodes); use it with --address NAME (serve,
    deploy, token, secret)."""
    from ..driver.local_cluster import up

    err = Console(stderr=True, soft_wrap=True)
    with user_errors(err, "starting the cluster"), err.status("Starting Ray"):
        c = up(
            name,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            port=port,
            autoscaling_config=autoscaling_config,
            workers=workers,
        )
    Console(highlight=False).print(
        f"Cluster {c.name!r} is up at {c.address} (dashboard {c.dashboard}).\n"
        f"Use it: rayweb serve app.py --address {c.name}\n"
        f"Stop it: rayweb cluster down --name {c.name}"
    )


@cluster_cli.command("down")
def cluster_down(name: NameOption = "default") -> None:
    """Stop the cluster's processes (only those of this cluster)."""
    from ..driver.local_cluster import down

    err = Console(stderr=True)
    with user_errors(err, "stopping the cluster"):
        count = down(name)
    err.print(f"Stopped cluster {name!r} ({count} processes).")


@cluster_cli.command("status")
def cluster_status(name: NameOption = "default") -> None:
    """Is the cluster up, where, and with what resources."""
    from ..driver.local_cluster import status

    with user_errors(Console(stderr=True), "reading the cluster"):
        found = status(name)
    c = found.cluster
    out = Console(highlight=False)
    out.print(f"cluster: {c.name}\naddress: {c.address}\ndashboard: {c.dashboard}")
    out.print(f"processes: {found.processes}" + ("" if found.processes else " (down)"))
    if found.resources is not None:
        shown = ", ".join(f"{k}={v:g}" for k, v in sorted(found.resources.items()))
        out.print(f"resources: {shown}")
        out.print(f"nodes: {found.nodes_alive} alive")
    pool = found.warm_pool
    if pool is not None:
        out.print(
            "warm workers: off" if pool["off"] else
            f"warm workers: {pool['idle']} idle on the head node, kept at {pool['wanted']} "
            f"now ({pool['floor']} to {pool['ceiling']}); {pool['started']} started so far",
            soft_wrap=True,
        )  # fmt: skip
    if found.processes:
        out.print(
            f"fast start: a driver kept imported (pid {found.fork_driver}); `rayweb serve` "
            "onto this cluster starts in a fork of it"
            if found.fork_driver is not None
            else "fast start: off (no driver kept imported; RAYWEB_FORK_DRIVER=0, or it exited)",
            soft_wrap=True,
        )
