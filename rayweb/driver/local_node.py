"""Start one more Ray node of a local cluster on this machine (``rayweb cluster up
--workers N``): a raylet, its object store and agents on 127.0.0.1, joined to the head.

``ray start --address`` cannot do this on a loopback-only cluster: with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` it refuses to start a worker node, and with ``=1`` it
turns the head's 127.0.0.1 into the machine's outward address, where the head does not
listen. So this process starts the node itself, as Ray's own fake multi-node provider does
(``ray._private.node.Node(..., head=False)``), and exits; the node's processes live on under
the head's session directory, where ``rayweb cluster down`` finds them.

    python -m rayweb.driver.local_node '{"address": "127.0.0.1:6379", "num_cpus": 1,
        "object_store_memory": 268435456, "resources": {"rayweb-node-1": 1}}'
"""

from __future__ import annotations

import json
import os
import sys


def main(spec: str) -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every address 127.0.0.1
    from ..common import free_port, use_ray_token

    use_ray_token()  # before Ray is imported
    import ray._private.node
    import ray._private.parameter

    args = json.loads(spec)
    params = ray._private.parameter.RayParams(
        gcs_address=args["address"],
        redis_address=args["address"],
        node_ip_address="127.0.0.1",
        num_cpus=args["num_cpus"],
        object_store_memory=args["object_store_memory"],
        resources=args.get("resources", {}),
        min_worker_port=0,
        max_worker_port=0,
        # not Ray's fixed default: the head's agent (or another Ray's) holds it
        dashboard_agent_listen_port=free_port(),
    )
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    print(node.node_id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
