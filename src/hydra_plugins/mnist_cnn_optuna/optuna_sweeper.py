"""`hydra/sweeper=optuna`: Optuna (current major version) asks for trials, Hydra composes and launches each one.

The thinnest bridge we could build: Hydra's own Optuna sweeper plugin pins optuna<3 and hides the trial
object from the job, so it can neither prune nor resume. Here the study lives in a database (SQLite by
default); every trial is one job of the multirun with the trial's values as overrides, plus the trial's id,
with which the job reopens the trial and reports to it (`mnist_cnn.pruning.OptunaPruning`). Optuna's own
`study.optimize` drives the trials, so its heartbeats, failure handling and samplers work as documented.

A sweep runs one trial at a time, through whichever Hydra launcher is configured (in-process, SLURM);
for trials in parallel, start the same command several times, on one machine or several, on one storage.
"""

import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mnist_cnn.files import atomic_path

log = logging.getLogger(__name__)

TRIAL_ID_KEY = "callbacks.optuna_pruning.trial_id"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class JobFailed(Exception):
    """A trial's job failed (its error is in the job's log and status.json): Optuna records the trial as failed."""


def suggest(trial: optuna.trial.Trial, name: str, distribution: BaseDistribution) -> Any:
    """`trial.suggest_*` for a distribution from the config."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    raise TypeError(f"hydra.sweeper.params.{name}: not an Optuna distribution: {distribution!r}")


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        objective: str,
        n_trials: int,
        params: Mapping[str, BaseDistribution],
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        heartbeat_seconds: int = 60,
    ) -> None:
        super().__init__()
        self.study_name, self.storage_url, self.direction = study_name, storage, direction
        self.objective, self.n_trials = objective, n_trials
        self.params = dict(params)
        self.sampler, self.pruner, self.heartbeat_seconds = sampler, pruner, heartbeat_seconds

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        fixed = self._fixed_values(arguments)
        study = self._open_study()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def objective(trial: optuna.trial.Trial) -> float:
            values = [f"{key}={suggest(trial, key, distribution)}" for key, distribution in self.params.items()]
            overrides = [*arguments, *values, f"{TRIAL_ID_KEY}={trial._trial_id}"]
            try:
                self.validate_batch_is_legal([overrides])
            except Exception as error:  # one trial's bad combination fails that trial, not the search
                raise JobFailed(f"its config does not compose: {error}") from error
            # Job number = trial number: folders and derived seeds stay unique across workers and reruns.
            (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            return self._value(result)

        def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if _trials_done_or_running(study) >= self.n_trials:  # other workers on the study count too
                study.stop()

        _quietly(optuna.storages.fail_stale_trials, study)  # a killed sweep's trials: failed, and queued again
        if _trials_done_or_running(study) < self.n_trials:
            with warnings.catch_warnings():  # heartbeats and their retry are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, catch=(JobFailed,), callbacks=[stop_when_done])
        self._report_best(study, fixed, sweep_dir)
        return study

    def _fixed_values(self, arguments: list[str]) -> dict[str, Any]:
        """The command line's own overrides (the same in every trial), by key; a swept value is refused."""
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        sweeps = [override.input_line for override in parsed if override.is_sweep_override()]
        if sweeps:
            raise ValueError(f"hparams_search chooses the swept values itself; remove {sweeps[0]!r} or use a grid")
        searched = [override.input_line for override in parsed if override.key_or_group in self.params]
        if searched:
            raise ValueError(f"{searched[0]!r} sets a key the search chooses; remove it or narrow the search space")
        return {override.key_or_group: override.value() for override in parsed if not override.is_delete()}

    def _value(self, result: JobReturn) -> float:
        """The job's objective; raises TrialPruned or JobFailed as the job ended (`mnist_cnn.sweep.run_job`)."""
        outcome = result.return_value if result.status == JobStatus.COMPLETED else None
        if not isinstance(outcome, Mapping):
            raise JobFailed(repr(result._return_value))
        if outcome["status"] == "pruned":
            raise optuna.TrialPruned(outcome["error"])
        if outcome["status"] != "ok" or outcome.get(self.objective) is None:
            raise JobFailed(outcome["error"] or f"the job reported no {self.objective}")
        return float(outcome[self.objective])

    def _open_study(self) -> optuna.Study:
        if self.storage_url.startswith("sqlite:///"):
            Path(self.storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        storage = _quietly(
            optuna.storages.RDBStorage,
            self.storage_url,
            heartbeat_interval=self.heartbeat_seconds,
            grace_period=2 * self.heartbeat_seconds,
            heartbeat_stale_trial_callback=_quietly(RetryHeartbeatStaleTrialCallback, max_retry=1),
        )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        done = _trials_done_or_running(study)
        log.info("Optuna study %r in %s: %d of %d trials done", self.study_name, self.storage_url, done, self.n_trials)
        return study

    def _report_best(self, study: optuna.Study, fixed: dict[str, Any], sweep_dir: Path) -> None:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            log.warning("no trial of study %r completed", self.study_name)
            return
        best = study.best_trial
        groups = set(self.config.hydra.runtime.choices)
        path = sweep_dir / "best_experiment.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(experiment_yaml(best, fixed, groups, self.objective, self.study_name))
        log.info(
            "best trial %d: %s=%.4f %s; as an experiment: %s",
            best.number,
            self.objective,
            best.value,
            " ".join(_overrides(best.params)),
            path,
        )


def _trials_done_or_running(study: optuna.Study) -> int:
    """Trials finished or running (in any worker); one that failed stale and was queued again counts once."""
    trials = study.get_trials(deepcopy=False)
    retried = {_quietly(RetryHeartbeatStaleTrialCallback.retried_trial_number, trial) for trial in trials} - {None}
    running = [trial for trial in trials if trial.state == TrialState.RUNNING]
    finished = [trial for trial in trials if trial.state in FINISHED and trial.number not in retried]
    return len(finished) + len(running)


def _quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an Optuna API marked experimental (heartbeats, since Optuna 2.9) without its warning; Optuna is pinned."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return function(*args, **kwargs)


def _overrides(params: Mapping[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in params.items()]


# Command-line keys that say where and how a search ran, not what it trained.
NOT_RECIPE = ("hydra", "paths", "callbacks", "hparams_search", "experiment", "debug", "local")


def experiment_yaml(
    trial: optuna.trial.FrozenTrial, fixed: dict[str, Any], groups: set[str], objective: str, study_name: str
) -> str:
    """The trial as a ready-to-run `conf/experiment/<name>.yaml`: config-group choices, then values."""
    recipe = {key: value for key, value in fixed.items() if re.split(r"[./]", key)[0] not in NOT_RECIPE}
    chosen = recipe | trial.params
    choices = [f"  - override /{key}: {value}" for key, value in chosen.items() if key in groups]
    values = OmegaConf.create()
    for key, value in chosen.items():
        if key not in groups:
            OmegaConf.update(values, key, value, force_add=True)
    header = [
        "# @package _global_",
        f"# Optuna study {study_name!r}, trial {trial.number}: {objective}={trial.value:.4f}.",
        "# Copy to conf/experiment/<name>.yaml and run: mnist-cnn-train experiment=<name>",
    ]
    defaults = ["defaults:", *choices] if choices else []
    return "\n".join([*header, *defaults, OmegaConf.to_yaml(values).rstrip()]) + "\n"
