"""Learning-rate schedules: built from config, and rehearsed over a run's real length before it starts.

torch checks few scheduler arguments when it builds one: `StepLR(step_size=0)` fails with a division by
zero after the first epoch, a one-cycle schedule whose warm-up rounds to one step fails mid-run. Stepping a
copy of the schedule through the whole run on a stand-in parameter costs milliseconds and turns those late
crashes into one-line config errors.
"""

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from mnist_cnn.errors import ConfigError


def build_scheduler(settings: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int) -> tuple:
    """(scheduler, interval) from a scheduler config; `total_steps: null` means the run's optimizer steps."""
    settings = dict(settings)
    interval = settings.pop("interval", "epoch")  # when Lightning steps it: each "epoch" or each "step"
    if "total_steps" in settings and settings["total_steps"] is None:
        settings["total_steps"] = max(1, total_steps)
    return instantiate(settings, optimizer=optimizer), interval


def rehearse_schedule(
    scheduler: Mapping[str, Any], optimizer: Mapping[str, Any], epochs: int | float, steps: int | float
) -> None:
    """Step the configured schedule as often as the run will (per epoch or per optimizer step); raise if it fails."""
    stand_in = instantiate(optimizer, params=[torch.nn.Parameter(torch.zeros(1))])
    name = str(scheduler.get("_target_", "")).rsplit(".", 1)[-1]
    try:
        schedule, interval = build_scheduler(scheduler, stand_in, int(steps))
    except Exception as error:
        raise _rejected(name, "when built", error) from error
    calls = int(steps) if interval == "step" else int(epochs)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": there is nothing to optimise
        warnings.simplefilter("ignore")
        for done in range(1, calls + 1):
            try:
                schedule.step()
                if not all(math.isfinite(lr) for lr in schedule.get_last_lr()):
                    raise ValueError(f"the learning rate becomes {schedule.get_last_lr()[0]}")
            except Exception as error:  # torch raises ZeroDivisionError, ValueError, ... for values it never checked
                raise _rejected(name, f"at its step {done} of {calls}", error) from error


def _rejected(name: str, where: str, error: BaseException) -> ConfigError:
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # torch's own error, not Hydra's wrapper around it
    reason = " ".join(str(error).split()) or type(error).__name__
    return ConfigError(
        f"scheduler {name} fails {where} in this run ({type(error).__name__}: {reason}); "
        "change the scheduler's values or the run's length"
    )
