"""One Optuna search, run by 1 worker and by 2 workers on one study, side by side in one run.

    python benchmarks/search_workers.py --data-dir ../shared/data

The search is `hparams_search=optuna` with `--trials` short trials (`--epochs` epochs of `--fraction` of the
training set), in three set-ups, each a study of its own on one storage:
  1 worker           one `mnist-cnn-train -m` sweep, torch's default threads (one per core);
  2 workers          two such sweeps started together on the same study, `threads=1` each;
  1 worker, n_jobs=2 one sweep that asks for 2 trials at a time and runs them through hydra/launcher=joblib.
The storage is a throwaway PostgreSQL server (`--storage postgresql`, started as the tests start theirs) or a
journal file (`--storage journal`). Prints a Markdown table (wall seconds, ratio to 1 worker, trials by state,
best validation accuracy) and writes it with the raw numbers under --out.
"""

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import optuna

from mnist_cnn.study_storage import open_storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' throwaway PostgreSQL server
from postgres_server import create_database, postgres_server
from results import save_results

SETUPS = {
    "1 worker": [[]],
    "2 workers": [["threads=1"], ["threads=1"]],
    "1 worker, n_jobs=2": [["hydra.sweeper.n_jobs=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
}


def search(args: argparse.Namespace, storage: str, study: str, folder: Path, workers: list[list[str]]) -> float:
    """Wall seconds until every worker of one study has ended."""
    common = [
        "hparams_search=optuna",
        f"paths.data_dir={args.data_dir}",
        "data.augmentation.flip_p=0",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.limit_train_batches={args.fraction}",
        f"data.val_size={args.val_size}",
        "callbacks.progress_bar.refresh_rate=0",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
    ]
    if args.no_pruning:  # the median pruner's warm-up outlasts the trial
        common.append(f"hydra.sweeper.pruner.n_warmup_steps={args.epochs}")
    start = time.perf_counter()
    with ExitStack() as logs:
        processes = []
        for number, own in enumerate(workers):
            log = logs.enter_context((folder / f"{study}-{number}.log").open("w"))
            command = [sys.executable, "-m", "mnist_cnn.train", "-m", *common, *own]
            processes.append(subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT))
        codes = [process.wait() for process in processes]
    if any(codes):
        raise SystemExit(f"{study}: a worker failed (exit codes {codes}); logs in {folder}")
    return time.perf_counter() - start


def describe(storage: str, study: str) -> dict[str, object]:
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    states = {state: sum(trial.state.name == state for trial in trials) for state in ("COMPLETE", "PRUNED", "FAIL")}
    complete = [trial.value for trial in trials if trial.state.name == "COMPLETE"]
    return {"trials": states, "best_val_acc": max(complete, default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the folder holding MNIST/raw/")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.2, help="trainer.limit_train_batches")
    parser.add_argument("--no-pruning", action="store_true", help="every trial runs all its epochs: equal work")
    parser.add_argument("--val-size", type=int, default=5000, help="data.val_size")
    parser.add_argument("--storage", choices=["postgresql", "journal"], default="postgresql")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a kill still stops the PostgreSQL server
    args.data_dir = str(Path(args.data_dir).resolve())

    results = {}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="search-workers-")))
        server = stack.enter_context(postgres_server()) if args.storage == "postgresql" else None
        for number, (name, workers) in enumerate(SETUPS.items()):
            study = f"setup{number}-{uuid.uuid4().hex[:6]}"
            storage = create_database(server, study) if server else f"journal:{folder}/{study}.journal"
            seconds = search(args, storage, study, folder, workers)
            results[name] = {"seconds": seconds, **describe(storage, study)}
            print(f"{name}: {seconds:.1f} s", flush=True)

    baseline = results["1 worker"]["seconds"]
    lines = [
        f"{args.trials} trials of {args.epochs} epochs x {args.fraction} of the training set, {args.storage} storage"
        + (", no pruning" if args.no_pruning else ""),
        "",
        "| set-up | wall s | vs 1 worker | complete / pruned / failed | best val acc |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        states = result["trials"]
        best = "-" if result["best_val_acc"] is None else f"{result['best_val_acc']:.4f}"
        lines.append(
            f"| {name} | {result['seconds']:.1f} | {result['seconds'] / baseline:.2f}x "
            f"| {states['COMPLETE']} / {states['PRUNED']} / {states['FAIL']} | {best} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    save_results(args, "search_workers", table, results=results)


if __name__ == "__main__":
    main()
