"""What the driver shows people: the URL table and a console that does not cut it."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

from ..urls import Reach

Progress = Callable[[str], None]  # says which phase a long operation is in


def wide_console() -> Any:
    """A console whose tables are not cut at 80 columns when output goes to a pipe or file."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)


def url_rows(labels: Mapping[str, str], reach: Reach) -> tuple[list[str], list[list[str]]]:
    """The URL table's columns and rows: each endpoint's URL (what ``get_web_url()`` gives)
    and, where the gateway serves origins, the other form beside it."""
    columns = ["endpoint", "URL"]
    if reach.domain:
        columns.append("path form" if reach.origin_form else "own origin (browsers, curl)")
    rows = []
    for tag, label in labels.items():
        row = [tag, reach.url(label)]
        if reach.domain:
            other = reach.path_url(label) if reach.origin_form else reach.origin_url(label)
            row.append(other or "")
        rows.append(row)
    return columns, rows


def print_urls(
    labels: Mapping[str, str],
    reach: Reach | None,
    *,
    title: str = "rayweb endpoints",
    console: Any = None,
) -> None:
    """Print each endpoint and its URLs as a table (``labels``: each one's label, by tag)."""
    from rich.table import Table

    if reach is None:
        return
    columns, rows = url_rows(labels, reach)
    note = reach.note()
    table = Table(*columns, title=title, title_justify="left", caption=note, caption_justify="left")
    for row in rows:
        table.add_row(*row)
    (console or wide_console()).print(table)


def url_table_html(labels: Mapping[str, str], reach: Reach) -> str:
    """The same table for a notebook, each URL a link."""
    columns, rows = url_rows(labels, reach)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr><td>"
        + html.escape(row[0])
        + "</td>"
        + "".join(f"<td><a href='{html.escape(u)}'>{html.escape(u)}</a></td>" for u in row[1:])
        + "</tr>"
        for row in rows
    )
    note = reach.note()
    caption = f"<caption>{html.escape(note)}</caption>" if note else ""
    return f"<table>{caption}<tr>{head}</tr>{body}</table>"
