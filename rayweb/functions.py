"""``Function``: what ``@app.function`` returns (and each method of an ``@app.cls``,
``classes.py``).

It holds the user's callable, the validated options and, once served, the web URL; the
compiler reads it (``compiler.endpoint_spec``). No Ray here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from typing_extensions import ParamSpec

from .callforms import CallForm, CallTarget
from .decorators import check_batched
from .exception import ExecutionError, InvalidError
from .image import Image
from .options import FunctionOptions
from .secret import Secret
from .spec import ConcurrencySpec, Limits, WebSpec, make_label

P = ParamSpec("P")
R = TypeVar("R")


class AppOptions(Protocol):
    """What a Function reads from its ``rayweb.App`` (``app.py`` imports this module, not
    the other way round)."""

    name: str | None
    image: Image | None
    secrets: tuple[Secret, ...]
    limits: Limits | None
    auth_headers: tuple[str, str]


class Function(Generic[P, R]):
    """A function registered on an App (``@app.function``), or one web method of a Cls."""

    _rayweb_decorator = "@app.function"  # decorators stacked on top of it name this

    def __init__(
        self,
        app: AppOptions,
        tag: str,
        raw_f: Callable[P, R],
        options: FunctionOptions,
        *,
        web: WebSpec | None = None,
        concurrency: ConcurrencySpec | None = None,
        cls: Any = None,  # the classes.Cls of a method
        batching: tuple[int, int] | None = None,
    ) -> None:
        self.app = app
        self.tag = tag
        self.raw_f = raw_f
        self.options = options
        self.web = web
        self.concurrency = concurrency
        self.cls = cls
        self.batching = batching  # @batched: (max_batch_size, wait_ms)
        if batching is not None:
            check_batched(raw_f, getattr(raw_f, "__name__", tag))
        self._web_url: str | None = None
        # from_name: what the deployed function told its first caller (None: code is here)
        self.described: dict[str, Any] | None = None
        if cls is None:
            self.__doc__ = raw_f.__doc__
            self.__name__ = getattr(raw_f, "__name__", tag)
            self.__qualname__ = getattr(raw_f, "__qualname__", tag)
            self.__module__ = getattr(raw_f, "__module__", __name__)

    def __repr__(self) -> str:
        return f"<rayweb.Function {self.tag!r} of App {self.app.name!r}>"

    @classmethod
    def from_name(
        cls, app_name: str, name: str, *, environment_name: str | None = None
    ) -> Function[..., Any]:
        """A function of an app running on this Ray cluster (``rayweb deploy``, or
        ``rayweb serve``), found at its first call as Modal's lazy lookup does. Its remote
        forms work; ``.local()`` does not (its code is not in this process)."""
        if "." in name:
            owner, _, method = name.partition(".")
            raise InvalidError(
                f"{name!r} is a method. Suggestion: "
                f"rayweb.Cls.from_name({app_name!r}, {owner!r})().{method}.remote(...)"
            )
        function: Function[..., Any] = cls(
            DeployedApp(app_name), name, _code_elsewhere(name), FunctionOptions()
        )
        function.described = {}
        return function

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_web_url"] = None  # served URLs belong to the driver that served them
        state.pop("_served_as", None)  # so do the names of served apps
        return state

    @property
    def is_web(self) -> bool:
        return self.web is not None

    @property
    def label(self) -> str:
        """The URL label, without the ``-dev`` suffix of ``rayweb serve``."""
        if self.web is None:
            raise InvalidError(f"{self.tag} is not a web endpoint, so it has no URL label.")
        if self.web.label:
            return self.web.label
        return make_label(self.app.name, *self.tag.split("."))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function in this process, as Modal's ``.local()`` does."""
        if self.cls is not None:
            instance = self.cls._local_instance()
            method = getattr(instance, self.tag.split(".")[-1])
            return method(*args, **kwargs)
        return self.raw_f(*args, **kwargs)

    # Modal's call forms; each also has ``.aio`` (``await f.remote.aio(...)``).
    @property
    def remote(self) -> CallForm:
        return CallForm(CallTarget(self), "remote")

    @property
    def spawn(self) -> CallForm:
        return CallForm(CallTarget(self), "spawn")

    @property
    def remote_gen(self) -> CallForm:
        return CallForm(CallTarget(self), "remote_gen")

    @property
    def map(self) -> CallForm:
        return CallForm(CallTarget(self), "map")

    @property
    def starmap(self) -> CallForm:
        return CallForm(CallTarget(self), "starmap")

    @property
    def for_each(self) -> CallForm:
        return CallForm(CallTarget(self), "for_each")

    @property
    def spawn_map(self) -> CallForm:
        return CallForm(CallTarget(self), "spawn_map")

    @property
    def is_generator(self) -> bool | None:
        """None for a function looked up by name that has not been called yet."""
        if self.described is not None:
            return self.described.get("generator")
        return inspect.isgeneratorfunction(self.raw_f) or inspect.isasyncgenfunction(self.raw_f)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(
            f"`{self.tag}` is a rayweb Function and cannot be called directly. "
            f"Suggestion: {self.tag}.local(...) to run it here"
            + (", or request its URL (get_web_url())." if self.web else ".")
        )

    def get_web_url(self) -> str:
        """The URL of this endpoint while its app is served (``rayweb.serve`` or the CLI)."""
        if self.web is None:
            raise InvalidError(f"{self.tag} is not a web endpoint, so it has no URL.")
        if self._web_url is None:
            raise ExecutionError(
                f"Function has not been hydrated with the metadata it needs to run on rayweb: "
                f"{self.tag} has no URL until its app is served. Suggestion: "
                "`with rayweb.serve(app):` or `rayweb serve file.py`."
            )
        return self._web_url

    @property
    def web_url(self) -> str | None:
        return self._web_url

    def _hydrate(self, url: str | None) -> None:
        self._web_url = url


class DeployedApp:
    """The app of a function or class looked up by name: only its name is known here."""

    def __init__(self, name: str) -> None:
        self.name: str | None = name
        self.image: Image | None = None
        self.secrets: tuple[Secret, ...] = ()
        self.limits: Limits | None = None
        self.auth_headers: tuple[str, str] = ("Modal-Key", "Modal-Secret")

    def __repr__(self) -> str:
        return f"<rayweb app {self.name!r}, looked up by name>"


def _code_elsewhere(name: str) -> Callable[..., Any]:
    """The body of a looked-up function: its code runs only in the app's replicas."""

    def elsewhere(*args: Any, **kwargs: Any) -> Any:
        raise ExecutionError(
            f"{name} was looked up by name: its code is not in this process, so only its "
            "remote forms work. Suggestion: .remote(...), .map(...) or .spawn(...)."
        )

    elsewhere.__name__ = name
    return elsewhere
