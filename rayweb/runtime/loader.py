"""Find the user's code inside a replica, and report its failures readably."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from ..spec import CodeRef

USER_ERROR_BEGIN = "--- rayweb user error ---"
USER_ERROR_END = "--- end of rayweb user error ---"

_HIDDEN_FRAMES = (
    os.sep + os.path.join("rayweb", "runtime") + os.sep,
    os.sep + os.path.join("ray", ""),
    os.sep + "asyncio" + os.sep,
    os.sep + "concurrent" + os.sep,
)


def load_target(code: CodeRef) -> Any:
    """Return the rayweb ``Function`` or ``Cls`` that ``code`` points at."""
    if code.pickled is not None:
        from ray import cloudpickle

        return cloudpickle.loads(code.pickled)
    from .._compat import install_modal_alias

    install_modal_alias()
    if code.sys_path and code.sys_path not in sys.path:
        sys.path.insert(0, code.sys_path)
    assert code.module is not None  # CodeRef invariant: module or pickled
    module = importlib.import_module(code.module)
    obj: Any = module
    for part in code.qualname.split("."):
        obj = getattr(obj, part, None)
    from ..app import App
    from ..functions import Cls, Function

    if isinstance(obj, (Function, Cls)):
        return obj
    # The decorated name differs from the raw one (name=..., or assigned to another
    # variable): find the registration through the module's apps.
    owner = code.tag.split(".")[0]
    for value in vars(module).values():
        if isinstance(value, App):
            found = value.registered_functions.get(owner) or value.registered_classes.get(owner)
            if found is not None:
                return found
    raise LookupError(
        f"rayweb could not find {code.tag!r} in module {code.module!r}: is it registered on a "
        "module-level rayweb.App?"
    )


def remote_error(exc: BaseException) -> BaseException:
    """An actor's own exception (NotFoundError, TimeoutError, ...), not Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class UserCodeError(RuntimeError):
    """User code failed inside a replica; the message carries the user's own traceback."""


def user_failure(phase: str, exc: BaseException) -> UserCodeError:
    """Wrap ``exc`` so the driver can show one rayweb line plus the user's traceback."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not any(h in f.filename for h in _HIDDEN_FRAMES)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip()
    first = (str(exc).strip().splitlines() or [""])[0]
    summary = f"{phase} raised {type(exc).__name__}" + (f": {first}" if first else "")
    return UserCodeError(f"{summary}\n{USER_ERROR_BEGIN}\n{text}\n{USER_ERROR_END}")


def extract_user_error(message: str) -> tuple[str, str] | None:
    """Find ``(summary, traceback)`` in a Serve status message, if our marker is there."""
    start = message.find(USER_ERROR_BEGIN)
    if start < 0:
        return None
    end = message.find(USER_ERROR_END, start)
    body = message[start + len(USER_ERROR_BEGIN) : end if end >= 0 else None].strip("\n")
    # Ray replaces the "Traceback" header with its own actor line ("ray::ServeReplica...").
    kept = [ln for ln in body.splitlines() if "ray::" not in ln and not ln.startswith("Traceback")]
    body = "\n".join(["Traceback (most recent call last):", *kept])
    head = message[:start].rstrip().splitlines()
    summary = head[-1].split("UserCodeError: ")[-1].strip() if head else "user code failed"
    return summary, body
