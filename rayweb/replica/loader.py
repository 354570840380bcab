"""Find the user's code inside a replica (failures are reported with ``common.user_failure``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ..spec import CodeRef


def load_target(code: CodeRef) -> Any:
    """Return the rayweb ``Function``, ``Cls`` or ``Server`` that ``code`` points at."""
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
    from ..classes import Cls
    from ..functions import Function
    from ..servers import Server

    if isinstance(obj, (Function, Cls, Server)):
        return obj
    # The decorated name differs from the raw one (name=..., or assigned to another
    # variable): find the registration through the module's apps.
    owner = code.tag.split(".")[0]
    for value in vars(module).values():
        if isinstance(value, App):
            found = (
                value.registered_functions.get(owner)
                or value.registered_classes.get(owner)
                or value.registered_servers.get(owner)
            )
            if found is not None:
                return found
    raise LookupError(
        f"rayweb could not find {code.tag!r} in module {code.module!r}: is it registered on a "
        "module-level rayweb.App?"
    )
