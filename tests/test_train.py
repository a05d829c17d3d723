"""The train and eval entry points end to end: Hydra, a few batches, the files a run leaves."""

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST, TEST_SIZE, metrics_of, run_cli, single_run_dir
from helpers import ChapterCNN, read_events

from mnist_cnn.datamodule import MNISTDataModule

pytestmark = pytest.mark.slow  # the command line, in subprocesses


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """One small training run with the default config, in its own working folder; returns the run folder."""
    cwd = tmp_path_factory.mktemp("train")
    result = run_cli("train", *FAST, f"paths.data_dir={mnist_root}", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return single_run_dir(cwd)


def test_run_writes_checkpoints_metrics_and_weights(trained: Path) -> None:
    metrics = metrics_of(trained)
    assert metrics["parameters"] == 17_066 and metrics["epochs"] == 1
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["test_loss"] > 0 and metrics["train_seconds"] > 0
    assert 0.0 <= metrics["val_acc_best"] <= 1.0 and metrics["augment_eval"] is False
    checkpoint = Path(metrics["checkpoint"])
    assert checkpoint.is_file() and checkpoint.parent == trained / "checkpoints"
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert "trainable parameters: 17,066" in (trained / "train.log").read_text()
    assert (trained / "test_confusion_matrix.png").stat().st_size > 1000
    assert not list(trained.rglob("*.tmp"))


def test_exported_weights_load_into_the_chapters_class(trained: Path) -> None:
    chapter = ChapterCNN()
    chapter.load_state_dict(torch.load(trained / "mnist_classifier.pth", weights_only=True))


def test_confusion_csv_equals_a_direct_count_with_the_exported_weights(trained: Path, mnist_root: Path) -> None:
    with (trained / "test_confusion_matrix.csv").open() as file:
        header, *rows = list(csv.reader(file))
    assert header[1:] == [str(i) for i in range(10)]
    counts = torch.tensor([[int(v) for v in row[1:]] for row in rows])

    net = ChapterCNN().eval()
    net.load_state_dict(torch.load(trained / "mnist_classifier.pth", weights_only=True))
    dm = MNISTDataModule(data_dir=mnist_root, download=False)
    dm.setup("test")
    images, labels = zip(*[dm.test_set[i] for i in range(len(dm.test_set))], strict=True)
    with torch.no_grad():
        preds = net(torch.stack(images)).argmax(dim=1)
    direct = torch.zeros(10, 10, dtype=torch.long)
    for true, pred in zip(labels, preds.tolist(), strict=True):
        direct[true, pred] += 1
    assert counts.sum() == TEST_SIZE
    assert torch.equal(counts, direct)
    assert metrics_of(trained)["test_acc"] == pytest.approx(direct.trace().item() / TEST_SIZE, abs=1e-6)


def test_tensorboard_holds_curves_confusion_images_and_hparams(trained: Path) -> None:
    events = read_events(trained / "tensorboard")
    tags = events.Tags()
    assert {"train/loss_epoch", "train/acc", "val/acc", "val/loss", "test/acc", "test/loss"} <= set(tags["scalars"])
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(tags["images"])
    assert all(image.width > 100 for image in events.Images("test/confusion_matrix"))
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics_of(trained)["test_acc"], abs=1e-6)
    assert events.Scalars("hp/test_acc")[-1].value == pytest.approx(metrics_of(trained)["test_acc"], abs=1e-6)
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    session = hparams["_hparams_/session_start_info"]
    assert all(
        column in session
        for column in (b"model", b"optimizer", b"lr", b"batch_size", b"augmentation", b"train_images", b"init")
    )
    assert b"_target_" not in session and b"flip 0.5, rotate 10" in session and b"torch default" in session


def test_eval_of_the_best_checkpoint_reproduces_the_test_metrics(
    trained: Path, mnist_root: Path, tmp_path: Path
) -> None:
    checkpoint = metrics_of(trained)["checkpoint"]
    result = run_cli("eval", f"ckpt_path={checkpoint}", f"paths.data_dir={mnist_root}", *FAST[:1], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mnist-cnn: test_acc=" in result.stdout
    run_dir = single_run_dir(tmp_path)
    evaluated = metrics_of(run_dir)
    assert evaluated["test_acc"] == pytest.approx(metrics_of(trained)["test_acc"], abs=1e-6)
    assert evaluated["checkpoint"] == checkpoint
    assert (run_dir / "test_confusion_matrix.csv").read_text() == (trained / "test_confusion_matrix.csv").read_text()
    events = read_events(run_dir / "tensorboard")
    assert "test/confusion_matrix" in events.Tags()["images"]
    session = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"lr" in session and b"ConvolutionalMNISTClassifier" in session  # the checkpoint's config
    assert b"torch default" not in session  # eval cannot know how the checkpoint's weights started


def test_a_new_run_from_last_checkpoint_continues_the_epoch_count(
    trained: Path, mnist_root: Path, tmp_path: Path
) -> None:
    last = trained / "checkpoints" / "last.ckpt"
    overrides = [*FAST, f"paths.data_dir={mnist_root}", f"ckpt_path={last}", "trainer.max_epochs=2"]
    result = run_cli("train", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in result.stdout + result.stderr
    resumed = metrics_of(single_run_dir(tmp_path))
    assert resumed["epochs"] == 2
    # A new run: its best is one of its own epochs, checkpointed in its own folder.
    assert Path(resumed["checkpoint"]).parent == single_run_dir(tmp_path) / "checkpoints"
    assert f"val_acc_{resumed['val_acc_best']:.4f}" in Path(resumed["checkpoint"]).name


def test_resume_refuses_a_changed_optimizer(trained: Path, mnist_root: Path, tmp_path: Path) -> None:
    last = trained / "checkpoints" / "last.ckpt"
    overrides = [*FAST, f"paths.data_dir={mnist_root}", f"ckpt_path={last}", "optimizer.lr=0.01"]
    result = run_cli("train", *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert "resuming restores the saved optimizer state" in result.stderr
    assert not (single_run_dir(tmp_path) / "checkpoints").exists()


def test_csv_logger_and_a_scheduler(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", "logger=csv", "scheduler=cosine", "trainer.max_epochs=2"]
    result = run_cli("train", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = single_run_dir(tmp_path)
    with (run_dir / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    learning_rates = [float(row["lr-Adam"]) for row in rows if row.get("lr-Adam")]
    assert learning_rates[0] == pytest.approx(1e-3) and learning_rates[-1] < learning_rates[0]  # cosine decay
    assert any(row.get("hp/test_acc") for row in rows)
    assert not (run_dir / "tensorboard").exists()


def test_multirun_gives_every_run_its_own_folder_and_tensorboard(mnist_root: Path, tmp_path: Path) -> None:
    result = run_cli("train", "-m", *FAST, f"paths.data_dir={mnist_root}", "optimizer.lr=1e-3,3e-3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    runs = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert [run.name for run in runs] == ["0", "1"]
    learning_rates = []
    for run in runs:
        assert metrics_of(run)["parameters"] == 17_066
        (board,) = (run / "tensorboard").iterdir()  # one TensorBoard run per job, named by its own overrides
        assert board.name == f"optimizer.lr={('0.001', '0.003')[int(run.name)]}"
        assert "test/acc" in read_events(board).Tags()["scalars"]
        learning_rates.append((run / ".hydra" / "overrides.yaml").read_text().count("optimizer.lr=0.003"))
    assert learning_rates == [0, 1]

    summary = run_cli("sweep_summary", str(sweep), cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    with (sweep / "runs.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert [float(row["test_acc"]) for row in rows] == [pytest.approx(metrics_of(run)["test_acc"]) for run in runs]
    assert "optimizer.lr=0.003" in rows[1]["overrides"] and (sweep / "settings.md").read_text() in summary.stdout


def test_chapter_experiment_runs_without_a_validation_split(mnist_root: Path, tmp_path: Path) -> None:
    fast = [override for override in FAST if not override.startswith("data.val_size=")]
    result = run_cli("train", *fast, f"paths.data_dir={mnist_root}", "experiment=chapter", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = metrics_of(single_run_dir(tmp_path))
    assert metrics["augment_eval"] is True and metrics["val_acc_best"] is None
    assert Path(metrics["checkpoint"]).name == "epoch_000.ckpt"


@pytest.mark.parametrize("model", ["model=cnn_separable", "model=mlp"])
def test_other_models_train_and_their_checkpoints_evaluate(mnist_root: Path, tmp_path: Path, model: str) -> None:
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    train_dir.mkdir(), eval_dir.mkdir()
    result = run_cli("train", *FAST, f"paths.data_dir={mnist_root}", model, cwd=train_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = metrics_of(single_run_dir(train_dir))
    assert trained["parameters"] == {"model=cnn_separable": 14_151, "model=mlp": 39_760}[model]
    # eval is given no model option: it rebuilds the network from the checkpoint's own config
    overrides = [f"ckpt_path={trained['checkpoint']}", f"paths.data_dir={mnist_root}", "data.download=false"]
    result = run_cli("eval", *overrides, cwd=eval_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = metrics_of(single_run_dir(eval_dir))
    assert evaluated["parameters"] == trained["parameters"]
    assert evaluated["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-6)


def test_one_cycle_steps_every_batch_over_the_whole_run_and_refuses_a_longer_resume(
    mnist_root: Path, tmp_path: Path
) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", "scheduler=onecycle", "optimizer.lr=0.01", "logger=csv"]
    result = run_cli("train", *overrides, "trainer.max_epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = single_run_dir(tmp_path)
    with (run_dir / "csv" / "metrics.csv").open() as file:
        rates = [float(row["lr-Adam"]) for row in csv.DictReader(file) if row.get("lr-Adam")]
    assert len(rates) == 8  # 4 batches x 2 epochs, a new rate every batch
    assert rates[0] == pytest.approx(0.01 / 25) and max(rates) == pytest.approx(0.01, rel=0.05)
    assert rates[-1] < rates[0] / 100  # annealed to max_lr / (div_factor * final_div_factor) at the last step

    longer = run_cli(
        "train", *overrides, "trainer.max_epochs=3", f"ckpt_path={run_dir}/checkpoints/last.ckpt", cwd=tmp_path
    )
    assert longer.returncode == 2
    assert "lr schedule is planned for 8 steps, this run has 12" in longer.stderr.strip().splitlines()[-1]
