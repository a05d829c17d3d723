"""Shared fixtures: small MNIST-format IDX files written by the tests, and a runner for the CLI."""

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mnist_cnn.idx import write_split
from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.train import train

TRAIN_SIZE, TEST_SIZE, VAL_SIZE = 240, 80, 40
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Small, fast runs: the debug=fast preset (CPU, one epoch of a few batches), on the tests' small data, 4 batches
# of 16, every step logged, no progress bar, no download.
FAST = [
    "debug=fast",
    "data.download=false",
    f"data.val_size={VAL_SIZE}",
    "data.batch_size=16",
    "trainer.limit_train_batches=4",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
    "export_onnx=false",  # a second or two per run; tiny_run and tests/test_export.py check the ONNX export
]


def write_mnist(
    root: Path,
    train_size: int = TRAIN_SIZE,
    test_size: int = TEST_SIZE,
    seed: int = 0,
    dataset: str = "MNIST",
    gzipped: bool = False,
) -> Path:
    """Write random 28x28 images with labels 0..9 in turn as `<root>/<dataset>/raw/*-ubyte`, or as the `.gz`
    files the datasets are distributed as; return root."""
    rng = np.random.default_rng(seed)
    raw = root / dataset / "raw"
    for split, size in (("train", train_size), ("test", test_size)):
        images = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        labels = (np.arange(size) % 10).astype(np.uint8)
        write_split(raw, split, images, labels)
    if gzipped:
        for path in list(raw.iterdir()):
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """One small training run, in-process (2 epochs of 4 batches, deterministic), that fast tests share."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    overrides = [*FAST, "trainer.max_epochs=2", "trainer.deterministic=true", "export_onnx=true"]
    cfg = compose_config("train", f"paths.data_dir={mnist_root}", f"paths.output_dir={run_dir}", *overrides)
    with torch.random.fork_rng(devices=[]):  # leave the session's random state as it was
        train(cfg)
    return run_dir


def compose_config(config: str, *overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """`conf/<config>.yaml` composed with `overrides`, as Hydra's command line would (without running it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        # "~local": not this machine's conf/local settings
        return compose(config, overrides=["~local", *overrides], return_hydra_config=return_hydra_config)


def run_cli(command: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m mnist_cnn.<command> overrides...` in `cwd`, as a user would from a shell."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", f"mnist_cnn.{command}", *isolated(command, overrides)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_cli(*overrides: str, cwd: Path, command: str = "train") -> subprocess.Popen:
    """Start `python -m mnist_cnn.<command> overrides...` in `cwd` without waiting (to kill it, say).

    Its stderr goes to a file (`error_text(process)` reads it): a pipe nobody reads could fill and stall it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("HYDRA_FULL_ERROR", None)
    stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed with the process object)
    process = subprocess.Popen(
        [sys.executable, "-m", f"mnist_cnn.{command}", *isolated(command, overrides)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )
    process.stderr_file = stderr
    return process


def error_text(process: subprocess.Popen) -> str:
    process.stderr_file.seek(0)
    return process.stderr_file.read()


def isolated(command: str, overrides: tuple[str, ...]) -> list[str]:
    """`overrides` with `~local` for our Hydra commands: a developer's conf/local/default.yaml must not change
    what the tests run. It goes after leading flags such as `-m` (argparse wants the overrides together)."""
    if command not in ("train", "eval", "predict", "export", "demo"):
        return list(overrides)
    flags = 0
    while flags < len(overrides) and overrides[flags].startswith("-"):
        flags += 1
    return [*overrides[:flags], "~local", *overrides[flags:]]


def newest_step(run_dir: Path) -> int:
    steps = [int(path.stem.split("_")[1]) for path in (run_dir / "checkpoints").glob("step_*.ckpt")]
    return max(steps, default=0)


def kill_after_step(process, cwd: Path, step: int, run_dir: Path | None = None, timeout: float = 300) -> bool:
    """SIGKILL `process` once its run (`run_dir`, or the one run under `cwd`) has a mid-epoch checkpoint at
    `step` or later; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [run_dir] if run_dir else list(cwd.glob("outputs/*/*"))
        if runs and newest_step(runs[0]) >= step:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return process.returncode == -signal.SIGKILL
        if process.poll() is not None:
            assert process.returncode == 0, error_text(process)[-3000:]
            return False
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def single_run_dir(cwd: Path) -> Path:
    """The one run folder Hydra made under `<cwd>/outputs/<date>/<time>/`."""
    runs = [path for path in (cwd / "outputs").glob("*/*") if path.parent.name != "multirun"]
    assert len(runs) == 1, runs
    return runs[0]
