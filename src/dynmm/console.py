"""What the command line prints with, shared by the `dynmm` commands and the ones each method adds."""

from __future__ import annotations

import sys
import typing

from rich.console import Console
from rich.table import Table

from dynmm.errors import ConfigError

# Piped output (CI logs, `| tee`) gets a wide fixed width instead of rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)

N = typing.TypeVar("N", int, float)


def parse_numbers(text: str, option: str, kind: type[N]) -> list[N]:
    """A comma-separated option as numbers of `kind`; anything else is a ConfigError naming the option."""
    try:
        return [kind(v) for v in text.split(",") if v]
    except ValueError as err:
        words = "integers" if kind is int else "numbers"
        raise ConfigError(f"{option} takes comma-separated {words} ({err})") from err


def print_rows(title: str, rows: list[dict[str, str]]) -> None:
    """A rich table whose columns are the rows' keys."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
