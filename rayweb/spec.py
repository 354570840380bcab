"""The metadata rayweb records about each endpoint: small frozen dataclasses, no Ray.

Decorators validate their arguments and record these specs; ``compiler.py`` fills in
rayweb's defaults and turns them into Ray Serve options in one step. Keeping them plain data
means the whole mapping can be tested without a cluster, and the same spec feeds
``rayweb.serve``, ``rayweb deploy`` and KubeRay.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .exception import InvalidError

WebKind = Literal["fastapi_endpoint", "asgi_app", "wsgi_app", "web_server", "server"]
# Kinds whose user code runs in a sidecar process that serves a port (``@web_server`` and
# ``@app.server``): the replica proxies to that port.
SIDECAR_KINDS = ("web_server", "server")

# Modal's GPU names (lowercased) -> Ray accelerator types (ray.util.accelerators).
GPU_TYPES: dict[str, str] = {
    "t4": "T4",
    "l4": "L4",
    "a10": "A10G",
    "a10g": "A10G",
    "a100": "A100",
    "a100-40gb": "A100-40G",
    "a100-80gb": "A100-80G",
    "l40s": "L40S",
    "h100": "H100",
    "h100!": "H100",
    "h200": "H200",
    "b200": "B200",
    "b300": "B300",
    "rtx-pro-6000": "RTX-PRO-6000",
    "v100": "V100",
}

MAX_LABEL_LENGTH = 63  # one DNS label, as on Modal
DEFAULT_TIMEOUT = 300  # seconds, Modal's default function timeout


@dataclass(frozen=True)
class WebSpec:
    """How an endpoint speaks HTTP: which web decorator, and its options."""

    kind: WebKind
    method: str = "GET"
    label: str | None = None
    docs: bool = False
    requires_proxy_auth: bool = False
    custom_domains: tuple[str, ...] = ()
    port: int | None = None
    startup_timeout: float = 5.0
    sessioned: bool = False  # @rayweb.sessioned() Server: every request in a sticky session

    @property
    def sidecar(self) -> bool:
        """Whether the user's server runs in a sidecar process behind the replica."""
        return self.kind in SIDECAR_KINDS


@dataclass(frozen=True)
class ServerSpec:
    """``@app.server``'s own options (the rest are ``@app.cls``'s)."""

    target_concurrency: float | None = None  # None or 0: no autoscaling (a fixed pool)
    max_concurrency: int | None = None  # None or 0: no limit; else 429 above it
    exit_grace_period: int = 0  # seconds in-flight requests may take at scale-down
    scaleup_window: int | None = None  # seconds of load before scaling up


@dataclass(frozen=True)
class Limits:
    """rayweb's own limits, enforced in the replica before user code runs.

    Each can be turned off with ``None``. Pass ``limits=rayweb.Limits(...)`` to ``App`` (for
    every endpoint) or to ``@app.function``/``@app.cls`` (for one endpoint).

    Attributes:
        max_request_body: bytes; a larger body gets 413 (before it is read when the request
            says its length).
        max_websocket_message: bytes; a larger client message closes the socket with 1009.
        rate_limit: requests per second per client IP, shared by all replicas of the endpoint;
            beyond it, 429 with ``Retry-After``.
        rate_limit_burst_s: how many seconds of ``rate_limit`` a client may use at once.
        request_timeout: seconds; a request still running then gets 504.
        body_timeout: seconds a request body may take per 16 KiB, else 408. The gateway holds
            a request until its body is complete (or 16 KiB of it arrived) before it takes
            a replica's slot, so slow clients never hold slots with small bodies; a larger
            body is read by the app, which gets a disconnect when it stalls.
    """

    max_request_body: int | None = 4 * 1024**3
    max_websocket_message: int | None = 2 * 1024**2
    rate_limit: float | None = 200.0
    rate_limit_burst_s: float = 5.0
    request_timeout: float | None = 150.0
    body_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        for name in (
            "max_request_body",
            "max_websocket_message",
            "rate_limit",
            "request_timeout",
            "body_timeout",
        ):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise InvalidError(
                    f"`Limits.{name}` must be a positive number, or None to turn it off; "
                    f"got {value!r}."
                )
        if self.rate_limit_burst_s <= 0:
            raise InvalidError("`Limits.rate_limit_burst_s` must be positive.")


@dataclass(frozen=True)
class SecretRef:
    """A secret as replicas see it: a name in the cluster's store (and required keys).

    ``values`` is set only on the driver for secrets given in code (``Secret.from_dict``,
    ``from_dotenv``, ``from_local_environ``, ``env=``): ``rayweb.serve`` stores them under
    ``name`` before deploying, and they never travel in the deployment's arguments.
    """

    name: str
    required_keys: tuple[str, ...] = ()
    values: dict[str, str] | None = field(default=None, repr=False, compare=False, hash=False)


@dataclass(frozen=True)
class ConcurrencySpec:
    """``@concurrent``: inputs one replica takes at once, and the autoscaler's target."""

    max_inputs: int
    target_inputs: int | None = None


@dataclass(frozen=True)
class GpuSpec:
    """One GPU request: ``accelerator`` is a Ray accelerator type, or None for any GPU."""

    accelerator: str | None
    count: int

    def __str__(self) -> str:
        name = self.accelerator or "any"
        return name if self.count == 1 else f"{name}:{self.count}"


@dataclass(frozen=True)
class ResourceSpec:
    """``gpu=``, ``cpu=`` and ``memory=`` (MiB) of ``@app.function``/``@app.cls``.

    ``gpu`` holds the choices in order of preference (Modal's fallback list).
    """

    gpu: tuple[GpuSpec, ...] = ()
    cpu: float | None = None
    memory: int | None = None


@dataclass(frozen=True)
class ScalingSpec:
    """Modal's container autoscaling knobs."""

    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: int | None = None


@dataclass(frozen=True)
class EndpointSpec:
    """Everything the compiler needs to know about one web endpoint."""

    tag: str  # "search", or "Model.web" for a method of an @app.cls
    label: str  # the URL label, without the "-dev" suffix
    web: WebSpec | None  # None: a function called with .remote() (no HTTP route)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    concurrency: ConcurrencySpec | None = None
    timeout: int = DEFAULT_TIMEOUT
    startup_timeout: int | None = None
    secrets: tuple[SecretRef, ...] = ()
    auth_headers: tuple[str, str] = ("Modal-Key", "Modal-Secret")
    runtime_env: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    limits: Limits = field(default_factory=Limits)
    batching: tuple[int, int] | None = None  # @batched: (max_batch_size, wait_ms)
    mounts: tuple[tuple[str, str], ...] = ()  # (mount path, volume directory under the root)
    links: tuple[tuple[str, str], ...] = ()  # Image.add_local_*: (remote path, local path)
    server: ServerSpec | None = None  # @app.server


def parse_gpu(gpu: str | Sequence[str] | None) -> tuple[GpuSpec, ...]:
    """Parse Modal's ``gpu=`` value: ``"L40S"``, ``"H100:2"``, ``"any"`` or a fallback list."""
    if gpu is None:
        return ()
    if isinstance(gpu, str):
        return (_parse_one_gpu(gpu),)
    if isinstance(gpu, Sequence) and gpu and all(isinstance(g, str) for g in gpu):
        return tuple(_parse_one_gpu(g) for g in gpu)
    raise InvalidError(
        f"Invalid GPU config: {gpu!r}. Value must be a string such as 'L40S', 'H100:2' or "
        "'any', or a non-empty list of such strings (tried in order)."
    )


def _parse_one_gpu(value: str) -> GpuSpec:
    name, _, count_text = value.strip().partition(":")
    count = 1
    if count_text:
        if not count_text.isdigit() or int(count_text) < 1:
            raise InvalidError(
                f"Invalid GPU count in {value!r}: it must be a positive integer, as in 'H100:2'."
            )
        count = int(count_text)
    key = name.lower()
    if key == "any":
        return GpuSpec(None, count)
    if key not in GPU_TYPES:
        known = ", ".join(sorted({v for v in GPU_TYPES.values()}))
        raise InvalidError(
            f"Unknown GPU type {name!r}. Known types: {known}, or 'any'. "
            "Suggestion: gpu='L40S' or gpu='any'."
        )
    return GpuSpec(GPU_TYPES[key], count)


_LABEL_INVALID = re.compile(r"[^a-z0-9-]+")


def make_label(*parts: str | None) -> str:
    """Modal's default label rule: join the parts with '-', lowercase, '_' -> '-'.

    Labels longer than one DNS label (63 characters) are cut and given a short hash so they
    stay unique.
    """
    raw = "-".join(p for p in parts if p)
    label = _LABEL_INVALID.sub("-", raw.lower().replace("_", "-")).strip("-")
    label = re.sub("-{2,}", "-", label)
    if not label:
        raise InvalidError(f"Cannot make a URL label from {raw!r}. Suggestion: pass label='name'.")
    if len(label) > MAX_LABEL_LENGTH:
        digest = hashlib.sha256(label.encode()).hexdigest()[:6]
        label = f"{label[: MAX_LABEL_LENGTH - 7].rstrip('-')}-{digest}"
    return label


def check_label(label: str) -> str:
    """Validate a user-given ``label=``: lowercase letters, digits and '-' (a DNS label)."""
    if not isinstance(label, str) or not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label):
        raise InvalidError(
            f"Invalid label {label!r}: a label must be 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit. Suggestion: label='my-endpoint'."
        )
    return label


@dataclass(frozen=True)
class CodeRef:
    """Where a replica finds the user's code.

    Either an importable module (``module`` + ``qualname``, with ``sys_path`` to prepend), or
    ``pickled``: the callable or class pickled by value (notebooks, ``__main__`` scripts and
    ``serialized=True``). ``attr`` names the method for web methods of an ``@app.cls``.
    """

    qualname: str
    tag: str = ""
    module: str | None = None
    sys_path: str | None = None
    pickled: bytes | None = field(default=None, repr=False)
    attr: str | None = None


SHIPPED = "working_dir:"  # a link's target in the code `rayweb deploy` shipped (+ its path)


@dataclass(frozen=True)
class ReplicaPayload:
    """The constructor argument of every rayweb replica: plain data only."""

    label: str
    code: CodeRef
    web: WebSpec
    max_inputs: int
    is_cls: bool = False
    enter_methods: tuple[str, ...] = ()
    exit_methods: tuple[str, ...] = ()
    secrets: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (store name, required keys)
    auth_headers: tuple[str, str] | None = None  # set when requires_proxy_auth
    sidecar: dict[str, Any] | None = field(default=None, hash=False)  # web_server actor options
    limits: Limits = field(default_factory=Limits)
    drain_s: float = 15.0  # at shutdown, how long direct-path requests may take to finish
    hot_swap: bool = False  # `rayweb serve`: swap in new source without a new process
    dev: bool = False  # `rayweb serve`/`app.run()`: .remote() calls reach the -dev functions
    gateway_maxconn: int = 4  # connections HAProxy may open to one replica
    wsgi_threads: int = 1  # the thread pool of a wsgi_app
    mounts: tuple[tuple[str, str], ...] = ()  # (mount path, volume directory under the root)
    links: tuple[tuple[str, str], ...] = ()  # Image.add_local_*: (remote path, local path)
    volume_root: str = ""  # the driver's RAYWEB_VOLUME_ROOT, resolved
    full_status: int | None = None  # @app.server(max_concurrency=): 429 when every slot is taken
    direct_hop: bool = False  # @app.server: the gateway may send requests to the server's port


@dataclass(frozen=True)
class Retries:
    """Modal's retry policy for a function's calls: ``retries=Retries(max_retries=3, ...)``.

    ``retries=N`` means ``Retries(max_retries=N, backoff_coefficient=1.0, initial_delay=1.0)``.
    The delay before retry ``k`` (from 0) is ``initial_delay * backoff_coefficient**k``,
    capped at ``max_delay``.
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise InvalidError(f"Invalid type for max_retries: {type(self.max_retries)}")
        if not 0 <= self.max_retries <= 10:
            raise InvalidError(
                f"Invalid retries number: {self.max_retries}. "
                "Function retries must be between 0 and 10."
            )
        if not 1.0 <= self.backoff_coefficient <= 10.0:
            raise InvalidError(
                "Invalid backoff_coefficient: must be between 1.0 and 10.0, inclusive."
            )
        if not 0.0 <= self.initial_delay <= 60.0:
            raise InvalidError("Invalid initial_delay: must be between 0 and 60 seconds.")
        if not 1.0 <= self.max_delay <= 60.0:
            raise InvalidError("Invalid max_delay: must be between 1 and 60 seconds.")

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.initial_delay * self.backoff_coefficient**attempt))


def parse_retries(value: Any) -> Retries | None:
    """``retries=`` of ``@app.function``/``@app.cls``: an int or a ``Retries``."""
    if value is None:
        return None
    if isinstance(value, Retries):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Retries(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0)
    raise InvalidError(
        f"Retries parameter must be an integer or instance of modal.Retries. Found: {type(value)}."
    )


FUNCTION_APP_PREFIX = "rayweb-fn-"


def function_app_name(app_name: str | None, tag: str, *, dev: bool) -> str:
    """The Serve application of a non-web function or ``@app.cls`` (no HTTP route): the same
    name wherever it is computed, on the driver or in a replica (``RAYWEB_DEV``)."""
    name = FUNCTION_APP_PREFIX + make_label(app_name or "app", tag)
    return f"{name}-dev" if dev else name


@dataclass(frozen=True)
class FunctionPayload:
    """The constructor argument of a function replica (``replica/function.py``)."""

    label: str  # the Serve application's name
    code: CodeRef
    max_inputs: int
    is_cls: bool = False
    enter_methods: tuple[str, ...] = ()
    exit_methods: tuple[str, ...] = ()
    secrets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    dev: bool = False  # so calls made from inside reach the same (dev) apps
    batching: tuple[int, int] | None = None  # @batched: (max_batch_size, wait_ms)
    retries: Retries | None = None  # told to callers that look it up by name (from_name)
    params: tuple[tuple[str, Any], ...] = ()  # a class's parameter set: its pool's instance
    mounts: tuple[tuple[str, str], ...] = ()  # (mount path, volume directory under the root)
    links: tuple[tuple[str, str], ...] = ()  # Image.add_local_*: (remote path, local path)
    volume_root: str = ""  # the driver's RAYWEB_VOLUME_ROOT, resolved
    # A class's pool: its fastapi/asgi/wsgi web methods, served by the same replicas
    # (``replica/pool.py``), each at its own label.
    routes: tuple[ReplicaPayload, ...] = ()
    hot_swap: bool = False  # `rayweb serve` swaps a pool's new source into its replicas
