"""Code that runs inside a Serve replica (and its web_server sidecar): the deployment class,
the per-kind adapters, the one middleware chain, the replica's own HTTP server, hot swap.

Imports nothing from the driver side (``rayweb.driver``, ``rayweb.cli``).
"""
