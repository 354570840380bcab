"""rayweb: Modal-style web endpoints served by Ray Serve on your own Ray cluster.

Importing rayweb does not import Ray; only serving and compiling do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import exception
from .app import App
from .calls import FunctionCall
from .classes import Cls
from .decorators import (
    asgi_app,
    batched,
    concurrent,
    enter,
    exit,
    fastapi_endpoint,
    method,
    parameter,
    sessioned,
    web_endpoint,
    web_server,
    wsgi_app,
)
from .dicts import Dict
from .functions import Function
from .image import Image
from .queues import Queue
from .secret import Secret
from .servers import Server
from .spec import Limits, Retries
from .volume import Volume

if TYPE_CHECKING:
    from .driver.serve import ServeHandle

__version__ = "0.1.0"
__rayweb_alias__ = True  # lets rayweb._compat recognise itself standing in for `modal`


def is_local() -> bool:
    """False inside a rayweb replica, True everywhere else (Modal's ``modal.is_local``)."""
    from .common import is_remote

    return not is_remote()


def serve(app: App, **kwargs: Any) -> ServeHandle:
    """Serve ``app``'s web endpoints on Ray Serve; see :func:`rayweb.driver.serve.serve`."""
    from .driver.serve import serve as _serve

    return _serve(app, **kwargs)


def _deploy(app: App) -> Any:
    """``App.deploy()``; see :func:`rayweb.driver.deploy.deploy_connected`."""
    from .driver.deploy import deploy_connected

    return deploy_connected(app)


__all__ = [
    "App",
    "Cls",
    "Dict",
    "Function",
    "FunctionCall",
    "Image",
    "Limits",
    "Queue",
    "Retries",
    "Secret",
    "Server",
    "Volume",
    "asgi_app",
    "batched",
    "concurrent",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "is_local",
    "method",
    "parameter",
    "serve",
    "sessioned",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
