"""Modal's call forms (``f.remote``, ``f.map``, ...) as objects, and the hook that makes them
run: ``rayweb.calls`` installs the :class:`Invoker` (this module imports no Ray, and nothing
of ``functions.py``: a call form knows its function by what it reads of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .exception import ExecutionError, InvalidError

CALL_FORMS = ("remote", "spawn", "remote_gen", "map", "starmap", "for_each", "spawn_map")


class Invoker(Protocol):
    """What makes the call forms run on the cluster (``rayweb.calls``, installed by the
    package's facade; this module imports no Ray)."""

    def call(self, target: CallTarget, form: str, args: tuple[Any, ...], kwargs: Any) -> Any: ...

    def call_aio(
        self, target: CallTarget, form: str, args: tuple[Any, ...], kwargs: Any
    ) -> Any: ...

    def start_variant(self, variant: Any, name: str, *, dev: bool) -> None:
        """Start a class variant (``Cls.with_options``) as the Serve application ``name``."""

    def web_url(self, app_name: str, name: str, label: str) -> str:
        """The URL of a served endpoint looked up by name (``Server.from_name``)."""

    def server_session(self, action: str, route: str, arg: Any) -> Any:
        """Start (``arg``: idle timeout; returns (id, token)) or terminate (``arg``: token)
        a sticky session of the Server served at ``/<route>``."""


_INVOKER: list[Invoker] = []


def set_invoker(invoker: Invoker) -> None:
    _INVOKER[:] = [invoker]


def invoker() -> Invoker:
    if not _INVOKER:
        raise ExecutionError("rayweb: calls need `import rayweb` (its call machinery).")
    return _INVOKER[0]


@dataclass(frozen=True)
class CallTarget:
    """What a call reaches: a function, or a method of a class with its parameter values."""

    function: Any  # a functions.Function
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def owner(self) -> Any:
        """What is deployed: the function itself, or its whole class."""
        return self.function.cls if self.function.cls is not None else self.function

    @property
    def method(self) -> str | None:
        return self.function.tag.split(".", 1)[1] if self.function.cls is not None else None


class CallForm:
    """``f.remote``, ``f.map``, ...: call it, or ``.aio(...)`` for the async form."""

    def __init__(self, target: CallTarget, form: str) -> None:
        self.target, self.form = target, form

    def _check(self) -> None:
        function = self.target.function
        if function.web is not None:
            raise InvalidError(
                "A webhook function cannot be invoked for remote execution with "
                f"`.{self.form}`. Invoke this function via its web url "
                f"'{function.web_url or '<not served>'}' or call it locally: "
                f"{function.tag}.local()"
            )
        check_generator(function.is_generator, self.form)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return invoker().call(self.target, self.form, args, kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return invoker().call_aio(self.target, self.form, args, kwargs)


def check_generator(is_generator: bool | None, form: str) -> None:
    """Modal's errors for a generator called without ``.remote_gen`` and the reverse
    (``None``: not known yet, for a function looked up by name before its first call)."""
    if is_generator and form != "remote_gen":
        raise InvalidError(
            f"A generator function cannot be called with `.{form}(...)`. "
            "Use `.remote_gen(...)` instead."
        )
    if is_generator is False and form == "remote_gen":
        raise InvalidError(
            "A non-generator function cannot be called with `.remote_gen(...)`. "
            "Use `.remote(...)` instead."
        )
