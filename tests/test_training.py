"""Training, evaluation and the checks around a run, in-process: what the command line does, without its start-up."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FAST, TEST_SIZE, TRAIN_SIZE, compose_config, metrics_of
from helpers import read_events
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
from omegaconf import OmegaConf

from mnist_cnn.callbacks import STEP_LOSS_KEY, StepLossProgressBar
from mnist_cnn.errors import CheckpointError, ConfigError, TrainingDivergedError, UserError
from mnist_cnn.eval import evaluate
from mnist_cnn.resume import check_epochs_left, check_resume, epochs_trained
from mnist_cnn.schedule import rehearse_schedule
from mnist_cnn.train import train

STEPS = 4  # FAST: 4 training batches an epoch


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_run_reports_its_whole_history_and_exports_its_best(tiny_run: Path) -> None:
    metrics = metrics_of(tiny_run)
    assert metrics["epochs"] == 2 and metrics["parameters"] == 17_066 and metrics["test_images"] == TEST_SIZE
    logged = [event.value for event in read_events(tiny_run / "tensorboard").Scalars("val/acc")]
    assert len(logged) == 2 and metrics["val_acc_best"] == pytest.approx(max(logged))
    best = load(Path(metrics["checkpoint"]))
    assert Path(metrics["checkpoint"]).parent == tiny_run / "checkpoints"
    exported = torch.load(tiny_run / "mnist_classifier.pth", weights_only=True)
    assert all(torch.equal(exported[name], best["state_dict"][f"net.{name}"]) for name in exported)
    assert metrics["train_seconds"] > 0 and best["train_seconds"] > 0  # the clock travels in checkpoints


def test_last_checkpoint_is_the_final_epoch(tiny_run: Path) -> None:
    last = load(tiny_run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and last["global_step"] == 2 * STEPS and epochs_trained(last) == (2, False)
    assert "torch" in last["rng_states"]


def test_the_effective_config_is_recorded_with_the_runs_seed(tiny_run: Path) -> None:
    saved = OmegaConf.load(tiny_run / ".hydra" / "effective_config.yaml")
    assert saved.trainer.max_epochs == 2 and saved.seed == 42
    assert OmegaConf.is_interpolation(saved.data, "data_dir")  # paths.data_dir may still change on resume


def test_a_finished_run_has_nothing_left_to_resume(tiny_run: Path) -> None:
    with pytest.raises(ConfigError, match="has already trained all 2 epochs: nothing left to train"):
        check_resume(tiny_run)


def test_evaluating_the_best_checkpoint_gives_the_runs_test_accuracy(
    tiny_run: Path, mnist_root: Path, tmp_path: Path
) -> None:
    metrics = metrics_of(tiny_run)
    overrides = [f"ckpt_path={metrics['checkpoint']}", f"paths.data_dir={mnist_root}", f"paths.output_dir={tmp_path}"]
    cfg = compose_config("eval", *overrides, "data.download=false", "trainer.accelerator=cpu")
    with torch.random.fork_rng(devices=[]):
        evaluated = evaluate(cfg)
    assert evaluated["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert (tmp_path / "test_confusion_matrix.csv").read_text() == (tiny_run / "test_confusion_matrix.csv").read_text()


def test_a_test_limited_to_some_batches_reports_the_images_it_tested(
    tiny_run: Path, mnist_root: Path, tmp_path: Path
) -> None:
    overrides = [f"ckpt_path={metrics_of(tiny_run)['checkpoint']}", f"paths.data_dir={mnist_root}"]
    overrides += [f"paths.output_dir={tmp_path}", "data.download=false", "trainer.accelerator=cpu"]
    cfg = compose_config("eval", *overrides, "data.eval_batch_size=16", "trainer.limit_test_batches=2")
    with torch.random.fork_rng(devices=[]):
        evaluated = evaluate(cfg)
    confusion = np.loadtxt(tmp_path / "test_confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 11))
    assert evaluated["test_images"] == confusion.sum() == 32 < TEST_SIZE


def checkpoint_at(epoch: int, processed: int) -> dict:
    """The parts of a Lightning checkpoint that say how far it trained."""
    progress = {"current": {"processed": processed}}
    return {"epoch": epoch, "loops": {"fit_loop": {"epoch_progress": progress}}}


@pytest.mark.parametrize(
    ("checkpoint", "max_epochs", "message"),
    [
        (checkpoint_at(epoch=1, processed=2), 3, None),  # end of epoch 2 of 3
        (checkpoint_at(epoch=1, processed=2), 2, "has already trained all 2 epochs: nothing left to train"),
        (checkpoint_at(epoch=1, processed=2), 1, "has already trained 2 epochs: trainer.max_epochs=1 is fewer"),
        (checkpoint_at(epoch=2, processed=2), 3, None),  # part-way through epoch 3 of 3
        (checkpoint_at(epoch=2, processed=2), 2, "2 epochs and part of the next: trainer.max_epochs=2 is fewer"),
    ],
)
def test_a_start_from_a_checkpoint_must_have_epochs_left(checkpoint: dict, max_epochs: int, message: str) -> None:
    assert epochs_trained(checkpoint)[1] == (checkpoint["epoch"] == 2)
    if message is None:
        check_epochs_left(checkpoint, max_epochs, "run")
    else:
        with pytest.raises(ConfigError, match=message):
            check_epochs_left(checkpoint, max_epochs, "run")


ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}
ONE_CYCLE = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.01, "total_steps": None, "interval": "step"}


@pytest.mark.parametrize(
    ("scheduler", "epochs", "steps", "message"),
    [
        ({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 0}, 5, 100, "StepLR fails at its step 1 of 5"),
        ({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2}, 5, 100, None),
        ({"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 5}, 5, 100, None),
        ({**ONE_CYCLE, "pct_start": 0.25}, 1, 4, "OneCycleLR fails when built in this run \\(ZeroDivisionError"),
        ({**ONE_CYCLE, "pct_start": 0.25}, 5, 100, None),
        (
            {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": float("inf")},
            3,
            100,
            "StepLR fails at its step 1 of 3 in this run \\(ValueError: the learning rate becomes inf",
        ),
    ],
)
def test_a_schedule_is_rehearsed_over_the_whole_run(scheduler: dict, epochs: int, steps: int, message: str) -> None:
    if message is None:
        rehearse_schedule(scheduler, ADAM, epochs, steps)
    else:
        with pytest.raises(ConfigError, match=f"scheduler {message}"):
            rehearse_schedule(scheduler, ADAM, epochs, steps)


def test_a_resume_is_refused_without_a_saved_config(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match="has no saved config"):
        check_resume(tmp_path)


def test_a_truncated_checkpoint_is_one_line_error(tiny_run: Path, tmp_path: Path) -> None:
    from mnist_cnn.checkpoint import read_checkpoint

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((tiny_run / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        read_checkpoint(broken)


def test_a_run_folder_given_as_a_checkpoint_is_one_line_error(tiny_run: Path) -> None:
    from mnist_cnn.checkpoint import read_checkpoint

    with pytest.raises(CheckpointError, match=f"checkpoint {tiny_run} is a folder: name a .ckpt file in it") as refused:
        read_checkpoint(tiny_run)
    assert "checkpoints/last.ckpt" in str(refused.value)
    with pytest.raises(CheckpointError, match=r"name a .ckpt file in it \(.*last.ckpt"):
        read_checkpoint(tiny_run / "checkpoints")


def test_tensorboard_hparams_are_readable_columns(tiny_run: Path) -> None:
    session = read_events(tiny_run / "tensorboard").PluginTagToContent("hparams")["_hparams_/session_start_info"]
    for column in (b"model", b"optimizer", b"lr", b"scheduler", b"batch_size", b"augmentation", b"seed"):
        assert column in session
    assert b"_target_" not in session and b"flip 0.5, rotate 10" in session and b"Adam" in session


def test_a_diverging_loss_stops_before_its_update_whatever_the_callbacks(mnist_root: Path, tmp_path: Path) -> None:
    fast = [override for override in FAST if not override.startswith("callbacks.")]
    overrides = [*fast, f"paths.data_dir={mnist_root}", f"paths.output_dir={tmp_path}", "optimizer.lr=1e30"]
    cfg = compose_config("train", *overrides, "callbacks=none", "trainer.enable_checkpointing=false")
    message = r"the loss is (nan|inf) at step \d+ \(epoch 0, batch \d+\); stopped before that update"
    with torch.random.fork_rng(devices=[]), pytest.raises(TrainingDivergedError, match=message):
        train(cfg)


def test_lightning_reads_nothing_on_the_host_after_a_training_step(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning turns each `prog_bar` value into a number after every step: on a GPU, a wait for each step."""
    reads, real_item, real_batch_end = [0, 0], torch.Tensor.item, _LoggerConnector.on_batch_end

    def counted_item(tensor: torch.Tensor) -> float:
        reads[0] += 1
        return real_item(tensor)

    def batch_end(connector: _LoggerConnector) -> None:
        before = reads[0]
        real_batch_end(connector)
        reads[1] += reads[0] - before

    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    monkeypatch.setattr(_LoggerConnector, "on_batch_end", batch_end)
    overrides = [*FAST, f"paths.data_dir={mnist_root}", f"paths.output_dir={tmp_path}", "test=false"]
    cfg = compose_config("train", *overrides, "callbacks.progress_bar.refresh_rate=1")
    with torch.random.fork_rng(devices=[]):
        train(cfg)  # every step logged (FAST): the step loss is in the run's results from the first step on
    assert reads[0] > 0 and reads[1] == 0


class CountingTensor(torch.Tensor):
    reads = 0

    def item(self) -> float:
        CountingTensor.reads += 1
        return super().item()


def test_the_progress_bar_shows_the_newest_logged_step_loss_reading_each_value_once() -> None:
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={"val/acc": 0.5}, logged_metrics={})
    bar = StepLossProgressBar(refresh_rate=20)
    assert bar.get_metrics(trainer, None) == {"val/acc": 0.5}
    for value in (0.25, 0.125):
        trainer.logged_metrics[STEP_LOSS_KEY] = torch.tensor(value).as_subclass(CountingTensor)
        for _ in range(3):  # redraws before the next logged value
            assert bar.get_metrics(trainer, None) == {"val/acc": 0.5, STEP_LOSS_KEY: value}
    assert CountingTensor.reads == 2


def test_tensorboard_gets_a_validation_confusion_matrix_per_epoch_and_the_test_one(tiny_run: Path) -> None:
    events = read_events(tiny_run / "tensorboard")
    assert [image.step for image in events.Images("val/confusion_matrix")] == [0, 1]  # none from the sanity check
    assert len(events.Images("test/confusion_matrix")) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0"),
        ("optimizer.lr=-1e-3", "optimizer.lr must be a number > 0, got -0.001"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs must be an integer >= 0, got -1"),
        (f"data.val_size={TRAIN_SIZE}", f"data.val_size={TRAIN_SIZE} leaves no training images"),
        ("optimizer.weight_decay=-1", "optimizer/scheduler config rejected"),
        ("data.augmentation.degrees=-5", "augmentation degrees must be >= 0, got -5"),
        ("data.augmentation.flip_p=2", "augmentation flip_p must be within [0, 1], got 2"),
        ("scheduler=step", "scheduler StepLR fails at its step 1 of 1"),  # with scheduler.step_size=0 below
        ("data=mnist_pil", "data.augmentation.0.p must be within [0, 1], got 2"),  # with p=2 below
        ("base_seed=-1", "seed (or base_seed, which sets it) must be an integer in [0, 4294967295], got -1"),
        ("seed=4294967296", "must be an integer in [0, 4294967295], got 4294967296"),
        (
            "trainer.devices=-5",
            "trainer config rejected: `devices` selected with `CPUAccelerator` should be an int > 0",
        ),
        ("threads=-2", "threads must be null (one per core) or an integer >= 1, got -2"),
        ("threads=0", "threads must be null (one per core) or an integer >= 1, got 0"),
        ("~model", "the config has no model: choose an option (model=<option>) instead of removing the group"),
        ("~optimizer", "the config has no optimizer: choose an option (optimizer=<option>)"),
        pytest.param(
            "trainer.accelerator=mps",
            "trainer config rejected: `MPSAccelerator` can not run on your system",
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="an Apple GPU runs it"),
        ),
    ],
)
def test_bad_values_are_refused_before_training_with_one_message(
    mnist_root: Path, tmp_path: Path, override: str, message: str
) -> None:
    extra = {"scheduler=step": ["scheduler.step_size=0"], "data=mnist_pil": ["data.augmentation.0.p=2"]}
    overrides = [*FAST, f"paths.data_dir={mnist_root}", f"paths.output_dir={tmp_path}", override]
    cfg = compose_config("train", *overrides, *extra.get(override, []))
    with torch.random.fork_rng(devices=[]), pytest.raises(UserError) as refused:
        train(cfg)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()
