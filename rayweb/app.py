"""``rayweb.App``: registers functions and classes, as ``modal.App`` does.

``App.function`` and ``App.cls`` validate Modal's keyword arguments at decoration time and
wrap the callable into a :class:`~rayweb.functions.Function` or :class:`~rayweb.functions.Cls`.
Nothing here touches Ray: serving happens in ``rayweb.driver``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

from typing_extensions import ParamSpec

from .classes import Cls
from .decorators import PartialFunction, _Flags
from .exception import InvalidError
from .functions import Function
from .image import Image
from .options import (
    FunctionOptions,
    check_kwargs,
    check_limits,
    check_secrets,
    check_volumes,
    function_options,
    merge_volumes,
)
from .secret import Secret
from .servers import Server, check_server_args, check_server_class
from .spec import DEFAULT_TIMEOUT, Limits, WebSpec

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


class App:
    """A group of functions and classes that are served and deployed together.

    Example (``examples/fastapi_endpoint.py``)::

        app = rayweb.App("api-service")

        @app.function()
        @rayweb.fastapi_endpoint()
        def search(query: str, limit: int = 10) -> dict: ...
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        image: Image | None = None,
        secrets: Sequence[Secret] = (),
        volumes: Mapping[str, Any] | None = None,
        include_source: bool = True,
        limits: Limits | None = None,
        auth_headers: tuple[str, str] = ("Modal-Key", "Modal-Secret"),
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidError("Invalid value for `name`: Must be string.")
        if image is not None and not isinstance(image, Image):
            raise InvalidError("`image=` has to be a `rayweb.Image` object")
        self.volumes = check_volumes(volumes)  # (mount path, Volume): every function's
        self.name = name
        self.tags = dict(tags or {})
        self.image = image
        self.secrets = check_secrets(secrets)
        self.limits = check_limits(limits)
        if not (
            isinstance(auth_headers, tuple)
            and len(auth_headers) == 2
            and all(isinstance(h, str) and h for h in auth_headers)
        ):
            raise InvalidError(
                "`auth_headers=` takes the (key header, secret header) names, "
                "e.g. ('Modal-Key', 'Modal-Secret')."
            )
        self.auth_headers = auth_headers
        self.registered_functions: dict[str, Function[Any, Any]] = {}
        self.registered_classes: dict[str, Cls] = {}
        self.registered_servers: dict[str, Server] = {}
        self.local_entrypoints: dict[str, Callable[..., Any]] = {}

    def __repr__(self) -> str:
        return f"rayweb.App({self.name!r})"

    @property
    def web_endpoints(self) -> list[Function[Any, Any]]:
        """Every web function and web method, in registration order."""
        out = [f for f in self.registered_functions.values() if f.is_web]
        for cls in self.registered_classes.values():
            out.extend(cls.web_functions)
        out.extend(server.function for server in self.registered_servers.values())
        return out

    @property
    def owners(self) -> list[Any]:
        """Every function, class and server: what mounts volumes and is shipped."""
        return [
            *self.registered_functions.values(),
            *self.registered_classes.values(),
            *self.registered_servers.values(),
        ]

    def function(
        self,
        _warn_parentheses_missing: Any = None,
        *,
        image: Image | None = None,
        env: Mapping[str, str | None] | None = None,
        secrets: Collection[Secret] | None = None,
        gpu: str | Sequence[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
        timeout: int | None = DEFAULT_TIMEOUT,
        startup_timeout: int | None = None,
        retries: Any = None,
        serialized: bool = False,
        name: str | None = None,
        limits: Limits | None = None,
        volumes: Mapping[str, Any] | None = None,
        max_inputs: int | None = None,
        is_generator: bool | None = None,
        **kwargs: Any,
    ) -> Callable[[Callable[P, R] | PartialFunction[P, R]], Function[P, R]]:
        """Register a function; put it above ``@rayweb.fastapi_endpoint()`` and friends."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("Did you forget parentheses? Suggestion: `@app.function()`.")
        check_kwargs("function", kwargs)
        if max_inputs is not None and max_inputs != 1:
            raise InvalidError(
                "`max_inputs` only accepts 1 (one input per container); "
                "use @rayweb.concurrent(max_inputs=...) for concurrency."
            )
        options = function_options(
            image=image, env=env, secrets=secrets, gpu=gpu, cpu=cpu, memory=memory,
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window,
            timeout=timeout, startup_timeout=startup_timeout, serialized=serialized, name=name,
            limits=limits, retries=retries, volumes=volumes,
        )  # fmt: skip
        options = self._with_app_volumes(options)

        def wrapper(f: Callable[P, R] | PartialFunction[P, R]) -> Function[P, R]:
            if isinstance(f, (Function, Cls)):
                raise InvalidError("Cannot apply `@app.function` twice to the same object.")
            if isinstance(f, PartialFunction):
                raw, flags, params = f.raw_f, f.flags, f.params
                if flags & (_Flags.ENTER | _Flags.EXIT | _Flags.METHOD):
                    raise InvalidError(
                        "Lifecycle and `@rayweb.method` decorators only apply to methods of an "
                        "`@app.cls` class. Suggestion: move this function into a class."
                    )
                concurrency = f.concurrency()
                batching = f.batching()
            else:
                raw, params, concurrency, batching = f, None, None, None
            _check_function_target(raw, serialized)
            web = params.web if params else None
            if web is not None and retries is not None:
                raise InvalidError("Web Functions do not support retries.")
            tag = name or raw.__name__
            if tag in self.registered_functions or tag in self.registered_classes:
                warnings.warn(
                    f"rayweb: {tag!r} is registered twice on app {self.name!r}; "
                    "the later definition replaces the earlier one.",
                    stacklevel=2,
                )
            function = Function(
                self, tag, raw, options, web=web, concurrency=concurrency, batching=batching
            )
            self.registered_functions[tag] = function
            return function

        return wrapper

    @overload
    def cls(self, _warn_parentheses_missing: C) -> Any: ...
    @overload
    def cls(
        self, _warn_parentheses_missing: None = None, **kwargs: Any
    ) -> Callable[[Any], Cls]: ...
    def cls(
        self,
        _warn_parentheses_missing: Any = None,
        *,
        image: Image | None = None,
        env: Mapping[str, str | None] | None = None,
        secrets: Collection[Secret] | None = None,
        gpu: str | Sequence[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
        timeout: int | None = DEFAULT_TIMEOUT,
        startup_timeout: int | None = None,
        retries: Any = None,
        serialized: bool = False,
        limits: Limits | None = None,
        volumes: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Register a class whose ``@enter`` runs once per replica and whose web methods
        become endpoints. Put ``@rayweb.concurrent`` (if any) between it and ``class``."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("Did you forget parentheses? Suggestion: `@app.cls()`.")
        check_kwargs("cls", kwargs)
        options = function_options(
            image=image, env=env, secrets=secrets, gpu=gpu, cpu=cpu, memory=memory,
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window,
            timeout=timeout, startup_timeout=startup_timeout, serialized=serialized, name=None,
            limits=limits, retries=retries, volumes=volumes,
        )  # fmt: skip
        options = self._with_app_volumes(options)

        def wrapper(user_cls: Any) -> Cls:
            if isinstance(user_cls, (Function, Cls)):
                raise InvalidError("Cannot apply `@app.cls` twice to the same object.")
            concurrency = None
            if isinstance(user_cls, PartialFunction):
                if user_cls.flags & _Flags.SESSIONED:
                    raise InvalidError(
                        "`@rayweb.sessioned()` can only be used with `@app.server()`. "
                        "Suggestion: @app.server(port=...) for a class whose @enter starts a "
                        "server."
                    )
                concurrency = user_cls.concurrency()
                user_cls = user_cls.raw_f
            if not inspect.isclass(user_cls):
                raise TypeError("The @app.cls decorator must be used on a class.")
            cls = Cls(self, user_cls, options, concurrency)
            if retries is not None and cls.web_functions:
                raise InvalidError("Web Functions do not support retries.")
            self.registered_classes[cls.tag] = cls
            return cls

        return wrapper

    def server(
        self,
        *,
        image: Image | None = None,
        env: Mapping[str, str | None] | None = None,
        secrets: Collection[Secret] | None = None,
        gpu: str | Sequence[str] | None = None,
        serialized: bool = False,
        volumes: Mapping[str, Any] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        target_concurrency: float | None = None,
        max_concurrency: int | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaleup_window: int | None = None,
        scaledown_window: int | None = None,
        startup_timeout: int = 30,
        name: str | None = None,
        port: int = 8000,
        unauthenticated: bool = False,
        exit_grace_period: int = 0,
        routing_region: str = "us-east",
        enable_memory_snapshot: bool = False,
        experimental_options: dict[str, Any] | None = None,
        limits: Limits | None = None,
        **kwargs: Any,
    ) -> Callable[[Any], Server]:
        """Register a class whose ``@rayweb.enter()`` starts an HTTP server on ``port`` (any
        language): each container's server gets the requests for ``/<app>-<name>``, with
        proxy auth unless ``unauthenticated=True``. Example: ``examples/server_sticky.py``."""
        spec = check_server_args(
            port=port, startup_timeout=startup_timeout, exit_grace_period=exit_grace_period,
            routing_region=routing_region, target_concurrency=target_concurrency,
            max_concurrency=max_concurrency, scaleup_window=scaleup_window,
            experimental_options=experimental_options,
        )  # fmt: skip
        # Accepted as on Modal, but one cluster has one region and no snapshots: say so.
        given: dict[str, Any] = {
            "routing_region": routing_region if routing_region != "us-east" else None,
            "enable_memory_snapshot": enable_memory_snapshot,
            "experimental_options": experimental_options,
        }
        check_kwargs("server", {**kwargs, **given})
        options = function_options(
            image=image, env=env, secrets=secrets, gpu=gpu, cpu=cpu, memory=memory,
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window,
            timeout=DEFAULT_TIMEOUT, startup_timeout=startup_timeout, serialized=serialized,
            name=name, limits=limits, retries=None, volumes=volumes,
        )  # fmt: skip
        options = self._with_app_volumes(options)
        web = WebSpec(
            kind="server",
            port=port,
            startup_timeout=float(startup_timeout),
            requires_proxy_auth=not unauthenticated,
        )

        def wrapper(wrapped: Any) -> Server:
            user_cls = check_server_class(wrapped, enable_memory_snapshot)
            if isinstance(wrapped, PartialFunction) and wrapped.flags & _Flags.SESSIONED:
                server_web = dataclasses.replace(web, sessioned=True)
            else:
                server_web = web
            server = Server(self, user_cls, options, spec, server_web, name)
            self.registered_servers[server.tag] = server
            return server

        return wrapper

    def _with_app_volumes(self, options: FunctionOptions) -> FunctionOptions:
        """The app's ``volumes=`` under the function's own (Modal merges them the same way)."""
        if not self.volumes:
            return options
        return dataclasses.replace(options, volumes=merge_volumes(self.volumes, options.volumes))

    @contextlib.contextmanager
    def run(self, *, detach: bool = False, interactive: bool = False) -> Iterator[App]:
        """``with app.run():`` deploys every function, class and web endpoint of this app on
        Ray (an embedded local Ray unless one is initialized), so ``.remote()`` and friends
        work, and deletes them on exit. Like Modal's ephemeral apps, web URLs get ``-dev``."""
        import rayweb  # the facade: driver code is reached through it, not imported here

        handle = rayweb.serve(self, dev=True, quiet=True)
        try:
            yield self
        finally:
            handle.stop()

    def deploy(
        self,
        *,
        name: str | None = None,
        environment_name: str | None = None,
        tag: str | None = None,
        client: Any = None,
    ) -> App:
        """Deploy this app persistently, as ``rayweb deploy`` does (web endpoints, functions
        and classes stay up after this process exits): onto the Ray cluster this process is
        connected to, else the one ``RAY_ADDRESS`` names."""
        import rayweb  # the facade: driver code is reached through it, not imported here

        if name:
            self.name = name
        rayweb._deploy(self)
        return self

    def local_entrypoint(
        self, _warn_parentheses_missing: Any = None, *, name: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register a function to run locally (``rayweb run``); returned unchanged."""

        def wrapper(f: Callable[P, R]) -> Callable[P, R]:
            key = name or f.__name__
            if key in self.local_entrypoints:
                raise InvalidError(
                    f"Duplicate local entrypoint name: {key}. "
                    "Local entrypoint names must be unique."
                )
            self.local_entrypoints[key] = f
            return f

        return wrapper

    def include(self, other: App, /, inherit_tags: bool = True) -> App:
        """Add another app's functions and classes to this one."""
        self.registered_functions.update(other.registered_functions)
        self.registered_classes.update(other.registered_classes)
        self.registered_servers.update(other.registered_servers)
        if inherit_tags:
            self.tags = {**other.tags, **self.tags}
        return self


def _check_function_target(raw: Any, serialized: bool) -> None:
    if inspect.isclass(raw):
        raise TypeError(
            "The `@app.function` decorator cannot be used on a class. "
            "Please use `@app.cls` instead."
        )
    if not callable(raw):
        raise InvalidError(f"`@app.function` must decorate a function, not {raw!r}.")
    qualname = getattr(raw, "__qualname__", "")
    if "<locals>" in qualname:
        if not serialized:
            raise InvalidError(
                "The `@app.function` decorator must apply to functions in global scope, "
                "unless `serialized=True` is set. Suggestion: move it to the module level, "
                "or pass serialized=True."
            )
    elif "." in qualname:
        raise InvalidError(
            "The `@app.function` decorator cannot be used on class methods. Swap with "
            "`@rayweb.method` or one of the Web Function decorators. Example: \n\n"
            "```python\n@app.cls()\nclass MyClass:\n    @rayweb.method()\n"
            "    def f(self, x):\n        ...\n```\n"
        )
