"""One Optuna study, several workers: sweeps on a shared storage (a real PostgreSQL server, a journal file),
a worker killed mid-trial, and parallel trials inside one sweep."""

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import FAST, error_text, run_cli, start_cli
from helpers import SEARCH_CONFIG_START
from optuna.trial import FrozenTrial, TrialState
from postgres_server import create_database, free_port, postgres_server, server_bin_dir

pytestmark = pytest.mark.slow  # the command line, in subprocesses

# A small search of the tests' own: random lr and batch size (no seed: workers must not propose alike), and
# Optuna's median pruner. One epoch of 3 batches a trial.
SEARCH = (
    SEARCH_CONFIG_START
    + """    sampler:
      _target_: optuna.samplers.RandomSampler
    params:
      optimizer.lr: {_target_: optuna.distributions.FloatDistribution, low: 1.0e-4, high: 1.0e-2, log: true}
      data.batch_size: {_target_: optuna.distributions.CategoricalDistribution, choices: [16, 32]}
"""
)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server for this module's tests; its base URL. Missing binaries fail, with how to install."""
    try:
        server_bin_dir()
    except RuntimeError as error:
        pytest.fail(str(error))
    with postgres_server() as url:
        yield url


def search_command(mnist_root: Path, cwd: Path, storage: str, *overrides: str) -> list[str]:
    conf = cwd / "conf" / "hparams_search"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "workers_test.yaml").write_text(SEARCH)
    fast = [override for override in FAST if not override.startswith("data.batch_size=")]
    return [
        "-m",
        *fast,
        "trainer.limit_train_batches=3",
        f"paths.data_dir={mnist_root}",
        "hparams_search=workers_test",
        f"hydra.searchpath=[file://{cwd}/conf]",
        f"hydra.sweeper.storage={storage}",
        *overrides,
    ]


def trials_of(storage: str) -> list[FrozenTrial]:
    from mnist_cnn.study_storage import open_storage

    return optuna.load_study(study_name="mnist-cnn", storage=open_storage(storage)).trials


def job_folders(cwd: Path) -> list[Path]:
    """Every trial's job folder, in every worker's sweep folder under `cwd`."""
    return [job for job in (cwd / "outputs" / "multirun").glob("*/*/*") if job.is_dir() and job.name.isdigit()]


def wait_all(workers: list[subprocess.Popen], timeout: float = 400) -> None:
    for worker in workers:
        worker.wait(timeout=timeout)
        assert worker.returncode == 0, error_text(worker)[-3000:]


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_three_workers_share_one_study_and_run_each_trial_once(
    kind: str, mnist_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgresql":
        storage = create_database(request.getfixturevalue("postgres"), f"study_{uuid.uuid4().hex[:8]}")
    else:
        storage = f"journal:{tmp_path}/study.journal"
    # Batches of 2 (one after the other, in-process): the workers' trial numbers interleave within a batch.
    command = search_command(mnist_root, tmp_path, storage, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2")
    workers = [start_cli(*command, cwd=tmp_path) for _ in range(3)]
    wait_all(workers)

    trials = trials_of(storage)
    jobs = job_folders(tmp_path)
    assert len(list((tmp_path / "outputs" / "multirun").glob("*/*"))) == 3  # a sweep folder per worker
    finished = [trial for trial in trials if trial.state in FINISHED]
    assert len(finished) == 6, [(trial.number, trial.state) for trial in trials]
    assert not [trial for trial in trials if trial.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({trial.number for trial in trials}) == len(trials)
    # Each finished trial ran in exactly one job (folder name = trial number); the others never ran.
    assert sorted(int(job.name) for job in jobs) == sorted(trial.number for trial in finished)
    assert all("not_run" in trial.user_attrs for trial in trials if trial.state == TrialState.FAIL)
    seeds = [yaml.safe_load((job / ".hydra" / "resolved_config.yaml").read_text())["seed"] for job in jobs]
    assert len(set(seeds)) == len(seeds)  # derived from the trial number, not from each worker's job count

    # The study's summary and best experiment, from the storage alone.
    summary = run_cli("sweep_summary", "--study", "mnist-cnn", "--storage", storage, "--out", "study", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr[-3000:]
    rows = (tmp_path / "study" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + len(trials)
    best = max(finished, key=lambda trial: trial.value if trial.state == TrialState.COMPLETE else -1)
    experiment = (tmp_path / "study" / "best_experiment.yaml").read_text()
    assert f"trial {best.number}:" in experiment and "batch_size" in experiment


def test_a_killed_worker_s_trial_is_run_again_by_another_worker(
    postgres: str, mnist_root: Path, tmp_path: Path
) -> None:
    storage = create_database(postgres, f"study_{uuid.uuid4().hex[:8]}")
    victim_cwd, survivor_cwd = tmp_path / "victim", tmp_path / "survivor"
    # The survivor finishes its own trial before the victim's goes stale (no heartbeat for 2 x 5 s): it must wait
    # for that, then run it again, rather than leave the study one trial short with a trial still RUNNING.
    overrides = ["hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_seconds=5", "trainer.max_epochs=2"]
    victim_cwd.mkdir()
    survivor_cwd.mkdir()
    victim = start_cli(*search_command(mnist_root, victim_cwd, storage, *overrides), cwd=victim_cwd)
    survivor = start_cli(*search_command(mnist_root, survivor_cwd, storage, *overrides), cwd=survivor_cwd)

    deadline = time.monotonic() + 300
    while not job_folders(victim_cwd):  # the victim's first trial has started
        assert victim.poll() is None, error_text(victim)[-3000:]
        assert time.monotonic() < deadline, "the victim started no trial"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (killed_job,) = job_folders(victim_cwd)
    assert not (killed_job / "status.json").exists()  # killed mid-trial
    wait_all([survivor])

    trials = trials_of(storage)
    killed = next(trial for trial in trials if trial.number == int(killed_job.name))
    assert killed.state == TrialState.FAIL  # failed by the heartbeat: its worker stopped beating
    (rerun,) = [trial for trial in trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert rerun.params == killed.params and rerun.state in FINISHED
    finished = [trial for trial in trials if trial.state in FINISHED]
    assert len(finished) == 2 and not [trial for trial in trials if trial.state == TrialState.RUNNING]
    assert sorted(int(job.name) for job in job_folders(survivor_cwd)) == sorted(trial.number for trial in finished)


CORES = len(os.sched_getaffinity(0))

# A callback for every job: it marks that its training started, then waits for its batch mate's mark (trial
# 0 with 1, 2 with 3). Run in parallel, both pass at once; run one after the other, the first one waits in
# vain and fails its trial. On a loaded machine a job of 3 batches can end before its mate's process has
# imported torch, so without this wait the overlap of their times depended on luck.
BATCH_BARRIER = """
import time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig


class BatchBarrier(L.Callback):
    def on_train_start(self, trainer, module):
        hydra = HydraConfig.get()
        number = int(Path(hydra.runtime.output_dir).name)
        sweep = Path(hydra.sweep.dir)
        (sweep / f"started_{number}").touch()
        deadline = time.monotonic() + 120
        while not (sweep / f"started_{number ^ 1}").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"trial {number ^ 1} never started while trial {number} ran")
            time.sleep(0.05)
"""


@pytest.mark.parametrize(
    ("launcher", "threads"),
    [
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], max(1, CORES // 2)),  # the cores, shared by 2 trials
        # submitit's local executor: the array submission (map_array) that SLURM gets, run as local processes
        (["hydra/launcher=submitit_local", "threads=1"], None),
    ],
    ids=["joblib", "submitit_local"],
)
def test_one_sweep_runs_a_batch_of_trials_in_parallel_through_its_launcher(
    launcher: list[str], threads: int | None, mnist_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "batch_barrier.py").write_text(BATCH_BARRIER)  # importable: the sweep runs in tmp_path
    storage = f"sqlite:///{tmp_path}/outputs/optuna.db"
    overrides = ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", *launcher]
    overrides.append("+callbacks.batch_barrier={_target_: batch_barrier.BatchBarrier}")
    result = run_cli("train", *search_command(mnist_root, tmp_path, storage, *overrides), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    trials = trials_of(storage)
    assert len([trial for trial in trials if trial.state in FINISHED]) == 4
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    spans = {}
    for job in sorted(path for path in sweep.iterdir() if path.is_dir() and path.name.isdigit()):
        status = json.loads((job / "status.json").read_text())
        spans[int(job.name)] = (datetime.fromisoformat(status["started"]), datetime.fromisoformat(status["ended"]))
        resolved = yaml.safe_load((job / ".hydra" / "resolved_config.yaml").read_text())
        assert threads is None or resolved["threads"] == threads
    assert sorted(spans) == [0, 1, 2, 3]
    for first, second in ((0, 1), (2, 3)):  # each batch's two trials overlapped in time
        assert spans[first][0] < spans[second][1] and spans[second][0] < spans[first][1], spans


# A callback for the job of trial 0 only: it waits until trial 1's job has finished, then SIGKILLs its own process.
KILL_JOB_ZERO = """
import os, signal, time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig


class KillJobZero(L.Callback):
    def on_train_start(self, trainer, module):
        hydra = HydraConfig.get()
        if hydra.job.num != 0:
            return
        deadline = time.monotonic() + 120
        while not (Path(hydra.sweep.dir) / "1" / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_job_in_a_parallel_batch_fails_its_trial_only(mnist_root: Path, tmp_path: Path) -> None:
    (tmp_path / "job_killer.py").write_text(KILL_JOB_ZERO)  # importable: the sweep runs in tmp_path
    storage = f"sqlite:///{tmp_path}/outputs/optuna.db"
    overrides = [
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ]
    overrides.append("+callbacks.kill_job_zero={_target_: job_killer.KillJobZero}")
    result = run_cli("train", *search_command(mnist_root, tmp_path, storage, *overrides), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    states = {trial.number: trial.state for trial in trials_of(storage)}
    assert states[0] == TrialState.FAIL  # its process was killed
    assert all(states[number] in FINISHED for number in (1, 2, 3)), states  # its batch mate, and the next batch
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert not (sweep / "0" / "status.json").exists()
    one = next(trial for trial in trials_of(storage) if trial.number == 1)
    assert one.state == TrialState.COMPLETE  # among the first trials: the median pruner does not judge them yet
    assert one.value == pytest.approx(json.loads((sweep / "1" / "metrics.json").read_text())["val_acc_best"])


def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(mnist_root: Path, tmp_path: Path) -> None:
    storage = f"postgresql://optuna:secret@127.0.0.1:{free_port()}/optuna"  # nobody listens there
    result = run_cli("train", *search_command(mnist_root, tmp_path, storage), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Optuna storage {storage.replace('postgresql:', 'postgresql+psycopg:').replace('secret', '***')}: "
        f'connection failed: connection to server at "127.0.0.1", port {storage.split(":")[-1].split("/")[0]} '
        "failed: Connection refused"
    )
    assert "secret" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists()  # no sweep folder, no trial

    summary = run_cli("sweep_summary", "--study", "mnist-cnn", "--storage", storage, cwd=tmp_path)
    assert summary.returncode == 2 and summary.stderr.startswith("error: Optuna storage postgresql+psycopg://")


def test_the_summary_of_a_study_the_storage_lacks_names_the_ones_it_has(postgres: str, tmp_path: Path) -> None:
    storage = create_database(postgres, f"study_{uuid.uuid4().hex[:8]}")
    optuna.create_study(study_name="other", storage=storage)
    summary = run_cli("sweep_summary", "--study", "mnist-cnn", "--storage", storage, cwd=tmp_path)
    assert summary.returncode != 0
    assert summary.stderr.strip().splitlines()[-1] == f"error: no study 'mnist-cnn' in {storage} (it has: other)"
