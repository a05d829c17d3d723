"""What per-job thread counts give a parallel sweep: the same small sweep three ways, side by side in one run.

    python benchmarks/sweep_threads.py --data-dir ../shared/data

The sweep is `--jobs` training jobs (seeds 1..N) of `--batches` training batches each, run as:
  sequential     Hydra's basic launcher: one job after the other, each with torch's default threads;
  joblib         hydra/launcher=joblib with n_jobs=--parallel: each job gets cores / parallel threads
                 (`${job_threads:}`, the default);
  oversubscribed the same joblib sweep with threads=<cores>: every job starts one thread per core.
Prints a Markdown table of each sweep's wall time and its ratio to the sequential one, and writes it
with the raw numbers under --out.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import save_results


def run_sweep(args: argparse.Namespace, folder: Path, *launcher: str) -> float:
    """Wall seconds of one `mnist-cnn-train -m` sweep, start-up included."""
    seeds = ",".join(str(seed) for seed in range(1, args.jobs + 1))
    overrides = [
        f"paths.data_dir={args.data_dir}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.batches}",
    ]
    overrides += [f"data.val_size={args.val_size}", "trainer.limit_val_batches=1", "test=false", f"seed={seeds}"]
    overrides += ["callbacks.progress_bar.refresh_rate=0"]
    overrides += [f"hydra.sweep.dir={folder}", *launcher]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mnist_cnn.train", "-m", *overrides], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"sweep failed ({' '.join(launcher) or 'basic launcher'}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=2, help="joblib's n_jobs")
    parser.add_argument("--batches", type=int, default=150, help="training batches per job")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.parallel}"]
    ways = {"sequential": [], "joblib": joblib, "oversubscribed": [*joblib, f"threads={cores}"]}
    with tempfile.TemporaryDirectory() as scratch:
        seconds = {name: run_sweep(args, Path(scratch) / name, *extra) for name, extra in ways.items()}
    lines = [
        f"{args.jobs} jobs x {args.batches} batches, {cores} cores, joblib n_jobs={args.parallel}",
        "",
        "| sweep | wall s | vs sequential |",
        "|---|---|---|",
        *(f"| {name} | {value:.1f} | {value / seconds['sequential']:.2f}x |" for name, value in seconds.items()),
    ]
    table = "\n".join(lines) + "\n"
    print(table, end="")
    save_results(args, "sweep_threads", table, seconds=seconds)


if __name__ == "__main__":
    main()
