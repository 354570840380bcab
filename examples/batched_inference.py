"""Dynamic batching, as in Modal's batching guide: callers send one input at a time
(``.remote``, ``.map``, concurrent web requests); the function receives a list per parameter
and answers one list, an output per input. Serve's batching collects the inputs in each
replica (up to ``max_batch_size``, waiting at most ``wait_ms``).

rayweb serve examples/batched_inference.py
curl 'http://127.0.0.1:8000/batched-classify-dev?text=ray+serve'
"""

import asyncio
import os

import rayweb

app = rayweb.App("batched")


@app.function(scaledown_window=120)
@rayweb.batched(max_batch_size=8, wait_ms=500)
def word_counts(texts: list[str]) -> list[dict]:
    return [{"words": len(t.split()), "batch": len(texts), "pid": os.getpid()} for t in texts]


@app.cls(scaledown_window=120)  # a GPU model would add gpu="L40S"
class Classifier:
    threshold: int = rayweb.parameter(default=3)

    @rayweb.enter()
    def load(self):
        self.batches = 0  # a real model would load its weights here, once per container

    @rayweb.batched(max_batch_size=4, wait_ms=200)
    async def classify(self, texts: list[str], boosts: list[int]) -> list[dict]:
        self.batches += 1
        await asyncio.sleep(0.05)  # one forward pass for the whole batch
        return [
            {"long": len(t.split()) + b >= self.threshold, "batch": len(texts), "n": self.batches}
            for t, b in zip(texts, boosts, strict=True)
        ]


@app.function()
@rayweb.concurrent(max_inputs=16)
@rayweb.fastapi_endpoint()
async def classify(text: str = "hello", boost: int = 0) -> dict:
    return await Classifier().classify.remote.aio(text, boost)
