"""Every config group has a typed schema: a wrong type or an unknown key fails at composition, naming the key."""

import dataclasses
import inspect
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import get_method, instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_cnn import schema
from mnist_cnn.runner import CONFIG_DIR

# The option each yaml-only option extends (its schema is that option's).
EXTENDS = {("trainer", "cpu"): "default", ("trainer", "gpu"): "default"}
EXTENDS[("trainer", "ddp")] = "default"

# (group, option, override, the full key the error must name): one value of the wrong type per case.
WRONG_TYPES = [
    ("data", "mnist", "data.batch_size=ten", "data.batch_size"),
    ("data", "mnist", "data.download=maybe", "data.download"),
    ("data", "mnist", "data.eval_batch_size=1.5", "data.eval_batch_size"),
    ("data", "mnist", "data.augmentation.degrees=wide", "data.augmentation.degrees"),
    ("data", "mnist", "data.augmentation=5", "data.augmentation"),
    ("data", "mnist_pil", "data.num_workers=two", "data.num_workers"),
    ("data", "mnist_pil", "data.pin_memory=maybe", "data.pin_memory"),
    ("data", "mnist_pil", "data.augmentation=flip", "data.augmentation"),
    ("data", "fashion_mnist", "data.val_size=some", "data.val_size"),
    ("data", "kmnist", "data.augmentation.flip_p=never", "data.augmentation.flip_p"),
    ("model", "cnn", "model._target_=[a,b]", "model._target_"),
    ("model", "cnn_separable", "model.conv={kind: separable}", "model.conv"),
    ("model", "mlp", "model.hidden_sizes=[fifty]", "model.hidden_sizes[0]"),
    ("model", "mlp", "model.hidden_sizes=50", "model.hidden_sizes"),
    ("optimizer", "adam", "optimizer.lr=abc", "optimizer.lr"),
    ("optimizer", "adam", "optimizer.fused=maybe", "optimizer.fused"),
    ("optimizer", "adamw", "optimizer.weight_decay=much", "optimizer.weight_decay"),
    ("optimizer", "sgd", "optimizer.momentum=high", "optimizer.momentum"),
    ("optimizer", "sgd", "optimizer.nesterov=maybe", "optimizer.nesterov"),
    ("scheduler", "cosine", "scheduler.T_max=ten", "scheduler.T_max"),
    ("scheduler", "cosine", "scheduler.eta_min=zero", "scheduler.eta_min"),
    ("scheduler", "step", "scheduler.step_size=2.5", "scheduler.step_size"),
    ("scheduler", "step", "scheduler.gamma=half", "scheduler.gamma"),
    ("scheduler", "onecycle", "scheduler.max_lr=high", "scheduler.max_lr"),
    ("scheduler", "onecycle", "scheduler.cycle_momentum=maybe", "scheduler.cycle_momentum"),
    ("trainer", "ddp", "trainer.num_nodes=two", "trainer.num_nodes"),
    ("trainer", "default", "trainer.max_epochs=five", "trainer.max_epochs"),
    ("trainer", "default", "trainer.limit_train_batches=all", "trainer.limit_train_batches"),
    ("trainer", "default", "trainer.gradient_clip_val=big", "trainer.gradient_clip_val"),
    ("trainer", "default", "trainer.accumulate_grad_batches=1.5", "trainer.accumulate_grad_batches"),
    ("trainer", "default", "trainer.detect_anomaly=maybe", "trainer.detect_anomaly"),
    ("trainer", "default", "trainer.check_val_every_n_epoch=often", "trainer.check_val_every_n_epoch"),
    ("trainer", "cpu", "trainer.max_epochs=five", "trainer.max_epochs"),
    ("trainer", "gpu", "trainer.num_sanity_val_steps=some", "trainer.num_sanity_val_steps"),
    ("logger", "tensorboard", "logger.tensorboard.default_hp_metric=maybe", "logger.tensorboard.default_hp_metric"),
    ("logger", "csv", "logger.csv.name=[a,b]", "logger.csv.name"),
    ("paths", "default", "paths.data_dir=[a,b]", "paths.data_dir"),
    ("callbacks", "default", "callbacks.model_checkpoint.save_top_k=one", "callbacks.model_checkpoint.save_top_k"),
    ("callbacks", "model_checkpoint", "callbacks.model_checkpoint.verbose=loud", "callbacks.model_checkpoint.verbose"),
    (
        "callbacks",
        "last_checkpoint",
        "callbacks.last_checkpoint.save_top_k=all",
        "callbacks.last_checkpoint.save_top_k",
    ),
    (
        "callbacks",
        "periodic_checkpoint",
        "callbacks.periodic_checkpoint.every_n_train_steps=often",
        "callbacks.periodic_checkpoint.every_n_train_steps",
    ),
    ("callbacks", "lr_monitor", "callbacks.lr_monitor.log_momentum=maybe", "callbacks.lr_monitor.log_momentum"),
    ("callbacks", "model_summary", "callbacks.model_summary.max_depth=deep", "callbacks.model_summary.max_depth"),
    ("callbacks", "progress_bar", "callbacks.progress_bar.refresh_rate=fast", "callbacks.progress_bar.refresh_rate"),
    ("callbacks", "insight", "callbacks.insight.embeddings=many", "callbacks.insight.embeddings"),
    ("callbacks", "ema", "callbacks.ema.decay=slow", "callbacks.ema.decay"),
    ("callbacks", "swa", "callbacks.swa.start_epoch=late", "callbacks.swa.start_epoch"),
]

# (group, option, override of a key the schema lacks, the full key the error must name).
UNKNOWN_KEYS = [
    ("data", "mnist", "data.batch_sise=8", "data.batch_sise"),
    ("data", "mnist", "data.augmentation.degree=5", "data.augmentation.degree"),
    ("data", "mnist_pil", "data.num_worker=2", "data.num_worker"),
    ("data", "fashion_mnist", "data.datasets=KMNIST", "data.datasets"),
    ("data", "kmnist", "data.augmentation.degres=5", "data.augmentation.degres"),
    ("model", "cnn", "model.conv=separable", "model.conv"),  # one way to the separable CNN: model=cnn_separable
    ("model", "cnn_separable", "model.channels=8", "model.channels"),
    ("model", "mlp", "model.hidden_size=[10]", "model.hidden_size"),
    ("optimizer", "adam", "optimizer.lrr=0.1", "optimizer.lrr"),
    ("optimizer", "adamw", "optimizer.lrr=0.1", "optimizer.lrr"),
    ("optimizer", "sgd", "optimizer.momentun=0.5", "optimizer.momentun"),
    ("scheduler", "none", "scheduler.T_max=3", "scheduler.T_max"),
    ("scheduler", "cosine", "scheduler.tmax=3", "scheduler.tmax"),
    ("scheduler", "step", "scheduler.step=2", "scheduler.step"),
    ("scheduler", "onecycle", "scheduler.maxlr=0.1", "scheduler.maxlr"),
    ("trainer", "ddp", "trainer.strategies=ddp", "trainer.strategies"),
    ("trainer", "default", "trainer.max_epoch=3", "trainer.max_epoch"),
    ("trainer", "cpu", "trainer.device=1", "trainer.device"),
    ("trainer", "gpu", "trainer.gpus=1", "trainer.gpus"),
    ("logger", "tensorboard", "logger.tensorboard.log_grpah=true", "logger.tensorboard.log_grpah"),
    ("logger", "csv", "logger.csv.flush_every=10", "logger.csv.flush_every"),
    ("logger", "csv", "logger.wandb.project=x", "logger.wandb"),
    ("paths", "default", "paths.data=elsewhere", "paths.data"),
    ("callbacks", "default", "callbacks.early_stopping=5", "callbacks.early_stopping"),
    ("callbacks", "none", "callbacks.model_checkpoints=5", "callbacks.model_checkpoints"),
    ("callbacks", "model_checkpoint", "callbacks.model_checkpoint.monitr=val/acc", "callbacks.model_checkpoint.monitr"),
    ("callbacks", "last_checkpoint", "callbacks.last_checkpoint.file=last", "callbacks.last_checkpoint.file"),
    (
        "callbacks",
        "periodic_checkpoint",
        "callbacks.periodic_checkpoint.every_n_steps=5",
        "callbacks.periodic_checkpoint.every_n_steps",
    ),
    ("callbacks", "lr_monitor", "callbacks.lr_monitor.interval=step", "callbacks.lr_monitor.interval"),
    ("callbacks", "model_summary", "callbacks.model_summary.depth=3", "callbacks.model_summary.depth"),
    ("callbacks", "progress_bar", "callbacks.progress_bar.refresh=5", "callbacks.progress_bar.refresh"),
    ("callbacks", "insight", "callbacks.insight.mistake=8", "callbacks.insight.mistake"),
    ("callbacks", "ema", "callbacks.ema.decays=0.9", "callbacks.ema.decays"),
    ("callbacks", "swa", "callbacks.swa.start=3", "callbacks.swa.start"),
]


def options(group: str, config_dir: str = CONFIG_DIR) -> list[str]:
    return sorted(path.stem for path in (Path(config_dir) / group).glob("*.yaml"))


def compose_train(*overrides: str, config_dir: str = CONFIG_DIR) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=unused", *overrides])


def causes(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def composition_error(*overrides: str, config_dir: str = CONFIG_DIR) -> str:
    """The text of the error composing `train` with these overrides, its causes included."""
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(*overrides, config_dir=config_dir)
    return "\n".join(str(error) for error in causes(info.value))


def schema_of(group: str, option: str) -> type:
    return schema.SCHEMAS[group][EXTENDS.get((group, option), option)]


@pytest.mark.parametrize("group", list(schema.SCHEMAS))
def test_every_option_is_typed_by_its_schema(group: str) -> None:
    assert options(group)
    for option in options(group):
        cfg = compose_train(f"{group}={option}")
        assert OmegaConf.get_type(cfg[group]) is schema_of(group, option), (group, option)


@pytest.mark.parametrize("kind", ["wrong types", "unknown keys"])
def test_every_option_has_cases_below(kind: str) -> None:
    cases = WRONG_TYPES if kind == "wrong types" else UNKNOWN_KEYS
    covered = {(group, option) for group, option, _, _ in cases}
    wanted = {(group, option) for group in schema.SCHEMAS for option in options(group)}
    if kind == "wrong types":
        wanted -= {("scheduler", "none"), ("callbacks", "none")}  # they have no keys to give a wrong type
    assert wanted <= covered


@pytest.mark.parametrize(("group", "option", "override", "key"), WRONG_TYPES)
def test_a_wrong_type_fails_naming_the_key(group: str, option: str, override: str, key: str) -> None:
    message = composition_error(f"{group}={option}", override)
    assert f"full_key: {key}\n" in message + "\n", message


@pytest.mark.parametrize(("group", "option", "override", "key"), UNKNOWN_KEYS)
def test_an_unknown_key_fails_naming_the_key(group: str, option: str, override: str, key: str) -> None:
    message = composition_error(f"{group}={option}", override)
    assert f"Could not override '{override.split('=')[0]}'" in message and "not in '" in message, message
    assert key.rsplit(".", 1)[-1] in message


def test_plus_adds_an_argument_the_schema_omits() -> None:
    cfg = compose_train("+optimizer.amsgrad=true")
    optimizer = instantiate(cfg.optimizer, params=torch.nn.Linear(2, 2).parameters())
    assert cfg.optimizer.amsgrad is True and optimizer.defaults["amsgrad"] is True


@pytest.fixture
def conf_copy(tmp_path: Path) -> Path:
    """A copy of conf/ to put faulty files in."""
    return Path(shutil.copytree(CONFIG_DIR, tmp_path / "conf"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("data:\n  batch_sise: 8\n", "Key 'batch_sise' not in 'MNISTDataConfig'\n    full_key: data.batch_sise"),
        ("trainer:\n  max_epochs: five\n", "could not be converted to Integer\n    full_key: trainer.max_epochs"),
        ("optimizer:\n  lrr: 0.1\n", "Key 'lrr' not in 'AdamConfig'\n    full_key: optimizer.lrr"),
    ],
)
def test_a_fault_in_an_experiment_file_fails_naming_the_key(conf_copy: Path, content: str, message: str) -> None:
    (conf_copy / "experiment" / "faulty.yaml").write_text(f"# @package _global_\n{content}")
    error = composition_error("experiment=faulty", config_dir=str(conf_copy))
    assert "In 'experiment/faulty'" in error and message in error, error


def test_a_typo_in_an_option_file_fails_naming_the_key(conf_copy: Path) -> None:
    adam = conf_copy / "optimizer" / "adam.yaml"
    adam.write_text(adam.read_text().replace("weight_decay:", "weight_decy:"))
    error = composition_error(config_dir=str(conf_copy))
    assert "In 'optimizer/adam'" in error and "Key 'weight_decy' not in 'AdamConfig'" in error, error
    assert "full_key: optimizer.weight_decy" in error


def test_interpolations_resolve_and_are_type_checked() -> None:
    cfg = compose_train("paths.data_dir=/somewhere", "scheduler=cosine", "trainer.max_epochs=7")
    assert (cfg.data.data_dir, cfg.scheduler.T_max) == ("/somewhere", 7)
    cfg = compose_train("scheduler=cosine", "trainer.max_epochs=null")
    with pytest.raises(OmegaConfBaseException, match=r"full_key: scheduler\.T_max"):
        _ = cfg.scheduler.T_max  # T_max is an int, and None is not one


def test_values_keep_their_types_and_augmentation_stays_nullable() -> None:
    cfg = compose_train("trainer.limit_train_batches=50", "optimizer.lr=1", "data.augmentation=null")
    assert cfg.trainer.limit_train_batches == 50 and isinstance(cfg.trainer.limit_train_batches, int)
    assert cfg.trainer.limit_val_batches == 1.0 and isinstance(cfg.trainer.limit_val_batches, float)
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.data.augmentation is None and instantiate(cfg.data).augmentation is None


TARGETED = [
    cls for cls in vars(schema).values() if dataclasses.is_dataclass(cls) and "_target_" in schema.field_names(cls)
]


@pytest.mark.parametrize("schema_class", TARGETED, ids=lambda cls: cls.__name__)
def test_schema_defaults_are_the_targets_own(schema_class: type) -> None:
    """A key an option leaves out gets its target's default, so leaving it out means what it did before."""
    parameters = inspect.signature(get_method(schema_class._target_)).parameters
    for item in dataclasses.fields(schema_class)[1:]:
        if item.name == "interval":  # read by the LightningModule (when to step the scheduler), not passed on
            continue
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        expected = parameters[item.name].default
        if default == MISSING:
            assert expected is inspect.Parameter.empty, item.name
        else:
            assert default == (list(expected) if isinstance(expected, tuple) else expected), item.name


def test_register_schemas_is_idempotent() -> None:
    schema.register_schemas()
    schema.register_schemas()
    for group, schemas in schema.SCHEMAS.items():
        stored = set(ConfigStore.instance().list(""))
        assert {f"{schema.schema_name(group, option)}.yaml" for option in schemas} <= stored
        assert group not in ConfigStore.instance().repo  # so Hydra lists no schema among the group's options


NOT_LOADED = "lacks train-images-idx3-ubyte"  # the error a missing data folder gives once data is loaded


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_sise=8", "Key 'batch_sise' not in 'MNISTDataConfig'"),
        ("data.batch_size=ten", "could not be converted to Integer\n    full_key: data.batch_size"),
    ],
)
@pytest.mark.slow
def test_cli_fails_on_a_fault_before_loading_any_data(tmp_path: Path, override: str, message: str) -> None:
    result = run_cli("train", *FAST, f"paths.data_dir={tmp_path / 'no_such_folder'}", override, cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-3000:]
    assert NOT_LOADED not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_cli_rejects_a_learning_rate_that_is_not_a_number(mnist_root: Path, tmp_path: Path) -> None:
    """Was refused by our own check (exit 2) after composing; now Hydra refuses it while composing."""
    result = run_cli("train", *FAST, f"paths.data_dir={mnist_root}", "optimizer.lr=abc", cwd=tmp_path)
    assert result.returncode != 0, result.stderr[-3000:]
    assert "Value 'abc' of type 'str' could not be converted to Float" in result.stderr
    assert "full_key: optimizer.lr" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_help_lists_no_schema_among_the_config_groups() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mnist_cnn.train", "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "model: cnn, cnn_separable, mlp" in groups and "schema" not in groups
