"""``rayweb run file.py[::name] [--arg value ...]``: parse the reference and the entrypoint's
own arguments (from its signature, as ``modal run`` does), call the driver, print."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import click
import typer
from rich.console import Console

from .common import ModuleOption, user_errors
from .root import cli

_TYPES: dict[Any, click.ParamType] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "str": click.STRING,
}


def entrypoint_command(name: str, signature: inspect.Signature) -> click.Command:
    """A click command whose options are the parameters of ``signature``: ``--x 3`` (also
    ``--my-arg`` for ``my_arg``), typed from the annotation, required without a default;
    a ``bool`` is a ``--flag/--no-flag``."""
    params: list[click.Parameter] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        names = [f"--{param.name}"]
        if "_" in param.name:
            names.append(f"--{param.name.replace('_', '-')}")
        required = param.default is param.empty
        default = None if required else param.default
        if param.annotation in (bool, "bool"):
            flags = [f"{n}/--no-{n[2:]}" for n in names]
            params.append(click.Option(flags, default=bool(default), show_default=True))
            continue
        kind = _TYPES.get(param.annotation, click.STRING)
        if required:
            params.append(click.Option(names, type=kind, required=True))
        else:
            params.append(click.Option(names, type=kind, default=default, show_default=True))
    return click.Command(name, params=params, help=f"Arguments of {name}.")


@cli.command(
    # everything after the reference is the entrypoint's (even --port or --help)
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
    add_help_option=False,
)
def run(
    ctx: typer.Context,
    app_ref: Annotated[
        str | None, typer.Argument(help="file.py[::name] or -m module[::name].")
    ] = None,
    module: ModuleOption = False,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster instead of starting one.")
    ] = None,
    port: Annotated[int, typer.Option(help="Port for the app's web endpoints.")] = 8000,
) -> None:
    """Run a local entrypoint (here) or a function (remotely) of an app on Ray.

    The app is deployed for the run (-dev names) and deleted afterwards. Arguments after the
    reference are the entrypoint's own: `rayweb run app.py --help` lists them."""
    if app_ref is None or app_ref == "--help":
        typer.echo(ctx.get_help())
        raise typer.Exit()
    from ..driver.run import find_runnable
    from ..driver.run import run as run_it

    err = Console(stderr=True, soft_wrap=True)
    with user_errors(err, "loading the app"):
        runnable = find_runnable(app_ref, is_module=module)
    command = entrypoint_command(runnable.name, runnable.signature)
    try:
        kwargs = command.make_context(f"rayweb run {app_ref}", list(ctx.args)).params
    except click.exceptions.Exit:
        raise typer.Exit() from None  # --help was printed
    except click.ClickException as exc:
        exc.show()
        raise typer.Exit(2) from None
    with user_errors(err, f"running {runnable.name}"):
        result = run_it(runnable, kwargs, address=address, port=port)
    if result is not None and not runnable.is_entrypoint:
        typer.echo(repr(result))
