"""The one bridge from rayweb specs to Ray Serve: every mapping rule lives here.

``core.py`` maps a web endpoint's spec to Serve options and a replica payload (pure) and
builds the Serve ``Application``; ``functions.py`` does the same for non-web functions and
classes called with ``.remote()``; ``variants.py`` compiles and starts a class's variant
(``Cls.with_options``) where it is first called.
"""

from __future__ import annotations

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
    build_application,
    choose_gpu,
    code_ref,
    compile_app,
    compile_endpoint,
    deploy_timeout,
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
    "resource_plan",
    "ship",
]
