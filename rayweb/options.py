"""The options of ``@app.function``/``@app.cls`` and ``App``, checked as Modal checks them
and turned into :class:`FunctionOptions`. No Ray here."""

from __future__ import annotations

import dataclasses
import posixpath
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from .exception import DeprecationError, InvalidError
from .image import Image
from .secret import Secret
from .spec import (
    DEFAULT_TIMEOUT,
    Limits,
    ResourceSpec,
    Retries,
    ScalingSpec,
    parse_gpu,
    parse_retries,
)
from .volume import Volume


@dataclass(frozen=True)
class FunctionOptions:
    """The validated keyword arguments of ``@app.function`` / ``@app.cls``."""

    image: Image | None = None
    secrets: tuple[Secret, ...] = ()
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    timeout: int = DEFAULT_TIMEOUT
    startup_timeout: int | None = None
    serialized: bool = False
    name: str | None = None
    limits: Limits | None = None
    retries: Retries | None = None
    volumes: tuple[tuple[str, Volume], ...] = ()  # (mount path, volume), checked


# Directories a mount would hide from every process of the node (rayweb links the path
# itself, not a private mount namespace as Modal's containers have).
SYSTEM_DIRS = (
    "/usr", "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot",
    "/var", "/run",
)  # fmt: skip
SYSTEM_TREES = ("/proc", "/sys", "/dev")


def check_volumes(volumes: Any) -> tuple[tuple[str, Volume], ...]:
    """``volumes={"/data": vol}`` checked as Modal checks it (``validate_mount_points``,
    ``validate_volumes``), plus rayweb's own rules: no system directory, no nested paths."""
    if volumes is None:
        return ()
    if not isinstance(volumes, Mapping):
        raise InvalidError(
            "`volume_likes` should be a dict[str | PurePosixPath, Volume], "
            f"got {type(volumes)} instead"
        )
    mounts: dict[str, Volume] = {}
    for raw, volume in volumes.items():
        path = PurePath(raw).as_posix()
        if path != posixpath.abspath(path):
            raise InvalidError(f"Volume {path} must be a canonical, absolute path.")
        if path == "/":
            raise InvalidError(f"Volume {path} cannot be mounted into root directory.")
        if path in ("/root", "/tmp"):
            raise InvalidError(f"Volume {path} cannot be mounted at '{path}'.")
        top = "/" + path.split("/")[1]
        if path in SYSTEM_DIRS or top in SYSTEM_TREES:
            raise InvalidError(
                f"Volume {path} cannot be mounted at a system directory: rayweb makes the "
                "mount path a link to the volume's directory on the node, which would hide "
                f"{top} from every process there. Suggestion: mount it under a path of its "
                "own, such as /data."
            )
        if not isinstance(volume, Volume):
            raise InvalidError(
                f"Object of type {type(volume)} mounted at '{path}' is not usable as a volume."
            )
        if path in mounts and mounts[path] != volume:
            raise InvalidError(
                f"Two volumes are mounted at {path}: {mounts[path].describe()} and "
                f"{volume.describe()}. Suggestion: give each its own path."
            )
        mounts[path] = volume
    return check_mount_layout(tuple(mounts.items()))


def check_mount_layout(mounts: tuple[tuple[str, Volume], ...]) -> tuple[tuple[str, Volume], ...]:
    """One volume at one path, and no mount path inside another (each path is one link)."""
    paths: dict[Volume, list[str]] = {}
    for path, volume in mounts:
        paths.setdefault(volume, []).append(path)
    for shared in paths.values():
        if len(shared) > 1:
            conflicting = ", ".join(shared)
            raise InvalidError(
                "The same Volume cannot be mounted in multiple locations for the same "
                f"function: {conflicting}"
            )
    ordered = sorted(mounts)
    pairs = [(x, y) for i, x in enumerate(ordered) for y in ordered[i + 1 :]]
    for (a, va), (b, vb) in pairs:
        if b.startswith(a + "/"):
            raise InvalidError(
                f"Volume mounts overlap: {va.describe()} at {a} and {vb.describe()} at {b} "
                "(one path is inside the other, and each mount path is one link to one "
                "volume). Suggestion: mount them side by side, such as /data/a and /data/b "
                "both under a plain directory, or /data and /models."
            )
    return tuple(ordered)


def merge_volumes(
    defaults: tuple[tuple[str, Volume], ...], given: tuple[tuple[str, Volume], ...]
) -> tuple[tuple[str, Volume], ...]:
    """The app's volumes with a function's over them (a path given twice: the function's)."""
    merged = {**dict(defaults), **dict(given)}
    return check_mount_layout(tuple(merged.items()))


def check_secrets(secrets: Any) -> tuple[Secret, ...]:
    if secrets is None:
        return ()
    if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
        raise InvalidError("`secrets=` has to be a list or tuple of `rayweb.Secret` objects")
    return tuple(secrets)


def check_limits(limits: Any) -> Limits | None:
    if limits is not None and not isinstance(limits, Limits):
        raise InvalidError(
            "`limits=` has to be a `rayweb.Limits` object, e.g. rayweb.Limits(rate_limit=None)"
        )
    return limits


def _number(name: str, value: Any, *, allow_tuple: bool) -> float | None:
    if value is None:
        return None
    if allow_tuple and isinstance(value, tuple) and len(value) == 2:
        value = value[0]  # Ray has no limits: the request is what it reserves
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidError(f"`{name}` must be a non-negative number, not {value!r}.")
    return float(value)


def _int_option(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(f"`{name}` must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidError(f"`{name}` must be non-negative, not {value}")
    return value


def function_options(
    *,
    image: Image | None,
    env: Mapping[str, str | None] | None,
    secrets: Collection[Secret] | None,
    gpu: str | Sequence[str] | None,
    cpu: Any,
    memory: Any,
    min_containers: Any,
    max_containers: Any,
    buffer_containers: Any,
    scaledown_window: Any,
    timeout: Any,
    startup_timeout: Any,
    serialized: bool,
    name: str | None,
    limits: Limits | None,
    retries: Any = None,
    volumes: Any = None,
) -> FunctionOptions:
    if image is not None and not isinstance(image, Image):
        raise InvalidError("`image=` has to be a `rayweb.Image` object")
    all_secrets = check_secrets(list(secrets) if secrets is not None else None)
    if env:
        all_secrets += (Secret.from_dict(dict(env)),)
    mins = _int_option("min_containers", min_containers)
    maxs = _int_option("max_containers", max_containers)
    if mins is not None and maxs is not None and mins > maxs:
        raise InvalidError(
            f"`min_containers` ({mins}) cannot be greater than `max_containers` ({maxs})"
        )
    if maxs == 0:
        raise InvalidError("`max_containers` must be at least 1.")
    window = _int_option("scaledown_window", scaledown_window)
    if window is not None and not 2 <= window <= 3600:
        raise InvalidError("`scaledown_window` must be between 2 and 3600 (inclusive)")
    if timeout is None:
        raise InvalidError(
            "The `timeout` parameter cannot be set to None: https://modal.com/docs/guide/timeouts"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 1 <= timeout <= 86400
    ):
        raise InvalidError("`timeout` must be between 1 second and 24 hours (86400).")
    if startup_timeout is not None and (
        isinstance(startup_timeout, bool)
        or not isinstance(startup_timeout, (int, float))
        or startup_timeout <= 0
    ):
        raise InvalidError("`startup_timeout` must be a positive number of seconds.")
    mem = _number("memory", memory, allow_tuple=True)
    return FunctionOptions(
        image=image,
        secrets=all_secrets,
        resources=ResourceSpec(
            gpu=parse_gpu(gpu),
            cpu=_number("cpu", cpu, allow_tuple=True),
            memory=int(mem) if mem is not None else None,
        ),
        scaling=ScalingSpec(
            min_containers=mins,
            max_containers=maxs,
            buffer_containers=_int_option("buffer_containers", buffer_containers),
            scaledown_window=window,
        ),
        timeout=int(timeout),
        startup_timeout=int(startup_timeout) if startup_timeout is not None else None,
        serialized=serialized,
        name=name,
        limits=check_limits(limits),
        retries=parse_retries(retries),
        volumes=check_volumes(volumes),
    )


def overridden(
    base: FunctionOptions,
    *,
    cpu: Any = None,
    memory: Any = None,
    gpu: str | Sequence[str] | None = None,
    secrets: Collection[Secret] = (),
    retries: Any = None,
    max_containers: Any = None,
    buffer_containers: Any = None,
    scaledown_window: Any = None,
    timeout: Any = None,
    volumes: Any = None,
) -> FunctionOptions:
    """``base`` with what ``Cls.with_options`` was given (None keeps the base's value;
    secrets are added), checked as the decorator checks them."""
    given = function_options(
        image=base.image, env=None, secrets=list(secrets), gpu=gpu, cpu=cpu, memory=memory,
        min_containers=None, max_containers=max_containers,
        buffer_containers=buffer_containers, scaledown_window=scaledown_window,
        timeout=base.timeout if timeout is None else timeout,
        startup_timeout=base.startup_timeout, serialized=base.serialized, name=base.name,
        limits=base.limits, retries=retries, volumes=volumes,
    )  # fmt: skip
    resources = dataclasses.replace(
        base.resources,
        **{k: v for k, v in vars(given.resources).items() if v not in (None, ())},
    )
    scaling = dataclasses.replace(
        base.scaling, **{k: v for k, v in vars(given.scaling).items() if v is not None}
    )
    mins, maxs = scaling.min_containers, scaling.max_containers
    if mins is not None and maxs is not None and mins > maxs:
        raise InvalidError(
            f"`min_containers` ({mins}) cannot be greater than `max_containers` ({maxs})"
        )
    return dataclasses.replace(
        base,
        secrets=base.secrets + given.secrets,
        resources=resources,
        scaling=scaling,
        timeout=given.timeout,
        retries=given.retries if retries is not None else base.retries,
        volumes=merge_volumes(base.volumes, given.volumes),
    )


_RENAMED = {
    "keep_warm": ("2025-02-24", "The `keep_warm` parameter has been renamed to `min_containers`."),
    "concurrency_limit": (
        "2025-02-24",
        "The `concurrency_limit` parameter has been renamed to `max_containers`.",
    ),
    "container_idle_timeout": (
        "2025-02-24",
        "The `container_idle_timeout` parameter has been renamed to `scaledown_window`.",
    ),
    "allow_concurrent_inputs": (
        "2025-04-09",
        "The `allow_concurrent_inputs` parameter is deprecated. "
        "Use the '@rayweb.concurrent' decorator instead.",
    ),
}

# Accepted for compatibility with Modal scripts; they have no meaning on a Ray cluster.
_NO_EFFECT = (
    "cloud",
    "region",
    "routing_region",
    "proxy",
    "nonpreemptible",
    "enable_memory_snapshot",
    "block_network",
    "restrict_modal_access",
    "i6pn",
    "ephemeral_disk",
    "single_use_containers",
    "experimental_options",
    "schedule",
    "network_file_systems",
    "include_source",
    "compute_region",
    "h2_enabled",
)


def check_kwargs(decorator: str, kwargs: dict[str, Any]) -> None:
    """Modal's keyword arguments that were renamed (an error naming the new one), that have
    no meaning on Ray (a warning), or that do not exist (TypeError)."""
    for key in kwargs:
        if key in _RENAMED:
            date, message = _RENAMED[key]
            raise DeprecationError(f"Deprecated on {date}: {message}")
    unknown = [k for k in kwargs if k not in _NO_EFFECT]
    if unknown:
        raise TypeError(
            f"App.{decorator}() got unexpected keyword argument(s): {', '.join(unknown)}"
        )
    ignored = [k for k, v in kwargs.items() if v not in (None, False, {}, [], ())]
    if ignored:
        warnings.warn(
            f"rayweb: {', '.join(ignored)} has no effect on a Ray cluster and is ignored.",
            stacklevel=3,
        )
