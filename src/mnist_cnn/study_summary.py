"""`mnist-cnn-summary --study <name> --storage <url>`: an Optuna study's trials and its best trial as an
experiment, from its storage alone (several workers each have their own sweep folder; the study has them all).

Writes `trials.csv`/`trials.md` (every trial: number, state, objective, parameters, seconds) and
`best_experiment.yaml` into `outputs/studies/<study name>/` (or `--out`), and prints the table.
"""

import re
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from mnist_cnn.errors import ConfigError
from mnist_cnn.files import atomic_path
from mnist_cnn.study_storage import open_storage, quietly, without_password
from mnist_cnn.tables import write_tables

# Trial user attributes: the command line's own overrides (the sweeper records them for the experiment file);
# why a trial was never run (another worker took the study's last trial at the same moment).
COMMAND_LINE, NOT_RUN = "command_line", "not_run"
# Study user attributes: the objective's name, and which keys are config groups (Hydra's runtime choices).
OBJECTIVE, CONFIG_GROUPS = "objective", "config_groups"
# Command-line keys that say where and how a search ran, not what it trained.
NOT_RECIPE = ("hydra", "paths", "callbacks", "hparams_search", "experiment", "debug", "local")


def experiment_yaml(
    trial: FrozenTrial, fixed: dict[str, Any], groups: set[str], objective: str, study_name: str
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


def write_best_experiment(study: optuna.Study, folder: Path) -> Path | None:
    """`<folder>/best_experiment.yaml`; None while no trial has completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    groups = set(study.user_attrs.get(CONFIG_GROUPS, ()))
    objective = study.user_attrs.get(OBJECTIVE, "value")
    text = experiment_yaml(best, best.user_attrs.get(COMMAND_LINE, {}), groups, objective, study.study_name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best_experiment.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def trial_rows(trials: list[FrozenTrial]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per trial, and the columns: number, state, value, each parameter, seconds, note."""
    params = list(dict.fromkeys(key for trial in trials for key in trial.params))
    rows = []
    for trial in trials:
        seconds = trial.duration.total_seconds() if trial.duration else None
        note = trial.user_attrs.get(NOT_RUN) or _retry_note(trial)
        row = {"trial": trial.number, "state": trial.state.name, "value": trial.value}
        rows.append(row | {key: trial.params.get(key) for key in params} | {"seconds": seconds, "note": note})
    return rows, ["trial", "state", "value", *params, "seconds", "note"]


def rerun_of(trial: FrozenTrial) -> int | None:
    """The number of the stale trial (its worker was killed) that Optuna queued `trial` to run again, if any."""
    return quietly(RetryHeartbeatStaleTrialCallback.retried_trial_number, trial)


def _retry_note(trial: FrozenTrial) -> str:
    failed = rerun_of(trial)
    return "" if failed is None else f"rerun of trial {failed} (its worker stopped)"


def summarize_study(study_name: str, storage: str, out: Path | None = None) -> Path:
    """Write the study's tables and best experiment into `out`; print the table; return `out`."""
    opened = open_storage(storage, create=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError as error:  # Optuna's error for a study name that the storage does not hold
        names = ", ".join(summary.study_name for summary in optuna.get_all_study_summaries(opened)) or "none"
        raise ConfigError(f"no study {study_name!r} in {without_password(storage)} (it has: {names})") from error
    out = out or Path("outputs") / "studies" / study_name
    out.mkdir(parents=True, exist_ok=True)
    rows, columns = trial_rows(study.get_trials(deepcopy=False))
    print(write_tables(rows, columns, out / "trials"), end="")
    states = {state.name: sum(row["state"] == state.name for row in rows) for state in TrialState}
    print(", ".join(f"{count} {name.lower()}" for name, count in states.items() if count))
    best = write_best_experiment(study, out)
    print(f"best trial {study.best_trial.number}: {best}" if best else "no trial completed yet")
    return out
