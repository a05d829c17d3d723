"""The sweep summary's grouping over seeds and its handling of a failed job, on hand-made job folders."""

import json
from pathlib import Path

import pytest

from mnist_cnn.sweep_summary import main


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


def test_a_folder_without_jobs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="holds no Hydra job folders"):
        main([str(tmp_path)])
