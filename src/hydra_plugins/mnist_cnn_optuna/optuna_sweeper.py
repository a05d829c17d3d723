"""`hydra/sweeper=optuna`: Optuna (current major version) asks for trials, Hydra composes and launches them.

The thinnest bridge we could build: Hydra's own Optuna sweeper plugin pins optuna<3 and hides the trial
object from the job, so it can neither prune nor resume. Here the study lives in a storage that several
processes share (`mnist_cnn.study_storage`: SQLite by default, PostgreSQL, a journal file); every trial is one
job of the multirun with the trial's values as overrides, plus the trial's id, with which the job reopens the
trial and reports to it (`mnist_cnn.pruning.OptunaPruning`).

Ask-and-tell: the sweeper asks Optuna for `n_jobs` trials, launches them as one batch through whichever Hydra
launcher is configured (in-process, joblib, SLURM), and tells Optuna how each ended. Several sweeps (terminals,
machines, a SLURM array) on one storage share the study's `n_trials` budget: each trial runs once, in one of them.
"""

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from mnist_cnn.errors import exit_on_user_error
from mnist_cnn.study_storage import has_heartbeats, open_storage, quietly, without_password
from mnist_cnn.study_summary import COMMAND_LINE, CONFIG_GROUPS, NOT_RUN, OBJECTIVE, rerun_of, write_best_experiment
from mnist_cnn.sweep import STATUS_FILE

log = logging.getLogger(__name__)

TRIAL_ID_KEY = "callbacks.optuna_pruning.trial_id"
POLL_SECONDS = 2  # how often a worker with nothing left to ask for looks at the trials other workers run


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
        n_jobs: int = 1,
    ) -> None:
        super().__init__()
        if n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs must be at least 1, got {n_jobs}")
        self.study_name, self.storage_url, self.direction = study_name, storage, direction
        self.objective, self.n_trials, self.n_jobs = objective, n_trials, n_jobs
        self.params = dict(params)
        self.sampler, self.pruner, self.heartbeat_seconds = sampler, pruner, heartbeat_seconds
        self.sampler_done = False  # set when the sampler has nothing left to propose

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        fixed = self._fixed_values(arguments)
        with exit_on_user_error():  # a storage that cannot be opened: one line
            study = self._open_study()
        study.set_user_attr(OBJECTIVE, self.objective)
        study.set_user_attr(CONFIG_GROUPS, sorted(self.config.hydra.runtime.choices))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        while not self.sampler_done:
            quietly(optuna.storages.fail_stale_trials, study)  # a killed worker's trials: failed, and queued again
            batch = self._ask_batch(study, fixed)
            if batch:
                self._run_batch(study, batch, arguments)
            elif self._others_running(study):  # should their worker have been killed, its trial runs here
                time.sleep(min(POLL_SECONDS, self.heartbeat_seconds))
            else:
                break
        self._report_best(study, fixed, sweep_dir)
        return study

    def _ask_batch(self, study: optuna.Study, fixed: dict[str, Any]) -> list[optuna.trial.Trial]:
        """Up to `n_jobs` new trials, within the study's `n_trials` (which other workers use up too)."""
        batch: list[optuna.trial.Trial] = []
        try:
            while len(batch) < self.n_jobs and self._may_ask(study):
                trial = study.ask()
                batch.append(trial)
                if has_heartbeats(self.storage):  # at once: a trial without heartbeats never counts as stale
                    self.storage.record_heartbeat(trial._trial_id)
                if _is_surplus(study.get_trials(deepcopy=False), trial.number, self.n_trials):
                    # Another worker took the last free trial at the same moment; Optuna cannot take a trial back.
                    trial.set_user_attr(NOT_RUN, "the study had all its trials: another worker asked at the same time")
                    self._record(study, batch.pop(), state=TrialState.FAIL)
                    break
                trial.set_user_attr(COMMAND_LINE, fixed)
        except BaseException:  # Ctrl-C while asking: no trial is left RUNNING
            self._fail(study, batch)
            raise
        return batch

    def _may_ask(self, study: optuna.Study) -> bool:
        """Room in the study's budget, and a sampler with something left to propose (a grid may be done)."""
        if isinstance(self.sampler, optuna.samplers.GridSampler) and self.sampler.is_exhausted(study):
            return False
        return _has_room(study.get_trials(deepcopy=False), self.n_trials)

    def _run_batch(self, study: optuna.Study, batch: list[optuna.trial.Trial], arguments: list[str]) -> None:
        """Launch the batch's jobs together (trials whose config does not compose fail at once), then tell each.

        Each job's folder is named by its trial number (`hydra.sweep.subdir`), whichever numbers the batch has:
        several workers' batches interleave. The job's derived seed follows its folder (`mnist_cnn.sweep`).
        """
        try:
            jobs = []
            for trial in batch:
                values = [f"{key}={suggest(trial, key, distribution)}" for key, distribution in self.params.items()]
                overrides = [*arguments, *values, f"{TRIAL_ID_KEY}={trial._trial_id}"]
                overrides.append(f"hydra.sweep.subdir={trial.number}")
                try:
                    self.validate_batch_is_legal([overrides])
                except Exception as error:  # one trial's bad combination fails that trial, not the search
                    log.warning("trial %d failed: its config does not compose: %s", trial.number, error)
                    self._record(study, trial, state=TrialState.FAIL)
                    continue
                jobs.append((trial, overrides))
            if not jobs:
                return
            with _heartbeats(self.storage, [trial._trial_id for trial, _ in jobs], self.heartbeat_seconds):
                for (trial, _), outcome in zip(jobs, self._launch(jobs), strict=True):
                    self._tell(study, trial, outcome)
        except BaseException:  # Ctrl-C: the batch's open trials failed, as in Optuna's optimize
            self._fail(study, batch)
            raise

    def _fail(self, study: optuna.Study, trials: list[optuna.trial.Trial]) -> None:
        for trial in trials:
            self._record(study, trial, state=TrialState.FAIL)

    def _launch(self, jobs: list[tuple[optuna.trial.Trial, list[str]]]) -> list[Mapping[str, Any] | str]:
        """Each job's outcome (`mnist_cnn.sweep.run_job`'s dict), or why it has none.

        When a job's process is killed, joblib and submitit raise for the whole batch; the other jobs' own
        records (`status.json`, `metrics.json` in their folders) then say how they ended.
        """
        try:
            results = self.launcher.launch([overrides for _, overrides in jobs], initial_job_idx=jobs[0][0].number)
        except Exception as error:
            log.warning("the launcher failed (%s); each trial's outcome comes from its job's folder", error)
            return [self._recorded_outcome(trial.number, error) for trial, _ in jobs]
        return [
            result.return_value if result.status == JobStatus.COMPLETED else repr(result._return_value)
            for result in results
        ]

    def _recorded_outcome(self, job_number: int, error: Exception) -> Mapping[str, Any] | str:
        job = Path(self.config.hydra.sweep.dir) / str(job_number)
        status, metrics = job / STATUS_FILE, job / "metrics.json"
        if not status.is_file():
            return f"its job left no status.json (its process was killed?); the launcher said: {error}"
        return {**(json.loads(metrics.read_text()) if metrics.is_file() else {}), **json.loads(status.read_text())}

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, outcome: Mapping[str, Any] | str) -> None:
        try:
            value = self._value(outcome)
        except optuna.TrialPruned:
            self._record(study, trial, state=TrialState.PRUNED)
        except JobFailed as error:
            log.warning("trial %d failed: %s", trial.number, error)
            self._record(study, trial, state=TrialState.FAIL)
        else:
            self._record(study, trial, value)

    def _record(self, study: optuna.Study, trial: optuna.trial.Trial, *args: Any, **kwargs: Any) -> None:
        """`study.tell`, where a sampler that has nothing left to propose (a finished grid) ends the sweep.

        Samplers say so with `study.stop()`, which raises outside `study.optimize`, after the result is stored.
        A trial that another worker failed as stale (this one was stopped too long) keeps that state; its rerun
        is queued already.
        """
        try:
            study.tell(trial, *args, skip_if_finished=True, **kwargs)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise
            log.info("the sampler has no more trials to propose")
            self.sampler_done = True

    def _others_running(self, study: optuna.Study) -> bool:
        """Trials running in other workers that could yet go stale and be queued again (heartbeats only)."""
        if not has_heartbeats(self.storage):
            return False
        return any(trial.state == TrialState.RUNNING for trial in study.get_trials(deepcopy=False))

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

    def _value(self, outcome: Mapping[str, Any] | str) -> float:
        """The job's objective; raises TrialPruned or JobFailed as the job ended (`mnist_cnn.sweep.run_job`)."""
        if not isinstance(outcome, Mapping):
            raise JobFailed(outcome)
        if outcome["status"] == "pruned":
            raise optuna.TrialPruned(outcome["error"])
        if outcome["status"] != "ok" or outcome.get(self.objective) is None:
            raise JobFailed(outcome["error"] or f"the job reported no {self.objective}")
        return float(outcome[self.objective])

    def _open_study(self) -> optuna.Study:
        self.storage = open_storage(self.storage_url, self.heartbeat_seconds)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        used = _slots_used(study.get_trials(deepcopy=False))
        log.info(
            "Optuna study %r in %s: %d of %d trials done or running",
            self.study_name,
            without_password(self.storage_url),
            used,
            self.n_trials,
        )
        return study

    def _report_best(self, study: optuna.Study, fixed: dict[str, Any], sweep_dir: Path) -> None:
        path = write_best_experiment(study, sweep_dir)
        if path is None:
            log.warning("no trial of study %r completed", self.study_name)
            return
        best = study.best_trial
        log.info(
            "best trial %d: %s=%.4f %s; as an experiment: %s",
            best.number,
            self.objective,
            best.value,
            " ".join(_overrides(best.params)),
            path,
        )


def _is_retry(trial: FrozenTrial) -> bool:
    """A trial that Optuna queued again for one that went stale (its worker was killed)."""
    return rerun_of(trial) is not None


def _uses_a_slot(trial: FrozenTrial) -> bool:
    """Counts towards `n_trials`: a trial asked for afresh and run (a rerun takes its stale original's place)."""
    return not _is_retry(trial) and NOT_RUN not in trial.user_attrs


def _slots_used(trials: Sequence[FrozenTrial]) -> int:
    return sum(_uses_a_slot(trial) for trial in trials)


def _has_room(trials: Sequence[FrozenTrial], n_trials: int) -> bool:
    """Another trial may be asked for: a free slot, or a rerun queued by the heartbeat."""
    return _slots_used(trials) < n_trials or any(trial.state == TrialState.WAITING for trial in trials)


def _is_surplus(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """Trial `number` came after the study's last slot was taken (trial numbers are handed out in order)."""
    (trial,) = [trial for trial in trials if trial.number == number]
    if _is_retry(trial):
        return False
    return _slots_used([earlier for earlier in trials if earlier.number < number]) >= n_trials


@contextmanager
def _heartbeats(storage: BaseStorage, trial_ids: list[int], interval: int) -> Iterator[None]:
    """Record the trials' heartbeats every `interval` seconds while their jobs run, as Optuna's `optimize` does
    for its one trial: a worker that is killed stops them, and other workers then run its trials again."""
    if not has_heartbeats(storage) or not trial_ids:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            for trial_id in trial_ids:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as error:  # a lost connection: try again next time, before the grace period ends
                    log.warning("heartbeat of trial id %d not recorded: %s", trial_id, error)

    thread = threading.Thread(target=beat, name="optuna-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _overrides(params: Mapping[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in params.items()]
