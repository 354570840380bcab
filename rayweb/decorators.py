"""Modal's function decorators: each validates its arguments and records a spec fragment.

A decorated callable becomes a :class:`PartialFunction`: the original callable plus a
:class:`PartialParams`. ``@app.function`` / ``@app.cls`` consume it later. Stacking rules and
messages follow Modal 1.x (see shared/modal_api.md, section 3.2), with ``rayweb`` in the names.
"""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, overload

from typing_extensions import ParamSpec

from .exception import DeprecationError, InvalidError
from .spec import ConcurrencySpec, WebSpec, check_label

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Flags(enum.IntFlag):
    WEB = 1
    METHOD = 2
    BATCHED = 4
    ENTER = 8
    EXIT = 16
    CONCURRENT = 32
    SESSIONED = 64

    INTERFACE = WEB | METHOD | BATCHED
    LIFECYCLE = ENTER | EXIT


@dataclass(frozen=True)
class PartialParams:
    """What the decorators said about one callable (or, for ``@concurrent``, one class)."""

    web: WebSpec | None = None
    max_inputs: int | None = None
    target_inputs: int | None = None
    snap: bool = False
    is_generator: bool | None = None
    max_batch_size: int | None = None
    wait_ms: int | None = None


class PartialFunction(Generic[P, R]):
    """A callable recorded by a rayweb decorator, waiting for ``@app.function``/``@app.cls``.

    Calling it calls the original function, so decorated code stays plain Python.
    """

    def __init__(self, raw_f: Callable[P, R], flags: _Flags, params: PartialParams) -> None:
        self.raw_f = raw_f
        self.flags = flags
        self.params = params
        functools.update_wrapper(self, raw_f)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.raw_f(*args, **kwargs)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # Inside a class body, instances see an ordinary bound method.
        if obj is None:
            return self
        return self.raw_f.__get__(obj, objtype)

    def concurrency(self) -> ConcurrencySpec | None:
        """The ``@concurrent`` spec; raises Modal's TypeError when ``max_inputs`` is missing."""
        if not self.flags & _Flags.CONCURRENT:
            return None
        if self.params.max_inputs is None:
            raise TypeError("`@rayweb.concurrent()` missing required argument: `max_inputs`.")
        return ConcurrencySpec(self.params.max_inputs, self.params.target_inputs)

    def batching(self) -> tuple[int, int] | None:
        """``@batched``'s (max_batch_size, wait_ms), if it was applied."""
        if not self.flags & _Flags.BATCHED:
            return None
        return int(self.params.max_batch_size or 1), int(self.params.wait_ms or 0)

    def __repr__(self) -> str:
        return f"<rayweb.PartialFunction {getattr(self.raw_f, '__qualname__', self.raw_f)!r}>"

    def stack(self, flags: _Flags, params: PartialParams) -> PartialFunction[P, R]:
        """Combine with one more decorator, enforcing Modal's composition rules."""
        both = self.flags | flags
        if (self.flags & _Flags.WEB) and (flags & _Flags.WEB):
            raise InvalidError("Cannot set `webhook_config` twice.")
        if (self.flags & flags & _Flags.CONCURRENT) == _Flags.CONCURRENT:
            raise InvalidError("Cannot set `max_concurrent_inputs` twice.")
        if (both & _Flags.WEB) and (both & (_Flags.METHOD | _Flags.BATCHED)):
            raise InvalidError(
                "Callable decorators cannot be combined with web interface decorators."
            )
        if (both & _Flags.INTERFACE) and (both & _Flags.LIFECYCLE):
            raise InvalidError("Interface decorators cannot be combined with lifecycle decorators.")
        merged = replace(
            self.params,
            **{k: v for k, v in params.__dict__.items() if v is not None and v is not False},
        )
        return PartialFunction(self.raw_f, self.flags | flags, merged)


def _target_error(name: str, target: Any) -> None:
    """Reject a decorator applied on top of an app decorator, with Modal's hint.

    ``Function`` and ``Cls`` (``functions.py``, which imports this module) say which app
    decorator made them in ``_rayweb_decorator``."""
    made_by = getattr(type(target), "_rayweb_decorator", None)
    if isinstance(made_by, str):
        raise InvalidError(
            f"Cannot stack `@rayweb.{name}` on top of `{made_by}`. "
            "Hint: swap the order of the decorators."
        )


def _apply(
    name: str, target: Any, flags: _Flags, params: PartialParams, *, allow_class: bool = False
) -> PartialFunction[Any, Any]:
    _target_error(name, target)
    if isinstance(target, PartialFunction):
        return target.stack(flags, params)
    if inspect.isclass(target) and not allow_class:
        raise InvalidError(
            f"Cannot apply `@rayweb.{name}` to a class. "
            "Hint: consider applying to a method instead."
        )
    if not callable(target):
        raise InvalidError(f"`@rayweb.{name}` must be applied to a function, not {target!r}.")
    return PartialFunction(target, flags, params)


def _no_positional(name: str, args: tuple[Any, ...]) -> None:
    if args:
        raise _ParenthesesError(
            f"Positional arguments are not allowed. Did you forget parentheses? "
            f"Suggestion: `@rayweb.{name}()`."
        )


class _ParenthesesError(InvalidError, TypeError):
    """Bare ``@rayweb.asgi_app`` (no parentheses): a TypeError in Modal, an InvalidError here."""


def _check_custom_domains(custom_domains: Iterable[str] | None) -> tuple[str, ...]:
    if custom_domains is None:
        return ()
    if isinstance(custom_domains, str):
        raise InvalidError("custom_domains must be `Iterable[str]` but is `str` instead.")
    return tuple(custom_domains)


def _check_label(label: str | None) -> str | None:
    return None if label is None else check_label(label)


def _has_required_non_self_params(f: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return False
    params = list(sig.parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return any(
        p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in params
    )


def _factory_decorator(
    name: str, spec: WebSpec
) -> Callable[[Callable[..., Any]], PartialFunction[Any, Any]]:
    """The shared checks of asgi_app / wsgi_app / web_server (nullary sync factories)."""

    def wrapper(f: Callable[..., Any]) -> PartialFunction[Any, Any]:
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if inspect.isfunction(raw):
            if inspect.iscoroutinefunction(raw) or inspect.isasyncgenfunction(raw):
                raise InvalidError(
                    f"The `@rayweb.{name}` decorator can't be applied to an async function."
                )
            if inspect.isgeneratorfunction(raw):
                raise InvalidError("Webhooks cannot be generators")
            if _has_required_non_self_params(raw):
                raise InvalidError(
                    f"Functions decorated by `@rayweb.{name}` can't have parameters."
                )
        return _apply(name, f, _Flags.WEB, PartialParams(web=spec))

    return wrapper


def fastapi_endpoint(
    *_args: Any,
    method: str = "GET",
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[Callable[P, R]], PartialFunction[P, R]]:
    """Expose a function as a one-route FastAPI app: its parameters become query/body fields.

    Example (``examples/fastapi_endpoint.py``)::

        @app.function()
        @rayweb.fastapi_endpoint()
        def search(query: str, limit: int = 10) -> dict: ...
    """
    _no_positional("fastapi_endpoint", _args)
    spec = WebSpec(
        kind="fastapi_endpoint",
        method=str(method).upper(),
        label=_check_label(label),
        docs=bool(docs),
        requires_proxy_auth=bool(requires_proxy_auth),
        custom_domains=_check_custom_domains(custom_domains),
    )

    def wrapper(f: Callable[P, R]) -> PartialFunction[P, R]:
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw):
            raise InvalidError(
                "Webhooks cannot be generators. If you want a streaming response, return a "
                "`fastapi.responses.StreamingResponse` from the function."
            )
        return _apply("fastapi_endpoint", f, _Flags.WEB, PartialParams(web=spec))

    return wrapper


def web_endpoint(*args: Any, **kwargs: Any) -> Any:
    """Removed in Modal 1.0; kept so that old scripts get the rename in the error."""
    raise DeprecationError(
        "Deprecated on 2025-03-05: The `@rayweb.web_endpoint` decorator has been renamed to "
        "`@rayweb.fastapi_endpoint`."
    )


def asgi_app(
    *_args: Any,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Callable[..., Any]], PartialFunction[Any, Any]]:
    """Serve the ASGI app (FastAPI, Starlette, raw ASGI) that the decorated factory returns.

    The factory runs once per replica, after ``@enter``; the app's lifespan is honoured.
    Example: ``examples/asgi_app.py``.
    """
    _no_positional("asgi_app", _args)
    spec = WebSpec(
        kind="asgi_app",
        label=_check_label(label),
        requires_proxy_auth=bool(requires_proxy_auth),
        custom_domains=_check_custom_domains(custom_domains),
    )
    return _factory_decorator("asgi_app", spec)


def wsgi_app(
    *_args: Any,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Callable[..., Any]], PartialFunction[Any, Any]]:
    """Serve the WSGI app (Flask, Django, ...) that the decorated factory returns.

    Example: ``examples/wsgi_flask.py``.
    """
    _no_positional("wsgi_app", _args)
    spec = WebSpec(
        kind="wsgi_app",
        label=_check_label(label),
        requires_proxy_auth=bool(requires_proxy_auth),
        custom_domains=_check_custom_domains(custom_domains),
    )
    return _factory_decorator("wsgi_app", spec)


def web_server(
    port: int,
    *,
    startup_timeout: float = 5.0,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Callable[..., Any]], PartialFunction[Any, Any]]:
    """Put the HTTP server that the decorated function starts (on ``port``) on the web."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError(
            "First argument of `@web_server` must be a local port, such as `@web_server(8000)`."
        )
    if not isinstance(startup_timeout, (int, float)) or startup_timeout <= 0:
        raise InvalidError("The `startup_timeout` argument of `@web_server` must be positive.")
    spec = WebSpec(
        kind="web_server",
        port=port,
        startup_timeout=float(startup_timeout),
        label=_check_label(label),
        requires_proxy_auth=bool(requires_proxy_auth),
        custom_domains=_check_custom_domains(custom_domains),
    )
    return _factory_decorator("web_server", spec)


def concurrent(
    _warn_parentheses_missing: Any = None,
    *,
    max_inputs: int | None = None,
    target_inputs: int | None = None,
) -> Callable[[T], Any]:
    """Let one replica take up to ``max_inputs`` requests at once (Serve's max_ongoing_requests).

    ``target_inputs`` is what the autoscaler aims for; a replica can burst to ``max_inputs``.
    Works on functions and, below ``@app.cls``, on classes.
    """
    if _warn_parentheses_missing is not None:
        _no_positional("concurrent", (_warn_parentheses_missing,))
    check_concurrency(max_inputs, target_inputs)
    params = PartialParams(max_inputs=max_inputs, target_inputs=target_inputs)
    return lambda f: _apply("concurrent", f, _Flags.CONCURRENT, params, allow_class=True)


def sessioned() -> Callable[[T], Any]:
    """Give an ``@app.server`` sticky sessions (Modal's ``@modal.sessioned()``): every request
    must carry the token of a session from ``Server.sessions.start()`` and goes to the
    container that session lives in, until it is terminated or idle for its
    ``idle_timeout``. Put it below ``@app.server(...)``."""

    def wrap(target: T) -> Any:
        if not inspect.isclass(target) and not (
            isinstance(target, PartialFunction) and inspect.isclass(target.raw_f)
        ):
            _target_error("sessioned", target)
            raise InvalidError(
                "`@rayweb.sessioned()` can only be applied to a Server class. "
                "Suggestion: @app.server(port=...) above @rayweb.sessioned() on the class."
            )
        return _apply("sessioned", target, _Flags.SESSIONED, PartialParams(), allow_class=True)

    return wrap


def check_concurrency(max_inputs: Any, target_inputs: Any) -> None:
    """Modal's checks of ``@concurrent`` / ``Cls.with_concurrency``."""
    for name, value in (("max_inputs", max_inputs), ("target_inputs", target_inputs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidError(f"`{name}` must be an integer, not {type(value).__name__}.")
        if value is not None and value < 1:
            raise InvalidError(f"`{name}` must be at least 1.")
    if max_inputs is not None and target_inputs is not None and target_inputs > max_inputs:
        raise InvalidError("`target_inputs` parameter cannot be greater than `max_inputs`.")


def batched(*, max_batch_size: int, wait_ms: int) -> Callable[[Callable[..., Any]], Any]:
    """Single ``.remote()`` inputs in, lists to the function (Serve's batching): up to
    ``max_batch_size`` inputs, waiting at most ``wait_ms`` for a batch to fill."""
    check_batching(max_batch_size, wait_ms)
    params = PartialParams(max_batch_size=max_batch_size, wait_ms=wait_ms)
    return lambda f: _apply("batched", f, _Flags.BATCHED, params)


def check_batching(max_batch_size: Any, wait_ms: Any) -> None:
    """Modal's checks of ``@batched`` / ``Cls.with_batching``."""
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise InvalidError("max_batch_size must be a positive integer.")
    if max_batch_size > 1000:
        raise InvalidError("max_batch_size cannot be greater than 1000.")
    if not isinstance(wait_ms, int) or wait_ms < 0:
        raise InvalidError("wait_ms must be a non-negative integer.")
    if wait_ms > 600_000:
        raise InvalidError("wait_ms cannot be greater than 600000.")


def check_batched(raw_f: Callable[..., Any], name: str) -> None:
    """Modal's rules for a batched function: it takes lists and returns a list."""
    if inspect.isgeneratorfunction(raw_f) or inspect.isasyncgenfunction(raw_f):
        raise InvalidError(f"rayweb batched function {name} cannot return generators")
    for arg in inspect.signature(raw_f).parameters.values():
        if arg.default is not inspect.Parameter.empty:
            raise InvalidError(f"rayweb batched function {name} does not accept default arguments.")


def method(
    _warn_parentheses_missing: Any = None, *, is_generator: bool | None = None
) -> Callable[[Callable[P, R]], PartialFunction[P, R]]:
    """Mark a method of an ``@app.cls`` as callable (``Cls().m.local()``)."""
    if _warn_parentheses_missing is not None:
        _no_positional("method", (_warn_parentheses_missing,))
    params = PartialParams(is_generator=is_generator)
    return lambda f: _apply("method", f, _Flags.METHOD, params)


def enter(
    _warn_parentheses_missing: Any = None, *, snap: bool = False
) -> Callable[[Callable[P, R]], PartialFunction[P, R]]:
    """Run this method once per replica, before the web app is built or requests arrive."""
    if _warn_parentheses_missing is not None:
        _no_positional("enter", (_warn_parentheses_missing,))
    params = PartialParams(snap=snap)
    return lambda f: _apply("enter", f, _Flags.ENTER, params)


def exit(
    _warn_parentheses_missing: Any = None,
) -> Callable[[Callable[P, R]], PartialFunction[P, R]]:
    """Run this method when the replica shuts down (scale-down, redeploy, stop)."""
    if _warn_parentheses_missing is not None:
        _no_positional("exit", (_warn_parentheses_missing,))
    params = PartialParams()
    return lambda f: _apply("exit", f, _Flags.EXIT, params)


_NO_DEFAULT: Any = object()
PARAMETER_TYPES = (int, str, bytes, bool)


@dataclass(frozen=True)
class _Parameter:
    default: Any
    init: bool


@overload
def parameter(*, init: bool = True) -> Any: ...
@overload
def parameter(*, default: T, init: bool = True) -> T: ...
def parameter(*, default: Any = _NO_DEFAULT, init: bool = True) -> Any:
    """Declare a class parameter: ``name: str = rayweb.parameter(default="x")``."""
    return _Parameter(default, init)
