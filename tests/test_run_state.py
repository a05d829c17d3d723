"""A run's lifecycle kept trustworthy: resume, checkpoints, seeds, sweep folders, bad values, DDP evaluation.

Each numbered case of the run-state issue has a regression test here, through the real command line; a
hypothesis state machine then drives whole lifecycles (start, kill, resume, new run from a checkpoint,
evaluate) and checks the invariants after every step.
"""

import csv
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import (
    FAST,
    VAL_SIZE,
    error_text,
    kill_after_step,
    metrics_of,
    newest_step,
    run_cli,
    single_run_dir,
    start_cli,
    write_mnist,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.classification import MulticlassF1Score

from mnist_cnn import run_dir as run_dir_module
from mnist_cnn.cnn import ConvolutionalMNISTClassifier
from mnist_cnn.resume import epochs_trained
from mnist_cnn.run_dir import resolve_sweep_dir
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule

pytestmark = pytest.mark.slow

TRAIN_SIZE = 600
STEPS_PER_EPOCH = -(-(TRAIN_SIZE - VAL_SIZE) // 16)  # 35 batches of 16
# Deterministic, a checkpoint every 2 steps, no progress bar; epochs and data are each test's own.
TINY = [
    "data.download=false",
    f"data.val_size={VAL_SIZE}",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.periodic_checkpoint.every_n_train_steps=2",
]


@pytest.fixture(scope="module")
def data_600(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist_600"), train_size=TRAIN_SIZE, test_size=80)


def train(cwd: Path, data: Path, *overrides: str):
    cwd.mkdir(parents=True, exist_ok=True)
    return run_cli("train", *TINY, f"paths.data_dir={data}", *overrides, cwd=cwd)


def ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def refused(result, message: str) -> None:
    """Exit status 2 with one line `error: ...` containing `message`, and no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr.strip().splitlines()[-1], result.stderr.strip().splitlines()[-1]


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of a run folder with its size and modification time."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def net_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {name: value for name, value in checkpoint["state_dict"].items() if name.startswith("net.")}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# 1, 2: one effective config per run; results only replaced by better-informed results


def test_a_second_resume_continues_with_what_the_first_resume_changed(data_600: Path, tmp_path: Path) -> None:
    ok(train(tmp_path, data_600, "trainer.max_epochs=1"))
    run_dir = single_run_dir(tmp_path)
    longer = start_cli(f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert kill_after_step(longer, tmp_path, STEPS_PER_EPOCH + 4, run_dir), "the resumed run ended before its kill"

    again = run_cli("train", f"resume={run_dir}", cwd=tmp_path)  # no max_epochs: the run's latest is 3
    ok(again)
    metrics = metrics_of(run_dir)
    assert metrics["epochs"] == 3 and metrics["val_acc_best"] is not None
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3 * STEPS_PER_EPOCH and epochs_trained(last) == (3, False)
    assert "max_epochs: 3" in (run_dir / ".hydra" / "effective_config.yaml").read_text()


def test_a_run_without_a_scheduler_group_resumes(mnist_root: Path, tmp_path: Path) -> None:
    ok(train(tmp_path, mnist_root, "~scheduler", "trainer.max_epochs=1"))
    run_dir = single_run_dir(tmp_path)
    ok(run_cli("train", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path))
    assert metrics_of(run_dir)["epochs"] == 2


def test_a_resume_with_nothing_to_train_or_fewer_epochs_is_refused_and_changes_nothing(
    mnist_root: Path, tmp_path: Path
) -> None:
    ok(train(tmp_path, mnist_root, "trainer.max_epochs=2"))
    run_dir = single_run_dir(tmp_path)
    before = snapshot(run_dir)
    refused(run_cli("train", f"resume={run_dir}", cwd=tmp_path), "has already trained all 2 epochs: nothing left")
    refused(run_cli("train", "resume=true", "trainer.max_epochs=1", cwd=tmp_path), "trainer.max_epochs=1 is fewer")
    assert snapshot(run_dir) == before  # not even Hydra's record of the refused command
    last = run_dir / "checkpoints" / "last.ckpt"
    nothing = train(tmp_path / "new", mnist_root, f"ckpt_path={last}", "trainer.max_epochs=2")
    refused(nothing, "nothing left to train")


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [("cosine", "was trained with scheduler"), ("onecycle", "its lr schedule is planned for 13 optimizer steps")],
)
def test_a_resume_that_would_overrun_its_saved_schedule_is_refused_and_changes_nothing(
    mnist_root: Path, tmp_path: Path, scheduler: str, message: str
) -> None:
    ok(train(tmp_path, mnist_root, "trainer.max_epochs=1", f"scheduler={scheduler}"))
    run_dir = single_run_dir(tmp_path)
    before = snapshot(run_dir)
    refused(run_cli("train", "resume=true", "trainer.max_epochs=2", cwd=tmp_path), message)
    assert snapshot(run_dir) == before


def val_accuracies(run_dir: Path) -> list[float]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [event.value for event in events.Scalars("val/acc")]


def test_a_resumed_run_reports_the_best_and_the_time_of_its_whole_history(data_600: Path, tmp_path: Path) -> None:
    ok(train(tmp_path, data_600, "trainer.max_epochs=2", "optimizer.lr=0.01"))
    run_dir = single_run_dir(tmp_path)
    first = metrics_of(run_dir)
    ok(run_cli("train", "resume=true", "trainer.max_epochs=3", cwd=tmp_path))
    metrics = metrics_of(run_dir)
    accuracies = val_accuracies(run_dir)  # both segments' events: one TensorBoard run
    assert len(accuracies) == 3
    assert (
        metrics["val_acc_best"] == pytest.approx(max(accuracies)) and metrics["val_acc_best"] >= first["val_acc_best"]
    )
    assert f"val_acc_{metrics['val_acc_best']:.4f}" in Path(metrics["checkpoint"]).name
    assert metrics["train_seconds"] > first["train_seconds"]  # the run's training time, not the last segment's


def test_a_copied_run_folder_resumes_with_its_own_checkpoint_record(data_600: Path, tmp_path: Path) -> None:
    ok(train(tmp_path, data_600, "trainer.max_epochs=2", "optimizer.lr=0.01"))
    original = single_run_dir(tmp_path)
    before = snapshot(original)
    copy = tmp_path / "copied_run"
    shutil.copytree(original, copy)

    ok(run_cli("train", f"resume={copy}", "trainer.max_epochs=3", cwd=tmp_path))
    assert snapshot(original) == before  # the copy's resume never touches the folder it came from
    names = sorted(path.name for path in (copy / "checkpoints").glob("*.ckpt"))
    # One best, one periodic and last.ckpt: the files saved before the copy are replaced, not left behind.
    assert [name.split("_")[0] for name in names] == ["epoch", "last.ckpt", "step"], names
    metrics = metrics_of(copy)
    assert Path(metrics["checkpoint"]).parent == (copy / "checkpoints").resolve()
    assert f"val_acc_{metrics['val_acc_best']:.4f}" in Path(metrics["checkpoint"]).name


# 3, 6: a new run from a checkpoint has its own seed and its own record


@pytest.fixture(scope="module")
def source_run(data_600: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("source")
    ok(train(cwd, data_600, "trainer.max_epochs=1"))
    return single_run_dir(cwd)


def test_new_runs_from_one_checkpoint_follow_their_own_seeds(source_run: Path, data_600: Path, tmp_path: Path) -> None:
    finals = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 1)):
        last = source_run / "checkpoints" / "last.ckpt"
        ok(train(tmp_path / name, data_600, f"ckpt_path={last}", "trainer.max_epochs=2", f"seed={seed}"))
        finals[name] = net_weights(load(single_run_dir(tmp_path / name) / "checkpoints" / "last.ckpt"))
    assert not same_weights(finals["a"], finals["b"])  # another seed, another shuffle: other weights
    assert same_weights(finals["a"], finals["c"])  # the same seed: the same run


def test_a_new_run_from_a_checkpoint_reports_its_own_best(source_run: Path, data_600: Path, tmp_path: Path) -> None:
    # A source whose history holds a best val accuracy of 1.0, which the new run's own epochs never reach.
    checkpoint = load(source_run / "checkpoints" / "last.ckpt")
    checkpoint["state_dict"]["val_acc_best.max_value"] = torch.tensor(1.0)
    source = tmp_path / "source.ckpt"
    torch.save(checkpoint, source)

    ok(train(tmp_path / "new", data_600, f"ckpt_path={source}", "trainer.max_epochs=2"))
    run_dir = single_run_dir(tmp_path / "new")
    metrics = metrics_of(run_dir)
    assert metrics["val_acc_best"] < 1.0 and metrics["val_acc_best"] == pytest.approx(val_accuracies(run_dir)[-1])
    assert Path(metrics["checkpoint"]).parent == run_dir / "checkpoints"  # its own best, tested
    assert f"val_acc_{metrics['val_acc_best']:.4f}" in Path(metrics["checkpoint"]).name


# 4, 7: last.ckpt is the last model; the best checkpoint is what is exported, tested or not


def test_last_is_the_final_epoch_and_the_export_is_the_best_even_untested(mnist_root: Path, tmp_path: Path) -> None:
    # On these random labels the default lr leaves val accuracy flat: epoch 0 stays the best of 3.
    ok(train(tmp_path, mnist_root, "trainer.max_epochs=3", "trainer.limit_train_batches=4", "test=false"))
    run_dir = single_run_dir(tmp_path)
    metrics = metrics_of(run_dir)
    best, last = load(Path(metrics["checkpoint"])), load(run_dir / "checkpoints" / "last.ckpt")
    assert best["epoch"] == 0 and "test_acc" not in metrics  # the precondition: the final epoch is not the best
    assert last["epoch"] == 2 and last["global_step"] == 12
    exported = {f"net.{name}": value for name, value in torch.load(run_dir / "mnist_classifier.pth").items()}
    assert same_weights(exported, net_weights(best)) and not same_weights(exported, net_weights(last))


# 5: sweeps never share a folder


def test_sweep_folders_are_claimed_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Frozen(datetime):  # two sweeps starting in the very same second
        @classmethod
        def now(cls, tz=None) -> datetime:
            return datetime(2026, 11, 25, 10, 0, 0)

    monkeypatch.setattr(run_dir_module, "datetime", Frozen)
    first, second = resolve_sweep_dir(str(tmp_path)), resolve_sweep_dir(str(tmp_path))
    assert Path(first) == tmp_path / "2026-11-25" / "10-00-00" and Path(second) == Path(f"{first}_1")
    assert Path(second).is_dir()


def test_two_sweeps_started_together_keep_their_own_folders_and_summaries(mnist_root: Path, tmp_path: Path) -> None:
    sweeps = ("optimizer.lr=0.001,0.002", "optimizer.lr=0.003,0.004")
    processes = [start_cli("-m", *FAST, f"paths.data_dir={mnist_root}", rates, cwd=tmp_path) for rates in sweeps]
    for process in processes:
        assert process.wait(timeout=600) == 0, error_text(process)[-3000:]
    folders = sorted((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(folders) == 2
    found = []
    for folder in folders:
        (rates,) = [o for o in OmegaConf.load(folder / "multirun.yaml").hydra.overrides.task if "optimizer.lr" in o]
        found.append(rates)
        with (folder / "runs.csv").open() as file:
            rows = list(csv.DictReader(file))
        assert [row["status"] for row in rows] == ["ok", "ok"]  # its two jobs, and only them
        jobs = [f"optimizer.lr={value}" for value in rates.split("=")[1].split(",")]
        assert [row["overrides"].split()[-1] for row in rows] == jobs
    assert sorted(found) == list(sweeps)


# 8: values torch or torchvision would reject mid-run are refused before training


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler=step", "scheduler.step_size=0"], "scheduler StepLR fails at its step 1 of 2"),
        (["scheduler=onecycle", "trainer.max_epochs=1"], "scheduler OneCycleLR fails"),
        (["data=mnist_pil", "data.augmentation.1.degrees=-5"], "If degrees is a single number, it must be positive"),
        (["data=mnist_pil", "data.augmentation.0.p=2"], "data.augmentation.0.p must be within [0, 1], got 2"),
        (["data=mnist_pil", "data.augmentation.1.degrees=[10,5]"], "data.augmentation fails on an image"),
    ],
)
def test_values_that_would_fail_mid_run_are_refused_before_training(
    mnist_root: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    result = train(tmp_path, mnist_root, "trainer.max_epochs=2", "trainer.limit_train_batches=4", *overrides)
    refused(result, message)
    run_dir = single_run_dir(tmp_path)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


# 9: DDP evaluation counts each image once


def test_ddp_evaluation_on_three_processes_counts_every_image_exactly_once(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "mnist", train_size=256, test_size=80)  # 80 test, 40 val: neither divides by 3
    overrides = [*FAST, f"paths.data_dir={root}", f"data.val_size={VAL_SIZE}", "data.eval_batch_size=16"]
    overrides += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"]
    ok(run_cli("train", *overrides, cwd=tmp_path))
    run_dir = single_run_dir(tmp_path)
    metrics = metrics_of(run_dir)
    with (run_dir / "test_confusion_matrix.csv").open() as file:
        _, *rows = list(csv.reader(file))
    assert sum(int(value) for row in rows for value in row[1:]) == 80

    net = ConvolutionalMNISTClassifier().eval()
    net.load_state_dict(torch.load(run_dir / "mnist_classifier.pth", weights_only=True))
    data = MNISTTensorDataModule(root, val_size=VAL_SIZE, download=False)
    data.setup()
    for dataset, reported in ((data.test_set, metrics["test_acc"]), (data.val_set, metrics["val_acc_best"])):
        images, labels = dataset.__getitems__(list(range(len(dataset))))
        with torch.no_grad():
            accuracy = (net(images).argmax(1) == labels).float().mean().item()
        assert reported == pytest.approx(accuracy, abs=1e-6)  # one epoch: the best model is the final one
    # The other metrics are synced too: macro F1 as one process computes it over the whole test set.
    images, labels = data.test_set.__getitems__(list(range(len(data.test_set))))
    with torch.no_grad():
        f1 = MulticlassF1Score(10, average="macro")(net(images).argmax(1), labels)
    assert metrics["test_macro_f1"] == pytest.approx(float(f1), abs=1e-6)
    # The pictures are drawn from every process's images: all 80 are in the embedding.
    (embedding,) = (run_dir / "tensorboard").glob("*/test%2fpenultimate/tensors.tsv")
    assert len(embedding.read_text().splitlines()) == 80


# The whole lifecycle, generated


REFERENCE_RUNS: dict[int, dict[str, torch.Tensor]] = {}


class RunLifecycle(RuleBasedStateMachine):
    """Start, kill, resume (longer or not), lower epochs, new runs from a checkpoint, evaluate: in any order."""

    data: Path
    root: Path

    def _start(self, overrides: list[str], kill_at: int | None, epochs: int) -> None:
        """Run a segment of `epochs` epochs, killed at a step if asked."""
        process = start_cli(*overrides, cwd=self.cwd)
        killed = kill_at is not None and kill_after_step(process, self.cwd, kill_at, self.run_dir)
        if not killed:
            assert process.wait(timeout=600) == 0, error_text(process)[-3000:]
        self.run_dir = self.run_dir or single_run_dir(self.cwd)
        self.asked, self.finished, self.evaluated = epochs, not killed, False
        # A kill on a busy machine may land after the last epoch's checkpoint: then nothing is left to train.
        last = self.run_dir / "checkpoints" / "last.ckpt"
        self.trained_out = last.is_file() and epochs_trained(load(last)) == (epochs, False)

    def _kill_step(self, fraction: float | None, done: int, total: int) -> int | None:
        """The step to kill at: `fraction` of the way from `done` to `total`; None if too near the end to land."""
        step = None if fraction is None else done + max(2, int(fraction * (total - done)))
        return step if step is not None and step < total - 8 else None

    @initialize(epochs=st.integers(1, 2), kill=st.none() | st.floats(0.05, 0.8))
    def start(self, epochs: int, kill: float | None) -> None:
        self.cwd = Path(tempfile.mkdtemp(dir=self.root))
        self.run_dir: Path | None = None
        self.had_metrics = False
        overrides = [*TINY, f"paths.data_dir={self.data}", f"trainer.max_epochs={epochs}"]
        # asked: trainer.max_epochs of the run's latest segment; finished: that segment ended by itself
        self._start(overrides, self._kill_step(kill, 0, epochs * STEPS_PER_EPOCH), epochs)

    @rule(more=st.integers(0, 1), kill=st.none() | st.floats(0.1, 0.8))
    def resume(self, more: int, kill: float | None) -> None:
        target = self.asked + more
        overrides = [f"resume={self.run_dir}", *([f"trainer.max_epochs={target}"] if more else [])]
        if (self.finished or self.trained_out) and not more:
            before = snapshot(self.run_dir)
            refused(run_cli("train", *overrides, cwd=self.cwd), "nothing left to train")
            assert snapshot(self.run_dir) == before
            return
        newest = max(newest_step(self.run_dir), self._last_step())
        self._start(overrides, self._kill_step(kill, newest, target * STEPS_PER_EPOCH), target)

    @precondition(lambda self: (self.run_dir / "checkpoints" / "last.ckpt").is_file())
    @rule()
    def lower_epochs(self) -> None:
        whole, _ = epochs_trained(load(self.run_dir / "checkpoints" / "last.ckpt"))
        before = snapshot(self.run_dir)
        result = run_cli("train", f"resume={self.run_dir}", f"trainer.max_epochs={whole - 1}", cwd=self.cwd)
        refused(result, "is fewer")
        assert snapshot(self.run_dir) == before

    @precondition(lambda self: self.finished)
    @rule(seed=st.integers(1, 3))
    def new_run_from_checkpoint(self, seed: int) -> None:
        before = snapshot(self.run_dir)
        cwd = Path(tempfile.mkdtemp(dir=self.root))
        last = self.run_dir / "checkpoints" / "last.ckpt"
        overrides = [*TINY, f"paths.data_dir={self.data}", f"ckpt_path={last}", f"trainer.max_epochs={self.asked + 1}"]
        ok(run_cli("train", *overrides, f"seed={seed}", cwd=cwd))
        new = single_run_dir(cwd)
        metrics = metrics_of(new)
        assert metrics["epochs"] == self.asked + 1 and metrics["seed"] == seed
        assert Path(metrics["checkpoint"]).parent == new / "checkpoints"
        assert metrics["val_acc_best"] == pytest.approx(val_accuracies(new)[-1])  # one epoch of its own
        assert snapshot(self.run_dir) == before  # the source run is untouched

    @precondition(lambda self: self.finished and not self.evaluated)
    @rule()
    def evaluate(self) -> None:
        self.evaluated = True
        metrics = metrics_of(self.run_dir)
        cwd = Path(tempfile.mkdtemp(dir=self.root))
        ok(run_cli("eval", f"ckpt_path={metrics['checkpoint']}", f"paths.data_dir={self.data}", cwd=cwd))
        assert metrics_of(single_run_dir(cwd))["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)

    def _last_step(self) -> int:
        last = self.run_dir / "checkpoints" / "last.ckpt"
        return load(last)["global_step"] if last.is_file() else 0

    @invariant()
    def results_are_never_worse_informed(self) -> None:
        if not (self.run_dir / "metrics.json").is_file():
            assert not self.had_metrics, "metrics.json disappeared"
            return
        self.had_metrics = True
        metrics = metrics_of(self.run_dir)
        assert metrics["val_acc_best"] is not None and metrics["test_acc"] is not None
        if self.finished:
            assert metrics["epochs"] == self.asked

    @invariant()
    def last_checkpoint_is_the_newest_epoch_end(self) -> None:
        if not (self.run_dir / "checkpoints" / "last.ckpt").is_file():
            return
        last = load(self.run_dir / "checkpoints" / "last.ckpt")
        whole, mid_epoch = epochs_trained(last)
        assert not mid_epoch and last["global_step"] == whole * STEPS_PER_EPOCH
        assert whole * STEPS_PER_EPOCH > newest_step(self.run_dir) - STEPS_PER_EPOCH  # none newer than an epoch on

    @invariant()
    def a_finished_run_equals_one_never_interrupted(self) -> None:
        if not self.finished:
            return
        final = net_weights(load(self.run_dir / "checkpoints" / "last.ckpt"))
        assert same_weights(final, reference_weights(self.asked, self.data, self.root))


def reference_weights(epochs: int, data: Path, root: Path) -> dict[str, torch.Tensor]:
    """The final weights of one uninterrupted run of `epochs` epochs (computed once per epoch count)."""
    if epochs not in REFERENCE_RUNS:
        cwd = Path(tempfile.mkdtemp(dir=root))
        ok(train(cwd, data, f"trainer.max_epochs={epochs}"))
        REFERENCE_RUNS[epochs] = net_weights(load(single_run_dir(cwd) / "checkpoints" / "last.ckpt"))
        shutil.rmtree(cwd)
    return REFERENCE_RUNS[epochs]


def test_generated_lifecycles_keep_every_invariant(data_600: Path, tmp_path: Path) -> None:
    RunLifecycle.data, RunLifecycle.root = data_600, tmp_path
    lifecycle = RunLifecycle.TestCase
    lifecycle.settings = settings(
        max_examples=6,
        stateful_step_count=4,
        deadline=None,
        derandomize=True,  # the same lifecycles in every CI run
        suppress_health_check=list(HealthCheck),
    )
    lifecycle().runTest()
