"""The training recipes against the compute floor, side by side in one run.

    python benchmarks/recipes.py --data-dir ../shared/data                      # seeds 1 2 3
    python benchmarks/recipes.py --data-dir ../shared/data --recipes best --seeds 1 2 3 4 5

For each seed, one after the other and each in its own process:
  bare      benchmarks/plain_loops.py bare: the chapter's network, batch 64, channels_last, fused Adam, 5 epochs
            on the 55,000 training images of the default split, no data work, no validation, no Lightning;
  default   `mnist-cnn-train` with the default config (the chapter's recipe on the fast data path, validated
            every epoch, checkpoints, TensorBoard);
  <recipe>  `mnist-cnn-train experiment=<recipe>` for each of --recipes.
Fit time is `train_seconds` (the bare loop's epochs summed): start-up and the final test are not in it. Each
run's fit time is divided by the bare loop's of the same seed, measured minutes apart, so machines of
different speeds give comparable ratios. Then, once, the default run again under Lightning's simple profiler
(without the two-batch sanity validation before the first epoch), whose report says where the default's time
beyond the bare loop goes; the profiler's own bookkeeping makes that run a little slower. Prints Markdown
tables and writes them, with every raw number, under --out.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from results import save_results
from train_speed import machine, run_process

HERE = Path(__file__).resolve().parent
BARE_EPOCHS = 5

# The simple profiler's actions of the training epochs (validation runs inside them), grouped by what they are;
# each action's total over the fit, in seconds. Hooks nest, so each group names actions that do not.
PROFILE_GROUPS = {
    "step: forward, backward, optimizer": [r"run_training_batch"],
    "data: index, augment, normalise": [r"\[_TrainingEpochLoop\]\.train_dataloader_next"],
    "validation": [
        r"\[_EvaluationLoop\]\.val_next",
        r"\[Strategy\]SingleDeviceStrategy\.validation_step",
        r"\[LightningModule\]MNISTClassifier\.on_validation_epoch_end",
        r"\[Callback\]ConfusionFigures\.on_validation_end",
    ],
    # the hooks that save; each callback's other hooks run outside the epochs or nested inside a save
    "checkpoints": [r"\[Callback\]ModelCheckpoint.*\.(on_train_batch_end|on_validation_end|on_train_epoch_end)"],
    "epoch-end metrics and logging": [r"\[LightningModule\]MNISTClassifier\.on_train_epoch_end"],
}
EPOCHS_ACTION = "run_training_epoch"
EPOCH_END_HOOKS = r"\[(Callback|LightningModule)\].*\.on_train_epoch_end"


def bare_loop(args: argparse.Namespace, seed: int) -> dict:
    command = [sys.executable, str(HERE / "plain_loops.py"), "bare", "--data-dir", args.data_dir]
    command += ["--epochs", str(BARE_EPOCHS), "--seed", str(seed), "--val-size", str(args.val_size or 5000)]
    stdout, wall, _ = run_process(command)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"train_seconds": sum(result["epoch_seconds"]), "test_acc": result["test_acc"], "process_seconds": wall}


def training(args: argparse.Namespace, seed: int, run_dir: Path, *overrides: str) -> dict:
    command = [sys.executable, "-m", "mnist_cnn.train", *common_overrides(args), f"seed={seed}", *overrides]
    command += [f"hydra.run.dir={run_dir}"]
    _, wall, _ = run_process(command)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "train_seconds": metrics["train_seconds"],
        "test_acc": metrics["test_acc"],
        "val_acc_best": metrics["val_acc_best"],
        "epochs": metrics["epochs"],
        "process_seconds": wall,
    }


def common_overrides(args: argparse.Namespace) -> list[str]:
    """What every `mnist-cnn-train` run here gets: the data, this machine's settings left out, --overrides."""
    overrides = ["~local", f"paths.data_dir={args.data_dir}", "callbacks.progress_bar.refresh_rate=0"]
    return overrides + ([f"data.val_size={args.val_size}"] if args.val_size else []) + args.overrides


def profile_default(args: argparse.Namespace, run_dir: Path) -> dict[str, float]:
    """Seconds per group of `PROFILE_GROUPS`, from the simple profiler's report of a default run's fit."""
    command = [sys.executable, "-m", "mnist_cnn.train", *common_overrides(args)]
    # No sanity validation: it runs before the epochs, and its steps would count as validation inside them.
    command += ["trainer.profiler=simple", "trainer.num_sanity_val_steps=0", "test=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    totals = {}
    for line in result.stderr.split("FIT Profiler Report")[-1].splitlines():  # | action | mean | calls | total | %
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 7 and re.fullmatch(r"[0-9.e-]+", cells[4]):
            totals[cells[1]] = float(cells[4])
    grouped = {group: _sum_matching(totals, patterns) for group, patterns in PROFILE_GROUPS.items()}
    # Lightning's fit loop calls the epoch-end hooks (`last.ckpt`, the epoch's metrics) after its
    # "run_training_epoch" block, so they are added to it to make the whole.
    whole = totals[EPOCHS_ACTION] + _sum_matching(totals, [EPOCH_END_HOOKS])
    grouped["everything else (loop, hooks, progress)"] = whole - sum(grouped.values())
    grouped["the training epochs, all of it"] = whole
    return grouped


def _sum_matching(totals: dict[str, float], patterns: Iterable[str]) -> float:
    return sum(seconds for action, seconds in totals.items() if any(re.fullmatch(p, action) for p in patterns))


def results_table(runs: dict[str, list[dict]], seeds: list[int]) -> str:
    bare = runs["bare"]
    rows = [
        "| run | fit s (mean) | fit vs bare (mean, per seed) | test acc mean ± sd | lowest | per seed |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, results in runs.items():
        ratios = [run["train_seconds"] / base["train_seconds"] for run, base in zip(results, bare, strict=True)]
        accs = [run["test_acc"] for run in results]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(
            f"| {name} | {statistics.fmean(run['train_seconds'] for run in results):.1f} "
            f"| **{statistics.fmean(ratios):.2f}x** ({', '.join(f'{r:.2f}' for r in ratios)}) "
            f"| {statistics.fmean(accs):.2%} ± {spread:.2%} | {min(accs):.2%} "
            f"| {', '.join(f'{seed}: {acc:.2%}' for seed, acc in zip(seeds, accs, strict=True))} |"
        )
    return "\n".join(rows)


def profile_table(profile: dict[str, float], bare_seconds: float) -> str:
    rows = ["| part of the default's fit | s | share of the fit |", "|---|---:|---:|"]
    fit = profile["the training epochs, all of it"]
    for group, seconds in profile.items():
        rows.append(f"| {group} | {seconds:.1f} | {seconds / fit:.0%} |")
    rows.append(f"| the bare loop, same seed count (mean) | {bare_seconds:.1f} | {bare_seconds / fit:.0%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipes", nargs="*", default=["fast", "best"], help="experiment presets to run")
    parser.add_argument("--no-default", action="store_true", help="leave out the default run (and its profile)")
    parser.add_argument("--val-size", type=int, help="held out of training, for small test data (default: 5000)")
    parser.add_argument("--overrides", nargs="*", default=[], help="for every training run, e.g. trainer=gpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    names = ["bare"] + ([] if args.no_default else ["default"]) + list(args.recipes)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            runs["bare"].append(bare_loop(args, seed))
            for name in names[1:]:
                preset = [] if name == "default" else [f"experiment={name}"]
                runs[name].append(training(args, seed, Path(tmp) / f"{name}{seed}", *preset))
            print(f"seed {seed}: " + ", ".join(f"{n} {r[-1]['train_seconds']:.1f} s" for n, r in runs.items()))
        profile = {} if args.no_default else profile_default(args, Path(tmp) / "profile")
    seeds = " ".join(map(str, args.seeds))
    report = f"Seeds {seeds}, on {machine()}\n\n{results_table(runs, args.seeds)}\n"
    if profile:
        bare_seconds = statistics.fmean(run["train_seconds"] for run in runs["bare"])
        report += f"\nThe default's fit under Lightning's simple profiler:\n\n{profile_table(profile, bare_seconds)}\n"
    print(report)
    print(f"written to {save_results(args, 'recipes', report, runs=runs, profile=profile)}")


if __name__ == "__main__":
    main()
