"""``rayweb dict`` and ``rayweb queue``, like ``modal dict``/``modal queue``: the cluster's
named Dicts and Queues (``--address``), or this machine's (the store its local clusters use;
when one of them is running, through it). Keys given here are strings, as on Modal."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

from ..dicts import Dict
from ..queues import Queue
from .common import AddressOption, user_errors, when

dict_cli = typer.Typer(help="Named Dicts (rayweb.Dict.from_name), kept on the cluster.")
queue_cli = typer.Typer(help="Named Queues (rayweb.Queue.from_name), kept on the cluster.")

YesOption = Annotated[
    bool, typer.Option("-y", "--yes", help="Run without pausing for confirmation.")
]
AllowMissing = Annotated[bool, typer.Option(help="Succeed if it does not exist.")]
PartitionOption = Annotated[
    str | None,
    typer.Option(
        "-p",
        "--partition",
        help="Name of the partition to use, otherwise use the default (anonymous) partition.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _connect(address: str | None) -> None:
    if address is not None:
        from ..driver import cluster

        cluster.ensure_ray(address)


def _confirm(yes: bool, question: str) -> None:
    if not yes:
        typer.confirm(question, default=False, abort=True)


def _table(rows: list[dict[str, Any]], as_json: bool, columns: list[tuple[str, str]]) -> None:
    if as_json:
        typer.echo(json.dumps([{k: row.get(k) for k, _ in columns} for row in rows], indent=2))
        return
    from rich.table import Table

    from ..driver.output import wide_console

    table = Table(*[title for _, title in columns])
    for row in rows:
        table.add_row(*[when(row[k]) if k == "created" else str(row[k]) for k, _ in columns])
    wide_console().print(table)


# -- rayweb dict ---------------------------------------------------------------------------
@dict_cli.command("create")
def dict_create(name: str, address: AddressOption = None) -> None:
    """Create a named Dict (nothing happens if it exists)."""
    with user_errors(Console(stderr=True), "creating the Dict"):
        _connect(address)
        Dict.objects.create(name, allow_existing=True)
    Console(stderr=True).print(f"Created Dict '{name}'.", highlight=False)


@dict_cli.command("list")
def dict_list(as_json: JsonOption = False, address: AddressOption = None) -> None:
    """List the named Dicts."""
    with user_errors(Console(stderr=True), "listing Dicts"):
        _connect(address)
        rows = _rows("dict")
    _table(rows, as_json, [("name", "Name"), ("created", "Created at"), ("keys", "Keys")])


def _rows(kind: str) -> list[dict[str, Any]]:
    from ..objects import backend

    rows: list[dict[str, Any]] = backend().call("objects", kind)
    return rows


@dict_cli.command("get")
def dict_get(name: str, key: str, address: AddressOption = None) -> None:
    """Print the value of KEY (a string key), or None."""
    with user_errors(Console(stderr=True), "reading the Dict"):
        _connect(address)
        value = Dict.from_name(name).get(key)
    typer.echo(value)


@dict_cli.command("items")
def dict_items(
    name: str,
    n: Annotated[int, typer.Argument(help="Show at most this many entries.")] = 20,
    show_all: Annotated[bool, typer.Option("-a", "--all", help="Show every entry.")] = False,
    use_repr: Annotated[
        bool, typer.Option("-r", "--repr", help="Show values with repr() instead of str().")
    ] = False,
    as_json: JsonOption = False,
    address: AddressOption = None,
) -> None:
    """Print the Dict's entries (keys and values)."""
    with user_errors(Console(stderr=True), "reading the Dict"):
        _connect(address)
        items = list(Dict.from_name(name).items())
    show = repr if use_repr else str
    if as_json:
        typer.echo(json.dumps([{"key": show(k), "value": show(v)} for k, v in items], indent=2))
        return
    from rich.table import Table

    from ..driver.output import wide_console

    table = Table("Key", "Value")
    limit = len(items) if show_all else n
    for key, value in items[:limit]:
        text = show(value)
        table.add_row(show(key), text if len(text) <= 80 else text[:80] + "...")
    if len(items) > limit:
        table.add_row("...", "...")
    wide_console().print(table)


@dict_cli.command("clear")
def dict_clear(name: str, yes: YesOption = False, address: AddressOption = None) -> None:
    """Delete every entry of the Dict."""
    _confirm(yes, f"Are you sure you want to irrevocably delete the contents of Dict '{name}'?")
    with user_errors(Console(stderr=True), "clearing the Dict"):
        _connect(address)
        Dict.from_name(name).clear()
    Console(stderr=True).print(f"Cleared Dict '{name}'.", highlight=False)


@dict_cli.command("delete")
def dict_delete(
    name: str,
    allow_missing: AllowMissing = False,
    yes: YesOption = False,
    address: AddressOption = None,
) -> None:
    """Delete the Dict and its entries."""
    _confirm(yes, f"Are you sure you want to irrevocably delete the Dict '{name}'?")
    with user_errors(Console(stderr=True), "deleting the Dict"):
        _connect(address)
        Dict.objects.delete(name, allow_missing=allow_missing)
    Console(stderr=True).print(f"Deleted Dict '{name}'.", highlight=False)


# -- rayweb queue --------------------------------------------------------------------------
@queue_cli.command("create")
def queue_create(name: str, address: AddressOption = None) -> None:
    """Create a named Queue (nothing happens if it exists)."""
    with user_errors(Console(stderr=True), "creating the Queue"):
        _connect(address)
        Queue.objects.create(name, allow_existing=True)
    Console(stderr=True).print(f"Created Queue '{name}'.", highlight=False)


@queue_cli.command("list")
def queue_list(as_json: JsonOption = False, address: AddressOption = None) -> None:
    """List the named Queues."""
    with user_errors(Console(stderr=True), "listing Queues"):
        _connect(address)
        rows = _rows("queue")
    columns = [("name", "Name"), ("created", "Created at"), ("partitions", "Partitions")]
    _table(rows, as_json, [*columns, ("total", "Total size")])


@queue_cli.command("peek")
def queue_peek(
    name: str,
    n: Annotated[int, typer.Argument(help="How many items to show.")] = 1,
    partition: PartitionOption = None,
    address: AddressOption = None,
) -> None:
    """Print the next N items without removing them."""
    with user_errors(Console(stderr=True), "reading the Queue"):
        _connect(address)
        for shown, item in enumerate(Queue.from_name(name).iterate(partition=partition)):
            if shown >= n:
                break
            typer.echo(item)


@queue_cli.command("len")
def queue_len(
    name: str,
    partition: PartitionOption = None,
    total: Annotated[
        bool, typer.Option("-t", "--total", help="Count the items of every partition.")
    ] = False,
    address: AddressOption = None,
) -> None:
    """Print the number of items."""
    with user_errors(Console(stderr=True), "reading the Queue"):
        _connect(address)
        typer.echo(Queue.from_name(name).len(partition=partition, total=total))


@queue_cli.command("clear")
def queue_clear(
    name: str,
    partition: PartitionOption = None,
    clear_all: Annotated[bool, typer.Option("-a", "--all", help="Clear every partition.")] = False,
    yes: YesOption = False,
    address: AddressOption = None,
) -> None:
    """Delete the items of a partition (or of all of them)."""
    _confirm(yes, f"Are you sure you want to irrevocably delete the contents of Queue '{name}'?")
    with user_errors(Console(stderr=True), "clearing the Queue"):
        _connect(address)
        Queue.from_name(name).clear(partition=partition, all=clear_all)
    Console(stderr=True).print(f"Cleared Queue '{name}'.", highlight=False)


@queue_cli.command("delete")
def queue_delete(
    name: str,
    allow_missing: AllowMissing = False,
    yes: YesOption = False,
    address: AddressOption = None,
) -> None:
    """Delete the Queue and its items."""
    _confirm(yes, f"Are you sure you want to irrevocably delete the Queue '{name}'?")
    with user_errors(Console(stderr=True), "deleting the Queue"):
        _connect(address)
        Queue.objects.delete(name, allow_missing=allow_missing)
    Console(stderr=True).print(f"Deleted Queue '{name}'.", highlight=False)
