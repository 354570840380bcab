"""``Cls``: what ``@app.cls`` returns, its instances and bound methods, and its variants.

``Cls.with_options`` / ``with_concurrency`` / ``with_batching`` return a variant: the same
class with other options, served by its own pool of replicas (a Serve application of its
own, started at its first call: ``compiler/variants.py``). No Ray here.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from .callforms import CALL_FORMS, CallForm, CallTarget
from .decorators import (
    _NO_DEFAULT,
    PARAMETER_TYPES,
    PartialFunction,
    _Flags,
    _Parameter,
    check_batching,
    check_concurrency,
)
from .exception import InvalidError
from .functions import AppOptions, DeployedApp, Function, _code_elsewhere
from .options import FunctionOptions, check_volumes, overridden
from .secret import Secret
from .spec import ConcurrencySpec
from .volume import Volume


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
        self.base: Cls = self  # a variant's base class (with_options & co.)
        self.overrides: dict[str, Any] = {}  # what a variant changes
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
            overrides={},
        )  # fmt: skip
        looked_up.base = looked_up
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

    # Variants (Modal's runtime overrides of a class's configuration).
    def with_options(
        self,
        *,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | Sequence[str] | None = None,
        secrets: Collection[Secret] = (),
        volumes: dict[str, Any] | None = None,
        retries: Any = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
        timeout: int | None = None,
        region: str | Sequence[str] | None = None,
        cloud: str | None = None,
    ) -> Cls:
        """This class with other resources, scaling, timeout, retries or secrets, in a pool
        of replicas of its own: ``Model.with_options(gpu="A100")().generate.remote(42)``."""
        mounts = check_volumes(volumes)
        for secret in secrets:
            if not isinstance(secret, Secret) or secret.name is None:
                raise InvalidError(
                    "with_options(secrets=...) takes secrets created with "
                    "`rayweb.Secret.from_name(...)` (`rayweb secret create` stores them)."
                )
        given = {
            "cpu": cpu, "memory": memory, "gpu": gpu, "secrets": tuple(secrets),
            "retries": retries, "max_containers": max_containers,
            "buffer_containers": buffer_containers, "scaledown_window": scaledown_window,
            "timeout": timeout, "volumes": dict(mounts),
        }  # fmt: skip
        given = {k: v for k, v in given.items() if v not in (None, (), {})}
        overridden(FunctionOptions(), **given)  # Modal's checks, before any cluster
        return self._variant({"options": given})

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Cls:
        """This class taking up to ``max_inputs`` inputs per replica, in its own pool."""
        check_concurrency(max_inputs, target_inputs)
        return self._variant({"concurrency": (max_inputs, target_inputs)})

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> Cls:
        """This class's ``@batched`` method with other batch limits, in its own pool."""
        check_batching(max_batch_size, wait_ms)
        if self.user_cls is not None and self.batching is None:
            raise InvalidError(
                f"{self.tag} has no @rayweb.batched method, so with_batching() has nothing to "
                "change. Suggestion: decorate one method with @rayweb.batched(...)."
            )
        return self._variant({"batching": (max_batch_size, wait_ms)})

    def _variant(self, changes: dict[str, Any]) -> Cls:
        overrides = {**self.overrides}
        for kind, value in changes.items():
            overrides[kind] = {**overrides.get(kind, {}), **value} if kind == "options" else value
        overrides = {k: v for k, v in overrides.items() if v}  # `Model()` of a variant
        return self.base.apply(overrides)

    def apply(self, overrides: dict[str, Any]) -> Cls:
        """The variant of this (base) class with ``overrides``: what with_options & co.
        were given, also applied by the base's replicas for a class looked up by name."""
        variant = copy.copy(self)
        variant.base, variant.overrides = self, overrides
        text = repr(sorted((k, _canonical(v)) for k, v in overrides.items()))
        variant.__dict__["_key"] = (
            hashlib.sha256(text.encode()).hexdigest()[:10] if overrides else None
        )
        if self.user_cls is not None:
            variant.options = overridden(self.options, **overrides.get("options", {}))
            if "concurrency" in overrides:
                variant.concurrency = ConcurrencySpec(*overrides["concurrency"])
        variant.functions = {}
        for name, function in self.functions.items():
            method = copy.copy(function)
            method.cls, method.options = variant, variant.options
            method.concurrency = variant.concurrency
            if function.batching is not None and "batching" in overrides:
                method.batching = tuple(overrides["batching"])
            variant.functions[name] = method
        return variant

    @property
    def variant_key(self) -> str | None:
        """What names the variant's Serve application (None for the class itself); made once,
        in ``apply``, since every call of the variant asks for it."""
        return self.__dict__.get("_key")

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
        """``Model(param=...)``: an instance whose methods run here with ``.local()``, or in
        the pool of containers of its parameter set (a variant) with ``.remote()``."""
        if self.user_cls is not None:
            self._instantiate(**params)  # validate the parameters now
            params = {  # the defaults' pool is the class's own
                k: v for k, v in params.items() if v != self.parameters[k].default
            }
        return ClsInstance(self._variant({"params": params}) if params else self, params)


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


def _canonical(value: Any) -> Any:
    """A repr-stable form of an override (secrets by name)."""
    if isinstance(value, dict):
        return sorted((k, _canonical(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, Secret):
        return ("secret", value.name)
    if isinstance(value, Volume):
        return ("volume", value.dir_name)
    return value
