"""``Function`` and ``Cls``: what ``@app.function`` and ``@app.cls`` return.

They hold the user's callable, the validated options and, once served, the web URL; the
compiler reads them (``compiler.endpoint_spec``). No Ray here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from typing_extensions import ParamSpec

from .callforms import CALL_FORMS, CallForm, CallTarget
from .decorators import (
    _NO_DEFAULT,
    PARAMETER_TYPES,
    PartialFunction,
    _Flags,
    _Parameter,
    check_batched,
)
from .exception import ExecutionError, InvalidError
from .image import Image
from .secret import Secret
from .spec import (
    DEFAULT_TIMEOUT,
    ConcurrencySpec,
    Limits,
    ResourceSpec,
    Retries,
    ScalingSpec,
    WebSpec,
    make_label,
)

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
        cls: Cls | None = None,
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


class Cls:
    """A class registered with ``@app.cls``: ``@enter``/``@exit`` hooks and web methods."""

    _rayweb_decorator = "@app.cls()"

    def __init__(
        self,
        app: AppOptions,
        user_cls: type[Any],
        options: FunctionOptions,
        concurrency: ConcurrencySpec | None,
    ) -> None:
        self.app = app
        self.user_cls = user_cls
        self.options = options
        self.concurrency = concurrency
        self.tag = user_cls.__name__
        self.__doc__ = user_cls.__doc__
        self.__name__ = user_cls.__name__
        self.__qualname__ = user_cls.__qualname__
        self.__module__ = user_cls.__module__
        self.enter_methods: list[str] = []
        self.exit_methods: list[str] = []
        self.functions: dict[str, Function[Any, Any]] = {}
        self.parameters: dict[str, _Parameter] = {}
        self.described: dict[str, Any] | None = None  # from_name: what its replicas said
        self._collect()

    def __repr__(self) -> str:
        return f"<rayweb.Cls {self.tag!r} of App {self.app.name!r}>"

    def _collect(self) -> None:
        problems: list[str] = []
        name = self.user_cls.__name__
        if any("__init__" in vars(klass) for klass in self.user_cls.__mro__[:-1]):
            problems.append(
                f"rayweb class {name} cannot have a custom constructor (__init__) method. "
                "Use @rayweb.enter() for setup code that runs once per replica, and "
                "`attr: str = rayweb.parameter()` for parameters."
            )
        annotations = inspect.get_annotations(self.user_cls)
        seen: set[str] = set()
        for klass in self.user_cls.__mro__[:-1]:
            for attr, value in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                if isinstance(value, _Parameter):
                    self._add_parameter(attr, value, annotations, problems)
                elif isinstance(value, PartialFunction):
                    self._add_method(attr, value, problems)
        batched = [f for f in self.functions.values() if f.batching is not None]
        if len(batched) > 1:
            problems.append(f"rayweb class {name} can only have one batched function.")
        elif batched and len(self.functions) > 1:
            problems.append(
                f"rayweb class {name} with a rayweb batched function cannot have other "
                "rayweb methods."
            )
        if problems:
            raise InvalidError("\n".join(problems))

    @property
    def batching(self) -> tuple[int, int] | None:
        """The ``@batched`` (max_batch_size, wait_ms) of the class's one batched method."""
        return next((f.batching for f in self.functions.values() if f.batching), None)

    def _add_parameter(
        self, attr: str, value: _Parameter, annotations: dict[str, Any], problems: list[str]
    ) -> None:
        kind = annotations.get(attr)
        if isinstance(kind, str):  # `from __future__ import annotations`
            kind = {t.__name__: t for t in PARAMETER_TYPES}.get(kind, kind)
        if kind is None:
            problems.append("All rayweb.parameter() specifications need to be type-annotated")
        elif kind not in PARAMETER_TYPES:
            problems.append(
                f"Class parameter '{attr}': {getattr(kind, '__name__', kind)} is not a supported "
                "rayweb.parameter() type. Use one of: int, str, bytes, bool"
            )
        self.parameters[attr] = value

    def _add_method(self, attr: str, pf: PartialFunction[Any, Any], problems: list[str]) -> None:
        if pf.flags & _Flags.CONCURRENT:
            problems.append(
                "The `@rayweb.concurrent` decorator cannot be used on methods; "
                "decorate the class instead."
            )
        if pf.flags & _Flags.ENTER:
            self.enter_methods.append(attr)
        if pf.flags & _Flags.EXIT:
            self.exit_methods.append(attr)
        if pf.flags & (_Flags.WEB | _Flags.METHOD | _Flags.BATCHED):
            self.functions[attr] = Function(
                self.app,
                f"{self.tag}.{attr}",
                pf.raw_f,
                self.options,
                web=pf.params.web,
                concurrency=self.concurrency,
                cls=self,
                batching=pf.batching(),
            )

    @classmethod
    def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None) -> Cls:
        """A class of an app running on this Ray cluster, found at its first call:
        ``rayweb.Cls.from_name("app", "Model")(size=2).predict.remote(x)``."""
        looked_up = object.__new__(cls)
        looked_up.__dict__.update(
            app=DeployedApp(app_name), user_cls=None, options=FunctionOptions(),
            concurrency=None, tag=name, __name__=name, __qualname__=name, __doc__=None,
            enter_methods=[], exit_methods=[], functions={}, parameters={}, described={},
        )  # fmt: skip
        return looked_up

    def __getattr__(self, name: str) -> Function[Any, Any]:
        # Only called for missing attributes; must not touch other attributes (unpickling).
        functions = self.__dict__.get("functions", {})
        if name in functions:
            return functions[name]
        owner = self.__dict__.get("tag", type(self).__name__)
        if self.__dict__.get("described") is not None and not name.startswith("_"):
            # looked up by name: any method may exist; the first call says
            method = Function(self.app, f"{owner}.{name}", _code_elsewhere(name), self.options)
            method.cls, method.described = self, {}
            functions[name] = method
            return method
        raise AttributeError(f"{owner} has no rayweb method {name!r}")

    @property
    def web_functions(self) -> list[Function[Any, Any]]:
        return [f for f in self.functions.values() if f.is_web]

    def _instantiate(self, **params: Any) -> Any:
        """Build the user's object without __init__, with parameter values set."""
        if self.user_cls is None:  # looked up by name: its replicas check the parameters
            raise _code_elsewhere(self.tag)()
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise InvalidError(f"{self.tag} has no parameter(s) {sorted(unknown)}.")
        obj = object.__new__(self.user_cls)
        for attr, spec in self.parameters.items():
            if attr in params:
                value = params[attr]
            elif spec.default is not _NO_DEFAULT:
                value = spec.default
            else:
                raise InvalidError(f"{self.tag} needs a value for parameter {attr!r}.")
            setattr(obj, attr, value)
        return obj

    def _local_instance(self, **params: Any) -> Any:
        obj = self._instantiate(**params)
        for attr in self.enter_methods:
            getattr(obj, attr)()
        return obj

    def __call__(self, **params: Any) -> ClsInstance:
        """``Model(param=...)``: an instance whose methods run here with ``.local()``."""
        if self.user_cls is not None:
            self._instantiate(**params)  # validate the parameters now
        return ClsInstance(self, params)


class ClsInstance:
    """``Model(...)``: ``@enter`` runs on the first ``.local()`` call, as in a container."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        self._obj: Any = None

    def _object(self) -> Any:
        if self._obj is None:
            self._obj = self._cls._local_instance(**self._params)
        return self._obj

    def __getattr__(self, name: str) -> BoundMethod:
        function = getattr(self._cls, name)
        return BoundMethod(self, name, function)


@dataclass(frozen=True)
class BoundMethod:
    """``Model().method``: call it here with ``.local()``, or ask for its URL."""

    instance: ClsInstance
    name: str
    function: Function[Any, Any]

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.instance._object(), self.name)(*args, **kwargs)

    def get_web_url(self) -> str:
        return self.function.get_web_url()

    def __getattr__(self, form: str) -> CallForm:
        """``Model(x=1).method.remote(...)`` and the other call forms."""
        if form not in CALL_FORMS:
            raise AttributeError(form)
        params = tuple(sorted(self.instance._params.items()))
        return CallForm(CallTarget(self.function, params), form)


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
