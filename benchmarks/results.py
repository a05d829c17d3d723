"""Where a benchmark script leaves its results: `<out>/<script>-<date>_<time>/results.md` and `results.json`."""

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any


def save_results(args: argparse.Namespace, script: str, table: str, **raw: Any) -> Path:
    """The Markdown table and, as JSON, the arguments and the raw numbers (`raw`), in a new folder under --out."""
    out = args.out / f"{script}-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"args": vars(args), **raw}, default=str))  # paths as text
    return out
