"""Modal's function calls on Ray, on the caller's side: ``f.remote()``, ``.map()``,
``.remote_gen()``, ``.spawn()`` and ``FunctionCall`` (see ``invoker.py``, ``spawned.py``),
and the way ``Dict``/``Queue`` reach the cluster's state (``state.py``).

Importing it installs the invoker behind ``Function``'s call forms (``rayweb``'s facade does);
Ray is imported only when a call is made.
"""

from __future__ import annotations

from ..callforms import set_invoker
from ..objects import set_state_backend
from .invoker import Invoker
from .spawned import FunctionCall
from .state import ClusterState

set_invoker(Invoker())
set_state_backend(ClusterState())

__all__ = ["FunctionCall"]
