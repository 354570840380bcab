"""The ``rayweb`` command line (Typer).

``rayweb serve app.py`` runs the app in the foreground on an embedded local Ray (or on
``--address``), with ``-dev`` URLs, until Ctrl-C, SIGTERM or ``--timeout``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .exception import DeploymentError, Error
from .serving import wide_console

cli = typer.Typer(
    name="rayweb",
    help="Modal-style web endpoints on your own Ray cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


AppRefArgument = Annotated[
    str, typer.Argument(help="file.py, file.py::app or (with -m) pkg.module")
]
ModuleOption = Annotated[bool, typer.Option("-m", help="APP_REF is a Python module path.")]


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
    app_ref: AppRefArgument,
    module: ModuleOption = False,
    host: Annotated[str, typer.Option(help="Address the endpoints are served on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the endpoints are served on.")] = 8000,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster instead of starting one.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (like MODAL_SERVE_TIMEOUT).")
    ] = None,
    deploy_timeout: Annotated[
        float | None, typer.Option(help="Give up a deploy after this many seconds.")
    ] = None,
    reload: Annotated[
        bool, typer.Option("--reload/--no-reload", help="Redeploy what changed on save.")
    ] = True,
) -> None:
    """Serve an app's web endpoints in the foreground, with -dev URLs, until Ctrl-C.

    Saving a file of the app redeploys the endpoints that changed; if the new code does
    not load or start, the last good version keeps serving."""
    from .dev import DevSession, watch_changes
    from .serving import print_urls

    err = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    session = DevSession.from_ref(
        app_ref,
        is_module=module,
        say=say,
        host=host,
        port=port,
        address=address,
        deploy_timeout=deploy_timeout,
    )
    # SIGTERM while deploying unwinds like Ctrl-C, so serve() deletes what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    with _user_errors(err, "loading the app"):
        session.app = session.load()
    with _user_errors(err, "serving the app"), err.status("Starting") as status:
        handle = session.start(progress=lambda msg: status.update(msg))
    stop = _stop_event()
    changed = threading.Event()
    if reload:
        watching = threading.Event()
        threading.Thread(
            target=watch_changes,
            args=(session, stop, lambda _paths: changed.set(), watching),
            daemon=True,
        ).start()
        watching.wait(10)
    try:
        print_urls(handle, console=wide_console())
        err.print(
            "[green]Serving.[/green] "
            + ("Watching for changes. " if reload else "")
            + "Press Ctrl-C to stop."
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                err.print(f"Timeout of {timeout:g}s reached.")
                break
            if changed.wait(0.2 if left is None else max(0.0, min(0.2, left))):
                changed.clear()
                session.reload()
    except KeyboardInterrupt:
        pass
    finally:
        with err.status("Stopping"):
            handle.stop()
        err.print("Stopped.")


cluster_cli = typer.Typer(help="A persistent local Ray head (loopback only, token auth handled).")
cli.add_typer(cluster_cli, name="cluster")
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
) -> None:
    """Start a local Ray head; use it with --address NAME (serve, deploy, token, secret)."""
    from .local_cluster import up

    err = Console(stderr=True, soft_wrap=True)
    with _user_errors(err, "starting the cluster"), err.status("Starting Ray"):
        c = up(
            name,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            port=port,
            autoscaling_config=autoscaling_config,
        )
    Console(highlight=False).print(
        f"Cluster {c.name!r} is up at {c.address} (dashboard {c.dashboard}).\n"
        f"Use it: rayweb serve app.py --address {c.name}\n"
        f"Stop it: rayweb cluster down --name {c.name}"
    )


@cluster_cli.command("down")
def cluster_down(name: NameOption = "default") -> None:
    """Stop the cluster's processes (only those of this cluster)."""
    from .local_cluster import down

    err = Console(stderr=True)
    with _user_errors(err, "stopping the cluster"):
        count = down(name)
    err.print(f"Stopped cluster {name!r} ({count} processes).")


@cluster_cli.command("status")
def cluster_status(name: NameOption = "default") -> None:
    """Is the cluster up, where, and with what resources."""
    from . import cluster as ray_cluster
    from .local_cluster import load

    err = Console(stderr=True)
    with _user_errors(err, "reading the cluster"):
        c = load(name)
        pids = c.pids()
        out = Console(highlight=False)
        out.print(f"cluster: {c.name}\naddress: {c.address}\ndashboard: {c.dashboard}")
        out.print(f"processes: {len(pids)}" + ("" if pids else " (down)"))
        if pids:
            ray_cluster.ensure_ray(c.address)
            resources = ray_cluster.cluster_resources()
            shown = {k: v for k, v in resources.items() if not k.startswith("node:")}
            out.print("resources: " + ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items())))
            import ray

            out.print(f"nodes: {sum(1 for n in ray.nodes() if n['Alive'])} alive")


app_cli = typer.Typer(help="The endpoints (Serve applications) running on a cluster.")
cli.add_typer(app_cli, name="app")
ClusterOption = Annotated[
    str,
    typer.Option("--address", help="A rayweb cluster name (see `rayweb cluster up`) or host:port."),
]


@app_cli.command("list")
def app_list(address: ClusterOption = "default") -> None:
    """What is deployed: each endpoint's status, route and replica counts."""
    from rich.table import Table

    from . import cluster as ray_cluster

    err = Console(stderr=True)
    with _user_errors(err, "listing apps"):
        ray_cluster.ensure_ray(address)
        from ray import serve

        status = serve.status()
        base = ray_cluster.public_base_url()
    table = Table("endpoint", "status", "URL", "replicas", "message")
    for name, app in sorted(status.applications.items()):
        states: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                states[str(state).split(".")[-1]] = states.get(str(state).split(".")[-1], 0) + count
        replicas = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "0"
        table.add_row(
            name,
            str(app.status).split(".")[-1],
            f"{base}/{name}",
            replicas,
            (app.message or "")[:80],
        )
    wide_console().print(table)


def _require_endpoint(name: str, address: str) -> None:
    """Join the cluster; fail with what runs there if ``name`` is not one of its endpoints."""
    from . import cluster as ray_cluster
    from .exception import NotFoundError

    ray_cluster.ensure_ray(address)
    from ray import serve

    running = sorted(serve.status().applications)
    if name not in running:
        raise NotFoundError(
            f"No endpoint {name!r} on this cluster. Running: {running or 'none'}. "
            f"Suggestion: rayweb app list --address {address}"
        )


@app_cli.command("stop")
def app_stop(
    name: Annotated[str, typer.Argument(help="The endpoint (Serve application) to stop.")],
    address: ClusterOption = "default",
) -> None:
    """Delete a deployed endpoint and its replicas."""
    from .serving import delete_apps, forget_deployed

    err = Console(stderr=True)
    with _user_errors(err, "stopping the app"):
        _require_endpoint(name, address)
        delete_apps([name])
        forget_deployed(name)
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
    from .logs import show_logs

    err = Console(stderr=True)
    stop = _stop_event()
    with _user_errors(err, "reading the logs"):
        _require_endpoint(name, address)
        found = show_logs(
            name,
            follow=follow,
            tail=tail,
            write=lambda line: print(line, flush=True),
            stop=stop,
        )
    if not found:
        err.print(f"{name!r} has no running replicas (scaled to zero?).")


token_cli = typer.Typer(help="Proxy-auth tokens (for requires_proxy_auth=True endpoints).")
secret_cli = typer.Typer(help="Named secrets, kept on the cluster (rayweb.Secret.from_name).")
cli.add_typer(token_cli, name="token")
cli.add_typer(secret_cli, name="secret")

AddressOption = Annotated[
    str | None,
    typer.Option(help="The cluster to use (default: this machine's store, used by its clusters)."),
]


class _StoreClient:
    """The same calls, against the local store file or a cluster's store actor."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        if address is None:
            from .store import Store

            self.local: Any = Store()
        else:
            from . import cluster
            from .runtime.store_actor import store_actor

            cluster.ensure_ray(address)
            self.actor = store_actor()

    def __getattr__(self, method: str) -> Any:
        if self.address is None:
            return getattr(self.local, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            from .runtime.loader import remote_error

            try:
                return ray.get(getattr(self.actor, method).remote(*args, **kwargs))
            except Exception as exc:
                raise remote_error(exc) from None

        return call


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


@token_cli.command("create")
def token_create(
    name: Annotated[str | None, typer.Option(help="A name to find the token by.")] = None,
    address: AddressOption = None,
) -> None:
    """Create a token. Its secret is shown once and stored only as a salted hash."""
    err = Console(stderr=True, soft_wrap=True)
    with _user_errors(err, "creating the token"):
        key, secret = _StoreClient(address).create_token(name)
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"Token key:    {key}")
    out.print(f"Token secret: {secret}")
    err.print(
        "The secret is not shown again. Send both as Modal-Key/Modal-Secret headers, or as "
        f"'Authorization: Bearer {key}.<secret>'."
    )


@token_cli.command("list")
def token_list(address: AddressOption = None) -> None:
    """List tokens (keys and names; secrets are never stored)."""
    from rich.table import Table

    with _user_errors(Console(stderr=True), "listing tokens"):
        tokens = _StoreClient(address).list_tokens()
    table = Table("key", "name", "created", "revoked")
    for t in tokens:
        table.add_row(t["key"], t["name"], _when(t["created"]), _when(t["revoked"]))
    wide_console().print(table)


@token_cli.command("revoke")
def token_revoke(
    key_or_name: Annotated[str, typer.Argument(help="The token's key (wk-...) or name.")],
    address: AddressOption = None,
) -> None:
    """Revoke a token; every replica refuses it within seconds."""
    with _user_errors(Console(stderr=True), "revoking the token"):
        keys = _StoreClient(address).revoke_token(key_or_name)
    Console(stderr=True).print(f"Revoked {', '.join(keys)}.")


@secret_cli.command("create")
def secret_create(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    pairs: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE pairs.")] = None,
    from_dotenv: Annotated[
        Path | None, typer.Option(help="Read KEY=VALUE lines from this .env file.")
    ] = None,
    from_json: Annotated[Path | None, typer.Option(help="Read a JSON object of strings.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing secret.")] = False,
    address: AddressOption = None,
) -> None:
    """Create a named secret (values are never printed)."""
    err = Console(stderr=True, soft_wrap=True)
    with _user_errors(err, "creating the secret"):
        values = _secret_values(pairs or [], from_dotenv, from_json)
        _StoreClient(address).put_secret(name, values, force=force)
    err.print(f"Created secret {name!r} with keys: {', '.join(sorted(values))}.", highlight=False)


def _secret_values(pairs: list[str], dotenv: Path | None, json_file: Path | None) -> dict[str, str]:
    import json

    from .exception import InvalidError
    from .secret import _parse_dotenv

    values: dict[str, str] = {}
    if dotenv is not None:
        values.update(_parse_dotenv(dotenv.read_text()))
    if json_file is not None:
        loaded = json.loads(json_file.read_text())
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise InvalidError(f"{json_file} must hold a JSON object of string values.")
        values.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidError(f"Expected KEY=VALUE, got {key!r}. Suggestion: MY_KEY=my-value")
        values[key] = value
    return values


@secret_cli.command("list")
def secret_list(address: AddressOption = None) -> None:
    """List secrets: names and keys, never values."""
    from rich.table import Table

    with _user_errors(Console(stderr=True), "listing secrets"):
        secrets = _StoreClient(address).list_secrets()
    table = Table("name", "keys", "created")
    for s in secrets:
        table.add_row(s["name"], ", ".join(s["keys"]), _when(s["created"]))
    wide_console().print(table)


@secret_cli.command("delete")
def secret_delete(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    allow_missing: Annotated[bool, typer.Option(help="Succeed if it does not exist.")] = False,
    address: AddressOption = None,
) -> None:
    """Delete a named secret."""
    with _user_errors(Console(stderr=True), "deleting the secret"):
        deleted = _StoreClient(address).delete_secret(name, allow_missing=allow_missing)
    Console(stderr=True).print(f"Deleted secret {name!r}." if deleted else f"No secret {name!r}.")


@cli.command()
def deploy(
    app_ref: AppRefArgument,
    module: ModuleOption = False,
    address: Annotated[
        str,
        typer.Option(help="A rayweb cluster name (see `rayweb cluster up`) or host:port."),
    ] = "default",
    name: Annotated[
        str | None,
        typer.Option(help="Deploy under this app name (URL labels follow it)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the cluster's gateway binds.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port of the cluster's gateway, if it has none yet.")
    ] = 8000,
    deploy_timeout: Annotated[
        float | None, typer.Option(help="Give up a deploy after this many seconds.")
    ] = None,
    kuberay: Annotated[
        bool, typer.Option(help="Render a KubeRay RayService manifest instead.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="With --kuberay: write the manifest here."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="With --kuberay: container image with Ray, rayweb and the code."),
    ] = None,
) -> None:
    """Deploy an app onto a running Ray cluster and exit; it keeps serving (`modal deploy`).

    Ships the app's code directory with the deploy. Redeploying updates the endpoints in
    place; if the new version does not start, the previous one keeps serving and the command
    fails with the reason. With --kuberay, renders a RayService for Kubernetes instead."""
    if kuberay:
        _render_kuberay(app_ref, module, output=output, name=name, image=image)
        return
    from .import_refs import load_app
    from .serving import deploy_app

    err = Console(stderr=True, soft_wrap=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with _user_errors(err, "loading the app"):
        app = load_app(app_ref, is_module=module)
        if name:
            app.name = name
    with _user_errors(err, "deploying the app"), err.status("Deploying") as status:
        deployed = deploy_app(
            app,
            address=address,
            host=host,
            port=port,
            deploy_timeout=deploy_timeout,
            progress=lambda msg: status.update(msg),
        )
    from rich.table import Table

    table = Table(title=f"rayweb app {deployed.app_name!r} deployed", title_justify="left")
    table.add_column("endpoint")
    table.add_column("URL")
    for tag, url in deployed.urls.items():
        table.add_row(tag, url)
    wide_console().print(table)
    if deployed.working_dir:
        err.print(f"Code shipped as {deployed.working_dir}", highlight=False)
    if deployed.removed:
        err.print(f"Removed endpoints the app no longer has: {', '.join(deployed.removed)}")
    err.print(
        f"[green]Deployed.[/green] It keeps serving after this command; "
        f"`rayweb app list --address {address}` shows it, "
        f"`rayweb app stop NAME --address {address}` removes an endpoint."
    )


def _render_kuberay(
    app_ref: str, module: bool, *, output: Path | None, name: str | None, image: str | None
) -> None:
    from .import_refs import find_app, import_module_of, parse_app_ref
    from .kuberay import render_rayservice, to_yaml

    err = Console(stderr=True, soft_wrap=True)
    with _user_errors(err, "rendering the manifest"):
        ref = parse_app_ref(app_ref, is_module=module)
        found = find_app(import_module_of(ref), ref)
        module_name = ref.target if ref.is_module else Path(ref.target).stem
        variable = next(k for k, v in vars(sys.modules[module_name]).items() if v is found)
        text = to_yaml(
            render_rayservice(found, module=module_name, variable=variable, name=name, image=image)
        )
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        err.print(f"Wrote {output}.")
    err.print(
        f"The image must contain rayweb and make `{module_name}` importable (e.g. on PYTHONPATH).",
        highlight=False,
    )


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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
