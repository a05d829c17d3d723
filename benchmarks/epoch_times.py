"""Seconds per epoch of finished `mnist-cnn-train` runs, from their TensorBoard event files.

    python benchmarks/epoch_times.py outputs/2026-12-04/17-00-00 [more run folders]

Each epoch ends with a validation, whose `val/acc` TensorBoard records with the wall-clock time; the gaps
between consecutive ones are the second epoch's length onwards (training and its validation), so one-off
costs of the first epoch (compiling, CUDA graph capture, cuDNN's autotuning) are not in them. Needs
validation (data.val_size > 0) and the TensorBoard logger; in a resumed run, one gap holds the pause.
"""

import argparse
import itertools
import json
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def epoch_gaps(run_dir: Path) -> list[float]:
    """Seconds between consecutive epochs' validations in `run_dir`'s TensorBoard logs."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    times = sorted(event.wall_time for event in events.Scalars("val/acc"))
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (each with tensorboard/ and metrics.json)")
    args = parser.parse_args()
    print("| run | epochs | s per epoch, from the second on | median | fit s (metrics.json) | best val acc |")
    print("|---|---:|---|---:|---:|---:|")
    for run in args.runs:
        gaps, metrics = epoch_gaps(run), json.loads((run / "metrics.json").read_text())
        median = f"{statistics.median(gaps):.2f}" if gaps else "-"
        print(
            f"| {run} | {metrics['epochs']} | {', '.join(f'{gap:.2f}' for gap in gaps)} | {median} "
            f"| {metrics['train_seconds']:.1f} | {metrics['val_acc_best']:.2%} |"
        )


if __name__ == "__main__":
    main()
