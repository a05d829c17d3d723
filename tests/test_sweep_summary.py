"""The sweep summary's grouping over seeds and its handling of a failed job, on hand-made job folders."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from mnist_cnn.sweep_summary import main, summarize, swept_values


def make_job(sweep: Path, number: int, overrides: list[str], metrics: dict | None) -> None:
    hydra_dir = sweep / str(number) / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text("".join(f"- {override}\n" for override in overrides))
    if metrics is not None:
        (sweep / str(number) / "metrics.json").write_text(json.dumps(metrics))


def metrics(test_acc: float, seconds: float) -> dict:
    return {"test_acc": test_acc, "val_acc_best": test_acc, "parameters": 17066, "train_seconds": seconds}


def test_seeds_are_grouped_and_a_failed_job_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_job(tmp_path, 0, ["model=cnn", "seed=1", "paths.data_dir=d"], metrics(0.97, 10.0))
    make_job(tmp_path, 1, ["model=cnn", "seed=2", "paths.data_dir=d"], metrics(0.99, 30.0))
    make_job(tmp_path, 2, ["model=mlp", "seed=1", "paths.data_dir=d"], None)
    main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| model=cnn | 2 | 17066 | 0.9800 | 0.0141 | 20.0000 |" in printed
    assert "model=mlp" not in (tmp_path / "settings.md").read_text()
    assert "failed jobs: 2" in printed
    assert "| 2 | model=mlp seed=1 paths.data_dir=d | failed |" in (tmp_path / "runs.md").read_text()
    assert "paths.data_dir" not in (tmp_path / "settings.md").read_text()  # shared by every run: not a setting


def test_a_folder_without_jobs_or_no_folder_is_refused_with_one_line(tmp_path: Path, capsys) -> None:
    for folder, message in ((tmp_path, "holds no Hydra job folders"), (tmp_path / "nothing", "is not a folder")):
        with pytest.raises(SystemExit) as stopped:
            main([str(folder)])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {folder} {message}") and error.count("\n") == 1


def test_a_job_whose_results_were_cut_short_is_failed_and_the_rest_summarized(tmp_path: Path, capsys) -> None:
    make_job(tmp_path, 0, ["model=cnn", "seed=1"], metrics(0.97, 10.0))
    make_job(tmp_path, 1, ["model=cnn", "seed=2"], metrics(0.99, 30.0))
    metrics_file = tmp_path / "1" / "metrics.json"
    metrics_file.write_text(metrics_file.read_text()[:30])  # a job killed while writing it
    runs = summarize(tmp_path)
    assert [run["status"] for run in runs] == ["ok", "failed"]
    assert runs[1]["error"].startswith("unreadable metrics.json: ")
    assert "| (the same in every run) | 1 | 17066 | 0.9700 |" in capsys.readouterr().out


def test_an_evaluation_sweep_is_summarized_without_training_seconds(tmp_path: Path, capsys) -> None:
    for number, accuracy in enumerate((0.97, 0.99)):  # mnist-cnn-eval -m ckpt_path=a.ckpt,b.ckpt: nothing trained
        make_job(tmp_path, number, [f"ckpt_path=run{number}.ckpt"], {"test_acc": accuracy, "parameters": 17066})
    summarize(tmp_path)
    assert "| ckpt_path=run1.ckpt | 1 | 17066 | 0.9900 | 0.0000 |  |" in capsys.readouterr().out


def test_statuses_come_from_status_json_and_the_plot_shows_every_swept_key(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["optimizer=adam", "optimizer.lr=0.001", "seed=1"], metrics(0.97, 10.0))
    make_job(tmp_path, 1, ["optimizer=sgd", "optimizer.lr=0.1", "seed=2"], None)
    (tmp_path / "1" / "status.json").write_text(json.dumps({"status": "pruned", "error": "Trial was pruned"}))
    make_job(tmp_path, 2, ["optimizer=sgd", "optimizer.lr=0.01", "seed=3"], metrics(0.98, 10.0))
    runs = summarize(tmp_path)
    assert [run["status"] for run in runs] == ["ok", "pruned", "ok"]
    assert runs[1]["error"] == "Trial was pruned"
    assert swept_values(runs) == {"optimizer": ["adam", "sgd", "sgd"], "optimizer.lr": ["0.001", "0.1", "0.01"]}
    image = plt.imread(tmp_path / "runs.png")
    assert image.shape[1] > image.shape[0] * 1.5  # one panel per swept key, side by side


def test_nothing_swept_means_no_plot(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["seed=1"], metrics(0.97, 10.0))
    make_job(tmp_path, 1, ["seed=2"], metrics(0.98, 10.0))
    summarize(tmp_path)
    assert (tmp_path / "runs.md").is_file() and not (tmp_path / "runs.png").exists()


def test_a_sweep_that_tested_nothing_groups_its_settings_by_validation_accuracy(tmp_path: Path) -> None:
    for number, (lr, seed, accuracy) in enumerate([("0.001", 1, 0.97), ("0.001", 2, 0.99), ("0.01", 1, 0.95)]):
        untested = {**metrics(accuracy, 10.0), "test_acc": None}
        make_job(tmp_path, number, [f"optimizer.lr={lr}", f"seed={seed}", "test=false"], untested)
    summarize(tmp_path)
    table = (tmp_path / "settings.md").read_text()
    assert "val_acc_best_mean" in table and "test_acc_mean" not in table
    assert "| optimizer.lr=0.001 | 2 | 17066 | 0.9800 | 0.0141 | 10.0000 |" in table
    assert "| optimizer.lr=0.01 | 1 | 17066 | 0.9500 | 0.0000 | 10.0000 |" in table
