"""What the chapter's augmentation buys: test accuracy under rotations and flips, per augmentation, over seeds.

    mnist-cnn-train -m paths.data_dir=../shared/data robustness=true \\
        data.augmentation.flip_p=0.5,0 data.augmentation.degrees=10,0 seed=1,2,3
    python benchmarks/augmentation_robustness.py --sweep outputs/multirun/<date>/<time>

Reads each job's `robustness.csv` and `metrics.json`, groups the jobs by their augmentation, and writes a
table (mean and standard deviation over the seeds) and a plot of accuracy against rotation per augmentation.
"""

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf
from results import save_results

from mnist_cnn.insight import render, save_png
from mnist_cnn.robustness import ROTATIONS
from mnist_cnn.runner import describe_augmentation
from mnist_cnn.sweep_summary import job_dirs

SHOWN_ANGLES = (15, 30, 45)  # the table's columns: the mean of +angle and -angle


def setting_of(job: Path) -> str:
    """`flip 0.5, rotate 10`: the job's augmentation, as TensorBoard's HPARAMS tab names it."""
    return describe_augmentation(OmegaConf.load(job / ".hydra" / "resolved_config.yaml").data)


def read_job(job: Path) -> dict[tuple[str, int], float]:
    with (job / "robustness.csv").open() as file:
        rows = {(row["transform"], int(row["parameter"])): float(row["accuracy"]) for row in csv.DictReader(file)}
    return rows


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} ± {spread:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True, help="a multirun folder of robustness=true runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args()

    runs: dict[str, list[dict[tuple[str, int], float]]] = defaultdict(list)
    for job in sorted(job_dirs(args.sweep)):
        if (job / "robustness.csv").is_file():
            runs[setting_of(job)].append(read_job(job))
    if not runs:
        raise SystemExit(f"error: no job under {args.sweep} has a robustness.csv (train with robustness=true)")

    header = "| augmentation | runs | test | " + " | ".join(f"rotated ±{a}°" for a in SHOWN_ANGLES) + " | mirrored |"
    lines = [header, "|" + "---|" * (4 + len(SHOWN_ANGLES))]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for setting, jobs in sorted(runs.items()):
        cells = [mean_std([job[("rotation", 0)] for job in jobs])]
        cells += [mean_std([(job[("rotation", a)] + job[("rotation", -a)]) / 2 for job in jobs]) for a in SHOWN_ANGLES]
        cells += [mean_std([job[("horizontal_flip", 1)] for job in jobs])]
        lines.append(f"| {setting} | {len(jobs)} | " + " | ".join(cells) + " |")
        curve = [statistics.mean(job[("rotation", angle)] for job in jobs) for angle in ROTATIONS]
        (line,) = ax.plot(ROTATIONS, curve, "o-", markersize=3, label=setting)
        mirrored = statistics.mean(job[("horizontal_flip", 1)] for job in jobs)
        ax.plot([52], [mirrored], "D", color=line.get_color())
    ax.set_xticks([*ROTATIONS[::3], 52], [*(str(a) for a in ROTATIONS[::3]), "mirror"])
    ax.set(xlabel="rotation of the test images (degrees); right: mirrored left-right", ylabel="test accuracy")
    seeds = sorted({len(jobs) for jobs in runs.values()})
    ax.set_title(f"Test accuracy under rotation and mirroring, mean over {'-'.join(map(str, seeds))} seeds")
    ax.grid(alpha=0.3)
    ax.legend(title="training augmentation")
    table = "\n".join(lines) + "\n"
    print(table)
    folder = save_results(args, "augmentation_robustness", table, runs={k: len(v) for k, v in runs.items()})
    save_png(render(fig), folder / "robustness.png")
    print(f"plot: {folder / 'robustness.png'}")


if __name__ == "__main__":
    main()
