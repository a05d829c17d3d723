"""Multirun sweeps, the Optuna search, DDP and reproducibility, through the real command line."""

import csv
import json
import os
import subprocess
import time
from importlib import metadata
from pathlib import Path

import optuna
import pytest
import torch
from conftest import FAST, metrics_of, run_cli, single_run_dir, write_mnist
from helpers import SEARCH_CONFIG_START, compose_best_experiment, read_events
from optuna.trial import TrialState
from torchvision.datasets import MNIST

from mnist_cnn.cnn import ConvolutionalMNISTClassifier

pytestmark = pytest.mark.slow  # the command line, in subprocesses


def the_sweep(cwd: Path) -> Path:
    (sweep,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep


def runs_table(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "runs.csv").open() as file:
        return list(csv.DictReader(file))


def resolved(run: Path) -> str:
    return (run / ".hydra" / "resolved_config.yaml").read_text()


def test_a_grid_sweep_isolates_its_jobs_and_a_failed_job_does_not_stop_it(mnist_root: Path, tmp_path: Path) -> None:
    result = run_cli("train", "-m", *FAST, f"paths.data_dir={mnist_root}", "optimizer.lr=-1,1e-3", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # after every job ran and the summary was written
    sweep = the_sweep(tmp_path)
    failed, good = sweep / "0", sweep / "1"
    status = json.loads((failed / "status.json").read_text())
    assert (status["status"], status["error"]) == ("failed", "optimizer.lr must be a number > 0, got -1.0")
    assert metrics_of(good)["parameters"] == 17_066 and json.loads((good / "status.json").read_text())["error"] is None

    rows = runs_table(sweep)
    assert [row["status"] for row in rows] == ["failed", "ok"]
    assert rows[0]["error"].startswith("optimizer.lr must be") and float(rows[1]["test_acc"]) >= 0
    assert (sweep / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "failed jobs: 0" in result.stdout

    # Each job its own seed, derived from base_seed and the job number, recorded in its resolved config.
    seeds = [int(resolved(job).split("\nseed: ")[1].split()[0]) for job in (failed, good)]
    assert seeds[0] != seeds[1] and 42 not in seeds and metrics_of(good)["seed"] == seeds[1]
    # Its TensorBoard run is named by its own overrides, and carries the hyperparameters for the HPARAMS tab.
    (board,) = (good / "tensorboard").iterdir()
    assert board.name == "optimizer.lr=0.001"
    events = read_events(board)
    assert b"lr" in events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert events.Scalars("hp/test_acc")[-1].value == pytest.approx(metrics_of(good)["test_acc"], abs=1e-6)


def test_the_joblib_launcher_runs_jobs_in_parallel_with_their_share_of_the_cores(
    mnist_root: Path, tmp_path: Path
) -> None:
    overrides = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=5,6"]
    result = run_cli("train", "-m", *FAST, f"paths.data_dir={mnist_root}", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    sweep = the_sweep(tmp_path)
    jobs = [metrics_of(sweep / str(number)) for number in (0, 1)]
    assert [job["seed"] for job in jobs] == [5, 6]  # set by the sweep: not derived
    cores = len(os.sched_getaffinity(0))
    assert [job["threads"] for job in jobs] == [max(1, cores // min(2, cores))] * 2


def test_ddp_inside_a_multirun_is_refused_before_any_job_starts(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", "trainer=ddp", "trainer.devices=2", "optimizer.lr=1e-3,2e-3"]
    result = run_cli("train", "-m", *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: trainer.strategy=ddp cannot run inside a multirun")
    assert "trainer.strategy=ddp_spawn" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs" / "multirun").glob("*/*/0"))


def test_ddp_spawn_the_advised_alternative_runs_inside_a_multirun(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", "trainer=ddp", "trainer.strategy=ddp_spawn"]
    overrides += ["trainer.accelerator=cpu", "trainer.devices=2", "optimizer.lr=1e-3,2e-3"]
    result = run_cli("train", "-m", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    assert [row["status"] for row in runs_table(sweep)] == ["ok", "ok"]
    assert all((sweep / job / "checkpoints" / "last.ckpt").is_file() for job in ("0", "1"))


def test_the_slurm_launcher_composes_for_a_cluster(tmp_path: Path) -> None:
    result = run_cli("train", "hydra/launcher=submitit_slurm", "trainer=ddp", "--cfg", "hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in result.stdout


# DDP: two CPU processes with the gloo backend, really started by Lightning from our command line.


def test_ddp_on_two_cpu_processes_trains_on_shards_and_logs_global_metrics(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "mnist", train_size=256, test_size=64)
    overrides = [*FAST, f"paths.data_dir={root}", "data.val_size=64", "trainer.limit_train_batches=1.0"]
    overrides += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.eval_batch_size=16"]
    result = run_cli("train", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    run = single_run_dir(tmp_path)  # both processes wrote into one run folder
    assert (run / "train_ddp_process_1.log").is_file()
    metrics = metrics_of(run)

    # Each rank trained on its own half: 192 training images / 2 ranks / batch 16 = 6 steps, not 12.
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    checkpoints = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert checkpoints == ["epoch_000-val_acc_{:.4f}.ckpt".format(metrics["val_acc_best"]), "last.ckpt"]

    # The logged test accuracy is over all 64 test images, not one rank's 32: recompute it in one process.
    net = ConvolutionalMNISTClassifier()
    net.load_state_dict(torch.load(run / "mnist_classifier.pth", weights_only=True))
    test_set = MNIST(root, train=False)
    images = test_set.data.float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    with torch.no_grad():
        accuracy = (net(images).argmax(1) == test_set.targets).float().mean().item()
    assert metrics["test_acc"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_images"] == 64


# The Optuna search: a study in SQLite, pruning, a crashed trial, resuming.

# A search of the test's own (beside the project's hparams_search/optuna.yaml, which it mirrors): two keys on a
# seeded grid, where trainer.max_epochs=-1 always crashes and the pruner prunes every trial at its first report.
GRID_SEARCH = (
    SEARCH_CONFIG_START
    + """    sampler:
      _target_: optuna.samplers.GridSampler
      search_space: {trainer.max_epochs: EPOCHS, data.batch_size: [16, 32]}
      seed: 0
    pruner:
      _target_: optuna.pruners.ThresholdPruner
      lower: 1.1
    params:
      trainer.max_epochs: {_target_: optuna.distributions.CategoricalDistribution, choices: EPOCHS}
      data.batch_size: {_target_: optuna.distributions.CategoricalDistribution, choices: [16, 32]}
"""
)


# The searches below choose data.batch_size themselves: a command-line value for it would be refused.
SEARCH_FAST = [override for override in FAST if not override.startswith("data.batch_size=")]


def grid_search(mnist_root: Path, cwd: Path, *overrides: str, epochs: str = "[-1, 2]") -> subprocess.CompletedProcess:
    conf = cwd / "conf" / "hparams_search"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "grid_test.yaml").write_text(GRID_SEARCH.replace("EPOCHS", epochs))
    search = ["hparams_search=grid_test", f"hydra.searchpath=[file://{cwd}/conf]"]
    fast = [override for override in SEARCH_FAST if not override.startswith("trainer.max_epochs=")]
    return run_cli("train", "-m", *fast, f"paths.data_dir={mnist_root}", *search, *overrides, cwd=cwd)


def study_of(cwd: Path) -> optuna.Study:
    return optuna.load_study(study_name="mnist-cnn", storage=f"sqlite:///{cwd}/outputs/optuna.db")


def test_a_search_records_crashed_and_pruned_trials_and_a_rerun_continues_the_study(
    mnist_root: Path, tmp_path: Path
) -> None:
    first = grid_search(mnist_root, tmp_path, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(study_of(tmp_path).trials) == 2

    again = grid_search(mnist_root, tmp_path, "hydra.sweeper.n_trials=4")  # the same study: 2 trials more
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_of(tmp_path).trials
    assert len(trials) == 4
    by_epochs = {(t.params["trainer.max_epochs"], t.params["data.batch_size"]): t.state for t in trials}
    assert by_epochs == {
        (-1, 16): TrialState.FAIL,  # crashed: our one-line ConfigError, recorded, and the study went on
        (-1, 32): TrialState.FAIL,
        (2, 16): TrialState.PRUNED,  # stopped by Optuna's pruner through the Lightning callback
        (2, 32): TrialState.PRUNED,
    }
    assert all(t.intermediate_values for t in trials if t.state == TrialState.PRUNED)
    second_sweep = max((tmp_path / "outputs" / "multirun").glob("*/*"))
    rows = runs_table(second_sweep)
    assert len(rows) == 2 and {row["status"] for row in rows} <= {"failed", "pruned"}
    crashed = [row for row in rows if row["status"] == "failed"]
    assert all(row["error"].startswith("trainer.max_epochs must be an integer >= 0") for row in crashed)


def test_a_search_under_ddp_still_records_its_pruned_trials(mnist_root: Path, tmp_path: Path) -> None:
    ddp = ["trainer=ddp", "trainer.strategy=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2"]
    result = grid_search(mnist_root, tmp_path, "hydra.sweeper.n_trials=1", *ddp, epochs="[2]")
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = study_of(tmp_path).trials
    assert trial.state == TrialState.PRUNED  # under DDP the callback only stops the fit; we then raise
    assert [row["status"] for row in runs_table(the_sweep(tmp_path))] == ["pruned"]


def test_a_search_refuses_a_command_line_value_for_a_key_it_searches(mnist_root: Path, tmp_path: Path) -> None:
    result = grid_search(mnist_root, tmp_path, "data.batch_size=64")
    assert result.returncode == 1
    assert "'data.batch_size=64' sets a key the search chooses" in result.stderr


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")  # our ask()
def test_a_killed_search_reruns_its_interrupted_trial(mnist_root: Path, tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/outputs/optuna.db", heartbeat_interval=1)
    study = optuna.create_study(study_name="mnist-cnn", storage=storage, direction="maximize")
    choices = optuna.distributions.CategoricalDistribution
    interrupted = study.ask({"trainer.max_epochs": choices([-1, 2]), "data.batch_size": choices([16, 32])})
    storage.record_heartbeat(interrupted._trial_id)  # as a sweep does, which then gets killed
    time.sleep(2.5)  # past the grace period of 2 heartbeats

    result = grid_search(mnist_root, tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_seconds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    first, retried = study_of(tmp_path).trials
    assert first.state == TrialState.FAIL and retried.params == interrupted.params
    assert retried.state in (TrialState.FAIL, TrialState.PRUNED)
    (job,) = [path for path in the_sweep(tmp_path).iterdir() if path.is_dir()]
    overrides = (job / ".hydra" / "overrides.yaml").read_text()
    assert f"trainer.max_epochs={interrupted.params['trainer.max_epochs']}" in overrides


def test_the_project_search_finds_a_best_trial_that_runs_as_an_experiment(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*SEARCH_FAST, f"paths.data_dir={mnist_root}", "hparams_search=optuna", "hydra.sweeper.n_trials=2"]
    # A seeded sampler, and 3 batches: torch's OneCycleLR divides by zero when pct_start x steps is exactly 1
    # (4 steps at pct_start 0.25), which FAST's 4 batches would hit whenever the search picks onecycle.
    overrides += ["hydra.sweeper.sampler.seed=0", "trainer.limit_train_batches=3"]
    result = run_cli("train", "-m", *overrides, "data.augmentation.flip_p=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    rows = runs_table(sweep)
    assert [row["status"] for row in rows] == ["ok", "ok"] and all(row["test_acc"] == "" for row in rows)
    best = study_of(tmp_path).best_trial
    assert (sweep / str(best.number) / "metrics.json").is_file()

    job = compose_best_experiment(sweep, tmp_path)
    assert job["optimizer"]["lr"] == pytest.approx(best.params["optimizer.lr"])
    assert job["data"]["batch_size"] == best.params["data.batch_size"]
    assert job["optimizer"]["_target_"].lower().endswith(best.params["optimizer"])
    assert job["data"]["augmentation"]["flip_p"] == 0
    assert "debug" not in (sweep / "best_experiment.yaml").read_text()  # how the search ran is no recipe


# Reproducibility


def test_the_same_config_and_seed_give_identical_results_and_a_full_record(mnist_root: Path, tmp_path: Path) -> None:
    overrides = [*FAST, f"paths.data_dir={mnist_root}", "trainer.deterministic=true", "seed=7"]
    runs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        result = run_cli("train", *overrides, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(single_run_dir(tmp_path / name))
    first, second = (metrics_of(run) for run in runs)
    for key in ("test_acc", "test_loss", "val_acc_best"):
        assert first[key] == second[key]
    weights = [torch.load(run / "mnist_classifier.pth", weights_only=True) for run in runs]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])

    record = runs[0] / ".hydra"
    assert "seed=7" in (record / "overrides.yaml").read_text()
    assert "\nseed: 7\n" in resolved(runs[0]) and "${" not in resolved(runs[0])
    environment = json.loads((record / "environment.json").read_text())
    assert environment["packages"]["torch"] == metadata.version("torch") and "lightning" in environment["packages"]
    assert environment["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert environment["git"]["commit"] == (commit.stdout.strip() or None)
