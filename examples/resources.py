"""Resources, scaling, secrets and an Image: each compiled into Serve options.

rayweb serve examples/resources.py
"""

import os

import rayweb

image = rayweb.Image.debian_slim().pip_install("fastapi").env({"GREETING": "hi"})
app = rayweb.App("resources-demo", image=image)


@app.function(
    cpu=0.2,
    memory=256,
    min_containers=1,
    max_containers=3,
    buffer_containers=1,
    scaledown_window=30,
    timeout=60,
    secrets=[rayweb.Secret.from_dict({"API_TOKEN": "not-a-real-token"})],
    env={"MODE": "demo"},
)
@rayweb.fastapi_endpoint()
def settings() -> dict:
    return {
        "greeting": os.environ.get("GREETING"),
        "mode": os.environ.get("MODE"),
        "has_token": os.environ.get("API_TOKEN") == "not-a-real-token",
        "is_local": rayweb.is_local(),
    }


# A GPU endpoint; on a cluster without GPUs its deploy times out with a message that says so.
gpu_app = rayweb.App("gpu-demo")


@gpu_app.function(gpu=["L40S", "A100"], startup_timeout=20)
@rayweb.fastapi_endpoint()
def gpu_info() -> dict:
    return {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
