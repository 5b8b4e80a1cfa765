"""A table of what every registered data set offers, for `dynmm data info`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dynmm.data.registry import BUNDLED, FORMATS, dataset_info

COLUMNS = ("dataset", "split", "N", "modality", "shape", "kind", "task")


def _task_text(kind: str, num_classes: int) -> str:
    return f"{kind} ({num_classes})" if kind in ("classification", "multilabel") else kind


def data_info_table() -> list[dict[str, object]]:
    """One row per (data set, split, modality) with default options; cheap: no tensors are built."""
    rows: list[dict[str, object]] = []
    for name in BUNDLED:
        info = dataset_info(name)
        task = _task_text(info.task.kind, info.task.num_classes)
        for split, n in info.sizes.items():
            for modality, spec in info.modalities.items():
                rows.append(
                    {
                        "dataset": name,
                        "split": split,
                        "N": n,
                        "modality": modality,
                        "shape": tuple(spec.shape),
                        "kind": spec.kind,
                        "task": task,
                    }
                )
    return rows


def print_data_info(console: Console | None = None) -> None:
    """Print data_info_table() as a rich table."""
    table = Table(title="Bundled data sets (default options)")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column == "N" else "left")
    for row in data_info_table():
        table.add_row(*(str(row[c]) for c in COLUMNS))
    console = console or Console()
    console.print(table)
    if FORMATS:
        console.print(
            f"Read from your files (data.options.path; validate with `dynmm data check PATH --format F`): "
            f"{', '.join(FORMATS)}"
        )
