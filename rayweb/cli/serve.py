"""``rayweb serve`` (foreground, hot reload) and ``rayweb deploy`` (persistent, or a KubeRay
manifest): parse the arguments, call the driver, print what happened."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ..driver.output import print_urls, wide_console
from .common import (
    AppRefArgument,
    DomainOption,
    ModuleOption,
    Stopper,
    interrupt,
    use_domain,
    user_errors,
)
from .root import cli

if TYPE_CHECKING:
    from ..driver.dev import DevSession


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
    domain: DomainOption = None,
    keep_warm: Annotated[
        bool,
        typer.Option(
            "--keep-warm",
            help="Start a local cluster that stays up for the next serve (rayweb cluster down "
            "stops it) unless one runs.",
        ),
    ] = False,
) -> None:
    """Serve an app's web endpoints in the foreground, with -dev URLs, until Ctrl-C.

    Saving a file of the app redeploys the endpoints that changed; if the new code does
    not load or start, the last good version keeps serving. Without --address it runs on
    the running local cluster (`rayweb cluster up`, or one kept warm) if there is one, else
    on a new Ray of its own (`--address local`: always the latter)."""
    from ..driver.local_cluster import forked_serve, serve_address

    err = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    with user_errors(err, "reading the options"):
        use_domain(domain)
    # Onto a running local cluster, in a fork of the driver kept imported beside it: the
    # same command in this terminal, without importing Ray, Serve and FastAPI first.
    code = forked_serve(address, sys.argv[1:])
    if code is not None:
        raise typer.Exit(code)
    from ..driver.cluster import kill_embedded
    from ..driver.dev import DevSession

    with user_errors(err, "starting the local cluster"):
        address = serve_address(address, keep_warm, say)
    session = DevSession.from_ref(
        app_ref,
        is_module=module,
        say=say,
        host=host,
        port=port,
        address=address,
        deploy_timeout=deploy_timeout,
    )
    # Ctrl-C or SIGTERM: during start-up (or a reload) it unwinds at once, so what was
    # started is deleted; while serving it ends the loop; a second one while stopping kills
    # the embedded Ray at once.
    stopper = Stopper(hard_stop=kill_embedded)
    started = False
    try:
        with user_errors(err, "loading the app"):
            session.app = session.load()
        with user_errors(err, "serving the app"), err.status("Starting") as status:

            def progress(message: str) -> None:
                stopper.install()
                status.update(message)

            session.start(progress=progress)
        started = True
        _serve_loop(session, stopper, err, reload=reload, timeout=timeout)
    except KeyboardInterrupt:
        if not started:
            # Interrupted while starting: what was deployed is deleted by the code this
            # unwound through; a Ray start cut short leaves its agents, so kill what is left.
            kill_embedded()
            raise
    finally:
        stopper.stopping()
        if session.handle is not None:
            with err.status("Stopping"):
                session.handle.stop()
            err.print("Stopped.")


def _serve_loop(
    session: DevSession, stopper: Stopper, err: Console, *, reload: bool, timeout: float | None
) -> None:
    """Print the URLs, then reload on saves and print the gateway's notices until stopped."""
    from ..driver.cluster import GatewayNotices
    from ..driver.dev import watch_changes

    stop = stopper.event
    changed = threading.Event()
    if reload:
        watching = threading.Event()
        threading.Thread(
            target=watch_changes,
            args=(session, stop, lambda _paths: changed.set(), watching),
            daemon=True,
        ).start()
        watching.wait(10)
    notices = GatewayNotices()
    notices.poll()  # the baseline, before "Serving.": a restart after it is printed
    handle = session.handle
    print_urls(handle.labels, handle.reach, console=wide_console())
    err.print(
        "[green]Serving.[/green] "
        + ("Watching for changes. " if reload else "")
        + "Press Ctrl-C to stop."
    )
    stopper.idle()
    deadline = None if timeout is None else time.monotonic() + timeout
    next_notice = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_notice:
            for line in notices.poll():
                err.print(f"[yellow]rayweb:[/yellow] {line}", highlight=False)
            next_notice = time.monotonic() + 1.0
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            err.print(f"Timeout of {timeout:g}s reached.")
            break
        if changed.wait(0.2 if left is None else max(0.0, min(0.2, left))):
            changed.clear()
            stopper.busy()  # Ctrl-C during a redeploy stops at once
            session.reload()
            stopper.idle()


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
    volume_size: Annotated[
        str, typer.Option(help="With --kuberay: the storage each Volume's claim requests.")
    ] = "10Gi",
    storage_class: Annotated[
        str | None,
        typer.Option(help="With --kuberay: the Volumes' storage class (ReadWriteMany)."),
    ] = None,
    state_size: Annotated[
        str, typer.Option(help="With --kuberay: the storage of the head's Dict/Queue claim.")
    ] = "1Gi",
    gateway_nodes: Annotated[
        str,
        typer.Option(
            help="With --kuberay: 'head' (one gateway, on the head) or 'every' (one on every "
            "node; every pod then serves in the serve Service)."
        ),
    ] = "head",
    domain: DomainOption = None,
    ingress_class: Annotated[
        str | None,
        typer.Option(help="With --kuberay --domain: the class of the domain's Ingress."),
    ] = None,
    http_route: Annotated[
        str | None,
        typer.Option(
            help="With --kuberay --domain: an HTTPRoute on this Gateway ([NAMESPACE/]NAME) "
            "instead of an Ingress."
        ),
    ] = None,
) -> None:
    """Deploy an app onto a running Ray cluster and exit; it keeps serving (`modal deploy`).

    Ships the app's code directory with the deploy. Redeploying updates the endpoints in
    place; if the new version does not start, the previous one keeps serving and the command
    fails with the reason. With --kuberay, renders a RayService for Kubernetes instead."""
    if kuberay:
        storage = {
            "volume_size": volume_size,
            "storage_class": storage_class,
            "state_size": state_size,
            "gateway_nodes": gateway_nodes,
            "domain": domain,
            "ingress_class": ingress_class,
            "http_route": http_route,
        }
        _render_kuberay(app_ref, module, output=output, name=name, image=image, storage=storage)
        return
    from ..driver.deploy import deploy_app
    from ..driver.import_refs import load_app

    err = Console(stderr=True, soft_wrap=True)
    signal.signal(signal.SIGTERM, interrupt)
    with user_errors(err, "reading the options"):
        use_domain(domain)
    with user_errors(err, "loading the app"):
        app = load_app(app_ref, is_module=module)
        if name:
            app.name = name
    with user_errors(err, "deploying the app"), err.status("Deploying") as status:
        deployed = deploy_app(
            app,
            address=address,
            host=host,
            port=port,
            deploy_timeout=deploy_timeout,
            progress=lambda msg: status.update(msg),
        )
    print_urls(deployed.labels, deployed.reach, title=f"rayweb app {deployed.app_name!r} deployed")
    if deployed.working_dir:
        err.print(f"Code shipped as {deployed.working_dir}", highlight=False)
    if deployed.excluded:
        from ..driver.shipping import describe

        err.print(describe(deployed.excluded), markup=False, highlight=False)
    if deployed.removed:
        err.print(f"Removed endpoints the app no longer has: {', '.join(deployed.removed)}")
    err.print(
        f"[green]Deployed.[/green] It keeps serving after this command; "
        f"`rayweb app list --address {address}` shows it, "
        f"`rayweb app stop NAME --address {address}` removes an endpoint."
    )


def _render_kuberay(
    app_ref: str,
    module: bool,
    *,
    output: Path | None,
    name: str | None,
    image: str | None,
    storage: dict[str, Any],
) -> None:
    from ..driver.import_refs import find_app, import_module_of, parse_app_ref
    from ..driver.kuberay import render_manifests, to_yaml

    err = Console(stderr=True, soft_wrap=True)
    with user_errors(err, "rendering the manifest"):
        ref = parse_app_ref(app_ref, is_module=module)
        found = find_app(import_module_of(ref), ref)
        module_name = ref.target if ref.is_module else Path(ref.target).stem
        variable = next(k for k, v in vars(sys.modules[module_name]).items() if v is found)
        documents = render_manifests(
            found, module=module_name, variable=variable, name=name, image=image, **storage
        )
        text = to_yaml(documents)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        err.print(f"Wrote {output}.")
    claims = [d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"]
    err.print(
        f"Claims: {', '.join(claims)}. `kubectl delete -f` deletes them with their data: "
        "delete the RayService alone to keep them.",
        highlight=False,
    )
    err.print(
        f"The image must contain rayweb and make `{module_name}` importable (e.g. on PYTHONPATH).",
        highlight=False,
    )
