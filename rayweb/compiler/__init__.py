"""The one bridge from rayweb specs to Ray Serve: every mapping rule lives here.

``core.py`` maps a web endpoint's spec to Serve options and a replica payload (pure);
``app.py`` compiles an app's web endpoints and builds each Serve ``Application``;
``functions.py`` does the same for non-web functions and classes called with ``.remote()``
(and a class's pool: its web methods in the same replicas); ``variants.py`` compiles and
starts a class's variant (``Cls.with_options``) where it is first called.
"""

from __future__ import annotations

from .app import POOLED_KINDS, build_application, compile_app, deploy_timeout, pooled
from .core import (
    ACCELERATOR_SHARE,
    BUFFER_POLICY,
    DEFAULT_MAX_CONTAINERS,
    DEFAULT_NUM_CPUS,
    DEFAULT_SCALEDOWN_WINDOW,
    DEV_SUFFIX,
    GATEWAY_QUEUE_FACTOR,
    PROXY_NUM_CPUS,
    CompiledEndpoint,
    ResourcePlan,
    app_label,
    choose_gpu,
    code_ref,
    compile_endpoint,
    deployment_options,
    endpoint_spec,
    max_inputs_of,
    resource_plan,
)
from .functions import compile_function, compile_functions, function_spec, ship

__all__ = [
    "ACCELERATOR_SHARE",
    "BUFFER_POLICY",
    "DEFAULT_MAX_CONTAINERS",
    "DEFAULT_NUM_CPUS",
    "DEFAULT_SCALEDOWN_WINDOW",
    "DEV_SUFFIX",
    "GATEWAY_QUEUE_FACTOR",
    "POOLED_KINDS",
    "PROXY_NUM_CPUS",
    "CompiledEndpoint",
    "ResourcePlan",
    "app_label",
    "build_application",
    "choose_gpu",
    "code_ref",
    "compile_app",
    "compile_endpoint",
    "compile_function",
    "compile_functions",
    "deploy_timeout",
    "deployment_options",
    "endpoint_spec",
    "function_spec",
    "max_inputs_of",
    "pooled",
    "resource_plan",
    "ship",
]
