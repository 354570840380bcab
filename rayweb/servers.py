"""``@app.server``: a class whose ``@enter`` starts an HTTP server on ``port`` (Modal's
``modal.Server``). No Ray here.

A Server is served like a ``@web_server``: in each replica a sidecar process runs the class's
``@enter`` (which starts the server, in any language), the replica waits until the port
answers and the gateway sends the server's traffic to it, at ``/<app>-<name>``. Proxy auth
is on unless ``unauthenticated=True``; ``target_concurrency`` turns autoscaling on (without
it the pool is ``min_containers`` containers, and one is started when a request arrives);
``max_concurrency`` caps each container, above it requests get 429.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .common import is_remote
from .decorators import PartialFunction, _Flags, _Parameter
from .exception import ExecutionError, InvalidError
from .functions import AppOptions, DeployedApp, Function
from .options import FunctionOptions
from .spec import ServerSpec, WebSpec


def check_server_args(
    *,
    port: Any,
    startup_timeout: Any,
    exit_grace_period: Any,
    routing_region: Any,
    target_concurrency: Any,
    max_concurrency: Any,
    scaleup_window: Any,
    experimental_options: dict[str, Any] | None,
) -> ServerSpec:
    """``@app.server``'s own arguments, checked in Modal's order with Modal's messages."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError("Port must be a positive integer between 1 and 65535.")
    if startup_timeout <= 0:
        raise InvalidError("The `startup_timeout` argument must be positive.")
    if exit_grace_period is not None and exit_grace_period < 0:
        raise InvalidError("The `exit_grace_period` argument must be non-negative.")
    if exit_grace_period is not None and exit_grace_period > 3600:
        raise InvalidError(
            "The `exit_grace_period` argument must not exceed 3600 seconds (1 hour)."
        )
    if not routing_region:
        raise InvalidError("The `routing_region` argument must be passed.")
    if target_concurrency is not None:
        _check_number("target_concurrency", target_concurrency)
        if not math.isfinite(target_concurrency):
            raise InvalidError(
                f"The `target_concurrency` argument must be finite, not {target_concurrency}."
            )
        if target_concurrency < 0:
            raise InvalidError("The `target_concurrency` argument must be non-negative.")
    if max_concurrency is not None:
        if experimental_options and "max_concurrency" in experimental_options:
            raise InvalidError(
                "`max_concurrency` cannot be set both as an app.server parameter and an "
                "experimental option."
            )
        _check_number("max_concurrency", max_concurrency)
        if not isinstance(max_concurrency, int):
            raise InvalidError("The `max_concurrency` argument must be an integer.")
        if max_concurrency < 0:
            raise InvalidError("The `max_concurrency` argument must be non-negative.")
        over = target_concurrency is not None and target_concurrency > max_concurrency
        if max_concurrency and over:
            raise InvalidError(
                "The `target_concurrency` argument cannot be greater than `max_concurrency`."
            )
    if scaleup_window is not None and scaleup_window <= 0:
        raise InvalidError("`scaleup_window` must be > 0")
    target = None
    if target_concurrency:  # Modal's rounding: (0, 1) becomes 1, else hundredths
        target = 1.0 if target_concurrency < 1 else round(float(target_concurrency), 2)
    return ServerSpec(
        target_concurrency=target,
        max_concurrency=max_concurrency or None,
        exit_grace_period=int(exit_grace_period or 0),
        scaleup_window=scaleup_window,
    )


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidError(f"The `{name}` argument must be a number, not {type(value).__name__}.")


def check_server_class(wrapped: Any, enable_memory_snapshot: bool) -> type[Any]:
    """The class under ``@app.server``, checked as Modal checks it (first problem raised)."""
    user_cls = wrapped.raw_f if isinstance(wrapped, PartialFunction) else wrapped
    if not inspect.isclass(user_cls):
        raise TypeError("The @app.server() decorator must be used on a class.")
    name = user_cls.__name__
    members = _members(user_cls)
    if any(isinstance(v, _Parameter) for v in vars(user_cls).values()):
        raise InvalidError(
            f"Server class {name} cannot use rayweb.parameter(). "
            "Servers do not support parameterization."
        )
    partials = [v for v in members.values() if isinstance(v, PartialFunction)]
    enters = [p for p in partials if p.flags & _Flags.ENTER]
    if not enters:
        raise InvalidError("Server class must have an @rayweb.enter() to setup the server.")
    if any(p.flags & (_Flags.METHOD | _Flags.BATCHED) for p in partials):
        raise InvalidError(
            f"Server class {name} cannot have `@rayweb.method()` decorated functions. "
            "Servers only expose HTTP endpoints."
        )
    if any(p.flags & _Flags.WEB for p in partials):
        raise InvalidError(
            f"Server class {name} cannot have web endpoint methods (`@rayweb.fastapi_endpoint`, "
            "`@rayweb.asgi_app`, ...). Servers already expose HTTP endpoints: the server "
            "started by @rayweb.enter() answers every path."
        )
    if any(p.params.snap for p in enters) and not enable_memory_snapshot:
        raise InvalidError(
            "Server must have `enable_memory_snapshot=True` to use `snap=True` on "
            "`@rayweb.enter` methods."
        )
    if isinstance(wrapped, PartialFunction):
        if wrapped.flags & _Flags.CONCURRENT:
            raise InvalidError(
                f"Server class {name} cannot be decorated with `@rayweb.concurrent()`. "
                "Please use `target_concurrency` param instead."
            )
        if wrapped.flags & _Flags.WEB:
            raise InvalidError(
                f"Server class {name} cannot be decorated with `@rayweb.web_server()`. "
                "Servers already expose HTTP endpoints."
            )
    if user_cls.__init__ is not object.__init__:
        raise InvalidError(
            f"Server class {name} cannot have a custom __init__ method. "
            "Use @rayweb.enter() for initialization logic instead."
        )
    return user_cls


class _Live:
    """A Server method in Modal's two forms: ``f(...)`` and ``await f.aio(...)`` (the
    blocking call on a thread)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        call = functools.partial(self._fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)


@dataclass(frozen=True)
class ServerSessionCredentials:
    """A sticky session of a ``@rayweb.sessioned()`` Server: send
    ``Modal-Authorization: Bearer <token>`` with each of its requests."""

    session_id: str
    token: str


class ServerSessions:
    """``server.sessions``: start and terminate sticky sessions (``@rayweb.sessioned()``)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.start = _Live(self._start)
        self.terminate = _Live(self._terminate)

    def _route(self) -> str:
        url = self._server._url()
        web = self._server.function.web
        if self._server.user_cls is not None and not (web is not None and web.sessioned):
            raise InvalidError("`sessions` requires `@rayweb.sessioned()` on the Server.")
        return str(url).rstrip("/").rsplit("/", 1)[-1]

    def _start(self, idle_timeout: int = 600) -> ServerSessionCredentials:
        """A new session: its requests go to one container until it is terminated or has
        had no request in flight for ``idle_timeout`` seconds."""
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, int) or idle_timeout <= 0:
            raise InvalidError("`idle_timeout` must be a positive integer.")
        from .callforms import invoker

        session_id, token = invoker().server_session("start", self._route(), idle_timeout)
        return ServerSessionCredentials(session_id=session_id, token=token)

    def _terminate(self, token: str) -> None:
        """End a session: its requests are refused from now on (ending one that has ended
        already is no error)."""
        from .callforms import invoker

        invoker().server_session("terminate", self._route(), token)


class Server:
    """A class registered with ``@app.server``: its ``@enter`` starts a server on ``port``.

    Example (``examples/server_sticky.py``)::

        @app.server(port=8000, unauthenticated=True, min_containers=2)
        class Echo:
            @rayweb.enter()
            def start(self):
                self.proc = subprocess.Popen(["python", "-m", "http.server", "8000"])
    """

    _rayweb_decorator = "@app.server()"

    def __init__(
        self,
        app: AppOptions,
        user_cls: type[Any] | None,
        options: FunctionOptions,
        spec: ServerSpec,
        web: WebSpec,
        name: str | None = None,
    ) -> None:
        self.app = app
        self.user_cls = user_cls
        self.options = options
        self.spec = spec
        self.tag = name or (user_cls.__name__ if user_cls is not None else "")
        self.__name__ = self.__qualname__ = self.tag
        if user_cls is not None:
            self.__doc__ = user_cls.__doc__
            self.__module__ = user_cls.__module__
            self.__qualname__ = user_cls.__qualname__
        self.enter_methods: list[str] = []
        self.exit_methods: list[str] = []
        for attr, value in _members(user_cls).items():
            if isinstance(value, PartialFunction) and value.flags & _Flags.ENTER:
                self.enter_methods.append(attr)
            if isinstance(value, PartialFunction) and value.flags & _Flags.EXIT:
                self.exit_methods.append(attr)
        # What the compiler, the driver and the replica handle: one web endpoint whose
        # "class" is this server (its @enter starts the server; there is no method to call).
        self.function: Function[Any, Any] = Function(
            app, self.tag, _no_call, options, web=web, cls=self
        )
        self.get_url = _Live(self._url)
        self.sessions = ServerSessions(self)

    def __repr__(self) -> str:
        return f"<rayweb.Server {self.tag!r} of App {self.app.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"'Server' object is not callable: {self.tag} runs in its own containers. "
            f"Suggestion: send HTTP requests to {self.tag}.get_url()."
        )

    @property
    def label(self) -> str:
        """The URL label, without the ``-dev`` suffix of ``rayweb serve``."""
        return self.function.label

    @classmethod
    def from_name(
        cls,
        app_name: str,
        name: str,
        *,
        environment_name: str | None = None,
        client: Any = None,
    ) -> Server:
        """A Server of an app running on this Ray cluster (``rayweb deploy`` or ``rayweb
        serve``), found when it is first used: ``Server.from_name("app", "VLLM").get_url()``."""
        return cls(
            DeployedApp(app_name), None, FunctionOptions(), ServerSpec(),
            WebSpec(kind="server"), name,
        )  # fmt: skip

    def _url(self) -> str | None:
        if self.function.web_url is not None:
            return self.function.web_url
        # In the app's own replicas (`Room.get_url()` in a web function) it is looked up.
        if self.user_cls is not None and not is_remote():
            raise ExecutionError(
                f"Server {self.tag} has no URL until its app is served. Suggestion: "
                "`with rayweb.serve(app):`, `rayweb serve file.py` or `rayweb deploy`."
            )
        from .callforms import invoker

        return str(invoker().web_url(str(self.app.name), self.tag, self.label))

    def _instantiate(self) -> Any:
        """The user's object (no ``__init__``: Servers take no parameters)."""
        if self.user_cls is None:
            raise ExecutionError(f"Server {self.tag} was looked up by name: its code is elsewhere.")
        return object.__new__(self.user_cls)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("get_url", None)
        state.pop("sessions", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.get_url = _Live(self._url)
        self.sessions = ServerSessions(self)


def _members(user_cls: type[Any] | None) -> dict[str, Any]:
    if user_cls is None:
        return {}
    return {k: v for klass in reversed(user_cls.__mro__[:-1]) for k, v in vars(klass).items()}


def _no_call() -> None:
    raise ExecutionError("A Server has no function to call: its @enter starts the server.")
