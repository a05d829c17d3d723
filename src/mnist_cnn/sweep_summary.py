"""`mnist-cnn-summary <multirun folder>`: one table of a sweep's runs, one per setting over seeds, and a plot.

Writes `runs.csv`/`runs.md` (every job: overrides, status, accuracies, parameters, seconds, error),
`settings.csv`/`settings.md` (jobs grouped by their overrides other than `seed`: mean and standard deviation
of test accuracy, or of the best validation accuracy where no job was tested, mean seconds) and `runs.png`
(accuracy against each swept value) into the sweep folder, and prints the settings table. Every multirun
runs it when it ends (`SweepSummary`).
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.errors import ConfigError, UserError
from mnist_cnn.files import atomic_path
from mnist_cnn.study_summary import summarize_study
from mnist_cnn.sweep import STATUS_FILE, override_key
from mnist_cnn.tables import write_tables

METRIC_COLUMNS = [
    "test_acc",
    "test_macro_f1",
    "test_calibration_error",
    "val_acc_best",
    "parameters",
    "train_seconds",
    "seed",
]
RUN_COLUMNS = ["job", "overrides", "status", *METRIC_COLUMNS, "error"]


def setting_columns(metric: str) -> list[str]:
    return ["setting", "runs", "parameters", f"{metric}_mean", f"{metric}_std", "train_seconds_mean"]


def summary_metric(runs: list[dict[str, Any]]) -> str:
    """Test accuracy; the best validation accuracy in a sweep that tested nothing (`test=false`, searches)."""
    return "test_acc" if any(run["test_acc"] is not None for run in runs) else "val_acc_best"


def read_run(job_dir: Path) -> dict[str, Any]:
    """One job's overrides, status ('ok', 'failed', 'pruned') and final metrics.

    A job with neither `status.json` nor `metrics.json` was killed or is still running: 'failed'.
    """
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")) or []
    hidden = _hidden_keys(job_dir)
    overrides = [override for override in overrides if override_key(override) not in hidden]
    try:
        metrics = _read_json(job_dir / "metrics.json")
        status = _read_json(job_dir / STATUS_FILE) or {"status": "ok" if metrics else "failed", "error": None}
    except ValueError as error:  # cut short: a job killed while writing it, a full disk
        metrics, status = {}, {"status": "failed", "error": str(error)}
    row = {"job": job_dir.name, "overrides": " ".join(overrides), "status": status["status"]}
    return row | {column: metrics.get(column) for column in METRIC_COLUMNS} | {"error": status.get("error")}


def _hidden_keys(job_dir: Path) -> set[str]:
    """Overrides that say nothing about the model (the data folder, an Optuna trial's id), as Hydra's
    `hydra.job.config.override_dirname.exclude_keys` lists them in the job's `hydra.yaml`."""
    saved = job_dir / ".hydra" / "hydra.yaml"
    if not saved.is_file():
        return set()
    return set(OmegaConf.select(OmegaConf.load(saved), "hydra.job.config.override_dirname.exclude_keys") or [])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"unreadable {path.name}: {error}") from error


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's Hydra job folders (`<n>/.hydra/overrides.yaml`)."""
    if not sweep_dir.is_dir():
        return []
    return [path for path in sweep_dir.iterdir() if (path / ".hydra" / "overrides.yaml").is_file()]


def read_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise ConfigError(f"{sweep_dir} holds no Hydra job folders (<n>/.hydra/overrides.yaml)")
    return [read_run(job) for job in sorted(jobs, key=lambda path: int(path.name) if path.name.isdigit() else 0)]


def group_by_setting(runs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Runs that differ only in `seed=` form one setting, named by the overrides not shared by every run."""
    shared = set.intersection(*(set(run["overrides"].split()) for run in runs))
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["status"] == "ok" and run[metric] is not None:
            parts = run["overrides"].split()
            setting = " ".join(part for part in parts if part not in shared and override_key(part) != "seed")
            groups[setting].append(run)
    return [_describe(setting, members, metric) for setting, members in groups.items()]


def _describe(setting: str, runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    accuracies = [run[metric] for run in runs]
    seconds = [run["train_seconds"] for run in runs if run["train_seconds"] is not None]  # eval sweeps: none
    return {
        "setting": setting or "(the same in every run)",
        "runs": len(runs),
        "parameters": runs[0]["parameters"],
        f"{metric}_mean": statistics.mean(accuracies),
        f"{metric}_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "train_seconds_mean": statistics.mean(seconds) if seconds else None,
    }


def swept_values(runs: list[dict[str, Any]]) -> dict[str, list[str | None]]:
    """Per override key whose value differs between runs (seed aside): every run's value, None where unset."""
    per_run = [dict(part.split("=", 1) for part in run["overrides"].split() if "=" in part) for run in runs]
    keys = dict.fromkeys(key for overrides in per_run for key in overrides)
    values = {key: [overrides.get(key) for overrides in per_run] for key in keys if override_key(key) != "seed"}
    return {key: column for key, column in values.items() if len(set(column)) > 1}


def plot_runs(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """`runs.png`: val and test accuracy of the finished runs against each swept value; None if nothing varies."""
    swept = swept_values(runs)
    if not swept:
        return None
    fig = Figure(figsize=(4.5 * len(swept), 4), layout="constrained")
    for ax, (key, column) in zip(fig.subplots(1, len(swept), squeeze=False)[0], swept.items(), strict=True):
        _scatter(ax, key, column, runs)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _scatter(ax: Any, key: str, column: list[str | None], runs: list[dict[str, Any]]) -> None:
    numbers = [_number(value) for value in column]
    numeric = all(number is not None for number in numbers)
    categories = sorted({str(value) for value in column})
    xs = numbers if numeric else [categories.index(str(value)) for value in column]
    for metric, marker in (("val_acc_best", "o"), ("test_acc", "x")):
        points = [(x, run[metric]) for x, run in zip(xs, runs, strict=True) if run[metric] is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, label=metric)
    if ax.collections:
        ax.legend()
    if numeric and min(numbers) > 0 and max(numbers) / min(numbers) >= 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    ax.set_xlabel(key)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write the tables and plot of a sweep folder, print the settings table; return the runs."""
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir} is not a folder")
    runs = read_sweep(sweep_dir)
    write_tables(runs, RUN_COLUMNS, sweep_dir / "runs")
    plot_runs(runs, sweep_dir / "runs.png")
    metric = summary_metric(runs)
    print(write_tables(group_by_setting(runs, metric), setting_columns(metric), sweep_dir / "settings"), end="")
    failed = [run["job"] for run in runs if run["status"] == "failed"]
    if failed:
        print(f"failed jobs: {', '.join(failed)} (errors in {sweep_dir / 'runs.md'})")
    print(f"sweep summary: {sweep_dir / 'runs.md'}")
    return runs


class SweepSummary(Callback):
    """Hydra callback: summarize a multirun when it ends; exit with status 1 if any job failed.

    The jobs have all run by then: a failed job never stops the others (`mnist_cnn.sweep.run_job`).
    `fail_on_failed_jobs: false` (hyperparameter searches, where failed trials are part of the search) exits 0.
    """

    def __init__(self, fail_on_failed_jobs: bool = True) -> None:
        self.fail_on_failed_jobs = fail_on_failed_jobs

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not job_dirs(sweep_dir):  # e.g. rerunning a finished Optuna study
            print(f"sweep summary: no jobs ran in {sweep_dir}")
            return
        runs = summarize(sweep_dir)
        if self.fail_on_failed_jobs and any(run["status"] == "failed" for run in runs):
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Summarize a sweep folder, or an Optuna study from its storage (all its workers' trials)."
    )
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="a multirun folder: outputs/multirun/<date>/<time>")
    parser.add_argument("--study", help="an Optuna study's name (hydra.sweeper.study_name) instead of a folder")
    parser.add_argument("--storage", default="sqlite:///outputs/optuna.db", help="the study's hydra.sweeper.storage")
    parser.add_argument("--out", type=Path, help="where a study's tables go (default: outputs/studies/<study>)")
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.study is None):
        parser.error("give either a sweep folder or --study (with --storage)")
    try:
        if args.study:
            summarize_study(args.study, args.storage, args.out)
        else:
            summarize(args.sweep_dir)
    except UserError as error:  # a missing folder or study, a storage that cannot be opened: one line
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
