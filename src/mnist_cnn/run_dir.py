"""Run folders: a fresh one claimed atomically for every run, or an earlier one again to resume it.

Hydra names run folders after the second a run starts, so two runs started in the same second would share
one. The `run_dir` resolver (used by `conf/hydra/default.yaml`) creates the folder itself with an exclusive
`mkdir`, adding `_1`, `_2`, ... on a clash; `sweep_dir` does the same for multirun folders. With
`resume=true` it returns the newest earlier run that has a checkpoint, with `resume=<folder>` that folder,
once `mnist_cnn.resume.check_resume` has accepted the command.
"""

from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from mnist_cnn.errors import ConfigError, exit_on_user_error

CHECKPOINT_DIR = "checkpoints"


def claim_new_run_dir(root: Path, now: datetime | None = None) -> Path:
    """Create and return `root/<date>/<time>`, or `<time>_N` if another run took that name first."""
    now = now or datetime.now()
    base = root / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    for attempt in range(1000):
        candidate = base if attempt == 0 else base.with_name(f"{base.name}_{attempt}")
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
        except FileExistsError:
            if candidate.is_dir():
                continue  # another run has it
            raise ConfigError(f"cannot create a run folder under {root}: {candidate} is a file") from None
        except OSError as error:
            raise ConfigError(
                f"cannot create a run folder under {root}: {error.strerror} ({error.filename})"
            ) from error
        return candidate
    raise ConfigError(f"cannot create a run folder under {root}: 1000 runs already started at {base.name}")


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))


def resume_is_off(resume: bool | str | None) -> bool:
    return resume in (None, False, "false", "False", "")


def is_training_run(run_dir: Path) -> bool:
    """A folder `mnist-cnn-train` made (evaluation runs have no optimizer in their config)."""
    config = run_dir / ".hydra" / "config.yaml"
    return config.is_file() and "optimizer" in OmegaConf.load(config)


def latest_run_dir(root: Path) -> Path:
    """The newest training run under `root/<date>/<time>`; it must have a checkpoint to resume from."""
    runs = [path for path in root.glob("*/*") if path.parent.name != "multirun" and is_training_run(path)]
    if not runs:
        raise ConfigError(f"resume=true found no training run under {root}/")
    newest = max(runs, key=lambda run: (run.parent.name, run.name.split("_")[0], int(run.name.partition("_")[2] or 0)))
    if not has_checkpoint(newest):
        raise ConfigError(
            f"resume=true: the newest run, {newest}, has no checkpoint yet (stopped before its first one?); "
            f"resume=<run folder> resumes another"
        )
    return newest


def resolve_run_dir(root: str, resume: bool | str | None) -> str:
    """The value of `${run_dir:<root>,${resume}}`; a failure exits with our one-line error, not Hydra's trace."""
    with exit_on_user_error():
        return _run_dir(root, resume)


def _run_dir(root: str, resume: bool | str | None) -> str:
    if resume_is_off(resume):
        return str(claim_new_run_dir(Path(root)))
    if resume is True or resume == "true":
        run_dir = latest_run_dir(Path(root))
    else:
        run_dir = Path(str(resume))
        if not has_checkpoint(run_dir):
            raise ConfigError(f"resume={resume}: no checkpoints in {run_dir / CHECKPOINT_DIR}")
    from mnist_cnn.resume import check_resume  # here: mnist_cnn.resume imports this module

    check_resume(run_dir)  # now, before Hydra writes its record and log into the run's folder
    return str(run_dir)


def hydra_subdir(resume: bool | str | None) -> str:
    """Where Hydra records a run's config: `.hydra`, or for a resumed run a new folder inside it."""
    if resume_is_off(resume):
        return ".hydra"
    return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"


def resolve_sweep_dir(root: str) -> str:
    """The value of `${sweep_dir:<root>}`: a new `<root>/<date>/<time>` claimed for this multirun alone.

    Hydra resolves it once per sweep; its jobs' configs get the cached value (Hydra copies the resolver
    cache into every job's config), so all jobs of one sweep share the folder and no other sweep does.
    """
    with exit_on_user_error():
        return str(claim_new_run_dir(Path(root)))


def register_resolvers() -> None:
    """`${run_dir:...}`, `${sweep_dir:...}` and `${hydra_subdir:...}` for conf/hydra/default.yaml."""
    # Cached: Hydra reads these several times, and every read must name the same folder.
    resolvers = (("run_dir", resolve_run_dir), ("sweep_dir", resolve_sweep_dir), ("hydra_subdir", hydra_subdir))
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)
