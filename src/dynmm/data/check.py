"""What `dynmm data check PATH --format F` reports: what was found in a user's files and what is wrong with them.

Why one small type: every real-format loader validates the same things (files, keys, shapes, dtypes, value
ranges, split sizes) before any training starts, and the CLI prints them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckReport:
    """`found`: what was read (e.g. "features": "(25959, 300) float32"); `problems`: each a sentence naming
    the file, key and what was expected vs got. No problems means a loader will accept the files."""

    format: str
    path: str
    found: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
