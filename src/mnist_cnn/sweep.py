"""What a job of a Hydra multirun needs: its own seed, thread count and run name, and a failure that stays its own.

The `${job_seed:...}`, `${job_threads:}` and `${job_run_name:}` resolvers are used by conf/train.yaml and
conf/logger/tensorboard.yaml; outside a multirun they give the single run's values.
"""

import hashlib
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.errors import ConfigError, UserError, exit_on_user_error
from mnist_cnn.files import write_json
from mnist_cnn.run_record import record_dir

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def override_key(override: str) -> str:
    """`trainer.max_epochs` from `trainer.max_epochs=10` (or `+...`, `~...`), as Hydra keys it."""
    return override.split("=", 1)[0].lstrip("+~")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_num() -> int | None:
    """A multirun job's number: its folder's name when that is a number (an Optuna trial's folder is named by
    its trial number, which need not follow the launcher's count), else Hydra's job number."""
    if not in_multirun():
        return None
    hydra = HydraConfig.get()
    folder = str(hydra.sweep.subdir)
    return int(folder) if folder.isdigit() else hydra.job.get("num")


def job_seed(base_seed: int) -> int:
    """`base_seed` for a single run; in a multirun, a seed of the job's own, derived from it and the job number."""
    num = _job_num()
    if num is None:
        return int(base_seed)
    digest = hashlib.blake2b(f"{base_seed}/{num}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % 2**31


def job_threads() -> int | None:
    """Torch threads per job when Hydra's joblib launcher runs `n_jobs` jobs at once; None: torch's default.

    Every job would otherwise start one thread per core, and parallel jobs would fight over the cores.
    """
    if not in_multirun():
        return None
    hydra = HydraConfig.get()
    n_jobs = hydra.launcher.get("n_jobs")
    if not n_jobs:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parallel = n_jobs if n_jobs > 0 else cores + 1 + n_jobs  # joblib: -1 means every core, -2 all but one
    if "Optuna" in str(hydra.sweeper.get("_target_")):  # the Optuna sweeper launches batches of its own n_jobs
        parallel = min(parallel, hydra.sweeper.get("n_jobs", 1))
    return max(1, cores // max(1, min(parallel, cores)))


def job_run_name() -> str:
    """A multirun job's own overrides (`optimizer=sgd,optimizer.lr=0.01`), its TensorBoard run name; '' otherwise.

    Own: not on the sweep's command line as they are (the swept values, a trial's values), and not one of
    `hydra.job.config.override_dirname.exclude_keys`. Long names end in a hash instead (file names are short).
    """
    if not in_multirun():
        return ""
    hydra = HydraConfig.get()
    parser = OverridesParser.create()
    shared = {o.key_or_group: o.value() for o in parser.parse_overrides(_sweep_arguments(Path(hydra.sweep.dir)))}
    excluded = set(hydra.job.config.override_dirname.exclude_keys)
    unset = object()
    own = [
        override.input_line
        for override in parser.parse_overrides(list(hydra.overrides.task))
        if override.key_or_group not in excluded and shared.get(override.key_or_group, unset) != override.value()
    ]
    name = ",".join(sorted(own)).replace("/", "_")  # a slash would nest folders
    if len(name) > MAX_RUN_NAME:
        name = name[: MAX_RUN_NAME - 9] + "~" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return name


MAX_RUN_NAME = 160


def _sweep_arguments(sweep_dir: Path) -> list[str]:
    """The sweep's command-line overrides, from the `multirun.yaml` the sweeper writes before any job starts."""
    saved = sweep_dir / "multirun.yaml"
    return list(OmegaConf.load(saved).hydra.overrides.task) if saved.is_file() else []


def register_resolvers() -> None:
    for name, resolver in (("job_seed", job_seed), ("job_threads", job_threads), ("job_run_name", job_run_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)


def run_job(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run one job of a sweep; a failure is recorded in the job's `status.json` and returned, not raised.

    Hydra's sweeper would otherwise end the whole sweep at the first failed job (at once for our
    `SystemExit`, after the batch for other errors). An Optuna trial that was pruned is recorded as "pruned".
    When it started and ended (UTC) go in `status.json` too: they show which jobs of a sweep ran in parallel.
    """
    started = _now()
    try:
        result = {"status": "ok", "error": None, **task(cfg)}
    except Exception as error:
        result = {"status": _failure_status(error), "error": _one_line(error)}
        if result["status"] == "pruned":
            log.info("trial pruned: %s", result["error"])
        elif isinstance(error, UserError):
            log.error("job failed: %s", result["error"])
        else:
            log.exception("job failed: %s", result["error"])  # a bug: keep the traceback in the job's log
    if record_dir(cfg) is not None:  # rank 0 of a DDP job writes it
        status = {"status": result["status"], "error": result["error"], "started": started, "ended": _now()}
        write_json(Path(cfg.paths.output_dir) / STATUS_FILE, status)
    return result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _failure_status(error: Exception) -> str:
    from optuna import TrialPruned  # imported only here: optuna is slow to import and single runs never need it

    return "pruned" if isinstance(error, TrialPruned) else "failed"


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"


# Lightning strategies that start their other processes by running the command line again.
RELAUNCHING_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false", "fsdp")
RELAUNCH_IN_SWEEP = (
    "cannot run inside a multirun (-m): Lightning would start the whole sweep again in every process. "
    "Use trainer.strategy=ddp_spawn, hydra/launcher=submitit_slurm (one task per device), or one command per "
    "configuration"
)


class SweepPreflight(Callback):
    """Hydra callback: refuse, before any job starts, a sweep none of whose jobs could do what it asks.

    A strategy that would re-run the whole sweep in every job (`mnist_cnn.runner.check_launch` refuses the
    same per job, for the cases config alone cannot tell: `strategy: auto` on several GPUs), and a search
    whose objective is measured on a validation set the config leaves out.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            check_strategy_in_sweep(config)
            check_search_objective(config)


def check_strategy_in_sweep(config: DictConfig) -> None:
    strategy = OmegaConf.select(config, "trainer.strategy")
    devices = OmegaConf.select(config, "trainer.devices")
    cluster = "submitit" in str(OmegaConf.select(config, "hydra.launcher._target_"))  # SLURM starts them
    if strategy in RELAUNCHING_STRATEGIES and devices not in (1, "1") and not cluster:
        raise ConfigError(f"trainer.strategy={strategy} {RELAUNCH_IN_SWEEP}")


def check_search_objective(config: DictConfig) -> None:
    objective = OmegaConf.select(config, "hydra.sweeper.objective")  # set by hparams_search (Optuna) only
    if str(objective).startswith("val") and OmegaConf.select(config, "data.val_size") == 0:
        raise ConfigError(
            f"data.val_size=0 leaves no validation set, and the search's objective {objective} is measured on "
            "it: every trial would fail. Search with a validation set, then refit the winner with data.val_size=0"
        )
