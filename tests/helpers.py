"""Helpers the test modules share that are not fixtures: the chapter's own network, TensorBoard events."""

from pathlib import Path

import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn


class ChapterCNN(nn.Module):
    """A copy of the chapter's own class, as a reader of the chapter would have it."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, kernel_size=5, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, kernel_size=5, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(200, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def read_events(log_dir: Path) -> EventAccumulator:
    """Every event under `log_dir`, read with TensorBoard's own reader."""
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


# The start of an hparams_search config of a test's own (it mirrors the project's conf/hparams_search/optuna.yaml):
# the Optuna sweeper, pruning reported from every job, failed trials part of the search. The test adds the
# sweeper's sampler, pruner and params, indented by four spaces.
SEARCH_CONFIG_START = """# @package _global_
defaults:
  - override /hydra/sweeper: optuna
test: false
callbacks:
  optuna_pruning:
    _target_: mnist_cnn.pruning.OptunaPruning
    storage: ${hydra:sweeper.storage}
    study_name: ${hydra:sweeper.study_name}
    pruner: ${hydra:sweeper.pruner}
hydra:
  callbacks:
    sweep_summary:
      fail_on_failed_jobs: false
  sweeper:
"""


def compose_best_experiment(sweep: Path, cwd: Path) -> dict:
    """A search's `best_experiment.yaml` installed as `<cwd>/conf/experiment/found.yaml`, as its header says,
    and the job config `mnist-cnn-train experiment=found` composes from it."""
    from conftest import run_cli

    experiment = cwd / "conf" / "experiment" / "found.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text((sweep / "best_experiment.yaml").read_text())
    composed = run_cli("train", "experiment=found", f"hydra.searchpath=[file://{cwd}/conf]", "--cfg", "job", cwd=cwd)
    assert composed.returncode == 0, composed.stderr[-3000:]
    return yaml.safe_load(composed.stdout)
