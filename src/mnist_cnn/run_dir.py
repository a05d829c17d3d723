"""Run folders: a fresh one claimed atomically for every run, or an earlier one again to resume it.

Hydra names run folders after the second a run starts, so two runs started in the same second would share
one. The `run_dir` resolver (used by `conf/hydra/default.yaml`) creates the folder itself with an exclusive
`mkdir`, adding `_1`, `_2`, ... on a clash. With `resume=true` it returns the newest earlier run that has a
checkpoint; with `resume=<folder>` that folder.
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


def latest_run_dir(root: Path) -> Path:
    """The run under `root/<date>/<time>` whose newest checkpoint is the newest of all."""
    runs = [path for path in root.glob("*/*") if path.parent.name != "multirun" and has_checkpoint(path)]
    if not runs:
        raise ConfigError(f"resume=true found no run with checkpoints under {root}/")
    return max(runs, key=lambda run: max(ckpt.stat().st_mtime for ckpt in (run / CHECKPOINT_DIR).glob("*.ckpt")))


def resolve_run_dir(root: str, resume: bool | str | None) -> str:
    """The value of `${run_dir:<root>,${resume}}`; a failure exits with our one-line error, not Hydra's trace."""
    with exit_on_user_error():
        return _run_dir(root, resume)


def _run_dir(root: str, resume: bool | str | None) -> str:
    if resume in (None, False, "false", ""):
        return str(claim_new_run_dir(Path(root)))
    if resume is True or resume == "true":
        return str(latest_run_dir(Path(root)))
    run_dir = Path(str(resume))
    if not has_checkpoint(run_dir):
        raise ConfigError(f"resume={resume}: no checkpoints in {run_dir / CHECKPOINT_DIR}")
    return str(run_dir)


def hydra_subdir(resume: bool | str | None) -> str:
    """Where Hydra records a run's config: `.hydra`, or for a resumed run a new folder inside it."""
    if resume in (None, False, "false", ""):
        return ".hydra"
    return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"


def register_resolvers() -> None:
    """`${run_dir:...}` and `${hydra_subdir:...}` for conf/hydra/default.yaml."""
    # Cached: Hydra reads these several times, and every read must name the same folder.
    for name, resolver in (("run_dir", resolve_run_dir), ("hydra_subdir", hydra_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)
