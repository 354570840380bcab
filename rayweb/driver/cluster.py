"""Start or join Ray, and start Serve's HTTP proxy, loopback-only by default.

The embedded Ray that ``rayweb.serve`` starts listens on 127.0.0.1 only, reserves a bounded
object store and stops with the process that started it (``stop_embedded``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..common import free_port, port_unavailable, use_ray_token
from ..urls import DOMAIN_ENV, Reach, check_domain

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_OBJECT_STORE_BYTES = 512 * 1024 * 1024


@dataclass
class ClusterState:
    """What this process started, so that it stops exactly that and nothing else."""

    started_ray: bool = False
    launched: bool = False  # ray.init of an embedded Ray ran here (even if interrupted)
    holders: int = 0  # live handles using the embedded Ray; the last one out stops it


_state = ClusterState()


LOCAL = "local"  # `--address local`: a new embedded Ray even when a local cluster runs
CLUSTER_ENV = "RAYWEB_CLUSTER"  # which local cluster an address-less serve joins


def pick_address(address: str | None) -> str | None:
    """Where a command without ``--address`` runs: on the running local cluster
    (``rayweb cluster up``, or one kept warm by ``rayweb serve --keep-warm``) named by
    ``RAYWEB_CLUSTER`` (default ``default``), as ``ray.init()`` joins a running
    ``ray start``; else on a new embedded Ray (None). ``local`` always means the latter."""
    if address == LOCAL:
        return None
    if address:
        return address
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return None  # this process runs (or joined) a Ray already: that one serves
    from .local_cluster import DEFAULT_NAME, running

    found = running(os.environ.get(CLUSTER_ENV) or DEFAULT_NAME)
    return found.name if found is not None else None


def prepare_env() -> None:
    """The variables Ray reads when it is imported: call before anything imports Ray (the
    compiler does), so that a notebook's ``rayweb.serve(app)`` binds loopback only."""
    # Ray then binds and advertises 127.0.0.1 only (not the machine's outward address).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Serve's proxy (uvicorn) trusts X-Forwarded-For from these addresses; uvicorn's default
    # trusts loopback, so any local client could claim to be anyone. rayweb trusts nobody
    # unless RAYWEB_TRUSTED_PROXIES (or FORWARDED_ALLOW_IPS itself) names the proxies.
    os.environ.setdefault("FORWARDED_ALLOW_IPS", os.environ.get("RAYWEB_TRUSTED_PROXIES", ""))


def ensure_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> bool:
    """Connect to ``address``, or start an embedded loopback-only Ray. True if started here."""
    prepare_env()
    imported_first = "ray" in sys.modules
    if address == LOCAL:
        address = None
    if address:
        use_ray_token()
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"namespace": "rayweb", "logging_level": "WARNING"}
    if address:
        from .local_cluster import resolve_address

        if runtime_env:
            kwargs["runtime_env"] = runtime_env  # uploaded now; Serve gives it to replicas
        resolved = resolve_address(address)
        if imported_first and (resolved or "").startswith(("127.0.0.1:", "localhost:")):
            _loopback_even_if_imported_first(address)
        ray.init(address=resolved, **kwargs)
        quiet_serve_actors()
        return False
    from ..services.warmpool import system_config

    if imported_first:
        _apply_loopback()
    _state.launched = True  # from here on, what runs below this process is that Ray
    ray.init(
        # Loopback even when Ray was imported before the variable above was set.
        _node_ip_address="127.0.0.1",
        num_cpus=num_cpus if num_cpus is not None else os.cpu_count() or 1,
        num_gpus=num_gpus,
        object_store_memory=object_store_memory or DEFAULT_OBJECT_STORE_BYTES,
        include_dashboard=False,
        _system_config=system_config(),
        **kwargs,
    )
    quiet_serve_actors()
    _state.started_ray = True
    return True


# Serve's own actors, whose output Ray would print in this process too.
SERVE_ACTORS = ("ServeController", "ProxyActor")


def from_serve_actor(batch: dict[str, Any]) -> bool:
    """Whether a batch of worker output Ray forwards to the driver is Serve's controller's or
    proxy's (its ``actor_name``), or the raylet's notes on their tasks only (a retried
    ``graceful_shutdown`` while Serve stops)."""
    if str(batch.get("actor_name") or "").startswith(SERVE_ACTORS):
        return True
    lines = batch.get("lines") or []
    about_serve = tuple(f"Task {actor}." for actor in SERVE_ACTORS)
    return (
        batch.get("pid") == "raylet"
        and bool(lines)
        and all(line.lstrip().startswith(about_serve) for line in lines)
    )


def quiet_serve_actors() -> None:
    """Keep the output of Serve's controller and proxy out of this process's terminal (it
    stays in the session's log files): when a replica fails, rayweb says so in one line with
    the user's traceback, and the controller's copy would print Serve's stack on top, as
    often as not before rayweb's (a race with Ray's log forwarding). Replicas' and rayweb's
    own actors' output still shows."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray: its output shows as it is
        return
    with dispatcher._lock:
        for index, (name, handler) in enumerate(dispatcher.handlers):
            if name != "ray_print_logs" or getattr(handler, "rayweb_quiet", False):
                continue

            def quiet(batch: dict[str, Any], print_batch: Any = handler) -> None:
                if not from_serve_actor(batch):
                    print_batch(batch)

            quiet.rayweb_quiet = True  # type: ignore[attr-defined]
            dispatcher.handlers[index] = (name, quiet)


def _apply_loopback() -> None:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when imported: imported before
    rayweb set it (``import ray`` first in a notebook), Ray takes this machine's outward
    address for its node and for a local cluster's 127.0.0.1 (where it then retries for
    ever). Apply the variable to the Ray already imported."""
    from ray._private import ray_constants

    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False


def _loopback_even_if_imported_first(address: str) -> None:
    """``_apply_loopback``, and Ray's token auth, which it reads when imported too and which
    cannot be applied afterwards: say so rather than fail deep inside Ray."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    _apply_loopback()
    if os.environ.get("RAY_AUTH_MODE") == "token" and not is_token_auth_enabled():
        from ..exception import InvalidError

        raise InvalidError(
            f"rayweb: Ray was imported before rayweb, without the token auth of the local "
            f"cluster {address!r}, and reads that setting only when imported. Suggestion: "
            "import rayweb before ray (or set RAY_AUTH_MODE=token before Python starts)."
        )


def hold() -> bool:
    """Count one more user of the embedded Ray this process started (False: not ours)."""
    if not _state.started_ray:
        return False
    _state.holders += 1
    return True


def release() -> None:
    """One user of the embedded Ray is done; the last one stops it."""
    _state.holders = max(0, _state.holders - 1)
    if _state.holders == 0:
        stop_embedded()


def data_path() -> str:
    """``gateway`` (rayweb's HAProxy in front of each replica's own server, the default) or
    ``serve`` (Serve's HTTP proxy only), from ``RAYWEB_DATA_PATH``."""
    value = os.environ.get("RAYWEB_DATA_PATH", "gateway").strip().lower() or "gateway"
    if value not in ("gateway", "serve"):
        from ..exception import InvalidError

        raise InvalidError(
            f"RAYWEB_DATA_PATH={value!r} is not a data path. Suggestion: RAYWEB_DATA_PATH=gateway "
            "(the default) or RAYWEB_DATA_PATH=serve."
        )
    return value


def request_metrics() -> bool:
    """Whether the gateway records each request in Serve's request metrics
    (``RAYWEB_REQUEST_METRICS``, on unless ``0``)."""
    return os.environ.get("RAYWEB_REQUEST_METRICS", "1").strip() != "0"


def ensure_serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Start Serve (controller and HTTP proxy, head node only) and rayweb's gateway if this
    cluster has none; return where clients connect.

    With the gateway (docs/architecture.md, "Data path"), HAProxy owns ``host:port`` and
    Serve's proxy listens on a private loopback port behind it. A cluster that already runs
    a gateway keeps its address; one whose Serve was started without rayweb is used as is.
    """
    import logging

    from ray import serve

    from ..services.gateway import find_gateway, start_gateway, started_gateway_address

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    use_gateway = data_path() == "gateway"
    gateway = find_gateway() if use_gateway else None
    if gateway is not None:
        import ray

        gw_host, gw_port, _, _ = ray.get(gateway.address.remote())
        if DOMAIN_ENV in os.environ:  # `--domain` (or the variable) named one: it holds now
            ray.get(gateway.set_domain.remote(gateway_domain()))
        return gw_host, gw_port
    running = _serve_running()
    if _state.started_ray and not running:
        _check_port_free(host, port)
    serve_port = free_port() if use_gateway and not running else port
    # The gateway's worker process starts while Serve starts (it only needs the port).
    gateway = (
        start_gateway(
            host,
            port,
            "127.0.0.1",
            serve_port,
            request_metrics(),
            gateway_nodes(),
            gateway_domain(),
        )
        if use_gateway and not running
        else None
    )
    serve.start(
        http_options={"host": "127.0.0.1" if use_gateway else host, "port": serve_port},
        proxy_location="HeadOnly",
        # rayweb reports deploy failures itself (one line + the user's traceback); the
        # controller would print them again with 30 lines of Serve internals.
        logging_config={"log_level": "CRITICAL", "enable_access_log": False},
    )
    if gateway is not None:
        from ..common import remote_error
        from ..exception import InvalidError

        try:
            started_gateway_address(gateway)
        except Exception as exc:
            # Serve started here without its gateway: the next serve would find it running
            # and take it for a Serve without rayweb; stop it so that a retry starts both.
            serve.shutdown()
            cause = remote_error(exc)
            if isinstance(cause, InvalidError):  # the port is taken: says which, and the fix
                raise InvalidError(str(cause)) from None
            raise InvalidError(
                f"rayweb: could not start the gateway on {host}:{port}: {cause}. "
                "Suggestion: RAYWEB_DATA_PATH=serve to use Serve's HTTP proxy only."
            ) from None
    elif running:
        host, port = _serve_proxy_address() or (host, port)
    return host, port


def gateway_nodes() -> bool:
    """``RAYWEB_GATEWAY_NODES``: ``head`` (the default: one HAProxy, on the head) or
    ``every`` (one on every node too, each routing to every replica: put a load balancer in
    front of them all). Read when the gateway starts."""
    from ..exception import InvalidError

    value = os.environ.get("RAYWEB_GATEWAY_NODES", "head").strip().lower() or "head"
    if value not in ("head", "every"):
        raise InvalidError(
            f"RAYWEB_GATEWAY_NODES={value!r} is not a choice. Suggestion: "
            "RAYWEB_GATEWAY_NODES=head (the default) or RAYWEB_GATEWAY_NODES=every."
        )
    return value == "every"


def gateway_domain() -> str | None:
    """``RAYWEB_DOMAIN`` (``--domain``): each endpoint also answers at the root of its own
    origin, ``http://<label>.<domain>:<port>/`` (default ``localhost``: browsers and curl
    resolve ``*.localhost`` to loopback, RFC 6761); empty: path prefixes only. Read when the
    gateway starts; set, it changes a running gateway's (one domain per cluster)."""
    return check_domain(os.environ.get(DOMAIN_ENV, "localhost"), DOMAIN_ENV + "=")


def gateway_running() -> bool:
    """Whether this cluster's requests come through rayweb's gateway (a class's web methods
    then share its pool: ``compiler.compile_app(pool=)``)."""
    from ..services.gateway import find_gateway

    return find_gateway() is not None


def origins_domain() -> str | None:
    """The domain of the endpoints' own origins on this cluster's gateway (None: none)."""
    import ray

    from ..services.gateway import find_gateway

    gateway = find_gateway()
    return ray.get(gateway.reach.remote())[2] if gateway is not None else None


def public_reach() -> Reach | None:
    """Where clients reach this cluster's endpoints: the gateway (and its origins' domain),
    else Serve's proxy (None: neither is known here)."""
    import ray

    from ..services.gateway import find_gateway

    gateway = find_gateway()
    if gateway is not None:
        return Reach(*ray.get(gateway.reach.remote()))
    proxy = _serve_proxy_address()
    return Reach(*proxy) if proxy else None


def _serve_proxy_address() -> tuple[str, int] | None:
    """Where this cluster's Serve HTTP proxy listens (None: no Serve client here)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        return None
    return client.http_config.host, client.http_config.port


def _serve_running() -> bool:
    """Whether this cluster already runs Serve (its controller actor exists)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def _check_port_free(host: str, port: int) -> None:
    """Fail fast on a taken port: Serve's proxy would otherwise die quietly and every
    request would be refused."""
    from ..exception import InvalidError

    why = port_unavailable(host, port)
    if why is not None:
        raise InvalidError(why)


def available_accelerators() -> set[str]:
    """Accelerator types some node of the cluster has (``accelerator_type:X`` resources)."""
    import ray

    prefix = "accelerator_type:"
    return {k[len(prefix) :] for k in ray.cluster_resources() if k.startswith(prefix)}


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


def stop_embedded() -> None:
    """Shut down Serve and Ray if this process started them; leave other clusters alone."""
    import ray

    if _state.started_ray and ray.is_initialized():
        # Endpoints were already deleted (so @exit ran); shutting Ray down ends the rest.
        ray.shutdown()
    _state.started_ray = False


def kill_embedded() -> None:
    """Kill the embedded Ray now (a second Ctrl-C, or what an interrupted start-up left:
    Ray's agents outlive a ``ray.init`` cut short): every process below this one, by PID
    (Ray's GCS, raylet, agents, workers and the gateway's keeper and HAProxy all are).
    Other clusters are never touched."""
    import signal

    from ..common import descendant_pids

    if not _state.launched:
        return
    for pid in descendant_pids(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _state.started_ray = False


class GatewayNotices:
    """What the gateway logged since this was made (its restarts), for `rayweb serve`."""

    def __init__(self) -> None:
        self.offset: int | None = None
        self.gateway: Any = None  # found once: the handle outlives the actor's restarts

    def poll(self, timeout: float = 2.0) -> list[str]:
        """New lines, or none when there is no gateway or it does not answer in time."""
        import ray

        from ..services.gateway import find_gateway

        try:
            self.gateway = self.gateway or find_gateway()
            if self.gateway is None:
                return []
            offset, lines = ray.get(self.gateway.events.remote(self.offset or 0), timeout=timeout)
        except Exception:
            return []
        first, self.offset = self.offset is None, offset
        return [] if first else lines
