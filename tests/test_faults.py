"""Faults: a killed run resumed exactly, a diverging loss, disk trouble, concurrent runs, fuzzed IDX files."""

import errno
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import pytest
import torch
from conftest import VAL_SIZE, kill_after_step, metrics_of, run_cli, single_run_dir, start_cli, write_mnist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import ModelCheckpoint

from mnist_cnn.callbacks import relocated_record
from mnist_cnn.checkpoint import AtomicCheckpointIO
from mnist_cnn.errors import DataError
from mnist_cnn.idx import check_raw_files, raw_files
from mnist_cnn.run_dir import claim_new_run_dir
from mnist_cnn.sampling import ResumableBatchSampler, ResumableRandomSampler

STEPS_BETWEEN_CHECKPOINTS = 5
# Deterministic, two epochs of 72 steps, a checkpoint every 5 steps, no progress bar.
RESUMABLE = [
    "data.download=false",
    f"data.val_size={VAL_SIZE}",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    f"callbacks.periodic_checkpoint.every_n_train_steps={STEPS_BETWEEN_CHECKPOINTS}",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="module")
def larger_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist_1192"), train_size=1192, test_size=80)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_result(larger_mnist: Path, tmp_path: Path) -> None:
    overrides = [*RESUMABLE, f"paths.data_dir={larger_mnist}"]
    (tmp_path / "straight").mkdir()
    straight = run_cli("train", *overrides, cwd=tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    killed.mkdir()
    assert kill_after_step(start_cli(*overrides, cwd=killed), killed, 1), (
        "training ended before its first step checkpoint"
    )
    run_dir = single_run_dir(killed)
    assert not (run_dir / "metrics.json").exists()
    resumed_from = max(
        torch.load(path, weights_only=True)["global_step"] for path in (run_dir / "checkpoints").glob("*.ckpt")
    )
    assert resumed_from % ((1192 - VAL_SIZE) // 16) != 0  # a mid-epoch checkpoint

    resumed = run_cli("train", "resume=true", cwd=killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert single_run_dir(killed) == run_dir  # the same folder, not a new one
    expected, found = metrics_of(single_run_dir(tmp_path / "straight")), metrics_of(run_dir)
    for key in ("test_acc", "test_loss", "val_acc_best", "epochs"):
        assert found[key] == expected[key], key
    straight_weights = torch.load(single_run_dir(tmp_path / "straight") / "mnist_classifier.pth", weights_only=True)
    resumed_weights = torch.load(run_dir / "mnist_classifier.pth", weights_only=True)
    assert all(torch.equal(straight_weights[name], resumed_weights[name]) for name in straight_weights)
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 2  # one TensorBoard run, two writers
    assert list((run_dir / ".hydra").glob("resumed-*/overrides.yaml"))  # the first run's config is kept


@pytest.mark.slow
def test_resume_refuses_changes_and_needs_an_earlier_run(mnist_root: Path, tmp_path: Path) -> None:
    nothing = run_cli("train", "resume=true", cwd=tmp_path)
    assert (
        nothing.returncode == 2 and nothing.stderr.strip() == "error: resume=true found no training run under outputs/"
    )
    done = run_cli("train", *RESUMABLE, "trainer.max_epochs=1", f"paths.data_dir={mnist_root}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    changed = run_cli("train", "resume=true", "optimizer.lr=0.1", cwd=tmp_path)
    assert changed.returncode == 2
    assert "error: resume continues a run with its own config; it accepts only" in changed.stderr
    assert "(got optimizer.lr=0.1)" in changed.stderr


@pytest.mark.slow
def test_a_diverging_loss_stops_training_and_keeps_finite_checkpoints(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*RESUMABLE, "callbacks.periodic_checkpoint.every_n_train_steps=1", "optimizer.lr=1e30"]
    result = run_cli("train", *overrides, f"paths.data_dir={mnist_root}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "training diverged: the loss is nan at step" in line or "training diverged: the loss is inf at step" in line
    run_dir = single_run_dir(tmp_path)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "mnist_classifier.pth").exists()
    checkpoints = list((run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints, "the steps before the divergence were checkpointed"
    for path in checkpoints:
        weights = {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if k.startswith("net.")}
        assert weights and all(torch.isfinite(tensor).all() for tensor in weights.values()), path


def test_checkpoint_write_killed_midway_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)

    def dies_midway(obj: object, file: BinaryIO) -> None:
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind


@pytest.mark.slow
def test_disk_full_while_writing_results_is_one_line(tmp_path: Path) -> None:
    script = (
        "import errno, pathlib\n"
        "from mnist_cnn.errors import exit_on_user_error\n"
        "from mnist_cnn import files\n"
        "def full(self, data): raise OSError(errno.ENOSPC, 'No space left on device', str(self))\n"
        "pathlib.Path.write_text = full\n"
        "with exit_on_user_error():\n"
        "    files.write_json(pathlib.Path('out/metrics.json'), {'a': 1})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot write ")
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written presented as a result


@pytest.mark.slow
def test_unwritable_outputs_folder_is_a_clear_error(mnist_root: Path, tmp_path: Path) -> None:
    (tmp_path / "outputs").write_text("a file where the outputs folder should be")
    result = run_cli("train", *RESUMABLE, f"paths.data_dir={mnist_root}", cwd=tmp_path)
    assert result.returncode != 0
    assert "cannot create a run folder under outputs" in result.stderr
    assert "Traceback" not in result.stderr


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 24, 12, 0, 0)
    folders = [claim_new_run_dir(tmp_path, now=moment) for _ in range(3)]
    assert [folder.name for folder in folders] == ["12-00-00", "12-00-00_1", "12-00-00_2"]
    assert all(folder.is_dir() for folder in folders)


@pytest.mark.slow
def test_two_trainings_at_once_never_mix_their_files(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*RESUMABLE, "trainer.max_epochs=1", "trainer.limit_train_batches=4", f"paths.data_dir={mnist_root}"]
    processes = [start_cli(*overrides, f"seed={seed}", cwd=tmp_path) for seed in (1, 2)]
    assert [process.wait(timeout=600) for process in processes] == [0, 0]
    runs = sorted(path for path in (tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2
    assert sorted(metrics_of(run)["seed"] for run in runs) == [1, 2]
    writers = [
        {path.name.split(".")[-2] for path in (run / "tensorboard").rglob("events.out.tfevents.*")} for run in runs
    ]
    assert [len(pids) for pids in writers] == [1, 1] and writers[0] != writers[1]  # each folder: one process


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["images", "labels"]), split=st.sampled_from(["train", "test"]), data=st.binary())
def test_fuzzed_idx_files_give_our_error_or_pass(mnist_root: Path, tmp_path: Path, which: str, split: str, data: bytes):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, source in (
        (path.name, path) for pair in raw_files(mnist_root / "MNIST" / "raw").values() for path in pair
    ):
        (raw / name).write_bytes(source.read_bytes())
    raw_files(raw)[split][0 if which == "images" else 1].write_bytes(data)
    try:
        check_raw_files(raw)
    except DataError as error:
        assert "\n" not in str(error) and str(raw) in str(error)


def batches_after_restore(state: dict, size: int = 50, batch_size: int = 8) -> list:
    sampler = ResumableBatchSampler(ResumableRandomSampler(range(size)), batch_size, drop_last=False)
    sampler.load_state_dict(state)
    return [(list(batch), batch.seed) for batch in sampler]


def test_the_batch_sampler_replays_the_rest_of_an_interrupted_epoch() -> None:
    sampler = ResumableBatchSampler(ResumableRandomSampler(range(50)), 8, drop_last=False)
    torch.manual_seed(0)
    epoch = iter(sampler)
    taken = [next(epoch) for _ in range(3)]
    state = sampler.state_dict()  # as a checkpoint saves it, after 3 of 7 batches
    rest = [(list(batch), batch.seed) for batch in epoch]
    assert state["batches_used"] == 3
    assert batches_after_restore(state) == rest  # the same indices and augmentation seeds
    assert sorted([i for batch in taken for i in batch] + [i for b, _ in rest for i in b]) == list(range(50))


def test_a_finished_epoch_restores_to_a_fresh_one() -> None:
    torch.manual_seed(0)
    sampler = ResumableBatchSampler(ResumableRandomSampler(range(50)), 8, drop_last=False)
    first_epoch = [list(batch) for batch in sampler]
    state = sampler.state_dict()
    assert state["batches_used"] == 0
    next_epoch = batches_after_restore(state)
    assert len(next_epoch) == 7 and sorted(i for batch, _ in next_epoch for i in batch) == list(range(50))
    assert [batch for batch, _ in next_epoch] != first_epoch  # a new shuffle, not a replay


def test_an_interrupted_epoch_is_not_replayed_into_the_next_one() -> None:
    """With `trainer.limit_train_batches` an epoch ends early; a checkpoint there must not replay it."""
    sampler = ResumableBatchSampler(ResumableRandomSampler(range(50)), 8, drop_last=False)
    epoch = iter(sampler)
    [next(epoch) for _ in range(3)]
    state = sampler.state_dict()
    restored = ResumableBatchSampler(ResumableRandomSampler(range(50)), 8, drop_last=False)
    restored.load_state_dict(state)
    restored.sampler.set_epoch(1)  # Lightning moves on to the next epoch
    assert sorted(i for batch in restored for i in batch) == list(range(50))


def test_a_batch_draws_its_augmentation_from_its_own_seed(mnist_root: Path) -> None:
    from mnist_cnn.augment import RandomFlipRotate
    from mnist_cnn.sampling import SeededBatch
    from mnist_cnn.tensor_datamodule import MNISTTensorDataModule

    dm = MNISTTensorDataModule(str(mnist_root), val_size=VAL_SIZE, download=False, augmentation=RandomFlipRotate())
    dm.setup("fit")
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        draws.append(dm.train_set.__getitems__(SeededBatch(list(range(16)), seed=7))[0])
    torch.manual_seed(1)
    other = dm.train_set.__getitems__(SeededBatch(list(range(16)), seed=8))[0]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], other)


def test_lightning_can_shard_the_resumable_loader_for_ddp(mnist_root: Path) -> None:
    """Lightning rebuilds the training loader around a DistributedSampler; ours must survive that."""
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    from mnist_cnn.sampling import ResumableDataLoader
    from mnist_cnn.tensor_datamodule import MNISTTensorDataModule

    dm = MNISTTensorDataModule(str(mnist_root), batch_size=16, val_size=VAL_SIZE, download=False)
    dm.setup("fit")
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dm.train_set, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = _update_dataloader(dm.train_dataloader(), sampler)
        assert isinstance(loader, ResumableDataLoader) and isinstance(loader.batch_sampler, ResumableBatchSampler)
        batches = iter(loader.batch_sampler)
        first = next(batches)
        state = loader.state_dict()
        rest = [list(batch) for batch in batches]
        loader.load_state_dict(state)
        assert [list(batch) for batch in loader.batch_sampler] == rest  # resumes within its shard
        shards.append({i for batch in [first, *rest] for i in batch})
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == len(dm.train_set)


def test_a_full_disk_while_saving_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Real torch writing to /dev/full: the OSError names the file and becomes our one-line error."""
    from contextlib import contextmanager

    from mnist_cnn import files
    from mnist_cnn.errors import exit_on_user_error

    real_atomic_path = files.atomic_path

    @contextmanager
    def to_dev_full(path: Path):
        with real_atomic_path(path):  # its error handling, but the bytes go to a full device
            yield Path("/dev/full")

    monkeypatch.setattr(files, "atomic_path", to_dev_full)
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(1000)}, tmp_path / "last.ckpt")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: cannot write {tmp_path / 'last.ckpt'}: No space left on device"


def test_resume_picks_the_newest_training_run_and_refuses_one_without_checkpoints(tmp_path: Path) -> None:
    from mnist_cnn.errors import ConfigError
    from mnist_cnn.run_dir import latest_run_dir

    def run(name: str, training: bool = True, checkpoint: bool = True) -> Path:
        folder = tmp_path / "2026-11-24" / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("optimizer: {lr: 0.001}\n" if training else "seed: 1\n")
        if checkpoint:
            (folder / "checkpoints").mkdir()
            (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
        return folder

    run("10-00-00")
    later = run("10-00-00_1")
    run("11-00-00", training=False, checkpoint=False)  # an evaluation run: not resumable, not in the way
    assert latest_run_dir(tmp_path) == later
    run("12-00-00", checkpoint=False)
    with pytest.raises(ConfigError, match=r"the newest run, .*12-00-00, has no checkpoint yet"):
        latest_run_dir(tmp_path)


def test_resume_skips_an_unreadable_checkpoint(tmp_path: Path) -> None:
    from mnist_cnn.resume import newest_checkpoint

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    good = checkpoints / "step_000005.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": {}}, "global_step": 5}, good)
    time.sleep(0.01)
    (checkpoints / "step_000010.ckpt").write_bytes(b"truncated")  # newer, but unreadable
    assert newest_checkpoint(tmp_path) == good


def test_a_checkpoint_record_follows_its_files_to_a_moved_folder(tmp_path: Path) -> None:
    old, new = tmp_path / "run" / "checkpoints", tmp_path / "moved" / "checkpoints"
    scores = {"epoch_001-val_acc_0.9700.ckpt": 0.97, "epoch_002-val_acc_0.9800.ckpt": 0.98}
    worse, best = scores
    source = ModelCheckpoint(old, monitor="val/acc", mode="max", save_top_k=2)
    source.best_k_models = {f"{source.dirpath}/{name}": torch.tensor(score) for name, score in scores.items()}
    source.best_model_path, source.best_model_score = f"{source.dirpath}/{best}", torch.tensor(0.98)
    source.kth_best_model_path, source.kth_value = f"{source.dirpath}/{worse}", torch.tensor(0.97)
    state = source.state_dict()
    resumed = ModelCheckpoint(new, monitor="val/acc", mode="max", save_top_k=2)

    assert relocated_record(state, resumed.dirpath) is state  # the files are not in the new folder (yet)
    new.mkdir(parents=True)
    for name in scores:
        (new / name).write_bytes(b"checkpoint")
    resumed.load_state_dict(relocated_record(state, resumed.dirpath))
    assert resumed.best_k_models == {str(new.resolve() / name): torch.tensor(score) for name, score in scores.items()}
    assert resumed.best_model_path == str(new.resolve() / best) and resumed.best_model_score == 0.98
    assert resumed.kth_best_model_path == str(new.resolve() / worse) and resumed.kth_value == 0.97
    assert relocated_record(state, source.dirpath) is state  # the same folder: Lightning restores it as it is
    (new / worse).unlink()  # a file missing: maybe not the same run's files, so Lightning's new record stands
    assert relocated_record(state, resumed.dirpath) is state


@pytest.mark.slow
def test_resume_with_the_csv_logger_keeps_the_earlier_metrics(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*RESUMABLE, "trainer.max_epochs=1", "trainer.limit_train_batches=4", "logger=csv"]
    first = run_cli("train", *overrides, f"paths.data_dir={mnist_root}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = single_run_dir(tmp_path)
    earlier = (run_dir / "csv" / "metrics.csv").read_text()
    resumed = run_cli("train", "resume=true", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "csv" / "metrics.csv").read_text() == earlier
    (later,) = (run_dir / "csv").glob("resumed-*/metrics.csv")
    assert "epoch" in later.read_text() and metrics_of(run_dir)["epochs"] == 2
