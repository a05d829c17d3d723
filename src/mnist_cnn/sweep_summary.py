"""`mnist-cnn-summary <multirun folder>`: one table of a sweep's runs, and one per setting over seeds.

Writes `runs.csv`/`runs.md` (every job: overrides, status, accuracies, parameters, seconds) and
`settings.csv`/`settings.md` (jobs grouped by their overrides other than `seed`: mean and standard
deviation of test accuracy, mean seconds) into the sweep folder, and prints the settings table.
"""

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnist_cnn.files import atomic_path

RUN_COLUMNS = ["job", "overrides", "status", "test_acc", "val_acc_best", "parameters", "train_seconds"]
SETTING_COLUMNS = ["setting", "runs", "parameters", "test_acc_mean", "test_acc_std", "train_seconds_mean"]


def read_run(job_dir: Path) -> dict[str, Any]:
    """One job's overrides and final metrics; status 'failed' when it left no metrics.json."""
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")) or []
    metrics_path = job_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    row = {"job": job_dir.name, "overrides": " ".join(overrides), "status": "ok" if metrics else "failed"}
    return row | {column: metrics.get(column) for column in RUN_COLUMNS[3:]}


def read_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    jobs = [path for path in sweep_dir.iterdir() if (path / ".hydra" / "overrides.yaml").is_file()]
    if not jobs:
        raise SystemExit(f"error: {sweep_dir} holds no Hydra job folders (<n>/.hydra/overrides.yaml)")
    return [read_run(job) for job in sorted(jobs, key=lambda path: int(path.name) if path.name.isdigit() else 0)]


def group_by_setting(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs that differ only in `seed=` form one setting, named by the overrides not shared by every run."""
    shared = set.intersection(*(set(run["overrides"].split()) for run in runs))
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["status"] == "ok":
            parts = run["overrides"].split()
            setting = " ".join(part for part in parts if part not in shared and not part.startswith("seed="))
            groups[setting].append(run)
    return [_describe(setting, members) for setting, members in groups.items()]


def _describe(setting: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [run["test_acc"] for run in runs]
    return {
        "setting": setting or "(defaults)",
        "runs": len(runs),
        "parameters": runs[0]["parameters"],
        "test_acc_mean": statistics.mean(accuracies),
        "test_acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "train_seconds_mean": statistics.mean(run["train_seconds"] for run in runs),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write_tables(rows: list[dict[str, Any]], columns: list[str], stem: Path) -> str:
    """Write `<stem>.csv` and `<stem>.md`; return the Markdown."""
    with atomic_path(stem.with_suffix(".csv")) as tmp, tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[column]) for column in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/multirun/<date>/<time>")
    sweep_dir = parser.parse_args(argv).sweep_dir
    if not sweep_dir.is_dir():
        raise SystemExit(f"error: {sweep_dir} is not a folder")
    runs = read_sweep(sweep_dir)
    write_tables(runs, RUN_COLUMNS, sweep_dir / "runs")
    print(write_tables(group_by_setting(runs), SETTING_COLUMNS, sweep_dir / "settings"), end="")
    failed = [run["job"] for run in runs if run["status"] != "ok"]
    if failed:
        print(f"failed jobs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
