"""Callbacks of our own, kept to what Lightning's do not already do."""

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary

log = logging.getLogger(__name__)


class ExactModelSummary(ModelSummary):
    """Lightning's model summary, plus the exact trainable parameter count (its table rounds to '17.1 K')."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        ModelSummary.summarize(
            summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops
        )
        log.info("Trainable parameters (exact): %s", f"{trainable_parameters:,}")
