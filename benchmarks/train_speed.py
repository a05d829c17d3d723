"""Training speed, side by side in one run: the chapter's plain PyTorch loop against our default training.

    python benchmarks/train_speed.py --data-dir ../shared/data

For each seed, one after the other and each in its own process:
  (a) chapter    the chapter's loop: torchvision MNIST, all 60k training images, per-sample PIL
                 augmentation, batch 64, Adam 1e-3, final weights tested;
  (b) ours       `mnist-cnn-train` with the default config (Lightning, the fast tensor data path, 55k/5k
                 split validated every epoch, checkpoints, TensorBoard, best checkpoint tested); only the
                 data folder, epochs and seed are overridden;
  (c) ours-bare  (b)'s data path and model in a plain loop with the same validation, so (b) - (c) is
                 what Lightning costs;
  (d) ours-60k   `mnist-cnn-train experiment=chapter data.augment_eval=false`: our pipeline on the chapter's
                 protocol (all 60k images, final weights), the like-for-like accuracy comparison with (a).
Prints a Markdown table of means over the seeds (seconds per epoch, training images/s, peak memory, test
accuracy, test-set inference images/s, fit time relative to (a)) and writes it, with every raw number,
under --out. Fit time excludes start-up and the final test; "process s" is the whole command.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from mnist_cnn import run_record

HERE = Path(__file__).resolve().parent
RUNS = {"a": "(a) chapter", "b": "(b) ours", "c": "(c) ours-bare", "d": "(d) ours-60k"}


def run_process(command: list[str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak resident memory in MiB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, peak memory included
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"benchmark step failed: {' '.join(command)}")
    return stdout, time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux reports KiB


def plain_loop(kind: str, args: argparse.Namespace, seed: int) -> dict:
    command = [sys.executable, str(HERE / "plain_loops.py"), kind, "--data-dir", args.data_dir]
    command += ["--epochs", str(args.epochs), "--seed", str(seed), "--val-size", str(args.val_size)]
    stdout, wall, peak = run_process(command)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "train_seconds": sum(result["epoch_seconds"]), "process_seconds": wall, "peak_mib": peak}


def our_training(args: argparse.Namespace, seed: int, run_dir: Path, *protocol: str) -> dict:
    overrides = [f"paths.data_dir={args.data_dir}", f"trainer.max_epochs={args.epochs}", f"seed={seed}", *protocol]
    overrides += [f"hydra.run.dir={run_dir}", "callbacks.progress_bar.refresh_rate=0"]
    _, wall, peak = run_process([sys.executable, "-m", "mnist_cnn.train", *overrides])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "train_images_per_s": metrics["train_images"] * args.epochs / metrics["train_seconds"],
        "test_acc": metrics["test_acc"],
        "test_images_per_s": metrics["test_images"] / metrics["test_seconds"],
        "train_seconds": metrics["train_seconds"],
        "process_seconds": wall,
        "peak_mib": peak,
    }


def run_one(key: str, args: argparse.Namespace, seed: int, tmp: Path) -> dict:
    """One of the runs (a)-(d) for one seed."""
    if key in ("a", "c"):
        return plain_loop("chapter" if key == "a" else "fast", args, seed)
    protocol = [f"data.val_size={args.val_size}"] if key == "b" else ["experiment=chapter", "data.augment_eval=false"]
    return our_training(args, seed, tmp / f"{key}{seed}", *protocol)


def machine() -> str:
    """The machine in a line, with the instructions torch's kernels use: they change a run's digits (run_record)."""
    found = run_record.machine()
    caps = "".join(f", {name}={value}" for name, value in found["isa_limits"].items())
    cpu = f"{found['cpu'] or platform.machine()}, torch kernels {found['torch_cpu_capability']}{caps}"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{found['cores']} CPU cores ({cpu}), {device}, torch {torch.__version__}, Python {platform.python_version()}"
    )


def mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(run[key] for run in runs)


def summary_table(results: dict[str, list[dict]], epochs: int) -> str:
    first = next(iter(results.values()))
    base = mean(first, "train_seconds")
    rows = [
        "| run | s/epoch | train images/s | fit s | process s | peak RSS MiB | test acc (mean ± sd) "
        f"| test images/s | fit time vs {next(iter(results))} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        accs = [run["test_acc"] for run in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        fit = mean(runs, "train_seconds")
        rows.append(
            f"| {name} | {fit / epochs:.2f} | {mean(runs, 'train_images_per_s'):,.0f} | {fit:.1f} "
            f"| {mean(runs, 'process_seconds'):.1f} | {mean(runs, 'peak_mib'):,.0f} "
            f"| {statistics.fmean(accs):.2%} ± {spread:.2%} | {mean(runs, 'test_images_per_s'):,.0f} "
            f"| {fit / base:.2f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--val-size", type=int, default=5000, help="our validation split (the default config's)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which of (a)-(d)")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    results: dict[str, list[dict]] = {RUNS[key]: [] for key in args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for key in args.runs:
                results[RUNS[key]].append(run_one(key, args, seed, Path(tmp)))
            print(f"seed {seed}: " + ", ".join(f"{n} {r[-1]['train_seconds']:.1f} s" for n, r in results.items()))
    seeds = " ".join(map(str, args.seeds))
    report = f"{args.epochs} epochs, seeds {seeds}, on {machine()}\n\n{summary_table(results, args.epochs)}\n"
    print(report)
    out = args.out / datetime.now().strftime("train_speed-%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps({"command": sys.argv, "results": results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
