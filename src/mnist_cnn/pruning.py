"""Optuna's Lightning pruning callback, for a trial that runs as its own Hydra job (maybe its own process)."""

import optuna
from lightning import Trainer
from optuna_integration import PyTorchLightningPruningCallback

from mnist_cnn.errors import ConfigError
from mnist_cnn.study_storage import open_storage


class OptunaPruning(PyTorchLightningPruningCallback):
    """Report `monitor` to the trial after every validation, and stop the fit once Optuna's pruner says so.

    Optuna's callback needs the trial object, which lives in the sweeper's process; a job gets only the trial's
    id (from hparams_search's sweeper) and reopens the trial from the study's shared storage.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        monitor: str = "val/acc",
    ) -> None:
        """`pruner`: the study's own (the sweeper's); Optuna keeps no pruner in storage, and a reopened study
        would otherwise judge with Optuna's default one."""
        if trial_id is None:
            raise ConfigError("hparams_search runs an Optuna study: start it as a multirun (mnist-cnn-train -m ...)")
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage), pruner=pruner)
        super().__init__(optuna.trial.Trial(study, trial_id), monitor=monitor)


def raise_if_pruned(trainer: Trainer) -> None:
    """Raise `optuna.TrialPruned` after a fit that Optuna pruned.

    In one process the callback raises by itself; under DDP it only stops the fit, and Optuna's documented
    step is this call to `check_pruned` after `fit`.
    """
    for callback in trainer.callbacks:
        if isinstance(callback, OptunaPruning):
            callback.check_pruned()
