"""The benchmark scripts run end to end (on the small generated dataset) and report what they promise."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, PROJECT_ROOT, VAL_SIZE, run_cli

pytestmark = pytest.mark.slow  # the command line, in subprocesses

BENCHMARKS = PROJECT_ROOT / "benchmarks"


def run_script(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_train_speed_compares_the_chapter_loop_with_our_training(mnist_root: Path, tmp_path: Path) -> None:
    args = ["--data-dir", str(mnist_root), "--epochs", "1", "--seeds", "0", "--val-size", str(VAL_SIZE)]
    stdout = run_script("train_speed.py", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    (folder,) = (tmp_path / "out").iterdir()
    table = (folder / "results.md").read_text()
    assert table in stdout
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip() for row in rows] == ["(a) chapter", "(b) ours", "(c) ours-bare", "(d) ours-60k"]
    assert rows[0].rstrip().endswith("| 1.00x |")
    results = json.loads((folder / "results.json").read_text())["results"]
    for runs in results.values():
        (run,) = runs
        assert run["train_seconds"] > 0 and run["peak_mib"] > 100 and 0 <= run["test_acc"] <= 1
        assert run["train_images_per_s"] > 0 and run["test_images_per_s"] > 0


def test_options_benchmark_reports_every_part(mnist_root: Path, tmp_path: Path) -> None:
    stdout = run_script("options.py", "--data-dir", str(mnist_root), "--repeats", "1", "--no-compile", cwd=tmp_path)
    for title in (
        "Training step",
        "Threads",
        "Lightning's share",
        "Augmenting one batch",
        "Augmentation pieces",
        "Sampling and batching",
        "Data beside the step",
        "Updating an EMA of the weights",
        "Inference",
        "Classic loader",
    ):
        assert f"### {title}" in stdout
    assert "channels_last + fused Adam (our default)" in stdout and "num_workers=2" in stdout
    assert "sampling grid: ours, one matrix product" in stdout and "(experiment=best)" in stdout
    assert "one foreach lerp (ours: get_ema_multi_avg_fn)" in stdout
    assert "rounded grid and one gather (same pixels)" in stdout and "1,024 images a call, per 64" in stdout
    assert "| make the next batch in a second thread during the step |" in stdout
    assert (
        "the plain step (loss only), manual optimization" in stdout and "### ... as a ratio to the plain loop" in stdout
    )


def test_options_benchmark_runs_only_the_parts_asked_for(mnist_root: Path, tmp_path: Path) -> None:
    stdout = run_script("options.py", "--data-dir", str(mnist_root), "--repeats", "1", "--parts", "ema", cwd=tmp_path)
    assert [line for line in stdout.splitlines() if line.startswith("### ")] == ["### Updating an EMA of the weights"]


def test_sweep_threads_times_three_ways_of_running_one_sweep(mnist_root: Path, tmp_path: Path) -> None:
    args = ["--data-dir", str(mnist_root), "--jobs", "2", "--batches", "2", "--val-size", str(VAL_SIZE)]
    stdout = run_script("sweep_threads.py", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    (folder,) = (tmp_path / "out").iterdir()
    assert (folder / "results.md").read_text() in stdout and "| sequential |" in stdout
    seconds = json.loads((folder / "results.json").read_text())["seconds"]
    assert set(seconds) == {"sequential", "joblib", "oversubscribed"} and all(value > 0 for value in seconds.values())


def test_search_workers_runs_one_search_three_ways_on_a_postgresql_server(mnist_root: Path, tmp_path: Path) -> None:
    args = ["--data-dir", str(mnist_root), "--trials", "2", "--epochs", "1", "--fraction", "1.0"]
    stdout = run_script(
        "search_workers.py", *args, "--val-size", str(VAL_SIZE), "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    (folder,) = (tmp_path / "out").iterdir()
    assert (folder / "results.md").read_text() in stdout and "postgresql storage" in stdout
    results = json.loads((folder / "results.json").read_text())["results"]
    assert list(results) == ["1 worker", "2 workers", "1 worker, n_jobs=2"]
    for result in results.values():  # every set-up ran its own study's 2 trials (one may fail: its random recipe,
        # e.g. OneCycleLR on 4 steps, can divide by zero on this tiny data; a failed trial is still a trial run)
        assert result["seconds"] > 0 and sum(result["trials"].values()) == 2


def test_photo_digits_measures_each_preprocessing_step(tiny_run: Path, mnist_root: Path, tmp_path: Path) -> None:
    ckpt = json.loads((tiny_run / "metrics.json").read_text())["checkpoint"]
    args = ["--ckpt", ckpt, "--data-dir", str(mnist_root), "--count", "12", "--out", str(tmp_path / "out")]
    stdout = run_script("photo_digits.py", *args, cwd=tmp_path)
    (folder,) = (tmp_path / "out").iterdir()
    accuracy = json.loads((folder / "results.json").read_text())["accuracy"]
    assert len(accuracy) == 6 and all(0 <= value <= 1 for value in accuracy.values())
    assert (folder / "results.md").read_text() in stdout and (folder / "examples.png").is_file()


def test_export_parity_compares_three_runtimes_on_the_test_set(
    tiny_run: Path, mnist_root: Path, tmp_path: Path
) -> None:
    ckpt = json.loads((tiny_run / "metrics.json").read_text())["checkpoint"]
    stdout = run_script("export_parity.py", "--ckpt", ckpt, "--data-dir", str(mnist_root), cwd=tmp_path)
    rows = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| ") and "max abs" not in line]
    assert [row[0].strip() for row in rows] == ["torch", "onnxruntime", "torchscript"]
    assert all(row[2].strip() == "0" and float(row[1]) < 1e-4 for row in rows)  # same digits, logits within 1e-4


def test_insight_cost_times_the_metrics_and_the_pictures(tiny_run: Path, mnist_root: Path, tmp_path: Path) -> None:
    ckpt = json.loads((tiny_run / "metrics.json").read_text())["checkpoint"]
    args = ["--ckpt", ckpt, "--data-dir", str(mnist_root), "--repeats", "1", "--out", str(tmp_path / "out")]
    stdout = run_script("insight_cost.py", *args, cwd=tmp_path)
    (folder,) = (tmp_path / "out").iterdir()
    raw = json.loads((folder / "results.json").read_text())
    assert set(raw["validation"]) == {"forward", "accuracy only", "metric collection", "confusion figure"}
    assert set(raw["test"]) == {"insight on", "insight off"}
    assert all(value > 0 for part in ("validation", "test") for value in raw[part].values())
    assert (folder / "results.md").read_text() in stdout


def test_augmentation_robustness_compares_the_augmentations_of_a_sweep(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", "robustness=true", "data.augmentation.flip_p=0.5,0"]
    assert run_cli("train", "-m", *overrides, "seed=1,2", cwd=tmp_path).returncode == 0
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    stdout = run_script(
        "augmentation_robustness.py", "--sweep", str(sweep), "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    (folder,) = (tmp_path / "out").iterdir()
    rows = [line for line in (folder / "results.md").read_text().splitlines() if line.startswith("| flip")]
    assert [row.split(" | ")[:2] for row in rows] == [["| flip 0, rotate 10", "2"], ["| flip 0.5, rotate 10", "2"]]
    assert (folder / "robustness.png").is_file() and rows[0] in stdout


def test_recipes_times_the_presets_against_the_bare_loop_and_profiles_the_default(
    mnist_root: Path, tmp_path: Path
) -> None:
    args = ["--data-dir", str(mnist_root), "--seeds", "0", "--recipes", "fast", "--val-size", str(VAL_SIZE)]
    args += ["--overrides", "data.download=false", "export_onnx=false", "callbacks.insight=null"]
    stdout = run_script("recipes.py", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    (folder,) = (tmp_path / "out").iterdir()
    table = (folder / "results.md").read_text()
    assert table in stdout
    rows = [line for line in table.splitlines() if "x** (" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["bare", "default", "fast"]
    raw = json.loads((folder / "results.json").read_text())
    runs = raw["runs"]
    assert runs["default"][0]["epochs"] == 5 and 0 <= runs["fast"][0]["test_acc"] <= 1
    ratio = runs["default"][0]["train_seconds"] / runs["bare"][0]["train_seconds"]
    assert f"| **{ratio:.2f}x** ({ratio:.2f}) |" in rows[1]  # each run's fit over the bare loop's, same seed
    profile = raw["profile"]
    total = profile.pop("the training epochs, all of it")
    assert total > 0 and profile["step: forward, backward, optimizer"] > 0 and profile["validation"] > 0
    assert profile["data: index, augment, normalise"] > 0 and profile["checkpoints"] > 0
    # No profiler action counted in two groups: what is left for "everything else" is not negative.
    assert profile["everything else (loop, hooks, progress)"] >= 0


def test_epoch_times_reads_each_epochs_length_from_tensorboard(tiny_run: Path, tmp_path: Path) -> None:
    stdout = run_script("epoch_times.py", str(tiny_run), cwd=tmp_path)
    (row,) = [line for line in stdout.splitlines() if line.startswith(f"| {tiny_run} |")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[1] == "2" and float(cells[2]) == float(cells[3]) > 0  # 2 epochs: one gap, its own median


def test_gpu_syncs_counts_nothing_without_a_gpu_and_trains_as_the_command_line(
    mnist_root: Path, tmp_path: Path
) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", f"hydra.run.dir={tmp_path / 'run'}", "test=false"]
    stdout = run_script("gpu_syncs.py", *overrides, cwd=tmp_path)
    assert "host syncs: 0 in all, by place" in stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1


def test_gpu_syncs_counts_sync_warnings_by_place_and_passes_the_others_on(capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("gpu_syncs", BENCHMARKS / "gpu_syncs.py")
    gpu_syncs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_syncs)
    for line in (3, 7, 3):  # what torch's sync debug mode warns
        gpu_syncs.record(UserWarning("called a synchronizing CUDA operation"), UserWarning, "a.py", line)
    gpu_syncs.record(UserWarning("something else"), UserWarning, "b.py", 1)
    gpu_syncs.report()
    out, err = capsys.readouterr()
    assert "host syncs: 3 in all" in out and out.index("--- 2x at a.py:3") < out.index("--- 1x at a.py:7")
    assert "UserWarning: something else (b.py:1)" in err and "b.py" not in out
