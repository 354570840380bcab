"""Cluster-side services: rayweb's actors on the head node (and Serve's autoscaling policy).

The gateway (HAProxy and its route table, plus the hot-swap mailbox), the secret and token
store, the shared rate limiter, the deploy registry, and the ``cluster_actor`` helper that
makes each of them once per cluster. The replicas and the driver reach them as clients.
"""
