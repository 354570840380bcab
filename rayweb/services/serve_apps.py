"""What Serve runs, read cheaply: each application's status and messages.

``serve.status()`` asks Serve's controller for every application's full details and parses
them into pydantic models; for each deployment that parse pickles its request router and
autoscaling policy classes. With five applications one call took ~0.2 s of the caller's CPU
(and the controller's, building the details), and ``rayweb serve`` asked every 0.25 s while
the replicas it waited for started on the same cores. Serve's controller also answers with
each application's status overview as protobuf (``get_serve_statuses``: the application's
status and message, each deployment's status and message), which is all a deploy watches.
``rayweb app list`` (replica counts) still uses ``serve.status()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class AppState:
    """One Serve application: ``status`` as Serve names it (``RUNNING``, ``DEPLOYING``,
    ``DEPLOY_FAILED``, ``UNHEALTHY``, ``DELETING``), its message and its deployments' messages
    (those that have one)."""

    status: str
    message: str = ""
    deployment_messages: tuple[str, ...] = ()

    @property
    def messages(self) -> list[str]:
        """The application's message, then its deployments' (where a failure says why)."""
        return [self.message, *self.deployment_messages]

    @property
    def failing(self) -> bool:
        return self.status in ("DEPLOY_FAILED", "UNHEALTHY")


def app_states(names: Iterable[str] | None = None) -> dict[str, AppState]:
    """The Serve applications running now (of ``names``, or all): name -> state. Empty when
    Serve does not run on the connected cluster."""
    import ray
    from ray.serve._private.application_state import StatusOverview
    from ray.serve.context import _get_global_client
    from ray.serve.generated.serve_pb2 import (  # type: ignore[attr-defined]
        StatusOverview as StatusOverviewProto,
    )

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return {}
    controller = client._controller
    if names is None:
        raw = ray.get(controller.list_serve_statuses.remote())
    else:
        raw = ray.get(controller.get_serve_statuses.remote(list(names)))
    found = {}
    for data in raw:
        overview = StatusOverview.from_proto(StatusOverviewProto.FromString(data))
        status = str(overview.app_status.status.value)
        if status == "NOT_STARTED":  # a name asked for that Serve does not run
            continue
        found[overview.name] = AppState(
            status,
            overview.app_status.message or "",
            tuple(d.message for d in overview.deployment_statuses if d.message),
        )
    return found
