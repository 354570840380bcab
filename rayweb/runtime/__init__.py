"""Code that runs inside a Serve replica: the replica class and the per-kind ASGI adapters."""
