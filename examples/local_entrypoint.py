"""A local entrypoint, as in Modal's examples: `rayweb run` deploys the app on Ray for the run,
calls ``main`` here with the arguments from the command line, and deletes the app after.

rayweb run examples/local_entrypoint.py --n 5 --label squares
rayweb run examples/local_entrypoint.py::square --x 7
rayweb run examples/local_entrypoint.py --help
"""

import rayweb

app = rayweb.App("entrypoint")


@app.function()
def square(x: int) -> int:
    return x * x


@app.local_entrypoint()
def main(n: int = 3, label: str = "squares", total: bool = False):
    values = list(square.map(range(n)))
    print(label, sum(values) if total else values)
