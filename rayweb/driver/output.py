"""What the driver shows people: the URL table and a console that does not cut it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Progress = Callable[[str], None]  # says which phase a long operation is in


def wide_console() -> Any:
    """A console whose tables are not cut at 80 columns when output goes to a pipe or file."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)


def print_urls(
    urls: Mapping[str, str], *, title: str = "rayweb endpoints", console: Any = None
) -> None:
    """Print each endpoint and its URL as a table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("endpoint")
    table.add_column("URL")
    for tag, url in urls.items():
        table.add_row(tag, url)
    (console or wide_console()).print(table)
