"""Tables as CSV (for programs) and Markdown (for people and the docs), written atomically."""

import csv
from pathlib import Path
from typing import Any

from mnist_cnn.files import atomic_path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_tables(rows: list[dict[str, Any]], columns: list[str], stem: Path) -> str:
    """Write `<stem>.csv` and `<stem>.md`; return the Markdown."""
    write_csv(rows, columns, stem.with_suffix(".csv"))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[column]) for column in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown)
    return markdown
