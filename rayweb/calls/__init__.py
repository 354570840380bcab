"""Modal's function calls on Ray, on the caller's side: ``f.remote()``, ``.map()``,
``.remote_gen()``, ``.spawn()`` and ``FunctionCall`` (see ``invoker.py``, ``spawned.py``).

Importing it installs the invoker behind ``Function``'s call forms (``rayweb``'s facade does);
Ray is imported only when a call is made.
"""

from __future__ import annotations

from ..callforms import set_invoker
from .invoker import Invoker
from .spawned import FunctionCall

set_invoker(Invoker())

__all__ = ["FunctionCall"]
