"""What a sweep's job does, in-process: its failure kept to itself, its seed, and Optuna pruning."""

import json
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import torch
from conftest import FAST, compose_config

from mnist_cnn.errors import ConfigError
from mnist_cnn.pruning import OptunaPruning
from mnist_cnn.sweep import SweepPreflight, job_seed, job_threads, override_key, run_job
from mnist_cnn.train import train


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=10", "trainer.max_epochs"),
        ("+optimizer.amsgrad=true", "optimizer.amsgrad"),
        ("~seed", "seed"),
    ],
)
def test_an_override_is_keyed_as_hydra_keys_it(override: str, key: str) -> None:
    assert override_key(override) == key


def test_outside_a_multirun_a_job_is_a_plain_run() -> None:
    assert job_seed(42) == 42 and job_threads() is None


def test_a_failed_job_records_its_one_line_error_and_returns_it(tmp_path: Path) -> None:
    cfg = compose_config("train", f"paths.output_dir={tmp_path}")

    def broken(_cfg: object) -> dict:
        raise ConfigError("optimizer.lr must be a number > 0, got 0")

    result = run_job(broken, cfg)
    assert result == {"status": "failed", "error": "optimizer.lr must be a number > 0, got 0"}
    status = json.loads((tmp_path / "status.json").read_text())
    assert {key: status[key] for key in result} == result
    assert datetime.fromisoformat(status["started"]) <= datetime.fromisoformat(status["ended"])


def test_a_pruned_trial_stops_its_job_and_is_recorded_as_pruned(mnist_root: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    pruning = (
        f"+callbacks.optuna_pruning={{_target_: mnist_cnn.pruning.OptunaPruning, storage: '{storage}', "
        f"study_name: s, trial_id: {trial._trial_id}, monitor: val/acc, "
        "pruner: {_target_: optuna.pruners.ThresholdPruner, lower: 2.0}}"  # any accuracy is below 2: prune
    )
    overrides = [*FAST, f"paths.data_dir={mnist_root}", f"paths.output_dir={tmp_path}", "trainer.max_epochs=3"]
    cfg = compose_config("train", *overrides, pruning.replace("+callbacks", "callbacks"))
    with torch.random.fork_rng(devices=[]):
        result = run_job(train, cfg)
    assert result["status"] == "pruned" and "Trial was pruned at epoch 0" in result["error"]
    assert study.trials[0].intermediate_values.keys() == {0}  # reported once, then stopped


def test_pruning_needs_a_trial_from_the_sweeper() -> None:
    with pytest.raises(ConfigError, match="start it as a multirun"):
        OptunaPruning(storage="sqlite://", study_name="s", trial_id=None)


def test_the_project_search_composes_as_a_validation_only_search(tmp_path: Path) -> None:
    cfg = compose_config("train", "hparams_search=optuna", f"paths.output_dir={tmp_path}")
    assert cfg.test is False and cfg.callbacks.optuna_pruning.monitor == "val/acc"
    assert cfg.callbacks.optuna_pruning.trial_id is None  # each job gets its trial from the sweeper


def test_a_restored_one_cycle_schedule_must_fit_the_runs_steps() -> None:
    from mnist_cnn.callbacks import check_schedule_length
    from mnist_cnn.errors import CheckpointError

    class Trainer:
        estimated_stepping_batches = 12

    class Untouchable:  # counting a run's steps sets up its data: never done without a planned schedule
        @property
        def estimated_stepping_batches(self) -> int:
            raise AssertionError("asked for the run's steps")

    check_schedule_length({"lr_schedulers": [{"total_steps": 12}]}, Trainer())
    check_schedule_length({"lr_schedulers": [{"last_epoch": 3}]}, Untouchable())
    check_schedule_length({}, Untouchable())
    with pytest.raises(CheckpointError, match="planned for 8 steps, this run has 12"):
        check_schedule_length({"lr_schedulers": [{"total_steps": 8}]}, Trainer())


def test_a_study_s_trial_budget_counts_fresh_trials_and_not_reruns_or_never_run_ones() -> None:
    from hydra_plugins.mnist_cnn_optuna.optuna_sweeper import NOT_RUN, _has_room, _is_surplus

    study = optuna.create_study()
    first, second, third = study.ask(), study.ask(), study.ask()  # 3 workers asked at once for a 2-trial study
    trials = study.get_trials(deepcopy=False)
    assert [_is_surplus(trials, trial.number, n_trials=2) for trial in (first, second, third)] == [False, False, True]
    third.set_user_attr(NOT_RUN, "surplus")
    study.tell(third, state=optuna.trial.TrialState.FAIL)
    assert not _has_room(study.get_trials(deepcopy=False), n_trials=2)

    # The first trial's worker is killed: Optuna fails it and queues a rerun, which takes its place.
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    rerun = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, system_attrs={"failed_trial": 0})
    study.add_trial(rerun)
    trials = study.get_trials(deepcopy=False)
    assert _has_room(trials, n_trials=2)  # the rerun is waiting to be asked for
    assert not _is_surplus(trials, trials[-1].number, n_trials=2)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["hparams_search=optuna", "data.val_size=0"], True),
        (["hparams_search=optuna"], False),
        (["data.val_size=0"], False),  # a grid sweep has no objective: a refit over seeds is fine
    ],
)
def test_a_search_on_validation_without_a_validation_set_is_refused_before_its_first_trial(
    overrides: list[str], refused: bool, capsys: pytest.CaptureFixture
) -> None:
    config = compose_config("train", *overrides, return_hydra_config=True)
    if refused:
        with pytest.raises(SystemExit) as stopped:
            SweepPreflight().on_multirun_start(config)
        assert stopped.value.code == 2
        assert capsys.readouterr().err.startswith("error: data.val_size=0 leaves no validation set, and the search's")
    else:
        SweepPreflight().on_multirun_start(config)
