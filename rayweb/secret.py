"""``rayweb.Secret``: environment variables for replicas, as in Modal.

``from_dict``, ``from_local_environ`` and ``from_dotenv`` hold their values in the driver;
``rayweb.serve`` puts them in the cluster's secret store before deploying. ``from_name`` refers
to a secret created with ``rayweb secret create``. Either way a replica fetches the values
from the store at start, so they are never part of the deployment's arguments or config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import is_remote
from .exception import InvalidError
from .spec import SecretRef


@dataclass(frozen=True, eq=False)
class Secret:
    """A set of environment variables for a function's replicas."""

    _values: Mapping[str, str] = field(default_factory=dict, repr=False)
    name: str | None = None
    required_keys: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (a notebook's function shipped by value, say): travel without the values.
        # Replicas get them from the cluster's store, never from pickles.
        return (_redacted, (self.name, self.required_keys, tuple(sorted(self._values))))

    def __repr__(self) -> str:  # never show values
        if self.name:
            return f"Secret.from_name({self.name!r})"
        return f"Secret(keys={sorted(self._values)})"

    @staticmethod
    def from_dict(env_dict: Mapping[str, str | None] | None = None) -> Secret:
        """Values given in code; keys whose value is None are dropped (Modal's rule)."""
        env_dict = {} if env_dict is None else env_dict
        if not isinstance(env_dict, Mapping):
            raise InvalidError("`Secret.from_dict` takes a dict of strings to strings.")
        values: dict[str, str] = {}
        for key, value in env_dict.items():
            if value is None:
                continue
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidError(
                    f"Secret keys and values must be strings; got {type(key).__name__} key "
                    f"{key!r} with a {type(value).__name__} value."
                )
            values[key] = value
        return Secret(values)

    @staticmethod
    def from_local_environ(env_keys: Sequence[str]) -> Secret:
        """Copy the named variables from the local environment."""
        values: dict[str, str] = {}
        remote = is_remote()
        for key in env_keys:
            if key not in os.environ and remote:
                continue  # a replica re-importing the module: values came with the deploy
            if key not in os.environ:
                raise InvalidError(
                    f"Could not find local environment variable '{key}' "
                    "for Secret.from_local_environ"
                )
            values[key] = os.environ[key]
        return Secret(values)

    @staticmethod
    def from_dotenv(path: str | Path | None = None, *, filename: str = ".env") -> Secret:
        """Read a ``.env`` file: from ``path`` (a file or a directory, searched upwards) or
        from the current directory upwards."""
        start = Path(path) if path is not None else Path.cwd()
        if (
            start.is_file()
            and start.name != filename
            and path is not None
            and str(path).endswith(".py")
        ):
            start = start.parent
        candidates = [start] if start.is_file() else [d / filename for d in (start, *start.parents)]
        for candidate in candidates:
            if candidate.is_file():
                return Secret(_parse_dotenv(candidate.read_text()))
        return Secret({})

    @staticmethod
    def from_name(
        name: str, *, environment_name: str | None = None, required_keys: Sequence[str] = ()
    ) -> Secret:
        """A named secret stored on the cluster (``rayweb secret create NAME KEY=VALUE``)."""
        if not isinstance(name, str) or not name:
            raise InvalidError("Secret.from_name needs a non-empty name.")
        if environment_name is not None:
            raise InvalidError(
                "rayweb has no environments: a cluster keeps one set of secrets (`rayweb secret "
                f"list`). Suggestion: Secret.from_name({name!r}) without environment_name=."
            )
        return Secret({}, name=name, required_keys=tuple(required_keys))

    def ref(self) -> SecretRef:
        """How replicas find this secret: its store name (values stay with the driver)."""
        if self.name is not None:
            return SecretRef(self.name, self.required_keys)
        canonical = json.dumps(sorted(self._values.items())).encode()
        digest = hashlib.sha256(canonical).hexdigest()[:24]
        return SecretRef(f"_inline-{digest}", (), dict(self._values))


def _redacted(name: str | None, required_keys: tuple[str, ...], keys: tuple[str, ...]) -> Secret:
    return Secret({key: "" for key in keys}, name=name, required_keys=required_keys)


def _parse_dotenv(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values
