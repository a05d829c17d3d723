"""Typed schemas for the config groups, so a typo or a wrong type fails when Hydra composes the config.

Each option `conf/<group>/<option>.yaml` starts its defaults list with `/<group>_<option>_schema@_here_`, a
dataclass stored here in Hydra's ConfigStore (Hydra's "config group schema" pattern), as a top-level config
rather than in a group, so that Hydra neither offers it as an option nor lists it in `--help`. Its YAML values are
merged into the dataclass, so a value that does not fit a field's type, or a key the dataclass lacks, is
rejected with a message naming the full key (`optimizer.lr`, `data.batch_sise`), before any data is loaded.

A field's default is the target's own default, so a key an option leaves out means what it meant before.
`trainer` also lists the Trainer arguments commonly set from the command line. A string or number field may
hold an interpolation (`${paths.data_dir}`); its resolved value is type-checked when it is read.

`+group.key=value` is Hydra's explicit "add this key", and it adds one even to a schema: that is how to pass
an argument the schema does not list (`+optimizer.amsgrad=true`). A misspelt `+key` then fails when the
target is built, with torch's or Lightning's "unexpected keyword argument".
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# data


@dataclass
class RandomAffineConfig:
    """`mnist_cnn.augment.RandomAffine`: per-image flip, rotation, scale, shift and elastic distortion."""

    _target_: str = "mnist_cnn.augment.RandomAffine"
    flip_p: float = 0.5
    degrees: float = 10.0
    translate: float = 0.0
    scale: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    interpolation: str = "nearest"


@dataclass
class MNISTDataConfig:
    """data=mnist: `mnist_cnn.tensor_datamodule.MNISTTensorDataModule`, the fast tensor data path."""

    _target_: str = "mnist_cnn.tensor_datamodule.MNISTTensorDataModule"
    data_dir: str = "data"
    download: bool = True
    batch_size: int = 64
    eval_batch_size: int | None = None
    val_size: int = 5000
    train_size: int | None = None  # null: every image not held out for validation
    split_seed: int = 42
    augment_eval: bool = False
    augmentation: RandomAffineConfig | None = None  # null: no augmentation
    dataset: str = "MNIST"  # or FashionMNIST, KMNIST


@dataclass
class MNISTPILDataConfig:
    """data=mnist_pil: `mnist_cnn.datamodule.MNISTDataModule`, the classic per-image PIL path."""

    _target_: str = "mnist_cnn.datamodule.MNISTDataModule"
    data_dir: str = "data"
    download: bool = True
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False
    val_size: int = 5000
    train_size: int | None = None  # null: every image not held out for validation
    split_seed: int = 42
    augment_eval: bool = False
    augmentation: list[dict[str, Any]] | None = field(default_factory=list)  # transform nodes; null: none
    dataset: str = "MNIST"  # or FashionMNIST, KMNIST


# model


@dataclass
class CNNConfig:
    """model=cnn: `mnist_cnn.cnn.ConvolutionalMNISTClassifier`, the chapter's network."""

    _target_: str = "mnist_cnn.cnn.ConvolutionalMNISTClassifier"


@dataclass
class SeparableCNNConfig:
    """model=cnn_separable: the same class, whose option sets `conv: separable` (the only way to pick them)."""

    _target_: str = "mnist_cnn.cnn.ConvolutionalMNISTClassifier"
    conv: str = "standard"


@dataclass
class MLPConfig:
    """model=mlp: `mnist_cnn.mlp.MLP`, hidden layer sizes between the 784 inputs and the 10 outputs."""

    _target_: str = "mnist_cnn.mlp.MLP"
    hidden_sizes: list[int] = field(default_factory=lambda: [50])


# optimizer


@dataclass
class AdamConfig:
    """optimizer=adam: `torch.optim.Adam`."""

    _target_: str = "torch.optim.Adam"
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    fused: bool | None = None


@dataclass
class AdamWConfig:
    """optimizer=adamw: `torch.optim.AdamW`."""

    _target_: str = "torch.optim.AdamW"
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-2
    fused: bool | None = None


@dataclass
class SGDConfig:
    """optimizer=sgd: `torch.optim.SGD`."""

    _target_: str = "torch.optim.SGD"
    lr: float = 1.0e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


# scheduler


@dataclass
class NoSchedulerConfig:
    """scheduler=none: no keys, the learning rate stays constant."""


@dataclass
class CosineSchedulerConfig:
    """scheduler=cosine: `torch.optim.lr_scheduler.CosineAnnealingLR`."""

    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = MISSING
    eta_min: float = 0.0


@dataclass
class StepSchedulerConfig:
    """scheduler=step: `torch.optim.lr_scheduler.StepLR`."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = MISSING
    gamma: float = 0.1


@dataclass
class OneCycleSchedulerConfig:
    """scheduler=onecycle: `torch.optim.lr_scheduler.OneCycleLR`, stepped every optimizer step."""

    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    interval: str = "step"
    max_lr: float = MISSING
    total_steps: int | None = None  # null: the run's own number of optimizer steps
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1.0e4
    cycle_momentum: bool = True


# trainer


@dataclass
class TrainerConfig:
    """trainer=default (and cpu, gpu, which extend it): `lightning.pytorch.Trainer`, with Lightning's defaults.

    `accelerator` and `devices` take a name or a number ("auto", "cpu", 1, ...), so they are not type-checked.
    """

    _target_: str = "lightning.pytorch.Trainer"
    default_root_dir: str | None = None
    accelerator: Any = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: int | str | None = None  # 32, 16, "bf16-mixed", ...
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: str | None = None  # "DD:HH:MM:SS"
    fast_dev_run: bool | int = False
    limit_train_batches: int | float | None = None  # a float is a fraction of the batches, an int a count
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    overfit_batches: int | float = 0.0
    val_check_interval: int | float | str | None = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: int | float | None = None
    gradient_clip_algorithm: str | None = None  # "norm" or "value"
    deterministic: bool | str | None = None  # true, false or "warn"
    benchmark: bool | None = None
    inference_mode: bool = True
    profiler: str | None = None  # "simple", "advanced", ...
    detect_anomaly: bool = False
    reload_dataloaders_every_n_epochs: int = 0


# logger: each option is one named logger node, e.g. logger.tensorboard


@dataclass
class TensorBoardLoggerConfig:
    """`lightning.pytorch.loggers.TensorBoardLogger`."""

    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    save_dir: str = MISSING
    name: str | None = "lightning_logs"
    version: int | str | None = None
    default_hp_metric: bool = True


@dataclass
class TensorBoardLoggerGroupConfig:
    """logger=tensorboard."""

    tensorboard: TensorBoardLoggerConfig = field(default_factory=TensorBoardLoggerConfig)


@dataclass
class CSVLoggerConfig:
    """`lightning.pytorch.loggers.CSVLogger`."""

    _target_: str = "lightning.pytorch.loggers.CSVLogger"
    save_dir: str = MISSING
    name: str | None = "lightning_logs"
    version: int | str | None = None


@dataclass
class CSVLoggerGroupConfig:
    """logger=csv."""

    csv: CSVLoggerConfig = field(default_factory=CSVLoggerConfig)


# callbacks


@dataclass
class ModelCheckpointConfig:
    """`lightning.pytorch.callbacks.ModelCheckpoint`."""

    _target_: str = "lightning.pytorch.callbacks.ModelCheckpoint"
    dirpath: str | None = None
    filename: str | None = None
    monitor: str | None = None
    verbose: bool = False
    save_last: Any = None  # true, false, null or "link"
    save_top_k: int = 1
    save_on_exception: bool = False
    save_weights_only: bool = False
    mode: str = "min"
    auto_insert_metric_name: bool = True
    every_n_train_steps: int | None = None
    every_n_epochs: int | None = None
    save_on_train_epoch_end: bool | None = None
    enable_version_counter: bool = True


@dataclass
class LearningRateMonitorConfig:
    """`lightning.pytorch.callbacks.LearningRateMonitor`."""

    _target_: str = "lightning.pytorch.callbacks.LearningRateMonitor"
    logging_interval: str | None = None
    log_momentum: bool = False
    log_weight_decay: bool = False


@dataclass
class ModelSummaryConfig:
    """`lightning.pytorch.callbacks.ModelSummary`."""

    _target_: str = "lightning.pytorch.callbacks.ModelSummary"
    max_depth: int = 1


@dataclass
class ProgressBarConfig:
    """`mnist_cnn.callbacks.StepLossProgressBar` (Lightning's `TQDMProgressBar`, with the step loss)."""

    _target_: str = "mnist_cnn.callbacks.StepLossProgressBar"
    refresh_rate: int = 1
    process_position: int = 0
    leave: bool = False


@dataclass
class OptunaPruningConfig:
    """`mnist_cnn.pruning.OptunaPruning`, added by conf/hparams_search/optuna.yaml."""

    _target_: str = "mnist_cnn.pruning.OptunaPruning"
    storage: str = MISSING
    study_name: str = MISSING
    trial_id: int | None = None
    pruner: Any = None  # an optuna.pruners node
    monitor: str = "val/acc"


@dataclass
class InsightConfig:
    """`mnist_cnn.insight.InsightPictures`: mistakes, PR curves, embedding and reliability in TensorBoard."""

    _target_: str = "mnist_cnn.insight.InsightPictures"
    mistakes: int = 64
    pr_curves: bool = True
    embeddings: int = 2000
    reliability: bool = True
    output_dir: str | None = None


@dataclass
class EMAConfig:
    """`mnist_cnn.callbacks.EMAWeightAveraging`: Lightning's exponential moving average of the weights, our update."""

    _target_: str = "mnist_cnn.callbacks.EMAWeightAveraging"
    decay: float = 0.999
    update_every_n_steps: int = 1
    update_starting_at_step: int | None = None
    update_starting_at_epoch: int | None = None
    use_buffers: bool = True


@dataclass
class SWAConfig:
    """`mnist_cnn.callbacks.SWAWeightAveraging`: Lightning's plain (stochastic) weight averaging, from an epoch on."""

    _target_: str = "mnist_cnn.callbacks.SWAWeightAveraging"
    start_epoch: int = 3
    use_buffers: bool = True


@dataclass
class CallbacksConfig:
    """callbacks=...: each option fills some of these slots; an unfilled or null slot adds no callback.

    Unfilled slots are MISSING rather than null because merging MISSING leaves a value in place: so
    `callbacks=default`, which merges several options (each extending this schema), keeps all of them.
    """

    model_checkpoint: ModelCheckpointConfig | None = MISSING
    last_checkpoint: ModelCheckpointConfig | None = MISSING
    periodic_checkpoint: ModelCheckpointConfig | None = MISSING
    lr_monitor: LearningRateMonitorConfig | None = MISSING
    model_summary: ModelSummaryConfig | None = MISSING
    progress_bar: ProgressBarConfig | None = MISSING
    optuna_pruning: OptunaPruningConfig | None = MISSING
    insight: InsightConfig | None = MISSING
    ema: EMAConfig | None = MISSING
    swa: SWAConfig | None = MISSING


# paths


@dataclass
class PathsConfig:
    """paths=default: where MNIST is read from and where the run writes its files."""

    data_dir: str = "data"
    output_dir: str = MISSING  # the Hydra run folder, set in conf/paths/default.yaml


# Each fills its slots of the one CallbacksConfig, so that `callbacks=default` can merge several of them.
CALLBACK_OPTIONS = ("default", "none", "model_checkpoint", "last_checkpoint", "periodic_checkpoint", "lr_monitor")
CALLBACK_OPTIONS += ("model_summary", "progress_bar", "insight", "ema", "swa")

SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "mnist": MNISTDataConfig,
        "mnist_pil": MNISTPILDataConfig,
        "fashion_mnist": MNISTDataConfig,
        "kmnist": MNISTDataConfig,
    },
    "model": {"cnn": CNNConfig, "cnn_separable": SeparableCNNConfig, "mlp": MLPConfig},
    "optimizer": {"adam": AdamConfig, "adamw": AdamWConfig, "sgd": SGDConfig},
    "scheduler": {
        "none": NoSchedulerConfig,
        "cosine": CosineSchedulerConfig,
        "step": StepSchedulerConfig,
        "onecycle": OneCycleSchedulerConfig,
    },
    "trainer": {"default": TrainerConfig},
    "callbacks": dict.fromkeys(CALLBACK_OPTIONS, CallbacksConfig),
    "logger": {"tensorboard": TensorBoardLoggerGroupConfig, "csv": CSVLoggerGroupConfig},
    "paths": {"default": PathsConfig},
}
"""Per group, the options that carry a schema, stored as `<group>_<option>_schema`; the others extend one."""


def schema_name(group: str, option: str) -> str:
    """A top-level config name, not a config group: Hydra lists no schema among its options, nor in --help."""
    return f"{group}_{option}_schema"


def field_names(schema: type) -> list[str]:
    return [item.name for item in dataclasses.fields(schema)]


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore. Safe to call again."""
    store = ConfigStore.instance()
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            store.store(name=schema_name(group, option), node=schema)
