"""``rayweb run``'s argument parsing from an entrypoint's signature (no Ray)."""

from __future__ import annotations

import inspect

import click
import pytest

from rayweb.cli.run import entrypoint_command


def main(n: int, rate: float = 0.5, my_label: str = "x", verbose: bool = False, *args, **kw):
    return n


def test_options_come_from_the_signature():
    command = entrypoint_command("main", inspect.signature(main))
    parsed = command.make_context("run", ["--n", "3", "--my-label", "y", "--verbose"]).params
    assert parsed == {"n": 3, "rate": 0.5, "my_label": "y", "verbose": True}
    assert command.make_context("run", ["--n", "1", "--my_label", "z"]).params["my_label"] == "z"
    with pytest.raises(click.MissingParameter):
        command.make_context("run", [])
    with pytest.raises(click.BadParameter, match="'many' is not a valid integer"):
        command.make_context("run", ["--n", "many"])
    with pytest.raises(click.NoSuchOption):
        command.make_context("run", ["--n", "1", "--nope", "2"])
